import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { TunnelInfo, TunnelTotals } from './tunnel.js';
import { PORTMAP_PROTOCOLS, portmapCounters } from '../src/portmap/mapper.js';
import { UDP_DROP_REASONS, type UdpCounters } from '../src/udp/stats.js';

/** What one serve or visit entry contributes; read at every scrape. */
export interface PeerMetricsEntry {
  kind: 'serve' | 'visit';
  name: string;
  totals: TunnelTotals;
  tunnels: TunnelInfo[];
  /** serve: holds its name on the rendezvous. */
  up: boolean;
  /** A --proto udp entry's counters (null for TCP). */
  udp?: UdpCounters | null;
}

/**
 * Prometheus metrics of a peer process. Values are read from the tunnels at
 * scrape time (no hot-path bookkeeping); counters are sums over closed and
 * live sessions, so they only grow.
 */
export function createPeerMetrics(source: () => PeerMetricsEntry[]): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const labels = ['kind', 'name'] as const;
  // One snapshot per scrape, shared by every metric's collect().
  let cache: { at: number; entries: PeerMetricsEntry[] } | null = null;
  const entries = () => {
    const now = Date.now();
    if (!cache || now - cache.at > 200) cache = { at: now, entries: source() };
    return cache.entries;
  };
  const counter = (
    name: string,
    help: string,
    pick: (t: TunnelTotals) => number,
    extra?: { label: string; values: [string, (t: TunnelTotals) => number][] },
  ) =>
    new Counter({
      name,
      help,
      labelNames: extra ? [...labels, extra.label] : [...labels],
      registers: [registry],
      collect() {
        this.reset();
        for (const e of entries()) {
          if (extra)
            for (const [v, f] of extra.values) this.inc({ kind: e.kind, name: e.name, [extra.label]: v }, f(e.totals));
          else this.inc({ kind: e.kind, name: e.name }, pick(e.totals));
        }
      },
    });
  // Port mappings of the data sockets (docs/PORTMAP.md): process-wide, per protocol.
  for (const [what, help] of [
    ['made', 'Port mappings the gateway granted (new, re-created or moved; renewals not counted)'],
    ['failed', 'Port mapping requests the gateway refused or did not answer'],
  ] as const)
    new Counter({
      name: `holepunch_peer_portmap_${what === 'made' ? 'mappings' : 'failures'}_total`,
      help,
      labelNames: ['protocol'],
      registers: [registry],
      collect() {
        this.reset();
        for (const p of PORTMAP_PROTOCOLS) this.inc({ protocol: p }, portmapCounters[what][p]);
      },
    });
  counter('holepunch_peer_sessions_total', 'Tunnel sessions opened (visit) or accepted (serve)', (t) => t.sessions);
  counter('holepunch_peer_stream_bytes_total', 'Application bytes carried by streams', () => 0, {
    label: 'direction',
    values: [
      ['sent', (t) => t.bytesSent],
      ['received', (t) => t.bytesReceived],
    ],
  });
  counter(
    'holepunch_peer_wire_bytes_total',
    'Sealed datagram bytes on the active paths (overhead, retransmissions, heartbeats included)',
    () => 0,
    {
      label: 'direction',
      values: [
        ['sent', (t) => t.wireBytesOut],
        ['received', (t) => t.wireBytesIn],
      ],
    },
  );
  counter('holepunch_peer_punch_attempts_total', 'Hole punching rounds started', (t) => t.punchAttempts);
  counter('holepunch_peer_punch_successes_total', 'Direct paths confirmed', (t) => t.punchSuccesses);
  counter(
    'holepunch_peer_rejected_datagrams_total',
    'Datagrams dropped: failed authentication, replayed, or for another receiver',
    (t) => t.rejectedDatagrams,
  );

  // UDP services (--proto udp): only entries that carry UDP have these series.
  const udpCounter = (name: string, help: string, label: string, values: [string, (u: UdpCounters) => number][]) =>
    new Counter({
      name,
      help,
      labelNames: [...labels, label],
      registers: [registry],
      collect() {
        this.reset();
        for (const e of entries())
          if (e.udp) for (const [v, f] of values) this.inc({ kind: e.kind, name: e.name, [label]: v }, f(e.udp));
      },
    });
  udpCounter('holepunch_peer_udp_datagrams_total', 'User datagrams of a UDP service', 'direction', [
    ['sent', (u) => u.datagramsSent],
    ['received', (u) => u.datagramsReceived],
  ]);
  udpCounter('holepunch_peer_udp_bytes_total', 'Payload bytes of the user datagrams of a UDP service', 'direction', [
    ['sent', (u) => u.bytesSent],
    ['received', (u) => u.bytesReceived],
  ]);
  udpCounter(
    'holepunch_peer_udp_drops_total',
    'User datagrams dropped, by reason (too_large, no_path, flow_limit, unreachable, ...)',
    'reason',
    UDP_DROP_REASONS.map((r) => [r, (u: UdpCounters) => u.drops[r]] as [string, (u: UdpCounters) => number]),
  );
  new Gauge({
    name: 'holepunch_peer_udp_flows',
    help: 'Open UDP flows (one per client address) of a UDP service',
    labelNames: [...labels],
    registers: [registry],
    collect() {
      this.reset();
      for (const e of entries()) if (e.udp) this.set({ kind: e.kind, name: e.name }, e.udp.flows);
    },
  });
  new Gauge({
    name: 'holepunch_peer_tunnels',
    help: 'Live tunnel sessions by path',
    labelNames: [...labels, 'path'],
    registers: [registry],
    collect() {
      this.reset();
      for (const e of entries()) {
        const by: Record<string, number> = { relay: 0, direct: 0, none: 0 };
        for (const t of e.tunnels) by[t.path ?? 'none']++;
        for (const [path, n] of Object.entries(by)) this.set({ kind: e.kind, name: e.name, path }, n);
      }
    },
  });
  new Gauge({
    name: 'holepunch_peer_streams',
    help: 'Open streams (TCP connections) in live sessions',
    labelNames: [...labels],
    registers: [registry],
    collect() {
      this.reset();
      for (const e of entries())
        this.set(
          { kind: e.kind, name: e.name },
          e.tunnels.reduce((n, t) => n + t.streams, 0),
        );
    },
  });
  new Gauge({
    name: 'holepunch_peer_rtt_seconds',
    help: 'Smoothed round-trip time of the newest live session',
    labelNames: [...labels],
    registers: [registry],
    collect() {
      this.reset();
      for (const e of entries()) {
        const t = [...e.tunnels].sort((a, b) => b.startedAt - a.startedAt)[0];
        if (t) this.set({ kind: e.kind, name: e.name }, t.rttMs / 1000);
      }
    },
  });
  new Gauge({
    name: 'holepunch_peer_up',
    help: 'serve: 1 while the name is registered on the rendezvous; visit: 1 while a session is open',
    labelNames: [...labels],
    registers: [registry],
    collect() {
      this.reset();
      for (const e of entries()) this.set({ kind: e.kind, name: e.name }, e.up ? 1 : 0);
    },
  });
  return registry;
}
