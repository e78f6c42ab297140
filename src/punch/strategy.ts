import type { NatInfo } from '../wire/control.js';

/**
 * How to punch, from the two sides' NAT mapping behaviour (pure).
 *  - plain: probe every candidate pair; triggered checks learn peer-reflexive addresses.
 *  - open-sockets: I am behind a destination-dependent (symmetric) NAT and the peer is not:
 *    open many sockets toward the peer so that one of my mappings meets its probes.
 *  - spray-ports: the peer is the symmetric one: probe random ports on its public IP.
 *  - none: both symmetric; no hole can be punched, stay on the relay. `cause` says why no hole
 *    can be punched; `reason` adds what happens instead (the punch_skipped log line).
 */
export type PunchPlan =
  | { kind: 'plain' }
  | { kind: 'open-sockets' }
  | { kind: 'spray-ports' }
  | { kind: 'none'; cause: string; reason: string };

export function isHard(nat: NatInfo | undefined): boolean {
  return nat?.mapping === 'address-dependent' || nat?.mapping === 'address-and-port-dependent';
}

export function planPunch(mine: NatInfo | undefined, peer: NatInfo | undefined): PunchPlan {
  const iAmHard = isHard(mine);
  const peerIsHard = isHard(peer);
  if (iAmHard && peerIsHard) {
    const cause = 'both NATs map per destination (symmetric)';
    return { kind: 'none', cause, reason: `${cause}; staying on the relay` };
  }
  if (iAmHard) return { kind: 'open-sockets' };
  if (peerIsHard) return { kind: 'spray-ports' };
  return { kind: 'plain' };
}

/**
 * Path preference: a LAN address beats a public one; then a clearly lower
 * round-trip time. Small differences are noise (probe RTTs measured while a
 * birthday punch floods the event loop vary by tens of ms), and every switch
 * costs a path move on both peers, so they do not count.
 */
export function betterPath(a: { address: string; rttMs: number }, b: { address: string; rttMs: number }): boolean {
  const la = isPrivateAddress(a.address);
  const lb = isPrivateAddress(b.address);
  if (la !== lb) return la;
  return a.rttMs < b.rttMs * 0.7 && b.rttMs - a.rttMs > 25;
}

export function isPrivateAddress(ip: string): boolean {
  return (
    /^10\./.test(ip) ||
    /^192\.168\./.test(ip) ||
    /^172\.(1[6-9]|2\d|3[01])\./.test(ip) ||
    /^127\./.test(ip) ||
    /^169\.254\./.test(ip) ||
    /^f[cd]/i.test(ip) ||
    /^fe80:/i.test(ip) ||
    ip === '::1'
  );
}
