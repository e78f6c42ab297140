import crypto from 'node:crypto';
import net from 'node:net';
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { FramedSocket } from '../src/transport/framed-socket.js';
import { watchPeerFin } from '../src/transport/peer-fin.js';
import { identityReady, verifyRegistration } from '../src/crypto/identity.js';
import type { Logger } from '../src/util/log.js';
import { PROTOCOL_VERSION } from '../src/wire/frame.js';
import type { Candidate, ControlMessage, ErrorCode, MessageOf, NatInfo, Proto } from '../src/wire/control.js';
import { issueTicket, newSessionId, relayKeyFrom } from '../src/wire/ticket.js';
import { Relay } from '../relay/relay.js';
import { checkResumeToken, parseAnchor } from '../src/crypto/resume.js';
import { cryptoReady } from '../src/crypto/sodium.js';
import { Registry } from './registry.js';
import { StunServer } from '../src/stun/server.js';
import { familyOf } from '../src/stun/address.js';
import { formatHostPort, unmapIPv4 } from '../src/util/addr.js';
import { punchDelays } from './punch-timing.js';
import type { Cluster, ClusterHost, PeerLink } from './cluster/types.js';

export interface RendezvousOptions {
  host: string;
  port: number;
  /** UDP address for STUN (defaults to host and the TCP port). */
  udp?: { host: string; port: number };
  /**
   * STUN on an address of the other family too (`--udp A,B` with one IPv4 and
   * one IPv6 address), with its own second address (`--alt-udp` of that
   * family); `altPort` applies to both.
   */
  udpOther?: { udp: { host: string; port: number }; altUdp?: { host: string; port: number } };
  /** Second UDP address for RFC 5780 NAT behaviour tests (OTHER-ADDRESS, CHANGE-REQUEST). */
  altUdp?: { host: string; port: number };
  /**
   * Without altUdp: a second STUN port on the UDP address, so peers can tell
   * port-dependent (symmetric) mapping from endpoint-independent with one IP.
   * Undefined: the UDP port + 1 (any free port when the UDP port is 0); if
   * that default is taken, the rendezvous runs without it and warns.
   * A number: that port (an error if it cannot be bound). false: none.
   * Ignored with altUdp, whose port is the alternate port.
   */
  altPort?: number | false;
  token?: string;
  log: Logger;
  /** External relay; when unset the relay runs inside this process on the same port. */
  relay?: { host: string; port: number; key: string };
  handshakeTimeoutMs?: number;
  idleTimeoutMs?: number;
  acceptTimeoutMs?: number;
  /** See docs/SECURITY.md "Limits"; every limit has a default here. */
  maxConnsPerIp?: number;
  maxConnections?: number;
  maxSessions?: number;
  /** Names one control connection may hold. */
  maxNamesPerConn?: number;
  /** Sessions one visitor connection may have open through this rendezvous. */
  maxSessionsPerConn?: number;
  /** Refuse new connections and sessions while the process uses more than this (MB). */
  maxMemoryMb?: number;
  /** Per-session relay rate in bytes/s (0: unlimited). */
  relayRate?: number;
  /**
   * Share names and broker sessions with other nodes (docs/CLUSTER.md); unset: a single node with its in-memory
   * registry.
   */
  cluster?: Cluster;
  /**
   * How long a session whose peer lost its control connection waits for `session_resume` (and the relay for
   * `relay_resume`).
   */
  resumeTimeoutMs?: number;
}

/**
 * How long the rendezvous keeps a session whose peer's control connection
 * went away, for that peer to come back with `session_resume`. Above the
 * peers' default --resume-timeout (120 s).
 */
export const RDV_RESUME_TIMEOUT_MS = 130_000;

/** How long the serve peer has to answer an `incoming` (accept or reject) unless configured. */
const ACCEPT_TIMEOUT_MS = 10_000;

/** Per-connection state on the rendezvous. */
interface Conn {
  fs: FramedSocket;
  ip: string;
  nonce: Buffer;
  hello: boolean;
  names: Set<string>;
  rttMs: number | null;
  /** The peer closed the connection itself (a FIN): it stopped, or its process died; it will not resume. */
  peerEnded?: boolean;
  /** For status (additive): the NAT the serve peer reported at registration, and when each name was registered. */
  nat?: NatInfo;
  since?: Map<string, number>;
  /** What each name carries, when the serve peer said (absent: tcp). */
  protos?: Map<string, Proto>;
  /** Handed to the relay (relay_bind, relay_resume): its control messages are no longer ours to read. */
  relayed?: boolean;
  /** When our ping left (its `t`), until its pong comes back. */
  pingAt?: number;
}

/** A name leaves a connection: its per-name records go with it (they must not outgrow the names). */
function dropName(conn: Conn, name: string): void {
  const key = name.toLowerCase();
  conn.names.delete(key);
  conn.since?.delete(key);
  conn.protos?.delete(key);
}

/**
 * Where a brokered session stands (docs/ARCHITECTURE.md). The timer belongs
 * to 'awaiting-answer' and is stopped by the one transition place,
 * moveSession(), when the state is left.
 */
export type BrokeredState =
  /** `incoming` went to the serve peer; its accept or reject must come before the timer fires. */
  | { readonly name: 'awaiting-answer'; readonly timer: NodeJS.Timeout }
  /** Answered with accept: the rendezvous only coordinates (re-)punching, for as long as both peers stay. */
  | { readonly name: 'connected' }
  /**
   * A side whose control connection went away (`away`) can come back with
   * `session_resume` (PROTOCOL.md section 6) before the timer ends the session.
   */
  | {
      readonly name: 'awaiting-resume';
      readonly away: ReadonlySet<'visitor' | 'server'>;
      readonly timer: NodeJS.Timeout;
    }
  /** Rejected, timed out, reported closed, or a peer went away: the record is gone. */
  | { readonly name: 'ended' };

interface Brokered {
  sid: string;
  state: BrokeredState;
  /** A local connection, or (in a cluster) the stand-in for a visitor connected to another node. */
  visitor: PeerLink;
  server: Conn;
  reqId: string;
  mode: MessageOf<'connect'>['mode'];
  visitorCandidates: Candidate[];
  visitorNat?: NatInfo;
  // For status and metrics (additive): what the peers reported.
  name?: string;
  serverNat?: NatInfo;
  startedAt?: number;
  path?: 'pending' | 'relay' | 'direct';
  directOnce?: boolean;
  // Resuming (docs/PROTOCOL.md "Resuming a session"), additive: each side's resume chain value,
  // the server's last candidates, and which sides lost their control connection (with the timer that ends the wait).
  held?: { visitor?: Uint8Array; server?: Uint8Array };
  serverCandidates?: Candidate[];
}

/**
 * One registered name as the status endpoint shows it (`nat` and `since`: when the serve peer said, and
 * registered).
 */
export interface NameInfo {
  name: string;
  address: string;
  rttMs: number | null;
  nat: NatInfo | null;
  since: number | null;
  proto: Proto;
}

/** One brokered session as the status endpoint shows it. */
export interface SessionInfo {
  sid: string;
  name: string;
  path: 'pending' | 'relay' | 'direct';
  visitor: { address: string; rttMs: number | null; nat: NatInfo | null };
  server: { address: string; rttMs: number | null; nat: NatInfo | null };
  startedAt: number;
  uptimeS: number;
}

/**
 * The rendezvous: control channel, name registry and session brokering, with
 * the relay embedded unless an external one is configured. It never sees
 * session keys: handshakes pass through it sealed by the peers' shared secret.
 */
export class RendezvousServer {
  readonly registry = new Registry<Conn>();
  readonly relay: Relay | null;
  private readonly relayKey: Uint8Array;
  private server: net.Server | null = null;
  stun: StunServer | null = null;
  /** STUN on the other address family, with --udp naming one address per family (null: none). */
  stunOther: StunServer | null = null;
  private conns = new Set<Conn>();
  private perIp = new Map<string, number>();
  private sessions = new Map<string, Brokered>();
  /** The sessions each side takes part in (index, unindex). */
  private readonly sessionsOf = new Map<PeerLink, Set<Brokered>>();
  stats = { connects: 0, rejected: 0, limitsHit: 0 };
  /**
   * Emits 'punch' (visitorNat, serverNat) when a punch is ordered and 'punch_success' (same) on a session's first
   * direct path.
   */
  readonly events = new EventEmitter();
  private memoryHigh = false;
  private limitLog = new Map<string, { at: number; suppressed: number }>();
  private memTimer: NodeJS.Timeout | null = null;

  constructor(readonly opts: RendezvousOptions) {
    this.relayKey = opts.relay ? relayKeyFrom(opts.relay.key) : crypto.randomBytes(32);
    this.relay = opts.relay ? null : new Relay({ key: this.relayKey, log: opts.log, rateBytesPerSec: opts.relayRate });
  }

  async listen(): Promise<net.AddressInfo> {
    await Promise.all([identityReady(), cryptoReady()]);
    // A global memory bound: past it, new work is refused while existing sessions go on.
    this.memTimer = setInterval(() => {
      const high = process.memoryUsage().rss > (this.opts.maxMemoryMb ?? 1024) * 1024 * 1024;
      if (high !== this.memoryHigh)
        this.opts.log.warn(
          'limit',
          high ? 'memory limit reached: refusing new connections and sessions' : 'memory back under the limit',
        );
      this.memoryHigh = high;
    }, 1000);
    this.memTimer.unref();
    const server = net.createServer((s) => this.onConnection(s));
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: this.opts.host, port: this.opts.port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const addr = server.address() as net.AddressInfo;
    const udp = this.opts.udp ?? { host: this.opts.host, port: addr.port };
    try {
      this.stun = await this.startStun(udp, this.opts.altUdp);
      const other = this.opts.udpOther;
      if (other) this.stunOther = await this.startStun(other.udp, other.altUdp);
    } catch (e) {
      server.close();
      await this.stun?.close();
      await this.closeOtherStun();
      throw e;
    }
    await this.opts.cluster?.start(this.clusterHost(), { host: addr.address, port: addr.port });
    return addr;
  }

  /**
   * STUN on `udp` with its second port or address. A default second port that
   * is taken is left out (logged); anything else that fails throws, worded
   * for the operator.
   */
  private async startStun(
    udp: { host: string; port: number },
    altUdp: { host: string; port: number } | undefined,
  ): Promise<StunServer> {
    const { alternate, defaulted } = alternateFor(udp, altUdp, this.opts.altPort);
    const stunOn = (alt: typeof alternate) =>
      new StunServer({
        primary: { address: udp.host, port: udp.port },
        alternate: alt,
        onError: (e) => this.opts.log.warn('udp_error', e.message),
      });
    let stun = stunOn(alternate);
    try {
      try {
        await stun.listen();
      } catch (e) {
        if (!defaulted || (e as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw e;
        // The default second port is taken: one port still works (peers cannot classify their NAT).
        this.opts.log.warn(
          'alt_port_unavailable',
          `UDP ${formatHostPort({ host: udp.host, port: alternate!.port })} (the default second STUN port) is in ` +
            'use; running without it: peers cannot tell a symmetric NAT from a cone. ' +
            'Free it or pick one with --alt-port',
          { port: alternate!.port },
        );
        stun = stunOn(undefined);
        await stun.listen();
      }
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw Object.assign(
        new Error(
          `cannot listen on UDP ${formatHostPort(udp)}: ` +
            (err.code === 'EADDRINUSE' ? 'the port is already in use' : err.message),
        ),
        { code: err.code },
      );
    }
    return stun;
  }

  /** The STUN server of `ip`'s family: the other family's when it has its own (--udp per family), else the main one. */
  stunFor(ip: string): StunServer | null {
    const o = this.stunOther;
    if (o && familyOf(unmapIPv4(o.address().address)) === familyOf(unmapIPv4(ip))) return o;
    return this.stun;
  }

  /** Every STUN server (the main one, and the other family's), for logs and counters. */
  get stuns(): StunServer[] {
    return [this.stun, this.stunOther].filter((x): x is StunServer => x !== null);
  }

  get udpPort(): number {
    return this.stun?.address().port ?? 0;
  }

  /** The second STUN port on the primary UDP address, if there is one (welcome.altUdpPort). */
  get altUdpPort(): number | undefined {
    return altPortOf(this.stun);
  }

  /** Close-down of the other family's STUN, beside the main one's. */
  private async closeOtherStun(): Promise<void> {
    await this.stunOther?.close();
  }

  async close(): Promise<void> {
    await this.opts.cluster?.close();
    this.relay?.close();
    if (this.memTimer) clearInterval(this.memTimer);
    await this.stun?.close();
    await this.closeOtherStun();
    for (const c of this.conns) c.fs.destroy();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  get connectionCount(): number {
    return this.conns.size;
  }

  private onConnection(socket: net.Socket): void {
    const { log } = this.opts;
    const ip = unmapIPv4(socket.remoteAddress ?? '');
    // The hello (or a relay message) is due by a deadline, not just before a silence.
    const handshakeMs = this.opts.handshakeTimeoutMs ?? 10_000;
    const fs = new FramedSocket(socket, { idleTimeoutMs: handshakeMs, firstMessageTimeoutMs: handshakeMs });
    const perIp = this.perIp.get(ip) ?? 0;
    if (perIp >= (this.opts.maxConnsPerIp ?? 256))
      return this.limit(fs, `too many connections from your address (limit ${this.opts.maxConnsPerIp ?? 256})`, {
        fields: { ip },
      });
    if (this.conns.size >= (this.opts.maxConnections ?? 20_000) || this.memoryHigh)
      return this.limit(fs, 'the rendezvous is full; try again later', { fields: { ip } });
    this.perIp.set(ip, perIp + 1);
    const conn: Conn = { fs, ip, nonce: crypto.randomBytes(24), hello: false, names: new Set(), rttMs: null };
    this.conns.add(conn);
    fs.on('protocolError', (code: ErrorCode, message: string) =>
      log.warn('protocol_error', message, { remote: fs.remote, code }),
    );
    fs.on('message', (m: ControlMessage) => this.onMessage(conn, m));
    watchPeerFin(socket, (fin) => {
      conn.peerEnded = fin;
    });
    fs.on('close', () => this.onClose(conn));
  }

  private onClose(conn: Conn): void {
    // Runs once per connection: a connection handed to the relay is released
    // then, and its socket's later 'close' must not count it out a second time.
    if (!this.conns.delete(conn)) return;
    const n = (this.perIp.get(conn.ip) ?? 1) - 1;
    if (n <= 0) this.perIp.delete(conn.ip);
    else this.perIp.set(conn.ip, n);
    this.opts.cluster?.connectionClosed(conn);
    for (const name of this.registry.releaseConn(conn)) {
      this.opts.log.info('unregistered', `"${name}" went away`, { name });
    }
    for (const s of this.takeSessionsOf(conn)) {
      if (s.visitor === conn || s.server === conn) {
        const role = s.visitor === conn ? 'visitor' : 'server';
        // A FIN is a peer that closed on purpose or died: no resume for that side, here or on the relay.
        if (conn.peerEnded) this.relay?.sideGone(s.sid, role);
        if (conn.peerEnded || !this.awaitResume(s, role)) this.endSession(s.sid, 'a peer disconnected');
      }
    }
  }

  private onMessage(conn: Conn, m: ControlMessage): void {
    const { fs } = conn;
    // A relay leg says nothing more to the rendezvous: a hello or register
    // there would hold names on a connection the rendezvous no longer counts.
    if (conn.relayed) return;
    if (!conn.hello) {
      if (m.type === 'relay_bind' && this.relay) {
        conn.relayed = true;
        this.onClose(conn); // now the relay's to account for
        // In a cluster, a visitor's leg for a session another node brokers is piped to that node's relay.
        if (this.opts.cluster?.takeRelayLeg(fs, m.ticket)) return;
        return this.relay.adopt(fs, m.ticket, m.resume);
      }
      if (m.type === 'relay_resume' && this.relay) {
        conn.relayed = true;
        this.onClose(conn);
        return this.relay.resume(fs, m);
      }
      if (m.type !== 'hello') return fs.fail('bad_message', 'expected hello first');
      if (m.version !== PROTOCOL_VERSION)
        return fs.fail(
          'bad_version',
          `unsupported protocol version ${m.version}; this rendezvous speaks ${PROTOCOL_VERSION}`,
        );
      if (this.opts.token && !tokenMatches(this.opts.token, m.token)) {
        this.opts.log.warn('auth', 'rejected a peer with a missing or wrong token', { remote: fs.remote });
        return fs.fail('bad_token', 'missing or wrong --token for this rendezvous');
      }
      conn.hello = true;
      fs.socket.setTimeout(this.opts.idleTimeoutMs ?? 90_000);
      fs.send({
        type: 'welcome',
        version: PROTOCOL_VERSION,
        nonce: conn.nonce.toString('base64'),
        observed: {
          address: conn.ip,
          port: fs.socket.remotePort ?? 0,
          family: conn.ip.includes(':') ? 'IPv6' : 'IPv4',
        },
        // The STUN of the family this connection came in on (a peer uses the same port for its other family).
        udpPort: this.stunFor(conn.ip)?.address().port ?? 0,
        ...(altPortOf(this.stunFor(conn.ip)) !== undefined ? { altUdpPort: altPortOf(this.stunFor(conn.ip)) } : {}),
        relay: this.opts.relay ? { host: this.opts.relay.host, port: this.opts.relay.port } : null,
        features: ['path_report', 'resume', 'nat_report'],
      });
      // Measure the round trip now, so a punch can be timed to leave both peers together.
      conn.pingAt = performance.now();
      fs.send({ type: 'ping', t: conn.pingAt });
      return;
    }
    switch (m.type) {
      case 'ping':
        fs.send({ type: 'pong', t: m.t });
        return;
      case 'register':
        return this.onRegister(conn, m);
      case 'connect':
        return this.onConnect(conn, m);
      case 'accept':
      case 'reject':
        return this.onAnswer(conn, m);
      case 'candidates':
        return this.onCandidates(conn, m);
      case 'path_report':
        return this.onPathReport(conn, m);
      case 'nat_report':
        // For status and the dashboard, and as the server's NAT in later introductions.
        if (conn.names.size) conn.nat = m.nat;
        return;
      case 'session_commit':
        return this.onSessionCommit(conn, m);
      case 'session_resume':
        return this.onSessionResume(conn, m);
      case 'pong':
        // Only the answer to our own ping counts: its `t` is the time we sent.
        if (conn.pingAt !== undefined && m.t === conn.pingAt) conn.rttMs = performance.now() - m.t;
        conn.pingAt = undefined;
        return;
      default:
        return fs.fail('bad_message', `unexpected message "${m.type}"`);
    }
  }

  /** A limit was hit: clear error to this client, a log line, everyone else carries on. */
  private limit(fs: PeerLink['fs'], message: string, opts: LimitOptions = {}): void {
    const { fields = {}, close = true } = opts;
    const extra = opts.reqId === undefined ? {} : { reqId: opts.reqId };
    this.stats.limitsHit++;
    // One line per source per 10 s, with a count of what was left out: a flood
    // of refused connections must not turn into a flood of log lines.
    const ip = fields.ip ?? fs.remote.replace(/:\d+$/, '');
    const now = Date.now();
    const seen = this.limitLog.get(ip);
    if (seen && now - seen.at < 10_000) {
      seen.suppressed++;
    } else {
      this.opts.log.warn('limit', message, {
        remote: fs.remote,
        ...fields,
        ...(seen?.suppressed ? { suppressed: seen.suppressed } : {}),
      });
      if (this.limitLog.size > 10_000) this.limitLog.clear();
      this.limitLog.set(ip, { at: now, suppressed: 0 });
    }
    if (close) fs.fail('limit', message, extra);
    else fs.send({ type: 'error', code: 'limit', message, ...extra });
  }

  private onRegister(conn: Conn, m: MessageOf<'register'>): void {
    const maxNames = this.opts.maxNamesPerConn ?? 16;
    if (!conn.names.has(m.name.toLowerCase()) && conn.names.size >= maxNames) {
      return this.limit(conn.fs, `one connection may hold at most ${maxNames} names`, {
        fields: { name: m.name },
        close: false,
      });
    }
    const key = Buffer.from(m.key, 'base64');
    if (!verifyRegistration(key, Buffer.from(m.sig, 'base64'), conn.nonce, m.name)) {
      return conn.fs.fail('bad_message', 'registration signature does not verify');
    }
    if (this.opts.cluster) return void this.registerInCluster(conn, m, this.opts.cluster);
    this.commitRegistration(conn, m);
  }

  /** Cluster: the name must also be free (or ours) across every node; Redis decides, atomically. */
  private async registerInCluster(conn: Conn, m: MessageOf<'register'>, cluster: Cluster): Promise<void> {
    const local = this.registry.lookup(m.name);
    if (local && local.key !== m.key) return void this.commitRegistration(conn, m); // refused locally, as on one node
    const out = await cluster.claim(m.name, m.key, conn);
    if (conn.fs.isClosed) return void (out.ok && cluster.release(m.name, conn));
    if (!out.ok) {
      this.opts.log.warn(out.code, `refused "${m.name}": ${out.message}`, { name: m.name, remote: conn.fs.remote });
      conn.fs.send({ type: 'error', code: out.code, message: out.message });
      return;
    }
    if (!this.commitRegistration(conn, m)) cluster.release(m.name, conn);
  }

  /** Records a verified registration in the local registry and answers; false when another key holds the name here. */
  private commitRegistration(conn: Conn, m: MessageOf<'register'>): boolean {
    const { log } = this.opts;
    const r = this.registry.claim(m.name, m.key, conn);
    if (!r.ok) {
      log.warn('name_taken', `refused "${m.name}": held by another key`, { name: m.name, remote: conn.fs.remote });
      conn.fs.send({
        type: 'error',
        code: 'name_taken',
        message: `the name "${m.name}" is already served by someone else`,
      });
      return false;
    }
    if (r.replaced) {
      dropName(r.replaced.conn, m.name);
      log.info('registered', `"${m.name}" moved to a new connection of the same key`, { name: m.name });
    }
    conn.names.add(m.name.toLowerCase());
    if (m.nat) conn.nat = m.nat;
    (conn.since ??= new Map()).set(m.name.toLowerCase(), Date.now());
    (conn.protos ??= new Map()).set(m.name.toLowerCase(), m.proto ?? 'tcp');
    log.info('registered', `"${m.name}" registered`, { name: m.name, remote: conn.fs.remote });
    conn.fs.send({ type: 'registered', name: m.name });
    return true;
  }

  private onConnect(conn: PeerLink, m: MessageOf<'connect'>, forNode = false): void {
    const reg = this.registry.lookup(m.name);
    // Not here: in a cluster, the node holding the name brokers it (never re-forwarded, so no loops).
    if (!reg && this.opts.cluster && !forNode) return void this.connectViaCluster(conn, m, this.opts.cluster);
    if (!reg) {
      this.stats.rejected++;
      conn.fs.send({ type: 'error', code: 'unknown_name', message: `no peer is serving "${m.name}"`, reqId: m.reqId });
      return;
    }
    const served = reg.conn.protos?.get(m.name.toLowerCase()) ?? 'tcp';
    const wanted = m.proto ?? 'tcp';
    if (served !== wanted) {
      this.stats.rejected++;
      conn.fs.send({
        type: 'error',
        // A visitor that sent no proto predates proto_mismatch (its parser would refuse the message).
        code: m.proto ? 'proto_mismatch' : 'mode_mismatch',
        message:
          `"${m.name}" is served as ${served.toUpperCase()}, not ${wanted.toUpperCase()} ` +
          `(visit --proto ${served})`,
        reqId: m.reqId,
      });
      return;
    }
    const sid = newSessionId();
    if (this.sessions.size >= (this.opts.maxSessions ?? 100_000) || this.memoryHigh) {
      return this.limit(conn.fs, 'the rendezvous has too many sessions; try again later', {
        reqId: m.reqId,
        close: false,
      });
    }
    const perConn = this.opts.maxSessionsPerConn ?? 256;
    let mine = 0;
    for (const x of this.sessionsOf.get(conn) ?? []) if (x.visitor === conn) mine++;
    if (mine >= perConn) {
      return this.limit(conn.fs, `one connection may open at most ${perConn} sessions`, {
        reqId: m.reqId,
        close: false,
      });
    }
    const timer = setTimeout(() => {
      conn.fs.send({ type: 'error', code: 'timeout', message: `"${m.name}" did not answer in time`, reqId: m.reqId });
      this.endSession(sid, 'no answer in time');
    }, this.opts.acceptTimeoutMs ?? ACCEPT_TIMEOUT_MS);
    timer.unref();
    const s: Brokered = {
      sid,
      state: { name: 'awaiting-answer', timer },
      visitor: conn,
      server: reg.conn,
      reqId: m.reqId,
      mode: m.mode,
      visitorCandidates: m.candidates,
      visitorNat: m.nat,
      name: m.name,
      startedAt: Date.now(),
      path: 'pending',
    };
    this.sessions.set(sid, s);
    this.index(s.visitor, s);
    this.index(s.server, s);
    this.stats.connects++;
    reg.conn.fs.send({
      type: 'incoming',
      sid,
      hs: m.hs,
      mode: m.mode,
      candidates: m.candidates,
      nat: m.nat,
      ticket: issueTicket(this.relayKey, sid, 'server'),
      idKey: m.idKey,
      idSig: m.idSig,
      proto: wanted,
    });
  }

  private onAnswer(conn: Conn, m: MessageOf<'accept'> | MessageOf<'reject'>): void {
    const s = this.sessions.get(m.sid);
    // Late, repeated or forged answer: nothing to do.
    if (!s || s.server !== conn || s.state.name !== 'awaiting-answer') return;
    if (m.type === 'reject') {
      s.visitor.fs.send({ type: 'error', code: m.code, message: m.message, reqId: s.reqId, sid: s.sid });
      this.endSession(s.sid, 'rejected by the server');
      return;
    }
    s.visitor.fs.send({
      type: 'connected',
      reqId: s.reqId,
      sid: s.sid,
      hs: m.hs,
      candidates: m.candidates,
      nat: m.nat,
      ticket: issueTicket(this.relayKey, s.sid, 'visitor'),
      idKey: m.idKey,
      idSig: m.idSig,
    });
    // From here on the rendezvous only coordinates punching (and re-punching)
    // for this session; the record lives as long as both control connections.
    this.moveSession(s, { name: 'connected' }, 'accepted');
    s.serverNat = m.nat;
    s.serverCandidates = m.candidates;
    if (m.nat) s.server.nat = m.nat;
    if (s.mode !== 'relay' && s.visitorCandidates.length && m.candidates.length) {
      this.events.emit('punch', s.visitorNat, s.serverNat);
      this.sendPunches(s);
    }
  }

  /** Tells each side of `s` to punch now, toward what the other side last said about itself (if anything). */
  private sendPunches(s: Brokered): void {
    const d = punchDelays(s.visitor.rttMs, s.server.rttMs);
    if (s.serverCandidates?.length)
      s.visitor.fs.send({
        type: 'punch',
        sid: s.sid,
        delayMs: d.visitor,
        candidates: s.serverCandidates,
        peerNat: s.serverNat,
      });
    if (s.visitorCandidates.length)
      s.server.fs.send({
        type: 'punch',
        sid: s.sid,
        delayMs: d.server,
        candidates: s.visitorCandidates,
        peerNat: s.visitorNat,
      });
  }

  private onCandidates(conn: PeerLink, m: MessageOf<'candidates'>): void {
    if (!this.sessions.has(m.sid) && this.opts.cluster?.fromVisitor(conn, m)) return;
    const s = this.sessions.get(m.sid);
    if (!s || (s.visitor !== conn && s.server !== conn)) return;
    const other = s.visitor === conn ? s.server : s.visitor;
    if (s.visitor === conn) {
      s.visitorCandidates = m.candidates;
      if (m.nat) s.visitorNat = m.nat;
    } else {
      s.serverCandidates = m.candidates;
      if (m.nat) s.serverNat = m.nat;
    }
    other.fs.send({ type: 'punch', sid: s.sid, delayMs: 0, candidates: m.candidates, peerNat: m.nat });
  }

  /** A side of a session gives the anchor of its resume chain; only its first, on its own connection, counts. */
  private onSessionCommit(conn: PeerLink, m: MessageOf<'session_commit'>): void {
    const s = this.sessions.get(m.sid);
    if (!s || s.state.name === 'awaiting-answer' || (s.visitor !== conn && s.server !== conn)) return;
    const role = s.visitor === conn ? 'visitor' : 'server';
    const anchor = parseAnchor(m.anchor);
    s.held ??= {};
    if (!anchor || s.held[role]) return;
    s.held[role] = anchor;
  }

  /**
   * A side of a session is back on a new connection (its old one died, or
   * its address changed): with a token from its chain, it takes its side of
   * the session over, and both sides are told to punch again. A wrong proof or
   * an unknown session is answered with an error and changes nothing.
   */
  private onSessionResume(conn: Conn, m: MessageOf<'session_resume'>): void {
    const s = this.sessions.get(m.sid);
    const held = s?.held?.[m.role];
    if (!s || s.state.name === 'awaiting-answer') {
      conn.fs.send({ type: 'error', code: 'unknown_session', message: 'no such session here', sid: m.sid });
      return;
    }
    const check = held ? checkResumeToken(held, m.token, m.sid, m.role, 'rendezvous') : null;
    if (!check?.ok) {
      const why = check ? check.reason : `the ${m.role} side of this session cannot be resumed (no anchor)`;
      this.opts.log.warn('resume_rejected', why, { sid: m.sid, role: m.role, remote: conn.fs.remote });
      conn.fs.send({ type: 'error', code: 'bad_proof', message: why, sid: m.sid });
      return;
    }
    s.held![m.role] = check.next;
    this.unindex(s[m.role], s);
    this.index(conn, s);
    if (m.role === 'visitor') {
      s.visitor = conn;
      s.visitorCandidates = m.candidates;
      if (m.nat) s.visitorNat = m.nat;
    } else {
      s.server = conn;
      s.serverCandidates = m.candidates;
      if (m.nat) s.serverNat = m.nat;
    }
    const st = s.state;
    if (st.name === 'awaiting-resume') {
      const away = new Set(st.away);
      away.delete(m.role);
      this.moveSession(
        s,
        away.size ? { name: 'awaiting-resume', away, timer: st.timer } : { name: 'connected' },
        `the ${m.role} resumed`,
      );
    }
    this.opts.log.info('session_resumed', `session ${s.sid}: the ${m.role} is back`, {
      sid: s.sid,
      role: m.role,
      remote: conn.fs.remote,
    });
    conn.fs.send({ type: 'session_resumed', sid: s.sid });
    // Punch again, both ways, with what each side last said about itself.
    if (s.mode === 'relay' || s.state.name !== 'connected') return;
    this.sendPunches(s);
  }

  /** `role`'s control connection went away: keep the session for a resume if that side can resume. */
  private awaitResume(s: Brokered, role: 'visitor' | 'server'): boolean {
    const st = s.state;
    if (st.name === 'awaiting-answer' || st.name === 'ended' || !s.held?.[role]) return false;
    const away = new Set(st.name === 'awaiting-resume' ? st.away : []);
    away.add(role);
    let timer = st.name === 'awaiting-resume' ? st.timer : null;
    if (!timer) {
      const ms = this.opts.resumeTimeoutMs ?? RDV_RESUME_TIMEOUT_MS;
      timer = setTimeout(() => this.endSession(s.sid, `no resume within ${Math.round(ms / 1000)} s`), ms);
      timer.unref();
    }
    this.moveSession(s, { name: 'awaiting-resume', away, timer }, `the ${role} lost its control connection`);
    return true;
  }

  /** A peer says its session moved to another path: status and metrics only, nothing is routed by it. */
  private onPathReport(conn: PeerLink, m: MessageOf<'path_report'>): void {
    if (!this.sessions.has(m.sid) && this.opts.cluster?.fromVisitor(conn, m)) return;
    const s = this.sessions.get(m.sid);
    if (!s || (s.visitor !== conn && s.server !== conn)) return;
    // The dashboard's traffic and endpoints (rendezvous/traffic.ts): who reported, and what.
    this.events.emit('path_report', s.sid, s.visitor === conn ? 'visitor' : 'server', m);
    if (m.path === 'closed') return this.endSession(s.sid, 'a peer reported it closed');
    s.path = m.path;
    if (m.path === 'direct' && !s.directOnce) {
      s.directOnce = true;
      this.events.emit('punch_success', s.visitorNat, s.serverNat);
    }
  }

  /** Connections, names and brokered sessions, for the read-only status endpoint. */
  snapshot(): {
    peers: number;
    names: NameInfo[];
    sessions: SessionInfo[];
  } {
    const names: NameInfo[] = [];
    let peers = 0;
    for (const c of this.conns) {
      if (c.hello) peers++;
      for (const n of c.names)
        names.push({
          name: n,
          address: c.fs.remote,
          rttMs: c.rttMs,
          nat: c.nat ?? null,
          since: c.since?.get(n) ?? null,
          proto: c.protos?.get(n) ?? 'tcp',
        });
    }
    const now = Date.now();
    const sessions: SessionInfo[] = [];
    for (const s of this.sessions.values()) {
      if (s.state.name === 'awaiting-answer') continue;
      sessions.push({
        sid: s.sid,
        name: s.name ?? '',
        path: s.path ?? 'pending',
        visitor: { address: s.visitor.fs.remote, rttMs: s.visitor.rttMs, nat: s.visitorNat ?? null },
        server: { address: s.server.fs.remote, rttMs: s.server.rttMs, nat: s.serverNat ?? null },
        startedAt: s.startedAt ?? now,
        uptimeS: Math.round((now - (s.startedAt ?? now)) / 100) / 10,
      });
    }
    return { peers, names, sessions };
  }

  private async connectViaCluster(conn: PeerLink, m: MessageOf<'connect'>, cluster: Cluster): Promise<void> {
    const out = await cluster.connect(conn, m);
    if (out.ok) return;
    if (out.code === 'unknown_name') this.stats.rejected++;
    conn.fs.send({ type: 'error', code: out.code, message: out.message, reqId: m.reqId });
  }

  /** What the cluster may ask of this node. */
  private clusterHost(): ClusterHost {
    return {
      brokerFor: (visitor, m) => this.onConnect(visitor, m, true),
      visitorMessage: (visitor, m) =>
        m.type === 'candidates' ? this.onCandidates(visitor, m) : this.onPathReport(visitor, m),
      visitorGone: (visitor) => {
        for (const s of this.takeSessionsOf(visitor))
          if (s.visitor === visitor) this.endSession(s.sid, 'the visitor left');
      },
      nameLost: (name, conflict) => {
        const reg = this.registry.lookup(name);
        if (!reg || !this.registry.release(name, reg.conn)) return;
        dropName(reg.conn, name);
        this.opts.log.info(
          'unregistered',
          `"${name}" ` +
            (conflict ? 'was taken by another key while the registry was out of reach' : 'moved to another node'),
          { name, conflict },
        );
        // Same key elsewhere: our serve moved on, as when it re-registers on one node. Another key: tell ours, and
        // let it retry.
        if (conflict) reg.conn.fs.fail('name_taken', `the name "${name}" is now served by someone else`);
      },
    };
  }

  /**
   * `sessionsOf` follows each session's two sides: a connection's close and
   * its per-connection limit then cost its own sessions, not a scan of every
   * session (one client holding thousands made each connect slow).
   */
  private index(c: PeerLink, s: Brokered): void {
    let set = this.sessionsOf.get(c);
    if (!set) this.sessionsOf.set(c, (set = new Set()));
    set.add(s);
  }

  /** The sessions `c` takes part in, its index entry dropped: `c` is gone. */
  private takeSessionsOf(c: PeerLink): Iterable<Brokered> {
    const set = this.sessionsOf.get(c);
    this.sessionsOf.delete(c);
    return set ?? [];
  }

  private unindex(c: PeerLink, s: Brokered): void {
    const set = this.sessionsOf.get(c);
    if (!set) return;
    set.delete(s);
    // A live connection keeps its set, empty or not, until it closes
    // (onClose): dropping and re-making it per session was garbage enough to
    // show in the rendezvous's peak memory under load.
    if (set.size === 0 && !this.conns.has(c as Conn)) this.sessionsOf.delete(c);
  }

  private endSession(sid: string, why: string): void {
    const s = this.sessions.get(sid);
    if (!s) return;
    this.moveSession(s, { name: 'ended' }, why);
  }

  /** The one place a brokered session changes state: logs it and stops the timer of the state it leaves. */
  private moveSession(s: Brokered, next: BrokeredState, why: string): void {
    const prev = s.state;
    if (prev.name === 'ended' || prev === next) return;
    s.state = next;
    // The timer of the state left behind stops, unless the next state carries it on.
    if (
      (prev.name === 'awaiting-answer' || prev.name === 'awaiting-resume') &&
      !('timer' in next && next.timer === prev.timer)
    )
      clearTimeout(prev.timer);
    if (next.name === 'ended') {
      this.sessions.delete(s.sid);
      this.unindex(s.visitor, s);
      this.unindex(s.server, s);
    }
    this.opts.log.debug('session_state', `session ${s.sid}: ${prev.name} -> ${next.name} (${why})`, {
      sid: s.sid,
      from: prev.name,
      to: next.name,
      why,
    });
  }
}

/**
 * The STUN server's alternate from the options (pure): `--alt-udp` as given;
 * else a second port on the UDP address (`altPort`, or the UDP port + 1, or 0
 * = any free port when the UDP port itself is 0); none with altPort false or
 * when port + 1 would pass 65535. `defaulted` says the port was not asked for.
 */
/** The second STUN port on a server's primary address, if it has one. */
function altPortOf(stun: StunServer | null): number | undefined {
  const eps = stun?.endpoints ?? [];
  const p = eps[0];
  return eps.find((e) => e.address === p?.address && e.port !== p.port)?.port;
}

export function alternateFor(
  udp: { host: string; port: number },
  altUdp: { host: string; port: number } | undefined,
  altPort: number | false | undefined,
): { alternate?: { address: string; port: number }; defaulted: boolean } {
  if (altUdp) return { alternate: { address: altUdp.host, port: altUdp.port }, defaulted: false };
  if (altPort === false) return { defaulted: false };
  if (altPort !== undefined) return { alternate: { address: udp.host, port: altPort }, defaulted: false };
  const port = udp.port === 0 ? 0 : udp.port + 1;
  if (port > 65535) return { defaulted: true };
  return { alternate: { address: udp.host, port }, defaulted: true };
}

function tokenMatches(expected: string, given: string | undefined): boolean {
  if (given === undefined) return false;
  const a = crypto.createHash('sha256').update(expected).digest();
  const b = crypto.createHash('sha256').update(given).digest();
  return crypto.timingSafeEqual(a, b);
}

/** How `limit()` answers the client that hit a limit. */
interface LimitOptions {
  /** Extra fields for the `limit` log line (`ip` also keys its rate limit). */
  fields?: Record<string, unknown> & { ip?: string };
  /** The request refused, echoed in the error so the client can match it. */
  reqId?: string;
  /** Close the connection after the error (default): false refuses one request and keeps the connection. */
  close?: boolean;
}
