import type { Duplex } from 'node:stream';
import { Session } from '../src/session/session.js';
import { RelayPath } from '../src/session/relay-path.js';
import type { Path } from '../src/session/path.js';
import type { SessionKeys } from '../src/crypto/index.js';
import { DirectPathManager, RELAY_LOST_GRACE_MS } from '../src/punch/direct.js';
import { gatherCandidates, mappedCandidate, withMappedCandidate, type Gathered } from '../src/punch/candidates.js';
import { PortMapper, type Mapping } from '../src/portmap/mapper.js';
import { PeerSocket } from '../src/punch/peer-socket.js';
import { planPunch } from '../src/punch/strategy.js';
import { PunchMemoryStore, PunchPlanner } from '../src/punch/planner.js';
import type { Candidate, MessageOf, Mode, NatInfo } from '../src/wire/control.js';
import { unmapIPv4, type HostPort } from '../src/util/addr.js';
import type { Logger } from '../src/util/log.js';
import type { ControlClient } from './control-client.js';
import type { Sinkable } from '../src/session/bridge.js';

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
  localNat: NatInfo | null;
  peerNat: NatInfo | null;
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
  relay: RelayPath | null;
  peerNat?: NatInfo;
  /** The control connection the session was brokered on (candidate updates go there). */
  control?: ControlClient;
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

  constructor(readonly opts: { log: Logger; mode: Mode; server: HostPort; portmap?: boolean }) {}

  /** Opens the UDP socket unless punching is off, and starts asking the gateway for a mapping of it. */
  async open(): Promise<void> {
    if (this.opts.mode !== 'relay' && !this.socket) {
      this.socket = await PeerSocket.open();
      if (this.opts.portmap !== false) this.startPortmap(this.socket.port);
    }
  }

  close(): void {
    for (const t of this.tunnels.values()) t.session.close('shutting down');
    this.socket?.close();
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

  /** Candidates for a new session, from STUN on the data socket (empty with --mode relay). */
  async gather(control: ControlClient): Promise<Gathered> {
    if (!this.socket || !control.welcome) return { candidates: [], nat: { mapping: 'unknown', filtering: 'unknown' } };
    const host = control.remoteAddress !== undefined ? unmapIPv4(control.remoteAddress) : this.opts.server.host;
    const loopback = host.startsWith('127.') || host === '::1';
    const g = await gatherCandidates(
      this.socket,
      { address: host, port: control.welcome.udpPort },
      { includeLoopback: loopback },
    );
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
  }): Promise<Tunnel> {
    const { log, mode } = this.opts;
    const { sid, control } = args;
    const session = new Session({ keys: args.keys, role: args.role, log, sid });
    const tunnel: Tunnel = { session, direct: null, relay: null, peerNat: args.peerNat, control };
    this.tunnels.set(sid, tunnel);
    // Lets the rendezvous count sessions by path and punch successes (status, metrics).
    const report = (path: 'relay' | 'direct' | 'closed') => {
      if (!control.isClosed && control.welcome?.features?.includes('path_report'))
        control.send({ type: 'path_report', sid, path });
    };
    session.on('path', (p: Path) => {
      log.info('path', `session ${sid} now on the ${p.kind} path (${p.remote})`, {
        sid,
        path: p.kind,
        remote: p.remote,
      });
      report(p.kind);
    });
    session.once('close', (reason: string) => {
      report('closed');
      const info = this.describe(tunnel);
      for (const k of Object.keys(this.retired) as (keyof TunnelTotals)[])
        if (k !== 'sessions') this.retired[k] += info[k];
      this.retired.sessions++;
      this.tunnels.delete(sid);
      log.info('session_closed', `session ${sid} closed: ${reason}`, { sid });
    });
    if (args.onStream) session.mux.on('stream', args.onStream);
    if (this.socket) {
      tunnel.direct = new DirectPathManager({
        session,
        socket: this.socket,
        log,
        relay: () => tunnel.relay,
        requestRepunch: () => void this.repunch(control, sid),
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
        const relay = await RelayPath.open(relayHost, relayPort, args.ticket);
        tunnel.relay = relay;
        // Like every path: received datagrams go to the session, availability is reported, the session chooses.
        relay.deliverTo(session.deliver);
        relay.on('close', () => {
          tunnel.relay = null;
          session.setPath('relay', null);
          if (session.path !== relay) return;
          // A session that was direct before may punch again rather than die with the relay.
          if (tunnel.direct?.recover(RELAY_LOST_GRACE_MS, 'relay connection lost')) {
            log.warn('relay_lost', `session ${sid} lost the relay; punching again`, { sid });
            return;
          }
          session.close('relay connection lost');
        });
        session.once('close', () => relay.close());
        // The session moves onto it unless a hole already opened while the relay connected.
        session.setPath('relay', relay);
      } catch (e) {
        session.close((e as Error).message);
        throw e;
      }
    }
    return tunnel;
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
      localNat: this.gathered?.nat ?? null,
      peerNat: t.peerNat ?? null,
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
  return c ? `${c.address}:${c.port} via ${c.portmap ?? 'mapping'}` : null;
}
