/**
 * Port allocation of a NAT (issue 21): how it picks the public port of each
 * new mapping. Pure: classifyAllocation() reads Binding results of ONE socket
 * toward distinct destinations (the rendezvous's main port, its second port,
 * and its alternate address when it has one), in the order they were made.
 *
 * - preserving: every mapping kept the socket's own port (the usual cone NAT);
 * - sequential: each new mapping took the next port of one counter (carrier
 *   and enterprise NATs): the next mapping is predictable, `step` apart;
 * - random: anything else with distinct ports (Linux `masquerade random`);
 * - unknown: fewer than two destinations answered, or one public port for
 *   every destination that is not the socket's own (nothing to compare).
 */

/**
 * Largest port difference between two consecutive mappings still read as a
 * sequence: the NAT's own step (1 or 2 on every box we know of) plus ports
 * other hosts behind it took between our two Bindings (a few ms apart).
 * A random NAT lands this close by chance with probability about 2 x 16 / 64512.
 */
export const MAX_SEQUENTIAL_GAP = 16;
/**
 * The span the samples must cover before the gaps say anything about the
 * rate at which OTHER hosts take ports (ports per second, for predictions
 * made later): Bindings a few ms apart see almost nobody else.
 */
export const RATE_MIN_SPAN_MS = 500;

export type Allocation = 'preserving' | 'sequential' | 'random' | 'unknown';

export interface AllocationSample {
  /** Where the Binding went. */
  server: { address: string; port: number };
  /** The public port the server saw (null: no answer). */
  mappedPort: number | null;
  /** When the answer came (any monotonic clock, ms). */
  at: number;
}

export interface AllocationResult {
  allocation: Allocation;
  /** sequential: the increment between consecutive mappings (the smallest gap seen). */
  step?: number;
  /** sequential: the last public port seen, and when (the base of a prediction). */
  lastPort?: number;
  lastAt?: number;
  /** sequential: ports per second taken by other hosts between our Bindings, when the samples span enough time. */
  rate?: number;
}

/**
 * Classifies port allocation from one socket's Bindings (pure). `localPort` is
 * the socket's own port (for 'preserving'). Samples to a destination seen
 * before are ignored (the NAT reuses that mapping), so are unanswered ones.
 */
export function classifyAllocation(samples: readonly AllocationSample[], localPort: number): AllocationResult {
  const seen = new Set<string>();
  const answered: { port: number; at: number }[] = [];
  for (const s of [...samples].sort((a, b) => a.at - b.at)) {
    const key = `${s.server.address}|${s.server.port}`;
    if (s.mappedPort === null || seen.has(key)) continue;
    seen.add(key);
    answered.push({ port: s.mappedPort, at: s.at });
  }
  if (answered.length < 2) return { allocation: 'unknown' };
  if (answered.every((a) => a.port === localPort)) return { allocation: 'preserving' };
  if (answered.every((a) => a.port === answered[0].port)) return { allocation: 'unknown' };
  const gaps: number[] = [];
  for (let i = 1; i < answered.length; i++) gaps.push(answered[i].port - answered[i - 1].port);
  if (!gaps.every((g) => g > 0 && g <= MAX_SEQUENTIAL_GAP)) return { allocation: 'random' };
  const step = Math.min(...gaps);
  const last = answered[answered.length - 1];
  const out: AllocationResult = { allocation: 'sequential', step, lastPort: last.port, lastAt: last.at };
  const span = last.at - answered[0].at;
  if (span >= RATE_MIN_SPAN_MS) {
    const others = gaps.reduce((n, g) => n + (g / step - 1), 0);
    out.rate = Math.round((others / span) * 1000 * 100) / 100;
  }
  return out;
}
