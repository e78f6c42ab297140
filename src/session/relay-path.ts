import { performance } from 'node:perf_hooks';
import { EventEmitter } from 'node:events';
import { FramedSocket } from '../transport/framed-socket.js';
import type { Path, PathReceiver, PathSource } from './path.js';
import type { ControlMessage } from '../wire/control.js';
import { MAX_RELAY_DATAGRAM_LEN } from '../wire/datagram.js';
import { formatHostPort } from '../util/addr.js';

/**
 * How much we let pile up in the relay socket before dropping like a full UDP
 * queue would. Above the session's largest relay window (see session.ts), so
 * only a stalled relay connection drops.
 */
const MAX_QUEUED_BYTES = 32 * 1024 * 1024;

/**
 * Datagrams kept while no receiver is set yet. The peer's first datagram can
 * share a TCP read with relay_ready, before the caller's await resumes and
 * calls deliverTo(): without this it was dropped (a lost first `peer ping`).
 */
const MAX_EARLY_DATAGRAMS = 64;

/**
 * The relay path: a TCP connection to the relay that carries this session's
 * sealed datagrams, one per frame, up to MAX_RELAY_DATAGRAM_LEN each. Hands what it receives to
 * its receiver (deliverTo) like every path; emits 'close' (reason).
 */
export class RelayPath extends EventEmitter implements Path, PathSource {
  readonly kind = 'relay' as const;
  readonly maxDatagram = MAX_RELAY_DATAGRAM_LEN;
  readonly remote: string;
  private fs: FramedSocket | null = null;
  private isClosed = false;
  /** Where received datagrams go (the session's `deliver`); dropped until set. */
  private receiver: PathReceiver | null = null;
  /** What arrived before deliverTo() (bounded; copies, as the frame buffer is reused). */
  private early: Buffer[] = [];
  dropped = 0;
  /** When the last datagram arrived on this leg (performance.now()). */
  lastRecv = 0;

  private constructor(remote: string) {
    super();
    this.remote = remote;
  }

  /**
   * Connects, presents the ticket and resolves once the relay has paired both
   * sides. `resume`: the anchor of this side's relay resume chain, so that
   * the leg can be taken back with resume() if it dies.
   */
  static open(host: string, port: number, ticket: string, timeoutMs = 15_000, resume?: string): Promise<RelayPath> {
    return RelayPath.connect(host, port, { type: 'relay_bind', ticket, ...(resume ? { resume } : {}) }, timeoutMs);
  }

  /**
   * Takes this side of a paired session back after its leg died: a new
   * connection that proves, with the next token of the relay resume chain,
   * that it holds the session keys. Rejects with an error whose `code` is the
   * relay's (unknown_session, bad_proof) or 'unreachable'.
   */
  static resume(
    host: string,
    port: number,
    sid: string,
    role: 'visitor' | 'server',
    token: () => string | null,
    timeoutMs = 15_000,
  ): Promise<RelayPath> {
    // The token is taken only once the connection is up: one that never left is not used up.
    return RelayPath.connect(
      host,
      port,
      () => {
        const t = token();
        return t ? { type: 'relay_resume', sid, role, token: t } : null;
      },
      timeoutMs,
    );
  }

  private static connect(
    host: string,
    port: number,
    first: ControlMessage | (() => ControlMessage | null),
    timeoutMs: number,
  ): Promise<RelayPath> {
    const path = new RelayPath(formatHostPort({ host, port }));
    return new Promise((resolve, reject) => {
      const fs = FramedSocket.connect(
        { host, port },
        { idleTimeoutMs: timeoutMs, maxDatagramFrame: MAX_RELAY_DATAGRAM_LEN },
      );
      const socket = fs.socket;
      path.fs = fs;
      let settled = false;
      const fail = (msg: string, code = 'unreachable') => {
        if (settled) return;
        settled = true;
        fs.destroy();
        reject(Object.assign(new Error(msg), { code }));
      };
      socket.once('error', (e: NodeJS.ErrnoException) =>
        fail(`cannot reach the relay at ${formatHostPort({ host, port })}: ${e.code ?? e.message}`),
      );
      socket.once('connect', () => {
        const msg = typeof first === 'function' ? first() : first;
        if (msg) fs.send(msg);
        else fail('no resume token left for this session', 'bad_proof');
      });
      fs.on('message', (m: ControlMessage) => {
        if (m.type === 'relay_ready' && !settled) {
          settled = true;
          socket.setTimeout(0);
          resolve(path);
        } else if (m.type === 'error') {
          fail(`relay refused the session: ${m.message}`, m.code);
          path.shutdown(`relay error: ${m.message}`);
        }
      });
      fs.on('datagram', (d: Buffer) => {
        path.lastRecv = performance.now();
        if (path.receiver) path.receiver(d, path);
        else if (path.early.length < MAX_EARLY_DATAGRAMS) path.early.push(Buffer.from(d));
        else path.dropped++;
      });
      fs.on('protocolError', (_c: string, msg: string) => {
        if (!settled) return fail(`relay protocol error: ${msg}`);
        // A broken byte stream from a paired relay (a leg spliced back after
        // a loss, a middlebox) is a lost leg, not the end of the session: a
        // RST rather than the FIN FramedSocket would send, so that the relay
        // holds the session and this side takes its leg back (relay_resume).
        socket.resetAndDestroy();
      });
      fs.on('close', () => {
        fail(`the relay at ${formatHostPort({ host, port })} closed the connection before the session was paired`);
        path.shutdown('relay connection closed');
      });
    });
  }

  deliverTo(receiver: PathReceiver): void {
    this.receiver = receiver;
    const early = this.early;
    this.early = [];
    for (const d of early) if (!this.isClosed) receiver(d, this);
  }

  get closed(): boolean {
    return this.isClosed;
  }

  send(datagram: Uint8Array): void {
    const fs = this.writable();
    fs?.sendDatagram(datagram);
  }

  sendRecord(length: number, fill: (out: Uint8Array) => void): void {
    const fs = this.writable();
    fs?.sendDatagramFilled(length, fill);
  }

  /** The connection, unless it is closed or so backed up that we drop like a full UDP queue. */
  private writable(): FramedSocket | null {
    const fs = this.fs;
    if (!fs || this.isClosed) return null;
    if (fs.socket.writableLength > MAX_QUEUED_BYTES) {
      this.dropped++;
      return null;
    }
    return fs;
  }

  close(): void {
    this.fs?.close();
    this.shutdown('closed locally');
  }

  /**
   * Drops the connection without a FIN (a RST, if it gets anywhere): the
   * relay then keeps the session for a resume, where a FIN would end it.
   * For a leg whose local address went away.
   */
  /** The local address of the relay connection (IPv4-mapped form unwrapped), for address-change checks. */
  get localAddress(): string | undefined {
    return this.fs?.socket.localAddress?.replace(/^::ffff:/, '');
  }

  abandon(reason: string): void {
    this.fs?.socket.resetAndDestroy();
    this.shutdown(reason);
  }

  private shutdown(reason: string): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.emit('close', reason);
  }
}
