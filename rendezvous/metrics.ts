import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { RendezvousServer } from './server.js';
import type { NatInfo } from '../src/wire/control.js';
import { natTypeFrom } from '../src/stun/nat.js';

/**
 * Short, bounded label for a peer's NAT: the classic type name. Peers measure
 * their mapping at every session but not their filtering (only `peer nat`
 * does), so an endpoint-independent mapping with unknown filtering is `cone`
 * rather than `unknown`.
 */
export function natLabel(nat: NatInfo | null | undefined): string {
  if (!nat) return 'unknown';
  const type = natTypeFrom(nat.mapping, nat.filtering, false);
  return type === 'unknown' && nat.mapping === 'endpoint-independent' ? 'cone' : type;
}

/**
 * Prometheus metrics of a rendezvous. Gauges and most counters read the
 * server's state at scrape time; punch attempts and successes are counted as
 * they happen (from the server's events), labelled by the NAT pair.
 */
export function createRendezvousMetrics(server: RendezvousServer): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const pairLabels = ['visitor_nat', 'server_nat'] as const;
  const attempts = new Counter({
    name: 'holepunch_rendezvous_punch_attempts_total',
    help: 'Punches ordered, by the NAT types of the two peers',
    labelNames: pairLabels,
    registers: [registry],
  });
  const successes = new Counter({
    name: 'holepunch_rendezvous_punch_successes_total',
    help: 'Sessions that reported a direct path, by the NAT types of the two peers',
    labelNames: pairLabels,
    registers: [registry],
  });
  const pair = (v?: NatInfo, s?: NatInfo) => ({ visitor_nat: natLabel(v), server_nat: natLabel(s) });
  server.events.on('punch', (v?: NatInfo, s?: NatInfo) => attempts.inc(pair(v, s)));
  server.events.on('punch_success', (v?: NatInfo, s?: NatInfo) => successes.inc(pair(v, s)));

  const gauge = (name: string, help: string, read: () => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(read());
      },
    });
  const total = (name: string, help: string, read: () => number) =>
    new Counter({
      name,
      help,
      registers: [registry],
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  gauge('holepunch_rendezvous_peers', 'Peers with an open control connection', () => server.snapshot().peers);
  gauge('holepunch_rendezvous_names', 'Names currently registered', () => server.snapshot().names.length);
  new Gauge({
    name: 'holepunch_rendezvous_sessions',
    help: 'Brokered sessions by path, as the peers report it (pending: no report yet)',
    labelNames: ['path'],
    registers: [registry],
    collect() {
      this.reset();
      const by: Record<string, number> = { pending: 0, relay: 0, direct: 0 };
      for (const s of server.snapshot().sessions) by[s.path]++;
      for (const [path, n] of Object.entries(by)) this.set({ path }, n);
    },
  });
  total('holepunch_rendezvous_sessions_total', 'Sessions brokered', () => server.stats.connects);
  total(
    'holepunch_rendezvous_relay_bytes_total',
    'Bytes forwarded by the embedded relay (both directions, framing included)',
    () => server.relay?.bytesForwarded ?? 0,
  );
  gauge(
    'holepunch_rendezvous_relay_sessions',
    'Paired sessions on the embedded relay',
    () => server.relay?.sessionCount ?? 0,
  );
  gauge(
    'holepunch_rendezvous_relay_kernel_sessions',
    'Paired sessions whose bytes the kernel forwards right now (splice; the rest forward in JavaScript)',
    () => server.relay?.kernelSessionCount ?? 0,
  );
  new Counter({
    name: 'holepunch_rendezvous_rejected_datagrams_total',
    help: 'UDP datagrams on the STUN port that were not a valid Binding request (dropped or answered with an error)',
    labelNames: ['reason'],
    registers: [registry],
    collect() {
      this.reset();
      const all = server.stuns.map((s) => s.responder.stats);
      const st = { ignored: all.reduce((n, x) => n + x.ignored, 0), errors: all.reduce((n, x) => n + x.errors, 0) };
      this.inc({ reason: 'ignored' }, st.ignored);
      this.inc({ reason: 'error_response' }, st.errors);
    },
  });
  total(
    'holepunch_rendezvous_limits_hit_total',
    'Requests refused because a limit was reached (connections, sessions, names, memory)',
    () => server.stats.limitsHit ?? 0,
  );
  total(
    'holepunch_rendezvous_unknown_name_total',
    'Visits refused because nobody serves the name',
    () => server.stats.rejected,
  );
  return registry;
}
