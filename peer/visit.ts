import crypto from 'node:crypto';
import { formatHostPort } from '../src/util/addr.js';
import net from 'node:net';
import { ControlClient, FatalError, ServerList, withFailover, type PeerOptions } from './control-client.js';
import type { Session } from '../src/session/session.js';
import { bridge, bridgeUserReads, socketEnd } from '../src/session/bridge.js';
import { ReadTarget, switchToUserReads } from '../src/transport/user-reads.js';
import { TunnelHost, type MuxStream } from './tunnel.js';
import { StreamSet, drainAndFlush } from './drain.js';
import { cryptoReady, deriveSecretKey, createInitiator, HandshakeError } from '../src/crypto/index.js';
import { encodePublicKey, identityReady, signVisit, verifyAccept, type Identity } from '../src/crypto/identity.js';
import type { ControlMessage, MessageOf, Proto } from '../src/wire/control.js';
import { newUdpCounters } from '../src/udp/stats.js';
import { UdpVisitor } from './udp-visit.js';
import type { HostPort } from '../src/util/addr.js';
import { Backoff, sleep } from '../src/util/backoff.js';
import { codeOf, listenError } from '../src/util/errors.js';

/** Reconnecting the control connection of a live session: first wait, cap of the backoff, and a bound on attempts. */
export const CONTROL_RECONNECT_FIRST_MS = 250;
export const CONTROL_RECONNECT_MAX_MS = 10_000;
const MAX_CONTROL_RECONNECTS = 10_000;

export interface VisitOptions extends PeerOptions {
  /** Sign our handshakes with this key, for servers that pin visitors (`serve --allow`). */
  identity?: Identity;
  /** Pinned server key: refuse a server that cannot sign with it, whatever the rendezvous says. */
  serverKey?: Uint8Array;
  /** How long a session waits for a lost path to come back (--resume-timeout). */
  resumeTimeoutMs?: number;
  /** What the name carries: TCP connections (default) or UDP datagrams (--proto udp). */
  proto?: Proto;
  /** UDP flows idle this long are forgotten (--udp-idle-timeout; UDP_FLOW_IDLE_MS). */
  udpIdleMs?: number;
}

/**
 * `peer visit`: opens one tunnel session to the named server and carries every
 * local connection as a stream inside it. The session is opened eagerly, so a
 * wrong secret or unknown name fails at start, and is re-opened on demand if it dies.
 */
export class VisitPeer {
  private control: ControlClient | null = null;
  private psk: Uint8Array | undefined;
  private pskReady: Promise<Uint8Array> | null = null;
  private session: Session | null = null;
  private opening: Promise<Session> | null = null;
  private server: net.Server | null = null;
  /** The UDP listener of a --proto udp visit. */
  private udpListener: UdpVisitor | null = null;
  private stopped = false;
  private draining = false;
  private reopenTimer: NodeJS.Timeout | null = null;
  private readonly reopen = new Backoff(REOPEN);
  private keepingControl = false;

  readonly host: TunnelHost;
  private readonly servers: ServerList;
  /** Connections being carried, for graceful shutdown and status. */
  readonly streams = new StreamSet();
  /** Datagrams, drops and flows of a --proto udp visit. */
  readonly udp = newUdpCounters();

  constructor(readonly opts: VisitOptions) {
    this.host = new TunnelHost({
      log: opts.log,
      mode: opts.mode,
      server: opts.server,
      resumeTimeoutMs: opts.resumeTimeoutMs,
      pmtu: opts.pmtu,
      portmap: opts.portmap,
      ipv6: opts.ipv6,
    });
    this.servers = new ServerList(opts.servers?.length ? opts.servers : [opts.server]);
  }

  async init(): Promise<void> {
    // scrypt takes 100-300 ms on the libuv pool: let it run while we connect
    // to the rendezvous and run STUN, instead of before (cold start time).
    this.pskReady = deriveSecretKey(this.opts.secret);
    this.pskReady.catch(() => {});
    await Promise.all([cryptoReady(), identityReady()]);
    await this.host.open();
    await this.getSession();
  }

  get proto(): Proto {
    return this.opts.proto ?? 'tcp';
  }

  /** UDP flows open now (--proto udp). */
  get udpFlows(): number {
    return this.udpListener?.flows ?? 0;
  }

  /** Listens on `bind` (TCP, or UDP with --proto udp); resolves with the bound address. Port in use: a clear error. */
  async listen(bind: HostPort): Promise<net.AddressInfo> {
    if (this.proto === 'udp') {
      const udp = new UdpVisitor({
        log: this.opts.log,
        stats: this.udp,
        idleMs: this.opts.udpIdleMs,
        wantSession: () => this.scheduleReopen(),
      });
      this.udpListener = udp;
      const addr = await udp.listen(bind);
      if (this.session && !this.session.closed) udp.attach(this.session);
      return { address: addr.address, family: addr.family, port: addr.port };
    }
    // No Nagle on the local leg, as Go (frp, Tailscale) does: small writes are
    // already gathered per event-loop turn (session/bridge.ts), and Nagle would
    // hold an interactive reply behind the application's delayed ACK.
    const server = net.createServer(
      { allowHalfOpen: true, noDelay: true },
      (sock) => void this.onLocalConnection(sock),
    );
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => reject(listenError(e, formatHostPort(bind))));
      server.listen({ host: bind.host, port: bind.port }, () => resolve());
    });
    server.on('error', (e) => this.opts.log.error('error', `listener failed: ${e.message}`, { code: 'listen_failed' }));
    return server.address() as net.AddressInfo;
  }

  /** Carries stdin/stdout as one stream (ssh ProxyCommand); resolves when both directions end. */
  async stdio(): Promise<void> {
    const session = await this.getSession();
    const stream = session.mux.openStream() as MuxStream;
    await bridge({ readable: process.stdin, writable: process.stdout, destroy: () => process.stdin.destroy() }, stream);
  }

  /** True while a tunnel session is open. */
  get connected(): boolean {
    return !!this.session && !this.session.closed;
  }

  /**
   * Graceful shutdown: stop accepting, let open connections finish for up to
   * `graceMs`, end the rest with a FIN, wait for the FINs to be acknowledged, stop.
   */
  async drain(graceMs: number): Promise<void> {
    this.draining = true;
    this.server?.close();
    this.udpListener?.close();
    await drainAndFlush(this, graceMs);
    this.stop();
    await this.host.released(); // the port mapping is deleted from the router
  }

  stop(): void {
    this.stopped = true;
    if (this.reopenTimer) clearTimeout(this.reopenTimer);
    this.server?.close();
    this.udpListener?.close();
    this.session?.close('visit is shutting down');
    this.host.close();
    this.control?.close();
  }

  private async onLocalConnection(sock: net.Socket): Promise<void> {
    if (this.draining || this.stopped) return void sock.destroy();
    sock.on('error', () => {});
    let session: Session;
    try {
      session = await this.sessionWithRetry();
    } catch (e) {
      this.opts.log.error('error', `cannot open a tunnel to "${this.opts.name}": ${(e as Error).message}`, {
        code: codeOf(e),
      });
      sock.destroy();
      return;
    }
    if (sock.destroyed) return;
    const stream = session.mux.openStream() as MuxStream;
    // Reads move to the shared buffer (see transport/user-reads.ts); a socket
    // that cannot move is bridged with Node's streams.
    const target = new ReadTarget();
    const moved = switchToUserReads(sock, target.onChunk);
    const done = moved ? bridgeUserReads(moved.socket, target, stream, moved.rest) : bridge(socketEnd(sock), stream);
    this.streams.track(moved?.socket ?? sock, stream, done);
    await done;
  }

  /**
   * The open session, or a new one: a connection that arrives while the
   * session is down waits through a few attempts (the server may be
   * restarting) rather than failing at once. Errors retrying cannot fix end it.
   */
  private async sessionWithRetry(attempts = 5): Promise<Session> {
    const backoff = new Backoff(CONNECTION_RETRY);
    for (let i = 1; ; i++) {
      try {
        return await this.getSession();
      } catch (e) {
        if (i >= attempts || this.stopped || !retriable(e)) throw e;
        const delay = backoff.next();
        this.opts.log.warn('reconnect_failed', `tunnel to "${this.opts.name}" not open yet: ${(e as Error).message}`, {
          name: this.opts.name,
          attempt: i,
          retryInMs: delay,
        });
        await sleep(delay);
      }
    }
  }

  /** With --bind, a dead session is re-opened in the background (REOPEN backoff) for the next connection. */
  private scheduleReopen(): void {
    if ((!this.server && !this.udpListener) || this.stopped || this.draining || this.reopenTimer) return;
    this.reopenTimer = setTimeout(() => {
      this.reopenTimer = null;
      if (this.connected || this.stopped) return;
      this.getSession().then(
        () => this.reopen.reset(),
        (e: Error) => {
          this.opts.log.warn('reconnect_failed', `re-opening the tunnel to "${this.opts.name}": ${e.message}`, {
            name: this.opts.name,
            retryInMs: this.reopen.peek(),
          });
          if (retriable(e)) this.scheduleReopen();
        },
      );
    }, this.reopen.next());
    this.reopenTimer.unref();
  }

  private getSession(): Promise<Session> {
    if (this.session && !this.session.closed) return Promise.resolve(this.session);
    if (!this.opening) {
      this.opening = this.openSession().finally(() => {
        this.opening = null;
      });
    }
    return this.opening;
  }

  private async ensureControl(): Promise<ControlClient> {
    if (this.control && !this.control.isClosed) return this.control;
    // Sessions already up (direct, or relayed through a live node) do not depend on this connection.
    const control = await withFailover(this.servers, async (server) => {
      const c = new ControlClient({ server, token: this.opts.token });
      await c.connect();
      return c;
    });
    const server = control.opts.server;
    // The new session's relay leg goes to the node we talk to.
    this.host.opts.server = server;
    control.on('message', (m: ControlMessage) => {
      if (m.type === 'punch') this.host.onPunch(m);
    });
    control.once('close', () => {
      this.servers.lost(server, this.host.holdsSessions);
      if (this.control === control) this.control = null;
      void this.keepControl();
    });
    this.control = control;
    this.host.adoptControl(control);
    return control;
  }

  /**
   * The control connection was lost while a session is live: reconnect (any
   * node of --server, with backoff) and re-announce the session with its
   * resume proof, so the rendezvous can broker a new punch for it.
   */
  private async keepControl(): Promise<void> {
    if (this.keepingControl) return;
    this.keepingControl = true;
    const backoff = new Backoff({ initialMs: CONTROL_RECONNECT_FIRST_MS, maxMs: CONTROL_RECONNECT_MAX_MS });
    try {
      for (let attempt = 1; attempt <= MAX_CONTROL_RECONNECTS; attempt++) {
        if (this.stopped || !this.connected || (this.control && !this.control.isClosed)) return;
        if (await this.host.nap(backoff.next())) backoff.reset();
        if (this.stopped || !this.connected) return;
        try {
          await this.ensureControl();
          return;
        } catch (e) {
          this.opts.log.warn('reconnect_failed', `rendezvous not reachable yet: ${(e as Error).message}`, {
            attempt,
            retryInMs: backoff.peek(),
          });
        }
      }
    } finally {
      this.keepingControl = false;
    }
  }

  private async openSession(): Promise<Session> {
    const { name } = this.opts;
    const control = await this.ensureControl();
    const gathered = this.host.gather(control);
    gathered.catch(() => {}); // awaited below; this only keeps an early failure from counting as unhandled
    this.psk ??= await this.pskReady!;
    const hs = createInitiator(this.psk, {
      initiatorIndex: crypto.randomInt(1, 2 ** 32 - 1),
      conv: crypto.randomInt(1, 2 ** 32 - 1),
      context: Buffer.from(name.toLowerCase()),
    });
    const reqId = crypto.randomBytes(6).toString('hex');
    const isConnected = (m: ControlMessage): m is MessageOf<'connected'> => m.type === 'connected' && m.reqId === reqId;
    let reply: MessageOf<'connected'>;
    try {
      const g = await gathered;
      const id = this.opts.identity;
      reply = await control.request(
        {
          type: 'connect',
          reqId,
          name,
          hs: Buffer.from(hs.message).toString('base64'),
          mode: this.opts.mode,
          proto: this.proto,
          candidates: g.candidates,
          nat: g.nat,
          ...(id
            ? { idKey: encodePublicKey(id.publicKey), idSig: Buffer.from(signVisit(id, hs.message)).toString('base64') }
            : {}),
        },
        isConnected,
      );
    } catch (e) {
      // A node cut off from the cluster registry cannot find names on other nodes: let the retry use another node.
      if (e instanceof FatalError && e.code === 'service_unavailable' && this.servers.servers.length > 1)
        control.close();
      // The server's refusal names its reason (secret, --allow); it only ever answers auth_failed for these.
      if (e instanceof FatalError && e.code === 'auth_failed')
        throw new FatalError(`handshake failed: "${name}" refused us: ${e.message}`, 'auth_failed');
      throw e;
    }
    const pinned = this.opts.serverKey;
    if (pinned) {
      const hsResp = Buffer.from(reply.hs, 'base64');
      const ok =
        reply.idKey &&
        reply.idSig &&
        Buffer.from(reply.idKey, 'base64').equals(Buffer.from(pinned)) &&
        verifyAccept(pinned, Buffer.from(reply.idSig, 'base64'), hs.message, hsResp);
      if (!ok) {
        throw new FatalError(
          `handshake failed: the server answering as "${name}" does not hold the pinned key ` +
            `${encodePublicKey(pinned)} (--server-key); refusing it`,
          'auth_failed',
        );
      }
    }
    let keys;
    try {
      keys = hs.finish(Buffer.from(reply.hs, 'base64'));
    } catch (e) {
      const code = e instanceof HandshakeError ? e.code : 'internal';
      throw new FatalError(
        `handshake failed (${code}): the server did not prove it knows our secret; ` +
          `wrong --secret, or someone is impersonating "${name}"`,
        'auth_failed',
      );
    }
    const tunnel = await this.host.start({
      keys,
      sid: reply.sid,
      role: 'visitor',
      ticket: reply.ticket,
      control,
      peerNat: reply.nat,
    });
    const session = tunnel.session;
    session.once('close', () => {
      if (this.session === session) this.session = null;
      this.scheduleReopen();
    });
    if (this.opts.mode === 'direct' && session.path?.kind !== 'direct') await waitForDirect(session, name);
    this.session = session;
    this.udpListener?.attach(session);
    return session;
  }
}

/** A connection that arrives while the session is down retries opening it after 250 ms, 500 ms... up to 4 s apart. */
const CONNECTION_RETRY = { initialMs: 250, maxMs: 4000 };
/** With --bind, a dead session is re-opened in the background after 0.5 s, 1 s... up to 30 s apart. */
const REOPEN = { initialMs: 500, maxMs: 30_000 };

/** Failures that may go away by themselves (server restarting, network blip); a wrong secret or key will not. */
function retriable(e: unknown): boolean {
  return (
    !(e instanceof FatalError) ||
    e.code === 'unknown_name' ||
    e.code === 'timeout' ||
    e.code === 'limit' ||
    e.code === 'service_unavailable'
  );
}

/** --mode direct: the session is usable only once a hole is punched. */
function waitForDirect(session: Session, name: string, timeoutMs = 20_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      session.off('path', onPath);
      session.off('close', onClose);
    };
    const fail = (why: string) =>
      reject(
        new FatalError(
          `no direct path to "${name}": ${why} (--mode direct never uses the relay; try --mode auto)`,
          'no_direct_path',
        ),
      );
    const timer = setTimeout(() => {
      done();
      session.close('no direct path');
      fail(`none could be punched within ${timeoutMs / 1000} s`);
    }, timeoutMs);
    const onPath = (p: { kind: string }) => {
      if (p.kind !== 'direct') return;
      done();
      resolve();
    };
    const onClose = (reason: string) => {
      done();
      fail(`the session closed before one opened (${reason})`);
    };
    session.on('path', onPath);
    session.on('close', onClose);
  });
}
