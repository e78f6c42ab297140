/**
 * When each peer should start probing, in ms after it receives `punch`, so
 * that both sides' first probes leave at about the same moment (as libp2p's
 * DCUtR does with RTT/2): the nearer peer waits for the farther one's message
 * to arrive. A small margin absorbs jitter. Unknown RTTs count as zero.
 */
/** The longest round trip taken into account (twice the longest delay the wire's `punch` carries). */
export const MAX_RTT_MS = 10_000;

export function punchDelays(
  visitorRttMs: number | null,
  serverRttMs: number | null,
  marginMs = 20,
): { visitor: number; server: number } {
  // A round trip is what a peer's pong made it: bounded, so no peer can push
  // the other's delay past what the `punch` message allows.
  const bound = (rtt: number | null) => Math.min(MAX_RTT_MS, Math.max(0, rtt ?? 0));
  const v = bound(visitorRttMs);
  const s = bound(serverRttMs);
  const far = Math.max(v, s);
  return {
    visitor: Math.round((far - v) / 2 + marginMs),
    server: Math.round((far - s) / 2 + marginMs),
  };
}
