import { readU32BE, writeU32BE } from './bytes.js';
/**
 * Framing for every TCP connection we speak (control channel and relay):
 *
 *   offset  size  field
 *   0       4     length   of the body that follows (big-endian), not counting this header
 *   4       1     version  PROTOCOL_VERSION
 *   5       1     kind     FrameKind
 *   6       n     body     (length bytes)
 *
 * A frame longer than the reader's limit is a protocol error: the reader stops
 * at the header and never buffers the body, so a peer cannot make us allocate.
 */
export const PROTOCOL_VERSION = 1;
export const FRAME_HEADER_LEN = 6;
/** Default cap for control frames (JSON). */
export const MAX_CONTROL_FRAME = 16 * 1024;
/**
 * Default cap for datagram frames. Only a peer's relay path reads datagram
 * frames, and it raises the cap to MAX_RELAY_DATAGRAM_LEN (src/wire/datagram.ts);
 * the rendezvous and relay stop parsing before any arrive, so a client there
 * cannot make them buffer a large frame.
 */
export const MAX_DATAGRAM_FRAME = 2048;

export const enum FrameKind {
  /** UTF-8 JSON control message, validated by src/wire/control.ts. */
  Control = 1,
  /** One sealed datagram (src/wire/datagram.ts), relay path only. */
  Datagram = 2,
}

export interface Frame {
  kind: FrameKind;
  body: Buffer;
}

export type FrameError =
  | { code: 'frame_too_large'; length: number; max: number }
  | { code: 'bad_version'; version: number }
  | { code: 'bad_kind'; kind: number };

export function encodeFrame(kind: FrameKind, body: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_LEN + body.length);
  out.writeUInt32BE(body.length, 0);
  out[4] = PROTOCOL_VERSION;
  out[5] = kind;
  out.set(body, FRAME_HEADER_LEN);
  return out;
}

/** Writes just the header, so a large body can be sent without a copy. */
export function encodeFrameHeader(kind: FrameKind, bodyLength: number): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_LEN);
  writeFrameHeader(out, kind, bodyLength);
  return out;
}

/** The 6-byte frame header into `out[0..6)`. */
export function writeFrameHeader(out: Uint8Array, kind: FrameKind, bodyLength: number): void {
  writeU32BE(out, 0, bodyLength);
  out[4] = PROTOCOL_VERSION;
  out[5] = kind;
}

/**
 * Incremental frame reader. Feed it chunks; it returns whole frames, or an
 * error after which the connection must be closed (the stream is out of sync).
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private failed: FrameError | null = null;

  constructor(private readonly maxBody: (kind: number) => number = () => MAX_CONTROL_FRAME) {}

  get bufferedBytes(): number {
    return this.buffered;
  }

  push(chunk: Buffer): { frames: Frame[]; error: FrameError | null } {
    const frames: Frame[] = [];
    if (this.failed) return { frames, error: this.failed };
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    while (this.buffered >= FRAME_HEADER_LEN) {
      const head = this.peek(FRAME_HEADER_LEN);
      const error = checkFrameHeader(head, 0, this.maxBody);
      if (error) return this.fail(frames, error);
      const length = head.readUInt32BE(0);
      if (this.buffered < FRAME_HEADER_LEN + length) break;
      const whole = this.take(FRAME_HEADER_LEN + length);
      frames.push({ kind: head[5], body: whole.subarray(FRAME_HEADER_LEN) });
    }
    return { frames, error: null };
  }

  /** Bytes received after the last whole frame; used when a relay switches to raw piping. */
  drainRemainder(): Buffer {
    const rest = Buffer.concat(this.chunks, this.buffered);
    this.chunks = [];
    this.buffered = 0;
    return rest;
  }

  private fail(frames: Frame[], error: FrameError) {
    this.failed = error;
    this.chunks = [];
    this.buffered = 0;
    return { frames, error };
  }

  private peek(n: number): Buffer {
    if (this.chunks[0].length >= n) return this.chunks[0];
    // Merge just enough leading chunks to hold n bytes: with 64 KiB relay
    // frames spanning TCP reads, merging everything buffered would copy the
    // same bytes again for every frame.
    let count = 0;
    let size = 0;
    while (size < n) size += this.chunks[count++].length;
    const merged = Buffer.concat(this.chunks.slice(0, count), size);
    this.chunks.splice(0, count, merged);
    return merged;
  }

  private take(n: number): Buffer {
    const first = this.peek(n);
    const out = first.subarray(0, n);
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.buffered -= n;
    return out;
  }
}

/** Pure: the error in the frame header at `buf[off..off+6)`, or null when it is acceptable. */
export function checkFrameHeader(buf: Uint8Array, off: number, maxBody: (kind: number) => number): FrameError | null {
  const version = buf[off + 4];
  const kind = buf[off + 5];
  if (version !== PROTOCOL_VERSION) return { code: 'bad_version', version };
  if (kind !== FrameKind.Control && kind !== FrameKind.Datagram) return { code: 'bad_kind', kind };
  const length = readU32BE(buf, off);
  const max = maxBody(kind);
  if (length > max) return { code: 'frame_too_large', length, max };
  return null;
}

/**
 * Frame reader for a socket that reads into one reusable buffer (net's
 * `onread` option): no allocation per read. A chunk is only valid during
 * push(), so frames wholly inside it alias it and must be consumed before
 * push() returns; a frame that spans reads is copied, once, into one of two
 * assembly buffers that take turns (one may hold the frame just returned while
 * the other collects the next). So every frame must be consumed before the
 * next push(), and nothing is allocated per frame. The relay path reads 64 KiB
 * records this way.
 */
export class TransientFrameDecoder {
  /** Start of a header that spans reads. */
  private readonly head = Buffer.alloc(FRAME_HEADER_LEN);
  private headFill = 0;
  /** A frame that spans reads, header included, and how much of it has arrived. */
  private pending: Buffer | null = null;
  private pendingFill = 0;
  private readonly assembly: Buffer[] = [Buffer.alloc(0), Buffer.alloc(0)];
  private turn = 0;
  private failed: FrameError | null = null;

  constructor(private readonly maxBody: (kind: number) => number = () => MAX_CONTROL_FRAME) {}

  get bufferedBytes(): number {
    return this.pending ? this.pendingFill : this.headFill;
  }

  push(chunk: Uint8Array): { frames: Frame[]; error: FrameError | null } {
    const frames: Frame[] = [];
    if (this.failed) return { frames, error: this.failed };
    let p = this.finishPending(chunk, frames);
    if (p < 0) return { frames, error: this.failed };
    const n = chunk.length;
    while (n - p >= FRAME_HEADER_LEN) {
      const error = checkFrameHeader(chunk, p, this.maxBody);
      if (error) return this.fail(frames, error);
      const total = FRAME_HEADER_LEN + readU32BE(chunk, p);
      if (n - p < total) break;
      const body = chunk.subarray(p + FRAME_HEADER_LEN, p + total);
      frames.push({ kind: chunk[p + 5], body: Buffer.from(body.buffer, body.byteOffset, body.length) });
      p += total;
    }
    if (p < n) {
      if (n - p < FRAME_HEADER_LEN) {
        this.head.set(chunk.subarray(p), 0);
        this.headFill = n - p;
      } else {
        this.startPending(chunk.subarray(p, p + FRAME_HEADER_LEN));
        this.pending!.set(chunk.subarray(p), 0);
        this.pendingFill = n - p;
      }
    }
    return { frames, error: null };
  }

  /** Completes a header or frame begun in earlier reads; returns where the chunk's own frames start (-1: failed). */
  private finishPending(chunk: Uint8Array, frames: Frame[]): number {
    let p = 0;
    if (this.headFill > 0) {
      const take = Math.min(FRAME_HEADER_LEN - this.headFill, chunk.length);
      this.head.set(chunk.subarray(0, take), this.headFill);
      this.headFill += take;
      p = take;
      if (this.headFill < FRAME_HEADER_LEN) return p;
      this.headFill = 0;
      const error = checkFrameHeader(this.head, 0, this.maxBody);
      if (error) {
        this.fail(frames, error);
        return -1;
      }
      this.startPending(this.head);
      this.pendingFill = FRAME_HEADER_LEN;
    }
    const pending = this.pending;
    if (!pending) return p;
    const take = Math.min(pending.length - this.pendingFill, chunk.length - p);
    pending.set(chunk.subarray(p, p + take), this.pendingFill);
    this.pendingFill += take;
    p += take;
    if (this.pendingFill === pending.length) {
      frames.push({ kind: pending[5], body: pending.subarray(FRAME_HEADER_LEN) });
      this.pending = null;
      this.pendingFill = 0;
    }
    return p;
  }

  /** Allocates a spanning frame once its (already checked) header is known. */
  private startPending(header: Uint8Array): void {
    const total = FRAME_HEADER_LEN + readU32BE(header, 0);
    let buf = this.assembly[this.turn];
    // Grown once to the largest frame seen: for the relay, one 64 KiB record.
    if (buf.length < total) buf = this.assembly[this.turn] = Buffer.allocUnsafe(total);
    this.turn ^= 1;
    this.pending = buf.subarray(0, total);
    this.pending.set(header.subarray(0, FRAME_HEADER_LEN), 0);
  }

  private fail(frames: Frame[], error: FrameError) {
    this.failed = error;
    this.pending = null;
    this.headFill = 0;
    return { frames, error };
  }
}

export function describeFrameError(e: FrameError): string {
  switch (e.code) {
    case 'frame_too_large':
      return `frame of ${e.length} bytes exceeds the limit of ${e.max}`;
    case 'bad_version':
      return `unsupported protocol version ${e.version} (this build speaks ${PROTOCOL_VERSION})`;
    case 'bad_kind':
      return `unknown frame kind ${e.kind}`;
  }
}
