import type net from 'node:net';
import { ServePeer } from './serve.js';
import { VisitPeer } from './visit.js';
import { AdminServer } from './admin.js';
import type { PmtuSettings, TunnelInfo } from './tunnel.js';
import { createPeerMetrics, type PeerMetricsEntry } from './metrics.js';
import { startObserveServer } from '../src/metrics/http.js';
import { natTypeFrom } from '../src/stun/nat.js';
import { pingSession, type PingResult } from '../src/session/ping.js';
import { formatHostPort, type HostPort } from '../src/util/addr.js';
import type { Identity } from '../src/crypto/identity.js';
import { datagramAead, describeAead } from '../src/crypto/aead.js';
import type { Mode, NatInfo, Proto } from '../src/wire/control.js';
import type { UdpCounters } from '../src/udp/stats.js';
import type { Logger } from '../src/util/log.js';

export interface Common {
  server: HostPort;
  secret: string;
  token?: string;
  mode: Mode;
  identity?: Identity;
  /** How long a session waits for a lost path to come back before it ends (--resume-timeout). */
  resumeTimeoutMs?: number;
  /** Path MTU settings (`--max-datagram`, `--pmtu-raise-interval`). */
  pmtu?: PmtuSettings;
  /** UDP flows idle this long are closed (--udp-idle-timeout). */
  udpIdleMs?: number;
}
export interface ServeSpec extends Common {
  name: string;
  local: HostPort;
  allow?: Uint8Array[];
  /** What the name carries (--proto; default tcp). */
  proto?: Proto;
}
export interface VisitSpec extends Common {
  name: string;
  /** null: one connection on stdin/stdout. */
  bind: HostPort | null;
  serverKey?: Uint8Array;
  /** What the name carries (--proto; default tcp). */
  proto?: Proto;
}

type Entry =
  | { kind: 'serve'; spec: ServeSpec; peer: ServePeer }
  | { kind: 'visit'; spec: VisitSpec; peer: VisitPeer; bound?: string };

export interface NatView {
  mapping: string;
  filtering: string;
  type: string;
}
export interface TunnelStatus {
  name: string;
  kind: 'serve' | 'visit';
  sid: string;
  path: 'relay' | 'direct' | null;
  remote: string | null;
  rttMs: number | null;
  bytesSent: number;
  bytesReceived: number;
  wireBytesSent: number;
  wireBytesReceived: number;
  streams: number;
  uptimeS: number;
  startedAt: string;
  /**
   * `local` and `peer`: IPv4 (what punch plans are made of). `ipv6`: ours, per
   * family (issue 19): 'none' is no NAT (a global address, usually behind a
   * stateful firewall), 'translated' NAT66; null without IPv6.
   */
  nat: {
    local: NatView | null;
    peer: NatView | null;
    ipv6: { nat: 'none' | 'translated' | 'unknown'; address: string | null } | null;
  };
  punch: { attempts: number; successes: number };
  rejectedDatagrams: number;
  /** Times the session took a lost path back (relay leg, control connection). */
  resumes: number;
  /**
   * The direct path's MTU in use: `datagram` the largest UDP payload we send,
   * `mtu` the link MTU that carries it, `state` the search's (RFC 8899) or
   * asking/legacy for a peer not (yet) known to answer probes. null without a direct path.
   */
  pathMtu: { datagram: number; mtu: number; state: string } | null;
  /** Our port-mapped candidate ("ip:port via pcp"), null without one (docs/PORTMAP.md). */
  mapped: string | null;
}
/** What one `ping` through the admin socket answers. */
export interface PingReply extends PingResult {
  name: string;
  kind: 'serve' | 'visit';
  sid: string;
}

/** A ping through the admin socket waits at most this long: the socket closes idle requests at 5 s. */
const ADMIN_PING_MAX_MS = 4000;

export interface PeerStatus {
  pid: number;
  uptimeS: number;
  /** Which AEAD backends seal this process's datagrams and relay records (a slow fallback shows here). */
  aead: string;
  entries: {
    kind: 'serve' | 'visit';
    name: string;
    server: string;
    local?: string;
    bind?: string;
    up: boolean;
    streams: number;
    /** tcp or udp (--proto). */
    proto: Proto;
    /** A UDP entry's datagrams and bytes each way, drops by reason, and flows open now (absent for TCP). */
    udp?: UdpCounters;
  }[];
  tunnels: TunnelStatus[];
}

/**
 * One peer process: any number of serve and visit entries (from flags or a
 * config file), plus the admin socket and the metrics listener they share.
 */
export class PeerApp {
  private entries: Entry[] = [];
  private admin: AdminServer | null = null;
  private observe: { close(): Promise<void> } | null = null;
  private readonly started = Date.now();

  constructor(readonly log: Logger) {}

  /** Registers the name; rejects on what retrying cannot fix (name taken, bad token, unreachable at start). */
  async startServe(spec: ServeSpec, log = this.log): Promise<ServePeer> {
    const peer = new ServePeer({ ...spec, log });
    this.entries.push({ kind: 'serve', spec, peer });
    await peer.start();
    return peer;
  }

  /**
   * Opens the session and, with a bind address, the listener (logging `ready`); with stdio, carries one connection
   * and resolves when it ends.
   */
  async startVisit(spec: VisitSpec, log = this.log): Promise<VisitPeer> {
    const peer = new VisitPeer({ ...spec, log });
    const entry: Entry = { kind: 'visit', spec, peer };
    this.entries.push(entry);
    await peer.init();
    if (spec.bind) {
      const addr: net.AddressInfo = await peer.listen(spec.bind);
      entry.bound = formatHostPort(addr);
      const udp = peer.proto === 'udp';
      log.info('ready', `"${spec.name}" is reachable at ${udp ? 'udp ' : ''}${entry.bound}`, {
        name: spec.name,
        address: addr.address,
        port: addr.port,
        bind: entry.bound,
        proto: peer.proto,
      });
    } else {
      log.info('ready', `"${spec.name}" connected on stdin/stdout`, { name: spec.name, stdio: true });
      await peer.stdio();
    }
    return peer;
  }

  async startAdmin(path: string): Promise<string> {
    const admin = new AdminServer(path, async (req) => {
      if (req.cmd === 'status') return this.status();
      if (req.cmd === 'ping') return this.ping(req.name, req.timeoutMs);
      throw new Error(`unknown command "${req.cmd}"`);
    });
    await admin.listen();
    this.admin = admin;
    return path;
  }

  async startMetrics(listen: HostPort): Promise<string> {
    const registry = createPeerMetrics(() => this.metricsEntries());
    const srv = await startObserveServer({ listen, registry, status: () => this.status() });
    this.observe = srv;
    return formatHostPort(srv);
  }

  async status(): Promise<PeerStatus> {
    const now = Date.now();
    const tunnels: Promise<TunnelStatus>[] = [];
    for (const e of this.entries) {
      for (const t of e.peer.host.snapshot()) tunnels.push(this.tunnelStatus(e, t, now));
    }
    return {
      pid: process.pid,
      uptimeS: round1((now - this.started) / 1000),
      aead: describeAead(datagramAead()),
      entries: this.entries.map((e) => ({
        kind: e.kind,
        name: e.spec.name,
        server: formatHostPort(e.spec.server),
        ...(e.kind === 'serve' ? { local: formatHostPort(e.spec.local) } : { bind: e.bound ?? 'stdio' }),
        up: e.kind === 'serve' ? e.peer.registered : e.peer.connected,
        streams: e.peer.streams.size,
        proto: e.peer.proto,
        ...(e.peer.proto === 'udp' ? { udp: { ...e.peer.udp, drops: { ...e.peer.udp.drops } } } : {}),
      })),
      tunnels: await Promise.all(tunnels),
    };
  }

  /** Names this process serves or visits, for `peer ping` to find the right peer. */
  names(): string[] {
    return this.entries.map((e) => e.spec.name);
  }

  /**
   * `peer ping` through the admin socket: one probe on the active path of the
   * newest live session of entry `name` (a visit has one; a serve has one per visitor).
   */
  async ping(name: unknown, timeoutMs: unknown): Promise<PingReply> {
    if (typeof name !== 'string' || !name) throw new Error('ping needs a "name"');
    const wait = typeof timeoutMs === 'number' && timeoutMs > 0 ? Math.min(timeoutMs, ADMIN_PING_MAX_MS) : undefined;
    const mine = this.entries.filter((e) => e.spec.name.toLowerCase() === name.toLowerCase());
    if (!mine.length) throw new Error(`this peer neither serves nor visits "${name}"`);
    let best: { e: Entry; t: TunnelInfo } | null = null;
    for (const e of mine)
      for (const t of e.peer.host.snapshot()) if (!best || t.startedAt > best.t.startedAt) best = { e, t };
    const tunnel = best && best.e.peer.host.tunnels.get(best.t.sid);
    if (!best || !tunnel) throw new Error(`no live tunnel for "${name}" in this peer`);
    const r = await pingSession(tunnel.session, wait);
    return { name: best.e.spec.name, kind: best.e.kind, sid: best.t.sid, ...r, rttMs: round2(r.rttMs) };
  }

  /** Graceful: every entry stops accepting, open connections get `graceMs` to finish, then a FIN. */
  async shutdown(graceMs: number): Promise<void> {
    this.admin?.close();
    await Promise.all(this.entries.map((e) => e.peer.drain(graceMs)));
    await this.observe?.close();
  }

  stop(): void {
    this.admin?.close();
    for (const e of this.entries) e.peer.stop();
    void this.observe?.close();
  }

  /** After stop(): resolves once every entry's port mapping is deleted from the router (bounded). */
  async released(): Promise<void> {
    await Promise.all(this.entries.map((e) => e.peer.host.released()));
  }

  private async tunnelStatus(e: Entry, t: TunnelInfo, now: number): Promise<TunnelStatus> {
    // A fresh round trip through the tunnel; KCP's smoothed RTT when the peer is slow to answer.
    let rttMs: number | null = t.rttMs || null;
    const tunnel = e.peer.host.tunnels.get(t.sid);
    if (tunnel && !tunnel.session.closed) {
      try {
        rttMs = round1(await tunnel.session.mux.ping(1000));
      } catch {
        // keep the smoothed value
      }
    }
    return {
      name: e.spec.name,
      kind: e.kind,
      sid: t.sid,
      path: t.path,
      remote: t.remote,
      rttMs,
      bytesSent: t.bytesSent,
      bytesReceived: t.bytesReceived,
      wireBytesSent: t.wireBytesOut,
      wireBytesReceived: t.wireBytesIn,
      streams: t.streams,
      uptimeS: round1((now - t.startedAt) / 1000),
      startedAt: new Date(t.startedAt).toISOString(),
      nat: {
        local: natView(t.localNat),
        peer: natView(t.peerNat),
        ipv6: t.localIPv6
          ? { nat: t.localIPv6.nat, address: t.localIPv6.mapped ? formatHostPort(t.localIPv6.mapped) : null }
          : null,
      },
      punch: { attempts: t.punchAttempts, successes: t.punchSuccesses },
      rejectedDatagrams: t.rejectedDatagrams,
      resumes: t.resumes,
      pathMtu: t.pmtu ? { datagram: t.pmtu.datagram, mtu: t.pmtu.mtu, state: t.pmtu.state } : null,
      mapped: t.mapped ?? null,
    };
  }

  private metricsEntries(): PeerMetricsEntry[] {
    return this.entries.map((e) => ({
      kind: e.kind,
      name: e.spec.name,
      totals: e.peer.host.totals(),
      tunnels: e.peer.host.snapshot(),
      udp: e.peer.proto === 'udp' ? e.peer.udp : null,
      up: e.kind === 'serve' ? e.peer.registered : e.peer.connected,
    }));
  }
}

function natView(n: NatInfo | null): NatView | null {
  if (!n) return null;
  return { mapping: n.mapping, filtering: n.filtering, type: natTypeFrom(n.mapping, n.filtering, false) };
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}

function round1(x: number): number {
  return Math.round(x * 10) / 10;
}
