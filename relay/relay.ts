import type { FramedSocket } from '../src/transport/framed-socket.js';
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
      if (this.pending.size >= (this.opts.maxPending ?? 10_000)) return fs.fail('limit', 'relay is full, try again later');
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
  }

  private join(sid: string, a: FramedSocket, b: FramedSocket): void {
    a.send({ type: 'relay_ready' });
    b.send({ type: 'relay_ready' });
    const restA = a.detach();
    const restB = b.detach();
    if (restA.length) b.socket.write(restA);
    if (restB.length) a.socket.write(restB);
    this.active++;
    this.opts.log.debug('relay_paired', 'relay session paired', { sid });
    const count = (chunk: Buffer) => {
      this.bytesForwarded += chunk.length;
    };
    a.socket.on('data', count);
    b.socket.on('data', count);
    const rate = this.opts.rateBytesPerSec ?? 0;
    if (rate > 0) {
      throttle(a.socket, rate);
      throttle(b.socket, rate);
    }
    a.socket.pipe(b.socket);
    b.socket.pipe(a.socket);
    let done = false;
    const end = () => {
      if (done) return;
      done = true;
      this.active--;
      a.destroy();
      b.destroy();
    };
    a.socket.once('close', end);
    b.socket.once('close', end);
  }

  private markUsed(sid: string, expires: number): void {
    this.used.set(sid, expires);
    if (this.used.size > 4096) {
      const now = Date.now() / 1000;
      for (const [k, exp] of this.used) if (exp < now) this.used.delete(k);
    }
  }
}

/**
 * Token bucket on a readable socket: pauses it when a session goes over its
 * relay rate. TCP backpressure then slows the sender; nothing is dropped.
 */
function throttle(sock: import('node:net').Socket, bytesPerSec: number): void {
  const burst = Math.max(64 * 1024, bytesPerSec / 4);
  let tokens = burst;
  let last = Date.now();
  sock.on('data', (chunk: Buffer) => {
    const now = Date.now();
    tokens = Math.min(burst, tokens + ((now - last) / 1000) * bytesPerSec);
    last = now;
    tokens -= chunk.length;
    if (tokens < 0 && !sock.isPaused()) {
      sock.pause();
      setTimeout(() => sock.resume(), Math.ceil((-tokens / bytesPerSec) * 1000)).unref();
    }
  });
}
