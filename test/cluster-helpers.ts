/**
 * Helpers for the cluster tests: a throwaway redis-server on loopback, and
 * simulated peers that speak the control protocol in-process (real framing,
 * real Ed25519 registration signatures), so a test can hold a thousand
 * registrations without a thousand processes.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import net from 'node:net';
import { FramedSocket } from '../src/transport/framed-socket.js';
import { PROTOCOL_VERSION } from '../src/wire/frame.js';
import type { ControlMessage, MessageOf } from '../src/wire/control.js';
import { generateIdentity, signRegistration, type Identity } from '../src/crypto/identity.js';
import { sleep } from '../src/util/backoff.js';
export { sleep };

/** Why the cluster tests cannot run here, or null. */
export function redisMissing(): string | null {
  const r = spawnSync('redis-server', ['--version'], { encoding: 'utf8' });
  return r.error || r.status !== 0
    ? 'redis-server is not installed (apt-get install redis-server); skipping the cluster tests'
    : null;
}

export async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** A redis-server on 127.0.0.1 with no persistence: a restart comes back empty, like a lost Redis. */
export class RedisProc {
  child: ChildProcess | null = null;
  private constructor(readonly port: number) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}/0`;
  }

  static async start(): Promise<RedisProc> {
    const r = new RedisProc(await freePort());
    await r.restart();
    return r;
  }

  /** (Re)starts the server on the same port; resolves once it answers PING. */
  async restart(): Promise<void> {
    if (this.child && this.child.exitCode === null && this.child.signalCode === null)
      throw new Error('redis-server is still running');
    this.child = spawn(
      'redis-server',
      [
        '--port',
        String(this.port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
        '--protected-mode',
        'no',
      ],
      { stdio: 'ignore' },
    );
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (await pingRedis(this.port)) return;
      await sleep(50);
    }
    throw new Error(`redis-server on port ${this.port} did not answer within 10 s`);
  }

  /** Kills the server (SIGKILL: no goodbye to clients) and waits for it to exit. */
  async stop(): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const gone = new Promise<void>((r) => c.once('exit', () => r()));
    c.kill('SIGKILL');
    await gone;
  }
}

/** Sends a raw RESP PING; true on +PONG. */
function pingRedis(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    const timer = setTimeout(() => finish(false), 500);
    const finish = (ok: boolean) => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    s.once('connect', () => s.write('PING\r\n'));
    s.once('data', (d) => finish(d.toString().startsWith('+PONG')));
    s.once('error', () => finish(false));
  });
}

/** Polls `cond` every `everyMs` until it holds or `timeoutMs` passes; returns whether it held. */
export async function until(
  cond: () => boolean | Promise<boolean>,
  timeoutMs: number,
  everyMs = 100,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await cond()) return true;
    await sleep(everyMs);
  }
  return cond();
}

/**
 * One simulated peer: a control connection to a rendezvous node. As a serve
 * it registers names and answers every `incoming` with an `accept` whose
 * handshake field carries its own marker, so a visitor can tell which
 * simulated server answered. As a visitor it sends `connect` and waits.
 */
export class SimPeer {
  readonly fs: FramedSocket;
  welcome: MessageOf<'welcome'> | null = null;
  readonly identity: Identity;
  /** Session ids of the `incoming` messages this peer received. */
  readonly incoming: string[] = [];
  private waiters = new Map<string, (m: ControlMessage) => void>();
  private registerWaiters: ((m: ControlMessage) => void)[] = [];
  private closedFlag = false;
  marker = '';

  private constructor(socket: net.Socket, identity?: Identity) {
    this.identity = identity ?? generateIdentity();
    this.fs = new FramedSocket(socket);
    this.fs.on('message', (m: ControlMessage) => this.onMessage(m));
    this.fs.on('close', () => {
      this.closedFlag = true;
      for (const w of this.registerWaiters.splice(0))
        w({ type: 'error', code: 'internal', message: 'connection closed' });
      for (const [k, w] of this.waiters) {
        this.waiters.delete(k);
        w({ type: 'error', code: 'internal', message: 'connection closed' });
      }
    });
  }

  get closed(): boolean {
    return this.closedFlag;
  }

  /** Connects (from `localAddress`, any 127/8 address, so many peers stay under the per-IP limit) and says hello. */
  static connect(
    port: number,
    opts: { localAddress?: string; identity?: Identity; timeoutMs?: number } = {},
  ): Promise<SimPeer> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host: '127.0.0.1', localAddress: opts.localAddress });
      const peer = new SimPeer(socket, opts.identity);
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`no welcome from 127.0.0.1:${port}`));
      }, opts.timeoutMs ?? 10_000);
      socket.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      socket.once('connect', () =>
        peer.fs.send({ type: 'hello', version: PROTOCOL_VERSION, software: 'cluster-test' }),
      );
      peer.fs.once('message', (m: ControlMessage) => {
        clearTimeout(timer);
        if (m.type !== 'welcome') return reject(new Error(`expected welcome, got ${m.type}`));
        peer.welcome = m;
        resolve(peer);
      });
    });
  }

  /** Registers `name` with a real signature over this connection's nonce; resolves with `registered` or the error. */
  register(name: string, timeoutMs = 10_000): Promise<ControlMessage> {
    if (!this.welcome) throw new Error('not connected');
    this.marker = name;
    const sig = signRegistration(this.identity, Buffer.from(this.welcome.nonce, 'base64'), name);
    return new Promise((resolve) => {
      const timer = setTimeout(
        () => resolve({ type: 'error', code: 'timeout', message: 'no answer to register' }),
        timeoutMs,
      );
      this.registerWaiters.push((m) => {
        clearTimeout(timer);
        resolve(m);
      });
      this.fs.send({
        type: 'register',
        name,
        key: Buffer.from(this.identity.publicKey).toString('base64'),
        sig: Buffer.from(sig).toString('base64'),
      });
    });
  }

  /** Asks for a session to `name`; resolves with `connected` or `error` (timeout: a synthetic error). */
  connectTo(name: string, timeoutMs = 15_000): Promise<ControlMessage> {
    const reqId = crypto.randomBytes(6).toString('hex');
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiters.delete(reqId);
        resolve({
          type: 'error',
          code: 'timeout',
          message: `no answer to connect ${name} within ${timeoutMs} ms`,
          reqId,
        });
      }, timeoutMs);
      this.waiters.set(reqId, (m) => {
        clearTimeout(timer);
        resolve(m);
      });
      this.fs.send({
        type: 'connect',
        reqId,
        name,
        hs: Buffer.from('hello').toString('base64'),
        mode: 'relay',
        candidates: [],
      });
    });
  }

  close(): void {
    this.fs.destroy();
  }

  private onMessage(m: ControlMessage): void {
    switch (m.type) {
      case 'ping':
        this.fs.send({ type: 'pong', t: m.t });
        return;
      case 'registered':
        this.registerWaiters.shift()?.(m);
        return;
      case 'incoming':
        this.incoming.push(m.sid);
        this.fs.send({
          type: 'accept',
          sid: m.sid,
          hs: Buffer.from(`served-by:${this.marker}`).toString('base64'),
          candidates: [],
        });
        return;
      case 'connected':
        this.waiters.get(m.reqId)?.(m);
        this.waiters.delete(m.reqId);
        return;
      case 'error':
        if (m.reqId && this.waiters.has(m.reqId)) {
          this.waiters.get(m.reqId)!(m);
          this.waiters.delete(m.reqId);
        } else if (!m.reqId) {
          this.registerWaiters.shift()?.(m);
        }
        return;
      default:
        return;
    }
  }
}

/** The marker a SimPeer put in its accept, read back from `connected`. */
export function servedBy(m: ControlMessage): string | null {
  if (m.type !== 'connected') return null;
  const text = Buffer.from(m.hs, 'base64').toString();
  return text.startsWith('served-by:') ? text.slice('served-by:'.length) : null;
}

/** Runs `fn` over `items` with at most `limit` in flight. */
export async function pool<T, R>(items: T[], limit: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

export function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}
