/**
 * Counters of a UDP service entry (serve or visit with `--proto udp`), summed
 * over its sessions: what `peer status` and the metrics show. Monotonic except
 * `flows`, the flows open now.
 */

/** Why a user datagram was dropped. Public (status JSON, metric label): extend, never rename. */
export const UDP_DROP_REASONS = [
  /** Larger than the active path carries whole (datagrams are never split). */
  'too_large',
  /** No session or no open path at that moment (the session is being opened or resumed). */
  'no_path',
  /** It would have opened a flow beyond the per-session cap (MAX_UDP_FLOWS). */
  'flow_limit',
  /** The service answered ICMP port unreachable (nothing listens on --local). */
  'unreachable',
  /** A reply for a flow the visit side no longer has (it expired). */
  'unknown_flow',
  /** The local socket refused it for another reason (buffer full, address gone). */
  'send_failed',
  /** A user datagram for a name served as TCP (a peer that ignored the proto check). */
  'wrong_proto',
] as const;
export type UdpDropReason = (typeof UDP_DROP_REASONS)[number];

export interface UdpCounters {
  /** Datagrams (and their payload bytes) into the tunnel, towards the peer. */
  datagramsSent: number;
  bytesSent: number;
  /** Datagrams (and payload bytes) out of the tunnel, handed to the local side. */
  datagramsReceived: number;
  bytesReceived: number;
  drops: Record<UdpDropReason, number>;
  /** Flows open now. */
  flows: number;
  /** Flows opened so far. */
  flowsOpened: number;
}

export function newUdpCounters(): UdpCounters {
  const drops = Object.fromEntries(UDP_DROP_REASONS.map((r) => [r, 0])) as Record<UdpDropReason, number>;
  return {
    datagramsSent: 0,
    bytesSent: 0,
    datagramsReceived: 0,
    bytesReceived: 0,
    drops,
    flows: 0,
    flowsOpened: 0,
  };
}

/** Total drops over every reason. */
export function totalDrops(c: UdpCounters): number {
  let n = 0;
  for (const r of UDP_DROP_REASONS) n += c.drops[r];
  return n;
}
