/**
 * When each peer should start probing, in ms after it receives `punch`, so
 * that both sides' first probes leave at about the same moment (as libp2p's
 * DCUtR does with RTT/2): the nearer peer waits for the farther one's message
 * to arrive. A small margin absorbs jitter. Unknown RTTs count as zero.
 */
export function punchDelays(
  visitorRttMs: number | null,
  serverRttMs: number | null,
  marginMs = 20,
): { visitor: number; server: number } {
  const v = Math.max(0, visitorRttMs ?? 0);
  const s = Math.max(0, serverRttMs ?? 0);
  const far = Math.max(v, s);
  return {
    visitor: Math.round((far - v) / 2 + marginMs),
    server: Math.round((far - s) / 2 + marginMs),
  };
}
