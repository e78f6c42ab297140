import type { Duplex } from 'node:stream';
import { performance } from 'node:perf_hooks';
import { Session } from '../src/session/session.js';
import { RelayPath } from '../src/session/relay-path.js';
import type { Path } from '../src/session/path.js';
import type { SessionKeys } from '../src/crypto/index.js';
import { DirectPathManager } from '../src/punch/direct.js';
import { PmtuDriver, type PmtuStatus } from '../src/punch/pmtu-driver.js';
import {
  gatherCandidates,
  mappedCandidate,
  withMappedCandidate,
  type Gathered,
  type V6Gathered,
} from '../src/punch/candidates.js';
import { PortMapper, type Mapping } from '../src/portmap/mapper.js';
import { PeerSocket } from '../src/punch/peer-socket.js';
import { planPunch } from '../src/punch/strategy.js';
import { PunchMemoryStore, PunchPlanner } from '../src/punch/planner.js';
import type { Candidate, MessageOf, Mode, NatInfo } from '../src/wire/control.js';
import { firstPerFamily, unmapIPv4, type HostPort, formatHostPort } from '../src/util/addr.js';
import { lookup } from 'node:dns/promises';
import type { Logger } from '../src/util/log.js';
import type { ControlClient } from './control-client.js';
import type { Sinkable } from '../src/session/bridge.js';
import { ResumeChain } from '../src/crypto/resume.js';
import { NetWatch } from '../src/util/netwatch.js';
import { Backoff, sleep, sleepUnless } from '../src/util/backoff.js';
import type { ControlMessage } from '../src/wire/control.js';
import type { ErrorCode } from '../src/util/errors.js';
import { DatagramType } from '../src/wire/datagram.js';

// Resuming (docs/PROTOCOL.md "Resuming a session"): timings in one place.
/** How long a session waits for a lost path (relay leg, control connection) to come back before it ends. */
export const RESUME_TIMEOUT_MS = 120_000;
/** A session never ends on silence sooner than this (the session's own former default). */
export const SESSION_SILENCE_MIN_MS = 30_000;
/** First wait before taking a lost relay leg back, and the cap its backoff grows to. */
export const RELAY_RESUME_FIRST_MS = 100;
export const RELAY_RESUME_MAX_MS = 5_000;
/** One relay_resume attempt: connect, prove, get relay_ready. */
export const RELAY_RESUME_ATTEMPT_MS = 5_000;
/** How long the rendezvous has to answer a session_resume. */
export const SESSION_RESUME_ANSWER_MS = 10_000;
/**
 * The direct path died of unanswered quick probes (a sign the network
 * changed): the relay leg and the control connection must each show they are
 * alive within this time (a heartbeat answered, a ping answered), or they are
 * dropped and taken back at once, rather than after TCP gives up on them.
 */
export const LEG_CHECK_MS = 1000;
/** Bound on relay resume attempts of one loss (the time bound is the resume timeout). */
const MAX_RELAY_RESUME_ATTEMPTS = 1000;

/** Path MTU settings of a peer process (`--max-datagram`, `--pmtu-raise-interval`). */
export interface PmtuSettings {
  maxDatagram?: number;
  raiseIntervalMs?: number;
}
import { answerProbesOffDirect } from '../src/session/ping.js';
import { startTrafficReports, trafficFields } from './traffic-report.js';

/** Every address a rendezvous name resolves to (none for a name that does not resolve; a literal is itself). */
async function resolveAll(host: string): Promise<string[]> {
  try {
    return (await lookup(host, { all: true })).map((r) => r.address);
  } catch {
    return [];
  }
}

/** A `punch` that arrives before its session exists is kept this long for it. */
const EARLY_PUNCH_KEEP_MS = 10_000;

/** What the peer commands use of a mux stream; `reset` takes a MuxResetReason code. */
export type MuxStream = Duplex &
  Sinkable & { reset(reason?: number): void; writeTransient(chunk: Uint8Array): boolean };

/** One live session as `peer status` and the metrics see it. */
export interface TunnelInfo {
  sid: string;
  role: 'visitor' | 'server';
  path: 'relay' | 'direct' | null;
  remote: string | null;
  /** KCP's smoothed round-trip time (includes the peer's ack delay); 0 before the first ack. */
  rttMs: number;
  /** Application bytes carried by streams, each way. */
  bytesSent: number;
  bytesReceived: number;
  /** Sealed datagram bytes on the wire, each way (overhead, retransmissions and heartbeats included). */
  wireBytesOut: number;
  wireBytesIn: number;
  streams: number;
  startedAt: number;
  rejectedDatagrams: number;
  punchAttempts: number;
  punchSuccesses: number;
  /** The direct path's MTU in use (null without a direct path). */
  pmtu: PmtuStatus | null;
  localNat: NatInfo | null;
  /** IPv6 as STUN on the IPv6 data socket saw it (null: no IPv6 socket, or no IPv6 rendezvous address). */
  localIPv6: V6Gathered | null;
  peerNat: NatInfo | null;
  /** Times this session took a lost path back (relay leg re-attached, control connection re-announced). */
  resumes: number;
  /** Our port-mapped candidate ("ip:port via pcp"), if the gateway granted one (docs/PORTMAP.md). */
  mapped?: string | null;
}

/** Counters summed over every session this host has had, closed ones included (monotonic, for metrics). */
export interface TunnelTotals {
  sessions: number;
  bytesSent: number;
  bytesReceived: number;
  wireBytesOut: number;
  wireBytesIn: number;
  rejectedDatagrams: number;
  punchAttempts: number;
  punchSuccesses: number;
}

export interface Tunnel {
  session: Session;
  direct: DirectPathManager | null;
  pmtu: PmtuDriver | null;
  relay: RelayPath | null;
  peerNat?: NatInfo;
  /** The control connection this session talks through; replaced when the peer reconnects (adoptControl). */
  control?: ControlClient;
  /** Resume chains of our side (src/crypto/resume.ts): for the relay and for the rendezvous. */
  chains?: { relay: ResumeChain; rendezvous: ResumeChain };
  /** Where our relay leg goes: a resumed leg goes back there. */
  relayAt?: { host: string; port: number };
  resumes?: number;
  /** A relay resume loop is running. */
  relayResuming?: boolean;
}

/**
 * What serve and visit share: the UDP socket, candidate discovery, and the
 * wiring of one session to its relay and direct paths.
 */
export class TunnelHost {
  readonly tunnels = new Map<string, Tunnel>();
  private early = new Map<string, MessageOf<'punch'>>();
  private socket: PeerSocket | null = null;
  gathered: Gathered | null = null;
  /** Punch plans that failed per pair of NATs, for every session of this process. */
  private readonly punchMemory = new PunchMemoryStore();
  /** Counters of sessions that have closed; live ones are added in totals(). */
  private retired: TunnelTotals = {
    sessions: 0,
    bytesSent: 0,
    bytesReceived: 0,
    wireBytesOut: 0,
    wireBytesIn: 0,
    rejectedDatagrams: 0,
    punchAttempts: 0,
    punchSuccesses: 0,
  };

  /** Port mapping of the data socket (null: --no-portmap, --mode relay, or not opened yet). */
  portmapper: PortMapper | null = null;
  private portmapClosed: Promise<void> | null = null;
  /** Mapping changes so far, and how many the last gather saw: a session started in between sends an update. */
  private portmapChanges = 0;
  private portmapSeen = 0;

  private readonly netwatch = new NetWatch();

  constructor(
    readonly opts: {
      log: Logger;
      mode: Mode;
      server: HostPort;
      resumeTimeoutMs?: number;
      pmtu?: PmtuSettings;
      portmap?: boolean;
      /** Open an IPv6 data socket too (default: yes; `--no-ipv6`). */
      ipv6?: boolean;
    },
  ) {
    this.netwatch.on('change', (added: string[], removed: string[]) => this.localChange(added, removed));
  }

  /** Opens the UDP socket unless punching is off, and starts asking the gateway for a mapping of it. */
  async open(): Promise<void> {
    if (this.opts.mode !== 'relay' && !this.socket) {
      this.socket = await PeerSocket.open('0.0.0.0', 0, { ipv6: this.opts.ipv6 !== false });
      if (this.opts.portmap !== false) this.startPortmap(this.socket.port);
    }
    this.netwatch.start();
  }

  /**
   * Our own addresses changed. Connections bound to an address that went
   * away are dead without knowing it (no FIN or RST will ever come): drop them
   * at once rather than wait for TCP to give up. The relay legs are taken
   * back (relay_resume) and the control connection comes back (its owner
   * reconnects), re-announcing every session with fresh candidates, which
   * makes the rendezvous order a new punch.
   */
  private localChange(added: string[], removed: string[]): void {
    const { log } = this.opts;
    log.info('local_address_changed', `local addresses changed: +[${added.join(' ')}] -[${removed.join(' ')}]`, {
      added,
      removed,
    });
    // Only connections bound to an address that went away are dead: an address that
    // appears (a VPN or container interface coming up) leaves every connection as it is.
    const gone = (addr: string | undefined) => addr !== undefined && removed.includes(addr);
    const controls = new Set<ControlClient>();
    for (const t of this.tunnels.values()) {
      if (t.session.closed) continue;
      if (gone(t.relay?.localAddress)) t.relay?.abandon('local address changed');
      if (t.control && !t.control.isClosed && gone(t.control.localAddress)) controls.add(t.control);
    }
    for (const c of controls) c.abandon();
  }

  close(): void {
    this.netwatch.stop();
    for (const t of this.tunnels.values()) t.session.close('shutting down');
    // On the next turn: the sessions' Close datagrams leave after a lookup
    // callback (process.nextTick), and a socket closed now would drop them.
    const socket = this.socket;
    if (socket) setImmediate(() => socket.close());
    this.socket = null;
    this.portmapClosed ??= this.portmapper?.close() ?? Promise.resolve();
  }

  /** Resolves once the port mapping is deleted from the router after close() (bounded: DELETE_TIMEOUT_MS). */
  released(): Promise<void> {
    return this.portmapClosed ?? Promise.resolve();
  }

  /**
   * The mapping is asked for in the background and never delays a session:
   * candidates gathered before it exists go without it, and when it appears,
   * changes port or is lost, every live session sends its new candidates
   * (the rendezvous forwards them to the peer as a punch) and replans its own round.
   */
  private startPortmap(port: number): void {
    const mapper = new PortMapper({ port, log: this.opts.log });
    this.portmapper = mapper;
    mapper.on('change', (m: Mapping | null) => this.onMapping(m));
    void mapper.start();
  }

  private onMapping(m: Mapping | null): void {
    this.portmapChanges++;
    if (!this.gathered) return;
    this.gathered = { ...this.gathered, candidates: withMappedCandidate(this.gathered.candidates, m) };
    const g = this.gathered;
    for (const [sid, t] of this.tunnels) {
      if (t.session.closed || !t.direct) continue;
      if (t.control && !t.control.isClosed)
        t.control.send({ type: 'candidates', sid, candidates: g.candidates, nat: g.nat });
      if (t.session.path?.kind === 'direct') continue;
      const plan = t.direct.planFor([], planPunch(g.nat, t.peerNat));
      if (plan.kind !== 'none') t.direct.punch([], plan, 0);
    }
  }

  /** Candidates for a new session, from STUN on the data sockets (empty with --mode relay). */
  async gather(control: ControlClient): Promise<Gathered> {
    if (!this.socket || !control.welcome) return { candidates: [], nat: { mapping: 'unknown', filtering: 'unknown' } };
    const connected = control.remoteAddress !== undefined ? unmapIPv4(control.remoteAddress) : this.opts.server.host;
    // STUN per family: the address we are connected to for its family, the server name's
    // other records for the other (a literal has one family only).
    const targets = firstPerFamily([connected, ...(await resolveAll(control.opts.server.host))]);
    const loopback = connected.startsWith('127.') || connected === '::1';
    const udpPort = control.welcome.udpPort;
    const g = await gatherCandidates(this.socket, targets.IPv4 ? { address: targets.IPv4, port: udpPort } : null, {
      includeLoopback: loopback,
      // ::1 only when the rendezvous is there: a test on 127.0.0.1 stays on IPv4 loopback, as it always was.
      includeLoopback6: connected === '::1',
      stun6: targets.IPv6 ? { address: targets.IPv6, port: udpPort } : null,
    });
    // The port mapping, if the gateway granted one by now (it is never waited for).
    this.portmapSeen = this.portmapChanges;
    this.gathered = { ...g, candidates: withMappedCandidate(g.candidates, this.portmapper?.mapping ?? null) };
    return this.gathered;
  }

  /** Routes a `punch` from the rendezvous to its session (or keeps it until the session exists). */
  onPunch(m: MessageOf<'punch'>): void {
    const t = this.tunnels.get(m.sid);
    if (!t) {
      if (this.early.size < 256) this.early.set(m.sid, m);
      setTimeout(() => this.early.delete(m.sid), EARLY_PUNCH_KEEP_MS).unref();
      return;
    }
    if (m.peerNat) t.peerNat = m.peerNat;
    const fallback = planPunch(this.gathered?.nat, t.peerNat);
    const plan = t.direct ? t.direct.planFor(m.candidates, fallback) : fallback;
    if (plan.kind === 'none' && this.opts.mode === 'direct' && t.session.path?.kind !== 'direct') {
      // Nothing to wait for: say so now rather than after the punch timeout.
      t.session.close(`no direct path is possible: ${plan.cause}`);
      return;
    }
    t.direct?.punch(m.candidates, plan, m.delayMs);
  }

  /** Creates the session and its paths; resolves once data can flow (relay up, or direct up with --mode direct). */
  async start(args: {
    keys: SessionKeys;
    sid: string;
    role: 'visitor' | 'server';
    ticket: string;
    control: ControlClient;
    peerNat?: NatInfo;
    onStream?: (s: MuxStream) => void;
    /** Called with the new session before any path can deliver to it (a UDP service's flows listen from the start). */
    onSession?: (s: Session) => void;
  }): Promise<Tunnel> {
    const { log, mode } = this.opts;
    const { sid, control } = args;
    // A session outlives its paths for the resume timeout: silence ends it only after that (PROTOCOL.md section 6).
    const deadAfterMs = Math.max(SESSION_SILENCE_MIN_MS, this.opts.resumeTimeoutMs ?? RESUME_TIMEOUT_MS);
    const session = new Session({
      keys: args.keys,
      role: args.role,
      log,
      sid,
      deadAfterMs,
      silenceCode: 'resume_timeout',
    });
    const tunnel: Tunnel = {
      session,
      direct: null,
      pmtu: null,
      relay: null,
      peerNat: args.peerNat,
      control,
      chains: {
        relay: new ResumeChain(args.keys, sid, args.role, 'relay'),
        rendezvous: new ResumeChain(args.keys, sid, args.role, 'rendezvous'),
      },
      resumes: 0,
    };
    this.tunnels.set(sid, tunnel);
    // Our anchor, so that this side can come back on a new control connection (session_resume).
    if (control.welcome?.features?.includes('resume'))
      control.send({ type: 'session_commit', sid, anchor: tunnel.chains!.rendezvous.anchorText });
    // Lets the rendezvous count sessions by path and punch successes (status, metrics).
    const report = (path: 'relay' | 'direct' | 'closed') => {
      const c = tunnel.control ?? control;
      if (!c.isClosed && c.welcome?.features?.includes('path_report'))
        c.send({ type: 'path_report', sid, path, ...trafficFields(session) });
    };
    session.on('path', (p: Path) => {
      log.info('path', `session ${sid} now on the ${p.kind} path (${p.remote})`, {
        sid,
        path: p.kind,
        remote: p.remote,
      });
      report(p.kind);
    });
    session.once('close', (reason: string, code: string | null) => {
      report('closed');
      const info = this.describe(tunnel);
      for (const k of Object.keys(this.retired) as (keyof TunnelTotals)[])
        if (k !== 'sessions') this.retired[k] += info[k];
      this.retired.sessions++;
      this.tunnels.delete(sid);
      // A failure (it has a code: no path, the resume timeout ran out) is an `error` event too; its streams were reset.
      if (code) log.error('error', `session ${sid} ended: ${reason}; its connections were reset`, { sid, code });
      log.info('session_closed', `session ${sid} closed: ${reason}`, code ? { sid, code } : { sid });
    });
    if (args.onStream) session.mux.on('stream', args.onStream);
    args.onSession?.(session);
    // `peer ping` over the relay; the visitor's traffic reports feed the rendezvous dashboard.
    answerProbesOffDirect(session);
    if (args.role === 'visitor') startTrafficReports(session, control);
    if (this.socket) {
      tunnel.direct = new DirectPathManager({
        session,
        socket: this.socket,
        log,
        relay: () => tunnel.relay,
        requestRepunch: () => void this.repunch(tunnel.control ?? control, sid),
        onQuickDeath: () => void this.checkLegs(tunnel),
        planner: new PunchPlanner({
          role: args.role,
          store: this.punchMemory,
          localNat: () => this.gathered?.nat,
          localCandidates: () => this.gathered?.candidates ?? [],
          peerNat: () => tunnel.peerNat,
          log,
          sid,
        }),
      });
      if (this.portmapSeen !== this.portmapChanges && this.gathered) {
        // The mapping changed after this session's candidates went out.
        this.portmapSeen = this.portmapChanges;
        control.send({ type: 'candidates', sid, candidates: this.gathered.candidates, nat: this.gathered.nat });
      }
      tunnel.direct.deliverTo(session.deliver);
      tunnel.pmtu = new PmtuDriver({ session, log, ...this.opts.pmtu });
      const early = this.early.get(sid);
      if (early) {
        this.early.delete(sid);
        this.onPunch(early);
      }
    }
    if (mode !== 'direct') {
      const relayHost = control.welcome?.relay?.host ?? this.opts.server.host;
      const relayPort = control.welcome?.relay?.port ?? this.opts.server.port;
      try {
        const relay = await RelayPath.open(
          relayHost,
          relayPort,
          args.ticket,
          undefined,
          tunnel.chains!.relay.anchorText,
        );
        tunnel.relayAt = { host: relayHost, port: relayPort };
        session.once('close', () => tunnel.relay?.close());
        this.attachRelay(tunnel, relay);
      } catch (e) {
        session.close((e as Error).message);
        throw e;
      }
    }
    return tunnel;
  }

  /** Makes `relay` the session's relay path; the relay first, unless a live direct path carries the session. */
  private attachRelay(tunnel: Tunnel, relay: RelayPath): void {
    const { session } = tunnel;
    tunnel.relay = relay;
    // Like every path: received datagrams go to the session, availability is reported, the session chooses.
    relay.on('close', () => this.relayLost(tunnel, relay));
    session.setPath('relay', relay);
    // After setPath, so that answers to what arrived early have a path to take.
    relay.deliverTo(session.deliver);
  }

  /**
   * The relay leg died. A session that was direct before may punch again; in
   * any case the leg is taken back (relay_resume) with backoff, for up to the
   * resume timeout, while KCP keeps what is in flight. Only a relay that says
   * the session is gone (the other side ended it) or refuses the proof ends it.
   */
  private relayLost(tunnel: Tunnel, relay: RelayPath): void {
    const { session } = tunnel;
    const { log } = this.opts;
    if (tunnel.relay === relay) tunnel.relay = null;
    const onRelay = session.path === relay;
    session.setPath('relay', null);
    if (session.closed) return;
    log.warn('relay_lost', `session ${session.sid} lost its relay leg; taking it back`, { sid: session.sid });
    // Punch again too (without a deadline: the session's bound is the resume timeout).
    if (onRelay && tunnel.direct) {
      tunnel.direct.punch([], planPunch(this.gathered?.nat, tunnel.peerNat), 0);
      if (tunnel.control) void this.repunch(tunnel.control, session.sid);
    }
    void this.resumeRelay(tunnel);
  }

  /**
   * After the direct path died of quick probes: a relay leg that answers no
   * heartbeat and a control connection that answers no ping within
   * LEG_CHECK_MS are dropped (without a FIN) and taken back (relay_resume, a
   * reconnect with session_resume and fresh candidates, which brings a new punch).
   */
  private async checkLegs(tunnel: Tunnel): Promise<void> {
    const { session } = tunnel;
    const relay = tunnel.relay;
    const control = tunnel.control;
    const t0 = performance.now();
    if (relay && !relay.closed) session.sendSealed(DatagramType.Heartbeat, new Uint8Array(0), relay);
    const controlAlive = control && !control.isClosed ? control.check(LEG_CHECK_MS) : Promise.resolve(true);
    await sleep(LEG_CHECK_MS);
    const alive = await controlAlive;
    if (session.closed) return;
    const dropped: string[] = [];
    if (relay && !relay.closed && tunnel.relay === relay && relay.lastRecv < t0) {
      dropped.push('relay');
      relay.abandon('no answer on the relay leg after the direct path died');
    }
    if (!alive && control && !control.isClosed && tunnel.control === control) {
      dropped.push('control');
      control.abandon();
    }
    if (dropped.length)
      this.opts.log.info('legs_dropped', `session ${session.sid}: ${dropped.join(' and ')} silent too: taking back`, {
        sid: session.sid,
        legs: dropped,
      });
  }

  private async resumeRelay(tunnel: Tunnel): Promise<void> {
    const { session } = tunnel;
    const { log } = this.opts;
    const at = tunnel.relayAt;
    const chain = tunnel.chains?.relay;
    if (tunnel.relayResuming || !at || !chain) return;
    tunnel.relayResuming = true;
    const started = performance.now();
    const limit = this.opts.resumeTimeoutMs ?? RESUME_TIMEOUT_MS;
    const backoff = new Backoff({ initialMs: RELAY_RESUME_FIRST_MS, maxMs: RELAY_RESUME_MAX_MS });
    let why = `the relay could not be reached again within --resume-timeout (${Math.round(limit / 1000)} s)`;
    let giveUp: ErrorCode | undefined;
    try {
      for (let attempt = 1; attempt <= MAX_RELAY_RESUME_ATTEMPTS; attempt++) {
        if (await this.nap(backoff.next())) backoff.reset();
        if (session.closed) return;
        if (performance.now() - started > limit) break;
        try {
          const relay = await RelayPath.resume(
            at.host,
            at.port,
            session.sid,
            session.opts.role,
            () => chain.next(),
            RELAY_RESUME_ATTEMPT_MS,
          );
          if (session.closed) return relay.close();
          session.once('close', () => relay.close());
          tunnel.resumes = (tunnel.resumes ?? 0) + 1;
          const ms = Math.round(performance.now() - started);
          log.info('resume', `session ${session.sid}: relay leg taken back after ${ms} ms`, {
            sid: session.sid,
            why: 'relay_lost',
            what: 'relay',
            ms,
            attempts: attempt,
          });
          this.attachRelay(tunnel, relay);
          return;
        } catch (e) {
          const code = (e as { code?: string }).code;
          if (code === 'unknown_session' || code === 'bad_proof') {
            why = (e as Error).message;
            giveUp = code;
            break;
          }
          log.debug('resume_retry', `session ${session.sid}: relay not back yet: ${(e as Error).message}`, {
            sid: session.sid,
            attempt,
          });
        }
      }
    } finally {
      tunnel.relayResuming = false;
    }
    if (session.closed) return;
    const code: ErrorCode = giveUp ?? 'resume_timeout';
    const p = session.path;
    if (!p || p.closed || p.kind === 'relay') {
      log.warn('resume_failed', `session ${session.sid}: ${why}`, { sid: session.sid, code, what: 'relay' });
      session.close(`relay connection lost: ${why}`, code);
    } else log.warn('relay_lost', `session ${session.sid} stays direct without a relay: ${why}`, { sid: session.sid });
  }

  /**
   * A new control connection (after the old one was lost): every live session
   * moves to it and re-announces itself with a resume proof, with fresh
   * candidates, so that the rendezvous can broker a new punch.
   */
  adoptControl(control: ControlClient): void {
    for (const t of this.tunnels.values()) {
      if (t.session.closed || t.control === control) continue;
      t.control = control;
      void this.announce(t, control);
    }
  }

  private async announce(t: Tunnel, control: ControlClient): Promise<void> {
    const { log } = this.opts;
    const { session } = t;
    const chain = t.chains?.rendezvous;
    if (!chain || !control.welcome?.features?.includes('resume')) return;
    const started = performance.now();
    const g = await this.gather(control).catch(() => null);
    const token = chain.next();
    if (!token || control.isClosed || session.closed) return;
    const sid = session.sid;
    const isResumed = (m: ControlMessage): m is MessageOf<'session_resumed'> =>
      m.type === 'session_resumed' && m.sid === sid;
    try {
      await control.request(
        {
          type: 'session_resume',
          sid,
          role: session.opts.role,
          token,
          candidates: g?.candidates ?? [],
          nat: g?.nat,
        },
        isResumed,
        SESSION_RESUME_ANSWER_MS,
      );
      t.resumes = (t.resumes ?? 0) + 1;
      const ms = Math.round(performance.now() - started);
      log.info('resume', `session ${sid}: re-announced to the rendezvous in ${ms} ms`, {
        sid,
        why: 'control_lost',
        what: 'rendezvous',
        ms,
      });
    } catch (e) {
      log.warn('resume_failed', `session ${sid}: the rendezvous did not take it back: ${(e as Error).message}`, {
        sid,
        code: (e as { code?: string }).code,
        what: 'rendezvous',
      });
    }
  }

  /**
   * A backoff wait of the loops that take paths back (relay resume, control
   * reconnect): cut short, resolving true, when an address appears on this
   * host, since the network that was missing may be back (NetWatch polls
   * every second). The caller then starts its backoff over.
   */
  nap(ms: number): Promise<boolean> {
    return sleepUnless(ms, this.netwatch.addressAdded);
  }

  /** Some session is live: the node that brokered it is the only one that can resume it (ServerList.lost). */
  get holdsSessions(): boolean {
    for (const t of this.tunnels.values()) if (!t.session.closed) return true;
    return false;
  }

  /** Live sessions, for `peer status`. */
  snapshot(): TunnelInfo[] {
    return [...this.tunnels.values()].map((t) => this.describe(t));
  }

  /** Monotonic counters over closed and live sessions, for metrics. */
  totals(): TunnelTotals {
    const sum = { ...this.retired };
    for (const t of this.tunnels.values()) {
      const info = this.describe(t);
      for (const k of Object.keys(sum) as (keyof TunnelTotals)[]) if (k !== 'sessions') sum[k] += info[k];
      sum.sessions++;
    }
    return sum;
  }

  private describe(t: Tunnel): TunnelInfo {
    const s = t.session;
    const path = s.path && !s.path.closed ? s.path : null;
    return {
      sid: s.sid,
      role: s.opts.role,
      path: path?.kind ?? null,
      remote: path?.remote ?? null,
      rttMs: s.kcp.snapshot().rxSrtt,
      bytesSent: s.mux.bytesSent,
      bytesReceived: s.mux.bytesReceived,
      wireBytesOut: s.bytesOut,
      wireBytesIn: s.bytesIn,
      streams: s.mux.streamCount,
      startedAt: s.startedAt,
      rejectedDatagrams: s.rejected,
      punchAttempts: t.direct?.attempts ?? 0,
      punchSuccesses: t.direct?.successes ?? 0,
      pmtu: t.pmtu?.status() ?? null,
      localNat: this.gathered?.nat ?? null,
      localIPv6: this.gathered?.ipv6 ?? null,
      peerNat: t.peerNat ?? null,
      resumes: t.resumes ?? 0,
      mapped: describeMapped(this.gathered?.candidates),
    };
  }

  private async repunch(control: ControlClient, sid: string): Promise<void> {
    if (control.isClosed) return;
    const g = await this.gather(control);
    control.send({ type: 'candidates', sid, candidates: g.candidates, nat: g.nat });
  }
}

export type { Candidate };

function describeMapped(cands: readonly Candidate[] | undefined): string | null {
  const c = cands && mappedCandidate(cands);
  return c ? `${formatHostPort(c)} via ${c.portmap ?? 'mapping'}` : null;
}
