import crypto from 'node:crypto';
import net from 'node:net';
import { ControlClient, FatalError } from './control-client.js';
import type { Session } from '../src/session/session.js';
import { bridge, socketEnd } from '../src/session/bridge.js';
import { TunnelHost, type MuxStream } from './tunnel.js';
import { cryptoReady, deriveSecretKey, createInitiator, HandshakeError } from '../src/crypto/index.js';
import { encodePublicKey, identityReady, signVisit, verifyAccept, type Identity } from '../src/crypto/identity.js';
import type { ControlMessage, MessageOf, Mode } from '../src/wire/control.js';
import type { HostPort } from '../src/util/addr.js';
import type { Logger } from '../src/util/log.js';

export interface VisitOptions {
  name: string;
  server: HostPort;
  secret: string;
  token?: string;
  mode: Mode;
  log: Logger;
  /** Sign our handshakes with this key, for servers that pin visitors (`serve --allow`). */
  identity?: Identity;
  /** Pinned server key: refuse a server that cannot sign with it, whatever the rendezvous says. */
  serverKey?: Uint8Array;
}

/**
 * `peer visit`: opens one tunnel session to the named server and carries every
 * local connection as a stream inside it. The session is opened eagerly, so a
 * wrong secret or unknown name fails at start, and is re-opened on demand if it dies.
 */
export class VisitPeer {
  private control: ControlClient | null = null;
  private psk!: Uint8Array;
  private session: Session | null = null;
  private opening: Promise<Session> | null = null;
  private server: net.Server | null = null;
  private stopped = false;

  readonly host: TunnelHost;

  constructor(readonly opts: VisitOptions) {
    this.host = new TunnelHost({ log: opts.log, mode: opts.mode, server: opts.server });
  }

  async init(): Promise<void> {
    await Promise.all([cryptoReady(), identityReady()]);
    await this.host.open();
    this.psk = await deriveSecretKey(this.opts.secret);
    await this.getSession();
  }

  /** Listens on `bind`; resolves with the bound address. Port-in-use is a clear error. */
  async listen(bind: HostPort): Promise<net.AddressInfo> {
    const server = net.createServer({ allowHalfOpen: true }, (sock) => void this.onLocalConnection(sock));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) =>
        reject(new FatalError(e.code === 'EADDRINUSE' ? `cannot listen on ${bind.host}:${bind.port}: the port is already in use` : `cannot listen on ${bind.host}:${bind.port}: ${e.code ?? e.message}`, e.code ?? 'listen')),
      );
      server.listen({ host: bind.host, port: bind.port }, () => resolve());
    });
    server.on('error', (e) => this.opts.log.error('error', `listener failed: ${e.message}`));
    return server.address() as net.AddressInfo;
  }

  /** Carries stdin/stdout as one stream (ssh ProxyCommand); resolves when both directions end. */
  async stdio(): Promise<void> {
    const session = await this.getSession();
    const stream = session.mux.openStream() as MuxStream;
    await bridge({ readable: process.stdin, writable: process.stdout, destroy: () => process.stdin.destroy() }, stream);
  }

  stop(): void {
    this.stopped = true;
    this.server?.close();
    this.session?.close('visit is shutting down');
    this.host.close();
    this.control?.close();
  }

  private async onLocalConnection(sock: net.Socket): Promise<void> {
    let session: Session;
    try {
      session = await this.getSession();
    } catch (e) {
      this.opts.log.error('error', `cannot open a tunnel to "${this.opts.name}": ${(e as Error).message}`);
      sock.destroy();
      return;
    }
    const stream = session.mux.openStream() as MuxStream;
    await bridge(socketEnd(sock), stream);
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
    const control = new ControlClient({ server: this.opts.server, token: this.opts.token });
    await control.connect();
    control.on('message', (m: ControlMessage) => {
      if (m.type === 'punch') this.host.onPunch(m);
    });
    control.once('close', () => {
      if (this.control === control) this.control = null;
    });
    this.control = control;
    return control;
  }

  private async openSession(): Promise<Session> {
    const { log, name } = this.opts;
    const control = await this.ensureControl();
    const hs = createInitiator(this.psk, {
      initiatorIndex: crypto.randomInt(1, 2 ** 32 - 1),
      conv: crypto.randomInt(1, 2 ** 32 - 1),
      context: Buffer.from(name.toLowerCase()),
    });
    const reqId = crypto.randomBytes(6).toString('hex');
    const isConnected = (m: ControlMessage): m is MessageOf<'connected'> => m.type === 'connected' && m.reqId === reqId;
    let reply: MessageOf<'connected'>;
    try {
      const g = await this.host.gather(control);
      const id = this.opts.identity;
      reply = await control.request(
        {
          type: 'connect',
          reqId,
          name,
          hs: Buffer.from(hs.message).toString('base64'),
          mode: this.opts.mode,
          candidates: g.candidates,
          nat: g.nat,
          ...(id ? { idKey: encodePublicKey(id.publicKey), idSig: Buffer.from(signVisit(id, hs.message)).toString('base64') } : {}),
        },
        isConnected,
      );
    } catch (e) {
      if (e instanceof FatalError && e.code === 'auth_failed') {
        const why = /pinned|--allow|key/.test(e.message) ? e.message.replace(/^handshake failed: /, '') : 'it rejected our secret (check --secret / PEER_SECRET)';
        throw new FatalError(`handshake failed: "${name}" refused us: ${why}`, 'auth_failed');
      }
      throw e;
    }
    const pinned = this.opts.serverKey;
    if (pinned) {
      const hsResp = Buffer.from(reply.hs, 'base64');
      const ok = reply.idKey && reply.idSig && Buffer.from(reply.idKey, 'base64').equals(Buffer.from(pinned)) && verifyAccept(pinned, Buffer.from(reply.idSig, 'base64'), hs.message, hsResp);
      if (!ok) {
        throw new FatalError(`handshake failed: the server answering as "${name}" does not hold the pinned key ${encodePublicKey(pinned)} (--server-key); refusing it`, 'auth_failed');
      }
    }
    let keys;
    try {
      keys = hs.finish(Buffer.from(reply.hs, 'base64'));
    } catch (e) {
      const code = e instanceof HandshakeError ? e.code : 'internal';
      throw new FatalError(`handshake failed (${code}): the server did not prove it knows our secret; wrong --secret, or someone is impersonating "${name}"`, 'auth_failed');
    }
    const tunnel = await this.host.start({ keys, sid: reply.sid, role: 'visitor', ticket: reply.ticket, control, peerNat: reply.nat });
    const session = tunnel.session;
    session.once('close', () => {
      if (this.session === session) this.session = null;
    });
    if (this.opts.mode === 'direct' && session.path?.kind !== 'direct') await waitForDirect(session, name);
    this.session = session;
    return session;
  }
}


/** --mode direct: the session is usable only once a hole is punched. */
function waitForDirect(session: Session, name: string, timeoutMs = 20_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      session.off('path', onPath);
      session.close('no direct path');
      reject(new FatalError(`no direct path to "${name}" could be punched within ${timeoutMs / 1000} s (--mode direct never uses the relay; try --mode auto)`, 'no_direct_path'));
    }, timeoutMs);
    const onPath = (p: { kind: string }) => {
      if (p.kind !== 'direct') return;
      clearTimeout(timer);
      session.off('path', onPath);
      resolve();
    };
    session.on('path', onPath);
  });
}
