import { EventEmitter } from 'node:events';
import { happyEyeballs } from '../src/util/connect.js';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { FramedSocket } from '../src/transport/framed-socket.js';
import { PROTOCOL_VERSION } from '../src/wire/frame.js';
import type { ControlMessage, MessageOf, Mode } from '../src/wire/control.js';
import { formatHostPort, type HostPort } from '../src/util/addr.js';
import type { Logger } from '../src/util/log.js';
import { isDue, processTicker } from '../src/util/ticker.js';
import { CodedError, codeOf, type ErrorCode } from '../src/util/errors.js';

export const SOFTWARE = 'holepunch/0.1';

/** A failure the user must fix (wrong token, unknown name...): retrying will not help. Other CodedErrors may pass. */
export class FatalError extends CodedError {
  constructor(message: string, code: ErrorCode) {
    super(code, message);
  }
}

/** What serve and visit both take: the rendezvous to use and the session's secret, mode and logger. */
export interface PeerOptions {
  name: string;
  server: HostPort;
  /** Every rendezvous node to use, in order (`--server a:7000,b:7000`); default: just `server`. */
  servers?: HostPort[];
  secret: string;
  token?: string;
  mode: Mode;
  log: Logger;
  /** Path MTU settings for the tunnels (`--max-datagram`, `--pmtu-raise-interval`; see peer/tunnel.ts). */
  pmtu?: { maxDatagram?: number; raiseIntervalMs?: number };
  /** Ask the gateway for a port mapping of the data socket (default true; `--no-portmap`). */
  portmap?: boolean;
  /** Open an IPv6 data socket and announce IPv6 candidates (default true; `--no-ipv6`). */
  ipv6?: boolean;
}

export interface ControlClientOptions {
  server: HostPort;
  token?: string;
  connectTimeoutMs?: number;
  pingIntervalMs?: number;
}

/**
 * The peer's control connection to the rendezvous. `connect()` resolves with
 * the welcome; afterwards 'message' carries every control message and 'close'
 * fires once with a reason.
 */
export class ControlClient extends EventEmitter {
  private fs: FramedSocket | null = null;
  /** When the last message arrived (performance.now()). */
  lastRecv = 0;
  /** Cancels the ping, which rides the process ticker. */
  private pinger: (() => void) | null = null;
  welcome: MessageOf<'welcome'> | null = null;
  rttMs = 0;
  isClosed = false;

  constructor(readonly opts: ControlClientOptions) {
    super();
  }

  connect(): Promise<MessageOf<'welcome'>> {
    const { host, port } = this.opts.server;
    const where = formatHostPort({ host, port });
    return new Promise((resolve, reject) => {
      const started = Date.now();
      const socket = net.connect(happyEyeballs({ host, port }));
      const connectTimeoutMs = this.opts.connectTimeoutMs ?? 10_000;
      const fs = new FramedSocket(socket, { idleTimeoutMs: connectTimeoutMs });
      this.fs = fs;
      let settled = false;
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        fs.destroy();
        reject(err);
      };
      socket.once('error', (e: NodeJS.ErrnoException) => {
        const why = e.code === 'ECONNREFUSED' ? 'connection refused' : (e.code ?? e.message);
        fail(new CodedError('unreachable', `cannot reach the rendezvous at ${where}: ${why}`));
      });
      socket.once('connect', () =>
        fs.send({ type: 'hello', version: PROTOCOL_VERSION, software: SOFTWARE, token: this.opts.token }),
      );
      fs.on('message', (m: ControlMessage) => {
        this.lastRecv = performance.now();
        if (!settled) {
          if (m.type === 'welcome') {
            settled = true;
            this.welcome = m;
            this.rttMs = Date.now() - started;
            socket.setTimeout(90_000);
            this.startPing();
            resolve(m);
          } else if (m.type === 'error') {
            fail(
              m.code === 'bad_token' || m.code === 'bad_version'
                ? new FatalError(`rendezvous refused us: ${m.message}`, m.code)
                : new CodedError(m.code, `rendezvous error: ${m.message}`),
            );
          }
          return;
        }
        if (m.type === 'pong') {
          this.rttMs = Date.now() - m.t;
          return;
        }
        if (m.type === 'ping') {
          this.send({ type: 'pong', t: m.t });
          return;
        }
        this.emit('message', m);
      });
      fs.on('protocolError', (code: ErrorCode, msg: string) =>
        fail(
          code === 'timeout' && !settled
            ? new CodedError(
                'unreachable',
                `no answer from ${where} within ${Math.round(connectTimeoutMs / 1000)} s: ` +
                  'is a rendezvous listening there?',
              )
            : new CodedError(code, `rendezvous protocol error: ${msg}`),
        ),
      );
      fs.on('close', () => {
        this.isClosed = true;
        fail(new CodedError('unreachable', `the rendezvous at ${where} closed the connection`));
        this.stopPing();
        this.emit('close');
      });
    });
  }

  send(msg: ControlMessage): boolean {
    return this.fs?.send(msg) ?? false;
  }

  /** Sends a request and waits for the first message `match` accepts (or an error for the same reqId). */
  request<T extends ControlMessage>(
    msg: ControlMessage,
    match: (m: ControlMessage) => m is T,
    timeoutMs = 15_000,
  ): Promise<T> {
    return new Promise((resolve, reject) => {
      const reqId = 'reqId' in msg ? msg.reqId : undefined;
      const done = () => {
        clearTimeout(timer);
        this.off('message', onMsg);
        this.off('close', onClose);
      };
      const onMsg = (m: ControlMessage) => {
        if (match(m)) {
          done();
          resolve(m);
        } else if (m.type === 'error' && (m.reqId === undefined || m.reqId === reqId)) {
          done();
          reject(new FatalError(m.message, m.code));
        }
      };
      const onClose = () => {
        done();
        reject(new CodedError('disconnected', 'the rendezvous closed the connection'));
      };
      const timer = setTimeout(() => {
        done();
        reject(new CodedError('timeout', `no answer from the rendezvous within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this.on('message', onMsg);
      this.on('close', onClose);
      this.send(msg);
    });
  }

  get remoteAddress(): string | undefined {
    return this.fs?.socket.remoteAddress;
  }

  close(): void {
    this.stopPing();
    this.fs?.close();
  }

  /**
   * Is the connection still alive? A ping, and any message within `timeoutMs`
   * answers yes. For a check after a sign that the network changed.
   */
  async check(timeoutMs: number): Promise<boolean> {
    if (this.isClosed) return false;
    const t0 = performance.now();
    this.send({ type: 'ping', t: Date.now() });
    await new Promise((r) => setTimeout(r, timeoutMs).unref());
    return this.lastRecv > t0;
  }

  /**
   * Drops the connection without a FIN (its local address went away): the
   * rendezvous then keeps our sessions for a resume; 'close' follows.
   */
  /** The local address of the connection (IPv4-mapped form unwrapped), for address-change checks. */
  get localAddress(): string | undefined {
    return this.fs?.socket.localAddress?.replace(/^::ffff:/, '');
  }

  abandon(): void {
    this.stopPing();
    this.fs?.socket.resetAndDestroy();
  }

  /**
   * Keeps the connection inside the rendezvous idle timeout (90 s) and measures
   * its RTT. Pings of every control connection in the process leave on the same
   * tick; a quarter of the interval is precision enough and lets a process with
   * nothing else to time tick rarely.
   */
  private startPing(): void {
    const every = this.opts.pingIntervalMs ?? 20_000;
    const resolution = every / 4;
    let last = performance.now();
    this.stopPing();
    this.pinger = processTicker.subscribe((now) => {
      if (!isDue(now - last, every, resolution)) return;
      last = now;
      this.send({ type: 'ping', t: Date.now() });
    }, resolution);
  }

  private stopPing(): void {
    this.pinger?.();
    this.pinger = null;
  }
}

/**
 * The rendezvous nodes a peer may use (`--server a:7000,b:7000`), tried in
 * order. After the one in use is lost, the next attempt starts with the one
 * after it, so a dead node costs one refused (or timed-out) connection rather
 * than one per retry; except while it holds live sessions of ours (see
 * lost()). With a single address this is exactly that address.
 */
export class ServerList {
  private preferred = 0;

  constructor(readonly servers: HostPort[]) {
    if (!servers.length) throw new Error('no rendezvous address given');
  }

  /** Every server, the preferred one first. */
  order(): HostPort[] {
    const n = this.servers.length;
    return this.servers.map((_, i) => this.servers[(this.preferred + i) % n]);
  }

  /** `s` answered: keep using it. */
  worked(s: HostPort): void {
    const i = this.servers.indexOf(s);
    if (i >= 0) this.preferred = i;
  }

  /**
   * The connection to `s` was lost: start with the next one next time,
   * unless `holdsSessions`: live sessions were brokered by `s`, whose records,
   * resume anchors and relay pairs live there and nowhere else (CLUSTER.md),
   * so only `s` can take them back (`session_resume`) and order new punches.
   * It is tried first again; if it is gone, that costs one failed attempt.
   */
  lost(s: HostPort, holdsSessions = false): void {
    if (holdsSessions) return;
    const i = this.servers.indexOf(s);
    if (i >= 0 && i === this.preferred) this.preferred = (i + 1) % this.servers.length;
  }
}

/** Errors that another rendezvous node may not have: try the next one in the list. */
export function tryNextServer(e: unknown): boolean {
  return !(e instanceof FatalError) || e.code === 'service_unavailable' || e.code === 'limit';
}

/**
 * Runs `attempt` against each server of `list` in order until one succeeds.
 * Errors every node would give (bad token, name taken...) end it at once.
 * With one address, its error is passed on unchanged; with several, the
 * reasons are joined into one line.
 */
export async function withFailover<T>(list: ServerList, attempt: (server: HostPort) => Promise<T>): Promise<T> {
  const errors: unknown[] = [];
  for (const server of list.order()) {
    try {
      const r = await attempt(server);
      list.worked(server);
      return r;
    } catch (e) {
      if (!tryNextServer(e)) throw e;
      errors.push(e);
    }
  }
  if (errors.length === 1) throw errors[0];
  const reasons = errors.map((e) => (e as Error).message).join('; ');
  const last = errors[errors.length - 1];
  throw last instanceof FatalError
    ? new FatalError(`no rendezvous could take us: ${reasons}`, last.code)
    : new CodedError(codeOf(last), `no rendezvous could take us: ${reasons}`);
}
