/**
 * Joins two TCP connections byte for byte, the relay's data path: whatever
 * one side sends is written to the other as it arrives, never parsed.
 * Each side reads into its own reusable buffer (user-reads.ts), so
 * forwarding allocates nothing while the kernel takes each write whole (the
 * usual case); when it takes only part, that side moves to a new buffer.
 */
import type net from 'node:net';
import { OwnReadBuffer, canSwitchToUserReads, switchToUserReads, type ChunkHandler } from './user-reads.js';

export interface SpliceOptions {
  /** Called with the size of every chunk forwarded, either way (byte counters). */
  onBytes?: (n: number) => void;
  /** Per-direction rate limit in bytes/s; 0 or unset: unlimited. */
  rateBytesPerSec?: number;
  /**
   * Read into a 64 KiB buffer per side (default true). Each is held for as
   * long as the pair lives, so a relay with very many pairs joins the rest
   * with pipe(), which allocates per read instead.
   */
  ownBuffers?: boolean;
}

/**
 * Token bucket for one direction. Reading pauses while it is in debt; TCP
 * backpressure then slows the sender, and nothing is dropped.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;
  private readonly burst: number;

  constructor(
    private readonly bytesPerSec: number,
    private readonly now: () => number = Date.now,
  ) {
    this.burst = Math.max(64 * 1024, bytesPerSec / 4);
    this.tokens = this.burst;
    this.last = now();
  }

  /** Spends `n` bytes; returns how many ms until the bucket is out of debt (0: not in debt). */
  take(n: number): number {
    this.refill();
    this.tokens -= n;
    return this.wait();
  }

  /** ms until out of debt, now. */
  wait(): number {
    this.refill();
    return this.tokens < 0 ? Math.ceil((-this.tokens / this.bytesPerSec) * 1000) : 0;
  }

  private refill(): void {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) / 1000) * this.bytesPerSec);
    this.last = t;
  }
}

/**
 * Splices `a` and `b`, which have been reading with 'data' events; `restA`
 * and `restB` are bytes each already read but not yet forwarded. Returns the
 * two sockets to use from now on (new objects when the sockets could move to
 * shared-buffer reads; otherwise the same ones, joined with pipe()).
 */
export function splice(
  a: net.Socket,
  b: net.Socket,
  restA: Uint8Array,
  restB: Uint8Array,
  opts: SpliceOptions = {},
): [net.Socket, net.Socket] {
  if (restA.length) b.write(restA);
  if (restB.length) a.write(restB);
  // A socket that cannot move (data still queued, or not a plain TCP
  // socket): the same forwarding with Node's streams.
  if (opts.ownBuffers === false || !canSwitchToUserReads(a) || !canSwitchToUserReads(b)) return pipeJoin(a, b, opts);
  // Filled in below: each handler writes to the other side's new socket.
  let na: net.Socket | null = null;
  let nb: net.Socket | null = null;
  const bufA = new OwnReadBuffer();
  const bufB = new OwnReadBuffer();
  const ha = forwarder(
    () => na!,
    () => nb!,
    bufA,
    opts,
  );
  const hb = forwarder(
    () => nb!,
    () => na!,
    bufB,
    opts,
  );
  const ma = switchToUserReads(a, ha, bufA)!;
  const mb = switchToUserReads(b, hb, bufB)!;
  na = ma.socket;
  nb = mb.socket;
  // Read by the old objects after the frames the relay parsed (none in
  // flowing mode, but the order is kept if there were).
  for (const c of ma.rest) nb.write(c);
  for (const c of mb.rest) na.write(c);
  na.on('end', () => nb.end());
  nb.on('end', () => na.end());
  return [na, nb];
}

/** Forwards what `src()` reads to `dst()`: pauses on backpressure and on rate-limit debt, resumes when both clear. */
function forwarder(
  src: () => net.Socket,
  dst: () => net.Socket,
  own: OwnReadBuffer,
  opts: SpliceOptions,
): ChunkHandler {
  const bucket = opts.rateBytesPerSec ? new TokenBucket(opts.rateBytesPerSec) : null;
  let timer: NodeJS.Timeout | null = null;
  const tryResume = () => {
    const out = dst();
    if (out.writableNeedDrain || out.destroyed) return;
    const wait = bucket?.wait() ?? 0;
    if (wait > 0) {
      if (!timer) timer = setTimeout(onTimer, wait).unref();
      return;
    }
    src().resume();
  };
  const onTimer = () => {
    timer = null;
    tryResume();
  };
  return (chunk) => {
    opts.onBytes?.(chunk.length);
    const out = dst();
    const ok = out.write(chunk);
    // Part of the chunk is queued in the socket and points into this side's
    // read buffer: the next reads must not overwrite it.
    if (out.writableLength > 0) own.retire();
    let go = true;
    if (!ok) {
      out.once('drain', tryResume);
      go = false;
    }
    const wait = bucket?.take(chunk.length) ?? 0;
    if (wait > 0) {
      if (!timer) timer = setTimeout(onTimer, wait).unref();
      go = false;
    }
    return go;
  };
}

/** The fallback: pipe() both ways, with the same byte counting and rate limit. */
function pipeJoin(a: net.Socket, b: net.Socket, opts: SpliceOptions): [net.Socket, net.Socket] {
  for (const s of [a, b]) {
    if (opts.onBytes) s.on('data', (chunk: Buffer) => opts.onBytes!(chunk.length));
    if (opts.rateBytesPerSec) {
      const bucket = new TokenBucket(opts.rateBytesPerSec);
      s.on('data', (chunk: Buffer) => {
        const wait = bucket.take(chunk.length);
        if (wait > 0 && !s.isPaused()) {
          s.pause();
          setTimeout(() => s.resume(), wait).unref();
        }
      });
    }
  }
  a.pipe(b);
  b.pipe(a);
  return [a, b];
}
