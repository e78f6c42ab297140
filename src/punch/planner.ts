import { performance } from 'node:perf_hooks';
import { isMappedCandidate, type Candidate, type NatInfo } from '../wire/control.js';
import type { Logger } from '../util/log.js';
import {
  addEvidence,
  mappingEvidence,
  nextPunchPlan,
  recordPunch,
  forgetPunches,
  type PunchDecision,
  type PunchEvidence,
  type PunchMemory,
  type Role,
} from './strategy.js';

/** Failed plans are forgotten after this long: NATs and networks change without telling us. */
export const PUNCH_MEMORY_MAX_AGE_MS = 30 * 60_000;

/**
 * Which punch plans failed for which pair of NATs, shared by every session of
 * one process (a visitor re-opening a session to the same server should not
 * re-run a plan that just failed).
 */
export class PunchMemoryStore {
  memory: PunchMemory = new Map();
}

export interface PlannerOptions {
  role: Role;
  store: PunchMemoryStore;
  /** Our NAT as STUN classified it, and our own candidates (fresh per gather). */
  localNat: () => NatInfo | undefined;
  localCandidates: () => readonly Candidate[];
  /** The peer's NAT as the rendezvous described it. */
  peerNat: () => NatInfo | undefined;
  log: Logger;
  sid: string;
}

/**
 * The punch plan of each round for one session: the I/O-free functions of
 * strategy.ts (nextPunchPlan, mappingEvidence, recordPunch) with the session's
 * evidence and the process's memory around them. DirectPathManager asks it for
 * a plan before each round and tells it how the round went; a plain round
 * that failed escalates to birthday punching instead of repeating itself.
 */
export class PunchPlanner {
  private evidence: PunchEvidence = {};
  /** The decision the last plan came from: what a failure or success is recorded against. */
  private last: PunchDecision | null = null;
  /** The peer's NAT report as last seen, and when it first was (the age of a port prediction's base). */
  private peerNatSeen: { nat: NatInfo | undefined; at: number } = { nat: undefined, at: 0 };

  constructor(private readonly opts: PlannerOptions) {}

  /** The next round's decision, given the peer's candidates so far (pure over the memory: asking twice is free). */
  decide(peerCandidates: readonly Candidate[]): PunchDecision {
    const { store, role } = this.opts;
    store.memory = forgetPunches(store.memory, Date.now(), PUNCH_MEMORY_MAX_AGE_MS);
    const peerNat = this.opts.peerNat();
    const now = performance.now();
    if (peerNat !== this.peerNatSeen.nat) this.peerNatSeen = { nat: peerNat, at: now };
    const d = nextPunchPlan(
      store.memory,
      {
        role,
        nat: this.opts.localNat(),
        publicIp: publicIp(this.opts.localCandidates()),
        mapped: this.opts.localCandidates().some(isMappedCandidate),
      },
      {
        nat: peerNat,
        publicIp: publicIp(peerCandidates),
        natAgeMs: now - this.peerNatSeen.at,
        mapped: peerCandidates.some(isMappedCandidate),
      },
      this.evidence,
    );
    this.last = d;
    return d;
  }

  /** A round with the last decision's plan ended without a direct path. */
  failed(): void {
    if (!this.last) return;
    this.opts.store.memory = recordPunch(this.opts.store.memory, this.last, false, Date.now());
  }

  /** A direct path was found: this pair starts from the top next time. */
  succeeded(): void {
    if (!this.last) return;
    this.opts.store.memory = recordPunch(this.opts.store.memory, this.last, true, Date.now());
  }

  /**
   * The peer reached us from `from` (an authenticated probe, from an address
   * that is not one of its candidates). `extraSockets`: the peer punches from
   * birthday sockets this round, so other ports prove nothing.
   */
  peerSeenAs(peerCandidates: readonly Candidate[], from: { address: string; port: number }, extraSockets: boolean) {
    this.note('peer', mappingEvidence(peerCandidates, from, { extraSockets }));
  }

  /** The peer says it saw our probe come from `seenAs` ("ip:port" from a ProbeAck). */
  selfSeenAs(seenAs: string, extraSockets: boolean): void {
    const at = seenAs.lastIndexOf(':');
    const port = Number(seenAs.slice(at + 1));
    if (at <= 0 || !Number.isInteger(port)) return;
    const address = seenAs.slice(0, at).replace(/^\[|\]$/g, '');
    this.note('mine', mappingEvidence(this.opts.localCandidates(), { address, port }, { extraSockets }));
  }

  private note(about: 'mine' | 'peer', r: ReturnType<typeof mappingEvidence>): void {
    if (r.kind !== 'endpoint-dependent' || this.evidence[about]) return;
    this.evidence = addEvidence(this.evidence, about, r);
    const whose = about === 'mine' ? 'our' : "the peer's";
    this.opts.log.info('nat_evidence', `${whose} NAT maps per destination (seen from another port than its STUN)`, {
      sid: this.opts.sid,
      about,
    });
  }
}

function publicIp(cands: readonly Candidate[]): string | undefined {
  return cands.find((c) => c.kind === 'srflx' && c.family !== 'IPv6')?.address;
}
