import type { Socket } from 'node:net';
import type { FramedSocket } from '../src/transport/framed-socket.js';
import { splice } from '../src/transport/splice.js';
import type { Logger } from '../src/util/log.js';
import { verifyTicket, type TicketRole } from '../src/wire/ticket.js';

export interface RelayOptions {
  key: Uint8Array;
  log: Logger;
  /** How long the first side of a session waits for the second. */
  pairTimeoutMs?: number;
  /** Cap on sessions waiting for their second side (memory bound). */
  maxPending?: number;
  /** Cap on paired sessions. */
  maxSessions?: number;
  /** Per-session rate limit in bytes/s, each direction (0 or unset: unlimited). */
  rateBytesPerSec?: number;
}

/** Paired sessions that get their own read buffers (see splice.ts). */
const OWN_BUFFER_PAIRS = 256;

interface Pending {
  role: TicketRole;
  fs: FramedSocket;
  timer: NodeJS.Timeout;
}

/**
 * The relay data path. Each side of a session opens its own TCP connection and
 * presents a ticket; once both are there the relay joins the two sockets and
 * forwards bytes as they come, with TCP backpressure per pair. Pairs share
 * nothing, so one slow session never stalls another. The relay never parses
 * what flows after pairing: it is sealed end to end.
 */
export class Relay {
  private pending = new Map<string, Pending>();
  private used = new Map<string, number>();
  private active = 0;
  /** Joined sessions, so close() can end them. */
  private paired = new Set<{ a: Socket; b: Socket }>();
  bytesForwarded = 0;

  constructor(private readonly opts: RelayOptions) {}

  get pendingCount(): number {
    return this.pending.size;
  }
  get sessionCount(): number {
    return this.active;
  }

  /** Takes over a connection whose first message was `relay_bind`. */
  adopt(fs: FramedSocket, ticketText: string): void {
    const { log } = this.opts;
    const check = verifyTicket(this.opts.key, ticketText);
    if (!check.ok) {
      log.warn('relay_rejected', check.error, { remote: fs.remote });
      return fs.fail('bad_ticket', check.error);
    }
    const { sid, role } = check.ticket;
    if (this.used.has(sid)) return fs.fail('bad_ticket', 'relay ticket already used');
    const other = this.pending.get(sid);
    if (!other) {
      if (this.pending.size >= (this.opts.maxPending ?? 10_000))
        return fs.fail('limit', 'relay is full, try again later');
      const timer = setTimeout(() => {
        this.pending.delete(sid);
        fs.fail('timeout', 'the other side of the session never reached the relay');
      }, this.opts.pairTimeoutMs ?? 15_000);
      timer.unref();
      this.pending.set(sid, { role, fs, timer });
      fs.once('close', () => {
        const p = this.pending.get(sid);
        if (p?.fs === fs) {
          clearTimeout(p.timer);
          this.pending.delete(sid);
        }
      });
      return;
    }
    if (other.role === role) return fs.fail('bad_ticket', 'relay ticket already presented for this side');
    if (this.active >= (this.opts.maxSessions ?? 10_000)) return fs.fail('limit', 'relay is full, try again later');
    clearTimeout(other.timer);
    this.pending.delete(sid);
    this.markUsed(sid, check.ticket.expires);
    this.join(sid, other.fs, fs);
  }

  close(): void {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.fs.destroy();
    }
    this.pending.clear();
    for (const p of this.paired) {
      p.a.destroy();
      p.b.destroy();
    }
    this.paired.clear();
  }

  private join(sid: string, a: FramedSocket, b: FramedSocket): void {
    a.send({ type: 'relay_ready' });
    b.send({ type: 'relay_ready' });
    const [sa, sb] = splice(a.socket, b.socket, a.detach(), b.detach(), {
      onBytes: (n) => {
        this.bytesForwarded += n;
      },
      rateBytesPerSec: this.opts.rateBytesPerSec ?? 0,
      // 2 x 64 KiB of read buffers per pair: bounded to 32 MB, the rest use pipe().
      ownBuffers: this.active < OWN_BUFFER_PAIRS,
    });
    this.active++;
    this.opts.log.debug('relay_paired', 'relay session paired', { sid });
    const pair = { a: sa, b: sb };
    this.paired.add(pair);
    let done = false;
    const end = () => {
      if (done) return;
      done = true;
      this.active--;
      this.paired.delete(pair);
      sa.destroy();
      sb.destroy();
    };
    for (const s of [sa, sb]) {
      s.on('error', end);
      s.once('close', end);
    }
  }

  private markUsed(sid: string, expires: number): void {
    this.used.set(sid, expires);
    if (this.used.size > 4096) {
      const now = Date.now() / 1000;
      for (const [k, exp] of this.used) if (exp < now) this.used.delete(k);
    }
  }
}
