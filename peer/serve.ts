import crypto from 'node:crypto';
import { formatHostPort } from '../src/util/addr.js';
import net from 'node:net';
import { ControlClient, FatalError, ServerList, withFailover, type PeerOptions } from './control-client.js';
import { bridgeUserReads } from '../src/session/bridge.js';
import { ReadTarget, userReadOptions } from '../src/transport/user-reads.js';
import { TunnelHost, type MuxStream } from './tunnel.js';
import { MuxResetReason } from '../src/wire/mux-frame.js';
import { StreamSet, drainAndFlush } from './drain.js';
import { cryptoReady, deriveSecretKey, respond, HandshakeError } from '../src/crypto/index.js';
import {
  encodePublicKey,
  generateIdentity,
  identityReady,
  signAccept,
  signRegistration,
  verifyVisit,
  type Identity,
} from '../src/crypto/identity.js';
import type { ControlMessage, MessageOf, Proto } from '../src/wire/control.js';
import { newUdpCounters } from '../src/udp/stats.js';
import { UdpServeFlows } from './udp-serve.js';
import type { HostPort } from '../src/util/addr.js';
import { Backoff } from '../src/util/backoff.js';

export interface ServeOptions extends PeerOptions {
  local: HostPort;
  /** Long-term key: holds the name, and signs handshakes for visitors that pin it (`visit --server-key`). */
  identity?: Identity;
  /** Pinned visitor keys: when non-empty, only visitors holding one of these may open a session. */
  allow?: Uint8Array[];
  /** How long a session waits for a lost path to come back (--resume-timeout). */
  resumeTimeoutMs?: number;
  /** What the name carries: TCP connections (default) or UDP datagrams (--proto udp). */
  proto?: Proto;
  /** UDP flows idle this long are closed with their socket (--udp-idle-timeout; UDP_FLOW_IDLE_MS). */
  udpIdleMs?: number;
  /** Reconnect backoff bounds. */
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

/**
 * `peer serve`: keeps a registration on the rendezvous, accepts sessions from
 * visitors who know the secret, and connects each of their streams to the
 * local service. Reconnects with capped exponential backoff; live sessions
 * are independent of the control connection and keep running meanwhile.
 */
export class ServePeer {
  private control: ControlClient | null = null;
  private psk!: Uint8Array;
  private identity!: Identity;
  readonly host: TunnelHost;
  private readonly servers: ServerList;
  private stopped = false;
  private draining = false;
  private registeredOnce = false;
  /** True while the name is held on the rendezvous. */
  registered = false;
  /** Connections being carried, for graceful shutdown and status. */
  readonly streams = new StreamSet();
  /** Datagrams, drops and flows of a UDP service (a TCP one counts only wrong_proto drops). */
  readonly udp = newUdpCounters();

  constructor(readonly opts: ServeOptions) {
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

  /** Resolves after the first registration; rejects on errors that retrying cannot fix. */
  async start(): Promise<void> {
    await Promise.all([cryptoReady(), identityReady()]);
    this.psk = await deriveSecretKey(this.opts.secret);
    this.identity = this.opts.identity ?? generateIdentity();
    await this.host.open();
    await this.connectOnce();
    this.registeredOnce = true;
  }

  /**
   * Graceful shutdown: give up the name (no new visitors), refuse new streams,
   * let open ones finish for up to `graceMs`, end the rest with a FIN, stop.
   */
  async drain(graceMs: number): Promise<void> {
    this.draining = true;
    this.stopped = true;
    this.control?.close();
    await drainAndFlush(this, graceMs);
    this.stop();
    await this.host.released(); // the port mapping is deleted from the router
  }

  stop(): void {
    this.stopped = true;
    this.control?.close();
    this.host.close();
  }

  /** Registers through the first rendezvous node that takes us (the one after a node we just lost, first). */
  private connectOnce(): Promise<void> {
    return withFailover(this.servers, (server) => this.registerVia(server));
  }

  /**
   * Measures the NAT on the data socket once, in the background after
   * registering (so `ready` never waits on STUN), and tells the rendezvous:
   * its dashboard then shows this name's NAT type before any session ran.
   */
  private async reportNat(control: ControlClient): Promise<void> {
    if (!control.welcome?.features?.includes('nat_report')) return;
    const g = await this.host.gather(control).catch(() => null);
    if (!g || g.nat.mapping === 'unknown' || control.isClosed) return;
    control.send({ type: 'nat_report', nat: g.nat });
  }

  private async registerVia(server: HostPort): Promise<void> {
    const { log } = this.opts;
    const control = new ControlClient({ server, token: this.opts.token });
    const welcome = await control.connect();
    this.control = control;
    // New sessions' relay legs go to the node we are registered on.
    this.host.opts.server = server;
    const sig = signRegistration(this.identity, Buffer.from(welcome.nonce, 'base64'), this.opts.name);
    const isRegistered = (m: ControlMessage): m is MessageOf<'registered'> => m.type === 'registered';
    control.on('message', (m: ControlMessage) => this.onControl(control, m));
    try {
      await control.request(
        {
          type: 'register',
          name: this.opts.name,
          key: Buffer.from(this.identity.publicKey).toString('base64'),
          sig: Buffer.from(sig).toString('base64'),
          // Known once a session has run STUN (a re-registration): shown on the rendezvous dashboard.
          ...(this.host.gathered ? { nat: this.host.gathered.nat } : {}),
          proto: this.proto,
        },
        isRegistered,
      );
    } catch (e) {
      control.close();
      throw e;
    }
    log.info(
      'ready',
      `serving "${this.opts.name}" -> ${this.proto === 'udp' ? 'udp ' : ''}` +
        `${formatHostPort(this.opts.local)} via ${formatHostPort(server)}`,
      {
        name: this.opts.name,
        local: formatHostPort(this.opts.local),
        proto: this.proto,
        server: formatHostPort(server),
        reconnect: this.registeredOnce,
      },
    );
    this.registered = true;
    // Live sessions move to this connection and re-announce themselves (resume).
    this.host.adoptControl(control);
    if (!this.host.gathered) void this.reportNat(control);
    control.once('close', () => {
      this.registered = false;
      this.servers.lost(server, this.host.holdsSessions);
      if (this.stopped) return;
      log.warn('disconnected', 'lost the rendezvous; reconnecting', { server: formatHostPort(server) });
      void this.reconnectLoop();
    });
  }

  get proto(): Proto {
    return this.opts.proto ?? 'tcp';
  }

  private async reconnectLoop(): Promise<void> {
    const backoff = new Backoff({ initialMs: this.opts.minBackoffMs ?? 500, maxMs: this.opts.maxBackoffMs ?? 30_000 });
    for (let attempt = 1; !this.stopped; attempt++) {
      // +-20 % jitter, so servers that lost the same rendezvous do not all come back at once.
      if (await this.host.nap(backoff.next() * (0.8 + Math.random() * 0.4))) backoff.reset();
      if (this.stopped) return;
      try {
        await this.connectOnce();
        return;
      } catch (e) {
        const err = e as Error;
        if (err instanceof FatalError && err.code !== 'name_taken') {
          this.opts.log.error('error', `reconnect refused: ${err.message}`, { code: err.code });
        } else {
          this.opts.log.warn('reconnect_failed', err.message, { attempt, retryInMs: backoff.peek() });
        }
      }
    }
  }

  private onControl(control: ControlClient, m: ControlMessage): void {
    if (m.type === 'incoming') void this.onIncoming(control, m);
    else if (m.type === 'punch') this.host.onPunch(m);
  }

  private async onIncoming(control: ControlClient, m: MessageOf<'incoming'>): Promise<void> {
    const { log } = this.opts;
    if (this.opts.mode === 'direct' && m.mode === 'relay') {
      control.send({
        type: 'reject',
        sid: m.sid,
        code: 'mode_mismatch',
        message: 'the server runs with --mode direct and the visitor asked for --mode relay',
      });
      return;
    }
    // The rendezvous checks this already; an older one does not (it strips the field, and then it is absent).
    if (m.proto !== undefined && m.proto !== this.proto) {
      control.send({
        type: 'reject',
        sid: m.sid,
        code: 'proto_mismatch',
        message: `"${this.opts.name}" is served as ${this.proto.toUpperCase()} (visit --proto ${this.proto})`,
      });
      return;
    }
    const hsInit = Buffer.from(m.hs, 'base64');
    const refusal = this.checkVisitorKey(m, hsInit);
    if (refusal) {
      log.error('error', `refused a visitor: ${refusal}`, { sid: m.sid, code: 'auth_failed' });
      // The message is the reason alone: the visitor shows it after its own "refused us:".
      control.send({ type: 'reject', sid: m.sid, code: 'auth_failed', message: refusal });
      return;
    }
    let result;
    try {
      result = respond(this.psk, hsInit, {
        responderIndex: crypto.randomInt(1, 2 ** 32 - 1),
        context: Buffer.from(this.opts.name.toLowerCase()),
      });
    } catch (e) {
      const code = e instanceof HandshakeError ? e.code : 'internal';
      log.error('error', `a visitor failed the handshake (${code}): wrong --secret on the visitor?`, {
        sid: m.sid,
        code: 'auth_failed',
      });
      control.send({
        type: 'reject',
        sid: m.sid,
        code: 'auth_failed',
        message: 'the visitor and the server do not share the same --secret (check --secret / PEER_SECRET)',
      });
      return;
    }
    const g = await this.host.gather(control);
    control.send({
      type: 'accept',
      sid: m.sid,
      hs: Buffer.from(result.response).toString('base64'),
      candidates: g.candidates,
      nat: g.nat,
      idKey: encodePublicKey(this.identity.publicKey),
      idSig: Buffer.from(signAccept(this.identity, hsInit, result.response)).toString('base64'),
    });
    try {
      await this.host.start({
        keys: result.keys,
        sid: m.sid,
        role: 'server',
        ticket: m.ticket,
        control,
        peerNat: m.nat,
        onStream: (st) => this.onStream(st),
        onSession: (session) => {
          if (this.proto === 'udp')
            new UdpServeFlows(session, {
              local: this.opts.local,
              log,
              stats: this.udp,
              idleMs: this.opts.udpIdleMs,
            });
          else session.on('datagram', () => this.udp.drops.wrong_proto++);
        },
      });
    } catch (e) {
      log.warn('relay_failed', (e as Error).message, { sid: m.sid });
    }
  }

  /** With --allow, the visitor must prove it holds one of the listed keys. Returns why not, or null. */
  private checkVisitorKey(m: MessageOf<'incoming'>, hsInit: Uint8Array): string | null {
    const allow = this.opts.allow ?? [];
    if (!allow.length) return null;
    if (!m.idKey || !m.idSig)
      return (
        'this server only accepts pinned visitor keys (--allow); ' +
        'the visitor presented none (visit --identity FILE)'
      );
    const key = Buffer.from(m.idKey, 'base64');
    if (!allow.some((k) => Buffer.from(k).equals(key))) return `visitor key ${m.idKey} is not in --allow`;
    if (!verifyVisit(key, Buffer.from(m.idSig, 'base64'), hsInit)) return "the visitor's key signature does not verify";
    return null;
  }

  private onStream(stream: MuxStream): void {
    const { log } = this.opts;
    if (this.draining) return stream.reset(MuxResetReason.GoingAway);
    // A UDP service carries no streams (a visitor that ignored the proto check).
    if (this.proto === 'udp') return stream.reset(MuxResetReason.Refused);
    // Reads go into the shared buffer and from there into pooled blocks (bridgeUserReads).
    const target = new ReadTarget();
    const sock = net.connect({
      host: this.opts.local.host,
      port: this.opts.local.port,
      allowHalfOpen: true,
      // No Nagle, as on the visitor's listener (visit.ts).
      noDelay: true,
      onread: userReadOptions(target.onChunk),
    });
    let connected = false;
    sock.once('connect', () => {
      connected = true;
      this.streams.track(sock, stream, bridgeUserReads(sock, target, stream));
    });
    sock.once('error', (e: NodeJS.ErrnoException) => {
      if (connected) return;
      log.warn(
        'service_unreachable',
        `cannot connect to the local service ${formatHostPort(this.opts.local)}: ${e.code ?? e.message}`,
      );
      stream.reset(MuxResetReason.Refused);
    });
  }
}
