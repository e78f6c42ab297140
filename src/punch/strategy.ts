import type { Candidate, NatInfo } from '../wire/control.js';
import { Backoff } from '../util/backoff.js';
import { ipFamily } from '../util/addr.js';
import { predictNextPort, PREDICT_ROUND_MS, type PredictPlan, type PredictRole } from './predict.js';

/**
 * How to punch, from the two sides' NAT mapping behaviour (pure).
 *  - plain: probe every candidate pair; triggered checks learn peer-reflexive addresses.
 *  - open-sockets: I am behind a destination-dependent (symmetric) NAT and the peer is not:
 *    open many sockets toward the peer so that one of my mappings meets its probes.
 *  - spray-ports: the peer is the symmetric one: probe random ports on its public IP.
 *  - none: both symmetric; no hole can be punched, stay on the relay. `cause` says why no hole
 *    can be punched; `reason` adds what happens instead (the punch_skipped log line).
 *  - predict: a side's NAT allocates ports in sequence: probe the ports it will give next
 *    (predict.ts; issue 21).
 */
export type PunchPlan =
  /** `ipv6Only`: the IPv4 plan is 'none', and the round probes the IPv6 candidates alone (withIPv6). */
  | { kind: 'plain'; ipv6Only?: boolean }
  | { kind: 'open-sockets' }
  | { kind: 'spray-ports' }
  | PredictPlan
  | { kind: 'none'; cause: string; reason: string };

/**
 * The plan a round runs once IPv6 is counted in (pure). IPv6 has no NAT to
 * traverse, only stateful firewalls, which simultaneous probes open from
 * both sides: the IPv6 candidates are probed plainly in every round, beside
 * whatever the IPv4 plan does. When the IPv4 plan is 'none' (both NATs
 * symmetric, or every plan failed) but there is an IPv6 pair to try
 * (`ipv6Pair`: we have an IPv6 socket and the peer an IPv6 candidate we may
 * probe), the round still runs, over IPv6 alone. Both peers compute the same
 * IPv4 plan, so both take part.
 */
export function withIPv6(plan: PunchPlan, ipv6Pair: boolean): PunchPlan {
  return plan.kind === 'none' && ipv6Pair ? { kind: 'plain', ipv6Only: true } : plan;
}

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

// ---------------------------------------------------------------- learning from evidence
//
// Pure building blocks for a punch loop that learns (issue 25). Not wired yet:
// the direct-path state machine calls them. The intended loop, per session:
//
//   key   = pairKey(...) from both sides' NAT observations (as exchanged through the rendezvous)
//   d     = nextPunchPlan(memory, mine, peer, evidence)
//   punch with d.plan for d.attemptMs (d.plan.kind 'none': stay on the relay)
//   on a probe from an address that is not a candidate:
//         evidence = addEvidence(evidence, 'peer', mappingEvidence(peerCandidates, from, {...}))
//   on a ProbeAck ("we are seen as X"):
//         evidence = addEvidence(evidence, 'mine', mappingEvidence(myCandidates, X, {...}))
//   on failure: memory = recordPunch(memory, d, false, now); wait d.retryInMs; loop
//   on success: memory = recordPunch(memory, d, true, now)
//
// Both peers run the same function on the same inputs, named in the pair's
// canonical order (visitor, server), so they pick the same stage and take
// complementary roles in it: in a birthday stage the side named hard opens
// sockets and the other sprays. See docs/PROTOCOL.md "Escalation".

/** Which side of the session: the visitor controls (nominates paths, breaks ties), the server follows. */
export type Role = 'visitor' | 'server';

/**
 * One rung of the escalation ladder, the same on both peers.
 *  - plain: both probe every candidate pair;
 *  - birthday: `hard` opens many sockets toward the other's public candidates, the other sprays random ports;
 *  - relay: nothing left to try for this pair of NATs.
 */
export type PunchStage =
  | { kind: 'plain' }
  | { kind: 'birthday'; hard: Role }
  | { kind: 'relay'; cause: string }
  /** Port prediction: `sequential` names the side(s) whose NAT allocates in sequence (predict.ts). */
  | { kind: 'predict'; sequential: Role | 'both' };

/**
 * A NAT whose next port can be predicted (pure): it maps per destination, its
 * ports come in sequence, and the side sent the base of a prediction.
 */
export function isSequential(nat: NatInfo | undefined): boolean {
  return isHard(nat) && nat?.allocation === 'sequential' && nat.lastPort !== undefined && nat.step !== undefined;
}

/** The side knows port prediction (it reports its allocation; older peers send no such field). */
function knowsPrediction(nat: NatInfo | undefined): boolean {
  return nat?.allocation !== undefined;
}

/** What each side learned while punching: its NAT, or the peer's, maps per destination. Monotone: never unlearned. */
export interface PunchEvidence {
  /** My NAT maps per destination (the peer saw me from another port than my server-reflexive candidate). */
  mine?: boolean;
  /** The peer's NAT maps per destination (its probe came from another port than its server-reflexive candidate). */
  peer?: boolean;
}

/** Result of comparing an observed source address with what a side advertised. */
export type MappingEvidence =
  | { kind: 'expected' }
  | { kind: 'endpoint-dependent'; advertised: { address: string; port: number } }
  | { kind: 'none'; reason: string };

/**
 * Does `seenAs` prove that a side's NAT maps per destination (pure)?
 *
 * `advertised` are the candidates that side announced (learned with STUN on
 * the very socket that sent the probe); `seenAs` is the source address the
 * other side actually saw on an authenticated probe (peer-reflexive), or the
 * address a ProbeAck says we were seen as. Proof needs all of:
 *  - `seenAs` is not one of the candidates (else: 'expected');
 *  - it has the public IP of a server-reflexive ('srflx') candidate but
 *    another port: the NAT gave the socket one port toward the rendezvous and
 *    another toward the peer, i.e. endpoint-dependent mapping;
 *  - the probe came from that side's main socket (`extraSockets` false): a
 *    birthday socket is another socket, so another port proves nothing.
 * Never evidence: a host (LAN) candidate against a public address (the
 * packet simply took the NAT), a private source address, a public IP that no
 * srflx candidate has (another interface, a multi-homed host or a NAT pool
 * without pairing: not proof of this mapping), or no srflx candidate at all.
 * Caveat for callers: the srflx must be fresh; a mapping that expired and was
 * re-created may legitimately have another port (pass `extraSockets: true`
 * or skip the call after a long idle).
 */
export function mappingEvidence(
  advertised: readonly Pick<Candidate, 'address' | 'port' | 'kind' | 'portmap'>[],
  seenAs: { address: string; port: number },
  opts: { extraSockets?: boolean } = {},
): MappingEvidence {
  const addr = normaliseV4(seenAs.address);
  if (advertised.some((c) => normaliseV4(c.address) === addr && c.port === seenAs.port)) return { kind: 'expected' };
  if (isPrivateAddress(addr) || /^100\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\./.test(addr))
    return { kind: 'none', reason: 'seen from a private address: a LAN path, not a NAT mapping' };
  const srflx = advertised.find((c) => c.kind === 'srflx' && !isMapped(c) && normaliseV4(c.address) === addr);
  if (!srflx) {
    const reason = advertised.some((c) => c.kind === 'srflx')
      ? 'seen from a public IP that no server-reflexive candidate has'
      : 'no server-reflexive candidate to compare with (a host candidate proves nothing about the NAT)';
    return { kind: 'none', reason };
  }
  if (opts.extraSockets)
    return { kind: 'none', reason: 'the side used extra (birthday) sockets: other ports are expected' };
  return { kind: 'endpoint-dependent', advertised: { address: srflx.address, port: srflx.port } };
}

/** Folds one mappingEvidence result into the session's evidence (pure, monotone). */
export function addEvidence(e: PunchEvidence, about: 'mine' | 'peer', r: MappingEvidence): PunchEvidence {
  return r.kind === 'endpoint-dependent' ? { ...e, [about]: true } : e;
}

/**
 * A side's NAT as the plan sees it once evidence is in (pure): proof of
 * per-destination mapping upgrades 'unknown' and 'endpoint-independent'
 * (a one-address rendezvous cannot see address dependence) to
 * 'address-dependent', the least the evidence shows; a known
 * 'address-and-port-dependent' stays.
 */
export function withEvidence(nat: NatInfo | undefined, proven: boolean | undefined): NatInfo | undefined {
  if (!proven || isHard(nat)) return nat;
  return { mapping: 'address-dependent', filtering: nat?.filtering ?? 'unknown' };
}

/** What one side knows of itself, for nextPunchPlan and pairKey. */
export interface PunchSide {
  role: Role;
  nat?: NatInfo;
  /** Its public (server-reflexive) IP, if known: a new network means new NATs, so a new key. */
  publicIp?: string;
  /** It holds a port mapping of its data socket (a 'mapped' candidate): see withMapping. */
  mapped?: boolean;
}

/** The peer, as the rendezvous described it (role implied: the other one). */
export interface PunchPeer {
  nat?: NatInfo;
  publicIp?: string;
  /** How long ago its NAT observation reached us (ms), for the time adjustment of a port prediction. */
  natAgeMs?: number;
  /** Its candidates include a port-mapped one. */
  mapped?: boolean;
}

/** The NAT every side with a port mapping presents on its mapped port: any peer's packets reach it. */
export const MAPPED_NAT: NatInfo = { mapping: 'endpoint-independent', filtering: 'endpoint-independent' };

/**
 * A side's NAT as punching sees it (pure): with a port mapping (PCP, NAT-PMP,
 * UPnP IGD), the gateway forwards whatever reaches the mapped port to the
 * data socket, whatever its NAT does to other traffic, so the side is
 * effectively a full cone on that port: never 'hard', and its peer needs no
 * more than plain probes from its own main socket. Overrides evidence:
 * per-destination mapping of our outgoing probes no longer matters.
 */
export function withMapping(nat: NatInfo | undefined, mapped: boolean | undefined): NatInfo | undefined {
  return mapped ? MAPPED_NAT : nat;
}

function isMapped(c: Pick<Candidate, 'kind' | 'portmap'>): boolean {
  return c.kind === 'mapped' || c.portmap !== undefined;
}

/** Failed stages per pair of NAT observations. Immutable: recordPunch returns a new one. */
export type PunchMemory = ReadonlyMap<string, PairRecord>;

export interface PairRecord {
  /** Stage names (stageName) that failed for this pair, in order. */
  readonly failed: readonly string[];
  /** Failed rounds in a row (drives the backoff). */
  readonly failures: number;
  /** When the last round ended (caller's clock), for forgetPunches. */
  readonly at: number;
}

export interface PunchDecision {
  /** The memory key of this pair of NAT observations. */
  key: string;
  stage: PunchStage;
  /** What this side does in that stage (what DirectPathManager.punch takes). */
  plan: PunchPlan;
  /** How long the round may run: the same per-plan budget as before (plain 5 s, birthday and predict 15 s). */
  attemptMs: number;
  /** Wait this long before starting the round (0 for the first; grows with failures, as Backoff). */
  delayMs: number;
  /** One line for the punch_start log. */
  reason: string;
}

/** Per-round budgets, unchanged from the single-plan loop: the escalation adds rounds, never a bigger round. */
export const PUNCH_BUDGET = {
  plainMs: 5_000,
  birthdayMs: 15_000,
  /** Sockets the hard side opens in a birthday round. */
  birthdaySockets: 256,
  /** Random-port probes per second on the spraying side. */
  sprayRate: 1000,
} as const;

/** Retry delays between rounds: 1 s doubling to 60 s, as the direct-path manager always had. */
export const PUNCH_BACKOFF = { initialMs: 1000, maxMs: 60_000 } as const;

export function stageName(s: PunchStage): string {
  return s.kind === 'birthday' ? `birthday:${s.hard}` : s.kind === 'predict' ? `predict:${s.sequential}` : s.kind;
}

/**
 * The memory key for a pair (pure): both sides' mapping and filtering and
 * public IPs, in (visitor, server) order so both peers compute the same
 * string. A change in any of them (a NAT reclassified, evidence found, a
 * laptop on another network) is a new key: nothing failed there yet.
 */
export function pairKey(mine: PunchSide, peer: PunchPeer, evidence: PunchEvidence = {}): string {
  const m = withMapping(withEvidence(mine.nat, evidence.mine), mine.mapped);
  const p = withMapping(withEvidence(peer.nat, evidence.peer), peer.mapped);
  const side = (n: NatInfo | undefined, ip: string | undefined) =>
    `${n === MAPPED_NAT ? 'mapped' : `${n?.mapping ?? 'unknown'}/${n?.filtering ?? 'unknown'}`}@${ip ?? '?'}`;
  const v = mine.role === 'visitor' ? side(m, mine.publicIp) : side(p, peer.publicIp);
  const s = mine.role === 'visitor' ? side(p, peer.publicIp) : side(m, mine.publicIp);
  return `v=${v} s=${s}`;
}

/**
 * The escalation ladder for a pair (pure), in (visitor, server) terms:
 *  - both map per destination: relay only (two random mappings do not meet);
 *  - one does: birthday with it as the hard side, then relay;
 *  - neither is known to: plain, then birthday with the side that looks
 *    harder first, then with the other, then relay. "Looks harder": mapping
 *    'unknown' (untested: no second port answered, an old rendezvous) before
 *    'endpoint-independent' (tested); a tie goes to the visitor first
 *    (laptops on mobile and carrier networks are the usual symmetric side).
 */
export function punchLadder(visitor: NatInfo | undefined, server: NatInfo | undefined): PunchStage[] {
  const v = isHard(visitor);
  const s = isHard(server);
  const exhausted: PunchStage = { kind: 'relay', cause: 'every punch plan failed for this pair of NATs' };
  // Port prediction (issue 21) only between peers that both report their allocation: an older
  // peer would walk the old ladder and take another part in the round.
  const both = knowsPrediction(visitor) && knowsPrediction(server);
  const vSeq = both && isSequential(visitor);
  const sSeq = both && isSequential(server);
  if (v && s) {
    if (vSeq && sSeq) return [{ kind: 'predict', sequential: 'both' }, exhausted];
    if (vSeq || sSeq)
      return [
        {
          kind: 'relay',
          cause:
            'one NAT allocates ports in sequence, the other at random ' +
            '(prediction cannot meet a random mapping within the probe budget)',
        },
      ];
    return [{ kind: 'relay', cause: 'both NATs map per destination (symmetric)' }];
  }
  // Against endpoint-independent filtering (a full cone, or a port mapping) the hard side's
  // probes from its main socket get through as they are: try plain before prediction and birthday.
  const open = (n: NatInfo | undefined) => n?.filtering === 'endpoint-independent';
  const plainFirst: PunchStage[] = [{ kind: 'plain' }];
  if (v)
    return [
      ...(open(server) ? plainFirst : []),
      ...(vSeq ? [predictStage('visitor')] : []),
      { kind: 'birthday', hard: 'visitor' },
      exhausted,
    ];
  if (s)
    return [
      ...(open(visitor) ? plainFirst : []),
      ...(sSeq ? [predictStage('server')] : []),
      { kind: 'birthday', hard: 'server' },
      exhausted,
    ];
  const untested = (n: NatInfo | undefined) => (n?.mapping ?? 'unknown') === 'unknown';
  const first: Role = untested(server) && !untested(visitor) ? 'server' : 'visitor';
  const second: Role = first === 'visitor' ? 'server' : 'visitor';
  return [{ kind: 'plain' }, { kind: 'birthday', hard: first }, { kind: 'birthday', hard: second }, exhausted];
}

function predictWho(s: Role | 'both'): string {
  return s === 'both' ? 'both sides' : `${s} side`;
}

function predictRoleOf(plan: PunchPlan): string {
  return plan.kind === 'predict' ? plan.role : plan.kind;
}

function predictStage(sequential: Role): PunchStage {
  return { kind: 'predict', sequential };
}

/**
 * This side's part in a stage (pure). A predict stage needs the peer's
 * prediction (`peer`: its NAT report, public IP and the report's age);
 * without one this side probes the candidates as in a plain round.
 */
export function planForStage(stage: PunchStage, role: Role, peer?: PunchPeer): PunchPlan {
  switch (stage.kind) {
    case 'predict':
      return predictPlanFor(stage, role, peer);
    case 'plain':
      return { kind: 'plain' };
    case 'birthday':
      return { kind: stage.hard === role ? 'open-sockets' : 'spray-ports' };
    case 'relay':
      return { kind: 'none', cause: stage.cause, reason: `${stage.cause}; staying on the relay` };
  }
}

/**
 * The next punch round for this pair (pure). Evidence first upgrades the
 * NATs it proves hard; the ladder for the resulting pair is walked past every
 * stage that already failed under the same key, so a pair whose NATs have not
 * changed never re-runs a failed plan: a `plain` failure escalates to
 * birthday on the side that looks hard, and so on down to the relay. The
 * first round of a new pair is exactly planPunch's choice. Delays grow with
 * the failures recorded for the key (PUNCH_BACKOFF, via Backoff).
 */
export function nextPunchPlan(
  memory: PunchMemory,
  mine: PunchSide,
  peer: PunchPeer,
  evidence: PunchEvidence = {},
): PunchDecision {
  const key = pairKey(mine, peer, evidence);
  const m = withMapping(withEvidence(mine.nat, evidence.mine), mine.mapped);
  const p = withMapping(withEvidence(peer.nat, evidence.peer), peer.mapped);
  const [visitor, server] = mine.role === 'visitor' ? [m, p] : [p, m];
  const ladder = punchLadder(visitor, server);
  const rec = memory.get(key);
  const failed = new Set(rec?.failed ?? []);
  const stage = ladder.find((st) => st.kind === 'relay' || !failed.has(stageName(st))) ?? ladder[ladder.length - 1];
  const plan = planForStage(stage, mine.role, { ...peer, nat: p });
  const backoff = new Backoff(PUNCH_BACKOFF);
  let delayMs = 0;
  for (let i = 0; i < (rec?.failures ?? 0); i++) delayMs = backoff.next();
  const attemptMs =
    stage.kind === 'birthday'
      ? PUNCH_BUDGET.birthdayMs
      : stage.kind === 'predict'
        ? PREDICT_ROUND_MS
        : PUNCH_BUDGET.plainMs;
  const tried = rec?.failed.length ? ` after ${rec.failed.join(', ')} failed` : '';
  const reason =
    stage.kind === 'relay'
      ? `${stage.cause}; staying on the relay`
      : stage.kind === 'plain'
        ? `plain punch${tried}`
        : stage.kind === 'predict'
          ? `port prediction, ${predictWho(stage.sequential)} sequential (${predictRoleOf(plan)})${tried}`
          : `birthday punch, ${stage.hard} side hard (${plan.kind})${tried}`;
  return { key, stage, plan, attemptMs, delayMs, reason };
}

/**
 * This side's predict plan (pure): both sequential, the visitor sweeps and the
 * server fans; one sequential, the easy side probes a window around the
 * sequential side's next port and the sequential side probes candidates.
 */
function predictPlanFor(stage: PunchStage & { kind: 'predict' }, role: Role, peer?: PunchPeer): PunchPlan {
  const iAmSeq = stage.sequential === 'both' || stage.sequential === role;
  const peerSeq = stage.sequential === 'both' || stage.sequential !== role;
  let predictRole: PredictRole = 'candidates';
  if (peerSeq) predictRole = iAmSeq ? (role === 'visitor' ? 'sweep' : 'fan') : 'window';
  const first = peer?.nat ? predictNextPort(peer.nat, peer.natAgeMs ?? 0) : null;
  if (predictRole !== 'candidates' && (first === null || !peer?.publicIp)) return { kind: 'plain' };
  const step = peer?.nat?.step ?? 1;
  const why =
    predictRole === 'candidates'
      ? 'our NAT allocates in sequence: the peer probes around our next port'
      : `peer's next port predicted ${peer!.publicIp}:${first} (step ${step})`;
  return { kind: 'predict', role: predictRole, address: peer?.publicIp ?? '', first: first ?? 0, step, why };
}

/**
 * Records how a round went (pure; returns a new memory). A failure adds the
 * stage to the key's failed list and counts toward the backoff; a success
 * clears the key (the next round for this pair starts from the top, with no
 * delay). Keeps at most `maxPairs` keys, dropping the oldest.
 */
export function recordPunch(
  memory: PunchMemory,
  decision: Pick<PunchDecision, 'key' | 'stage'>,
  ok: boolean,
  now: number,
  maxPairs = 256,
): PunchMemory {
  const out = new Map(memory);
  out.delete(decision.key);
  if (!ok) {
    const prev = memory.get(decision.key);
    const name = stageName(decision.stage);
    const failed = prev?.failed.includes(name) ? prev.failed : [...(prev?.failed ?? []), name];
    out.set(decision.key, { failed, failures: (prev?.failures ?? 0) + 1, at: now });
  }
  while (out.size > maxPairs) out.delete(out.keys().next().value as string);
  return out;
}

/** Drops records older than `maxAgeMs` (pure): NATs and networks change without telling us. */
export function forgetPunches(memory: PunchMemory, now: number, maxAgeMs: number): PunchMemory {
  return new Map([...memory].filter(([, r]) => now - r.at <= maxAgeMs));
}

function normaliseV4(ip: string): string {
  return ip.startsWith('::ffff:') ? ip.slice(7) : ip;
}

/**
 * Path preference: a LAN address beats a public one; then a clearly lower
 * round-trip time. Small differences are noise (probe RTTs measured while a
 * birthday punch floods the event loop vary by tens of ms), and every switch
 * costs a path move on both peers, so they do not count: within the noise
 * it is a tie, and IPv6 wins a tie (no NAT on the way whose mapping can
 * expire or rebind; issue 19). Never the other way: an IPv4 path does not
 * replace an IPv6 one of the same RTT, so the choice cannot flap.
 */
export function betterPath(a: { address: string; rttMs: number }, b: { address: string; rttMs: number }): boolean {
  const la = isPrivateAddress(a.address);
  const lb = isPrivateAddress(b.address);
  if (la !== lb) return la;
  if (clearlyFaster(a.rttMs, b.rttMs)) return true;
  if (clearlyFaster(b.rttMs, a.rttMs)) return false;
  return ipFamily(a.address) === 'IPv6' && ipFamily(b.address) === 'IPv4';
}

function clearlyFaster(x: number, y: number): boolean {
  return x < y * 0.7 && y - x > 25;
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
