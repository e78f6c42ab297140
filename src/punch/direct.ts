import type dgram from 'node:dgram';
import { performance } from 'node:perf_hooks';
import crypto from 'node:crypto';
import type { Session } from '../session/session.js';
import type { Path, PathReceiver, PathSource } from '../session/path.js';
import type { Candidate } from '../wire/control.js';
import { DatagramType, MAX_DATAGRAM_LEN, MAX_UDP_DATAGRAM_LEN, type DatagramHeader } from '../wire/datagram.js';
import { decodeProbe, encodeProbe } from '../wire/probe.js';
import type { Logger } from '../util/log.js';
import { isDue, processTicker, tickFor } from '../util/ticker.js';
import { Backoff } from '../util/backoff.js';
import type { PeerSocket } from './peer-socket.js';
import { betterPath, withIPv6, type PunchPlan } from './strategy.js';
import { localReach, probeable, type LocalReach } from './candidates.js';
import { formatHostPort, ipFamily } from '../util/addr.js';
import { sendDatagram } from '../transport/batched-udp.js';
import type { PunchPlanner } from './planner.js';
import { newPredictRun, predictTick, type PredictPlan, type PredictRun } from './predict.js';

// Timing. Every interval, timeout, budget and backoff of the direct path, in
// one place (like Tailscale's magicsock.go). Measured effects: docs/BENCHMARKS.md.
/** Heartbeat interval on an idle direct path: well under common 30 s UDP mapping timeouts. */
export const HEARTBEAT_MS = 2000;
/** The direct path is dead after this long without an authenticated datagram on it (three heartbeats, and some). */
export const DIRECT_DEAD_AFTER_MS = 6500;
/**
 * Fast detection (issue 18): data unacknowledged and nothing authenticated
 * heard on the direct path for this long makes the path suspect, and it is
 * probed at once (state `suspect`), rather than waiting DIRECT_DEAD_AFTER_MS.
 */
export const SUSPECT_AFTER_MS = 1000;
/**
 * While data is in flight on the direct path, its silence is checked this
 * often (the `watch` timer of state `direct`; no timer while nothing is in flight).
 */
export const SILENCE_CHECK_MS = 250;
/** A suspect path gets this many probes, SUSPECT_PROBE_MS apart; none answered one interval after the last: dead. */
export const SUSPECT_PROBES = 3;
export const SUSPECT_PROBE_MS = 200;
/**
 * NAT rebinding (WireGuard's rule), controlling side: once the current path
 * has been silent this long, an authenticated datagram of the peer from a new
 * source address moves the session there after one probe round trip
 * verifies it. (The controlled side follows the peer's nominations, with the
 * same verification, without waiting.)
 */
export const REBIND_QUIET_MS = 250;
/** After a suspect path was declared dead, punching starts again after this long (no backoff: the network changed). */
const REPUNCH_AFTER_SUSPECT_MS = 0;
/**
 * The controlled side heartbeats only as a backup, when it has heard nothing
 * for this many heartbeat intervals: the controlling side's pings normally
 * keep both mappings open, and one ping per idle tunnel is enough.
 */
const CONTROLLED_HEARTBEAT_FACTOR = 1.9;
/** Wait before retrying a punch after a failed round or a lost path: doubles up to a minute, reset on success. */
const RETRY_BACKOFF = { initialMs: 1000, maxMs: 60_000 } as const;
/** How long one punch round may probe: both NATs easy... */
const PUNCH_BUDGET_PLAIN_MS = 5000;
/** ...or one hard (birthday sockets, port spraying), which needs more probes to meet. */
const PUNCH_BUDGET_HARD_MS = 15_000;
/**
 * Probe cadence within a round: fast while both sides' first packets are
 * crossing, then backing off. PROBE_FAST_MS is also the spray tick.
 */
const PROBE_FAST_MS = 50;
const PROBE_FAST_UNTIL_MS = 1000;
const PROBE_MEDIUM_MS = 200;
const PROBE_MEDIUM_UNTIL_MS = 3000;
const PROBE_SLOW_MS = 500;
/** Port spraying starts this long into a round, once the plain probes had their chance. */
const SPRAY_START_MS = 200;
/** After a path is adopted the round goes on this long, so that a better pair (LAN) can still answer. */
const ADOPT_LINGER_MS = 500;
/** Controlled side: a nomination on the same path is not probed again within this time. */
const NOMINATION_RECHECK_MS = 200;
/** A nomination is followed without a new check if our own probe proved the path this recently. */
const VERIFIED_FRESH_MS = 10_000;
/** Outstanding probes kept for matching answers: past this many, those older than PROBE_MAX_AGE_MS go. */
const PROBE_TABLE_CAP = 4096;
const PROBE_MAX_AGE_MS = 5000;
/** Extra (birthday) sockets the peer is still using are kept this long after they last received... */
const SOCKET_QUIET_MS = 15_000;
/** ...and when a round ends, those quiet for this long are closed at once. */
const SOCKET_QUIET_AFTER_ROUND_MS = 3000;
/**
 * The relay broke while the session was on it, and the session had been
 * direct before: it punches again and closes if no direct path opens within
 * this time (recover()).
 */
export const RELAY_LOST_GRACE_MS = 20_000;

/** A punched (or candidate) UDP path to the peer: one local socket, one remote address. */
export class DirectPath implements Path {
  readonly kind = 'direct' as const;
  /** Largest sealed datagram sent: the fixed 1452 until the path MTU search (pmtu-driver.ts) sets what it found. */
  maxDatagram = MAX_DATAGRAM_LEN;
  /** Accepted whatever we send: the peer's direction has its own path MTU, and its probes go up to 1472. */
  readonly maxReceive = MAX_UDP_DATAGRAM_LEN;
  readonly remote: string;
  closed = false;
  /** When one of our probes on this path was last answered (0: never): the path is proven to work both ways. */
  verifiedAt = 0;
  constructor(
    readonly socket: dgram.Socket,
    readonly address: string,
    readonly port: number,
  ) {
    this.remote = formatHostPort({ address, port });
  }
  send(datagram: Uint8Array): void {
    if (this.closed) return;
    // Batched with the rest of this turn's datagrams (one KCP flush: one system call).
    // A failed send (socket closed under us) shows as missing acks to the path manager.
    sendDatagram(this.socket, datagram, this.port, this.address);
  }
  close(): void {
    this.closed = true;
  }
}

export interface DirectOptions {
  session: Session;
  socket: PeerSocket;
  log: Logger;
  /** The relay path to fall back to; null with --mode direct. */
  relay: () => Path | null;
  /** How long one punch attempt may take. */
  attemptMs?: number;
  /** Heartbeat interval on the direct path (HEARTBEAT_MS). */
  heartbeatMs?: number;
  /** The direct path is dead after this long without an authenticated datagram on it (DIRECT_DEAD_AFTER_MS). */
  deadAfterMs?: number;
  birthdaySockets?: number;
  /** Probes per second when spraying random ports at a symmetric NAT. */
  sprayRate?: number;
  /** Asks the peer (through the rendezvous) to punch again, with fresh candidates. */
  requestRepunch?: () => void;
  /**
   * The direct path died of unanswered quick probes (state `suspect`): a sign
   * that the network changed under the session, so the other legs (relay,
   * control connection) may be dead too without knowing it.
   */
  onQuickDeath?: () => void;
  /**
   * Chooses each round's plan and escalates after a failed one (planner.ts).
   * Without it, every retry repeats the plan of the round that failed.
   */
  planner?: PunchPlanner;
  /** What this side may probe (default: from the socket's families and the interfaces; tests give their own). */
  reach?: () => LocalReach;
}

const MAX_CANDIDATES = 16;
const MAX_PATHS = 512;
const BIRTHDAY_SOCKETS = 256;
/** Probes per second when spraying random ports at a symmetric NAT. */
const SPRAY_RATE = 1000;

/** The silence watch of state `direct`: its timer, and since when data has been in flight. */
interface Watch {
  timer: NodeJS.Timeout;
  since: number;
}

/** The probes of state `suspect`: the timer of the next one, and how many went. */
interface Probing {
  timer: NodeJS.Timeout;
  sent: number;
}

/** The states in which a direct path carries the session. */
type OnPath = DirectState & { name: 'direct' | 'suspect' };
const onPath = (s: DirectState): s is OnPath => s.name === 'direct' || s.name === 'suspect';

/** One probing round: probes to every candidate until `until`. Its timer is the next probe batch. */
interface Round {
  until: number;
  started: number;
  plan: PunchPlan;
  timer: NodeJS.Timeout;
}

/**
 * What is true of the session's direct path (see the diagram in
 * docs/ARCHITECTURE.md). Each timer belongs to the state it serves and is
 * stopped by transition() when the state is left without passing it on:
 * - `round`: a probing round under way (it may go on in `direct`, for a
 *   better pair or a round the peer asked for, and in `retry-wait`);
 * - `grace`: the relay broke after the session had been direct; the session
 *   closes when it fires unless a direct path is found first (recover());
 * - `retry`: when to punch again, with backoff;
 * - `heartbeat`: the subscription to the process ticker for heartbeats and
 *   the death check.
 */
export type DirectState =
  /** No direct path and nothing under way: before the first punch, or when there is no plan. */
  | { readonly name: 'idle'; readonly grace: NodeJS.Timeout | null }
  /** No direct path; probing. */
  | { readonly name: 'punching'; readonly round: Round; readonly grace: NodeJS.Timeout | null }
  /** A confirmed direct path carries the session. */
  | {
      readonly name: 'direct';
      readonly path: DirectPath;
      rttMs: number;
      /** Controlled side: the peer has nominated a path; our own probe results no longer switch paths. */
      followed: boolean;
      readonly heartbeat: () => void;
      readonly round: Round | null;
      /** Checks for silence every SILENCE_CHECK_MS while data is in flight (null: nothing in flight). */
      readonly watch: Watch | null;
    }
  /**
   * The direct path still carries the session, but data is unacknowledged and
   * nothing came back on it for SUSPECT_AFTER_MS: a few quick probes decide.
   * Any authenticated datagram on it: back to `direct`; none after the last
   * probe: dead at once (`retry-wait`).
   */
  | {
      readonly name: 'suspect';
      readonly path: DirectPath;
      rttMs: number;
      followed: boolean;
      readonly heartbeat: () => void;
      readonly round: Round | null;
      /** The next probe (or, after the last one, the verdict). */
      readonly probing: Probing;
    }
  /** No direct path (a round failed, or the path died); punching again when `retry` fires. */
  | {
      readonly name: 'retry-wait';
      readonly retry: NodeJS.Timeout;
      readonly round: Round | null;
      readonly grace: NodeJS.Timeout | null;
    }
  /** The session closed: nothing runs, every public method is a no-op. */
  | { readonly name: 'closed' };

export type DirectStateName = DirectState['name'];

/** The timers a state holds (null where it holds none). */
function held(s: DirectState): {
  round: Round | null;
  grace: NodeJS.Timeout | null;
  retry: NodeJS.Timeout | null;
  heartbeat: (() => void) | null;
  watch: Watch | null;
  probing: Probing | null;
} {
  return {
    round: 'round' in s ? s.round : null,
    grace: 'grace' in s ? s.grace : null,
    retry: 'retry' in s ? s.retry : null,
    heartbeat: 'heartbeat' in s ? s.heartbeat : null,
    watch: 'watch' in s ? s.watch : null,
    probing: 'probing' in s ? s.probing : null,
  };
}

/**
 * Path discovery for one session (Tailscale calls this disco): sends
 * authenticated probes to the peer's candidates, confirms a path when a probe
 * is answered, reports it to the session, keeps it alive with heartbeats and
 * reports its death (the session falls back to the relay), then tries again
 * with backoff. All of it is the state machine of `state` (DirectState), and
 * every change of state goes through transition().
 * Every probe and answer is sealed with the session keys: an attacker can
 * neither steer the session to an address of its choosing nor make us answer.
 */
export class DirectPathManager implements PathSource {
  private state: DirectState = { name: 'idle', grace: null };
  private candidates: Candidate[] = [];
  private paths = new Map<string, DirectPath>();
  private probes = new Map<number, { sentAt: number; path: DirectPath }>();
  private nextProbeId = crypto.randomInt(1, 2 ** 31);
  private lastDirectRecv = 0;
  private readonly backoff = new Backoff(RETRY_BACKOFF);
  private birthday: dgram.Socket[] = [];
  /** Last authenticated datagram per local socket: which birthday sockets the peer still uses. */
  private socketRecv = new Map<dgram.Socket, number>();
  /** The plan of the last round, reused when retrying. */
  private plan: PunchPlan = { kind: 'plain' };
  /**
   * The visitor controls which direct path the session uses (ICE calls it the
   * controlling agent): it nominates a path simply by sending data and
   * heartbeats on it. The server follows, after checking the path itself.
   * Without this, with many sockets (birthday punching) each side could pick a
   * different working pair and close the sockets of the other's choice.
   */
  private readonly controlling: boolean;
  /**
   * Highest packet counter received on the current path: an older datagram
   * still in flight on a previous path is no nomination.
   */
  private bestCounter = -1n;
  /** Controlled side: a path the peer nominated, which our own probe is checking. */
  private nominationCheck: { path: DirectPath; at: number; counter: bigint } | null = null;
  /** Where authenticated datagrams go: the session's `deliver` (set by deliverTo). */
  private receiver: PathReceiver | null = null;
  attempts = 0;
  successes = 0;
  /** The predict round under way (issue 21) and its progress; probes sent by predict rounds, in all. */
  private predictRun: { round: Round; run: PredictRun } | null = null;
  predictProbes = 0;

  constructor(private readonly opts: DirectOptions) {
    this.controlling = opts.session.opts.role === 'visitor';
    const index = opts.session.opts.keys.localIndex;
    opts.socket.register(index, (msg, header, rinfo, sock) => this.onDatagram(msg, header, rinfo, sock));
    opts.session.on('control', (type: DatagramType, payload: Uint8Array, from: Path) =>
      this.onControl(type, payload, from),
    );
    opts.session.once('close', () => this.close());
  }

  /** The state's name, for status and tests. */
  get stateName(): DirectStateName {
    return this.state.name;
  }

  /** The direct path in use, if any. */
  get path(): DirectPath | null {
    return onPath(this.state) ? this.state.path : null;
  }

  /** The probing round under way, in whichever state runs it. */
  private get round(): Round | null {
    return held(this.state).round;
  }

  deliverTo(receiver: PathReceiver): void {
    this.receiver = receiver;
  }

  /**
   * The one place the state changes. Logs the change, then stops every timer
   * of the old state that the new one does not take over.
   */
  private transition(next: DirectState, why: string): void {
    const prev = this.state;
    if (prev === next) return;
    this.state = next;
    const sid = this.opts.session.sid;
    this.opts.log.debug('path_state', `session ${sid}: ${prev.name} -> ${next.name} (${why})`, {
      sid,
      from: prev.name,
      to: next.name,
      why,
    });
    const was = held(prev);
    const now = held(next);
    if (was.grace && was.grace !== now.grace) clearTimeout(was.grace);
    if (was.retry && was.retry !== now.retry) clearTimeout(was.retry);
    if (was.heartbeat && was.heartbeat !== now.heartbeat) was.heartbeat();
    if (was.watch && was.watch !== now.watch) clearTimeout(was.watch.timer);
    if (was.probing && was.probing !== now.probing) clearTimeout(was.probing.timer);
    if (was.round && was.round !== now.round) this.endRound(was.round);
  }

  /**
   * The plan for a round toward `candidates` (added to ours): the planner's,
   * which escalates past plans that failed for this pair of NATs, or
   * `fallback` without a planner.
   */
  planFor(candidates: Candidate[], fallback: PunchPlan): PunchPlan {
    const reach = this.reach();
    for (const c of candidates) this.addCandidate(c, reach);
    return this.withIPv6(this.opts.planner?.decide(this.candidates).plan ?? fallback);
  }

  /** What this side can probe: its sockets' families and its own IPv6 addresses (os, asked per call). */
  private reach(): LocalReach {
    return this.opts.reach?.() ?? localReach(true, this.opts.socket.socket6 !== null);
  }

  /** `plan`, or a plain IPv6 round in place of 'none' when there is an IPv6 pair (strategy.ts withIPv6). */
  private withIPv6(plan: PunchPlan): PunchPlan {
    const pair = this.opts.socket.socket6 !== null && this.candidates.some((c) => ipFamily(c.address) === 'IPv6');
    return withIPv6(plan, pair);
  }

  /** Starts (or restarts) punching toward `candidates` after `delayMs`. */
  punch(candidates: Candidate[], plan: PunchPlan, delayMs = 0): void {
    const s = this.state;
    if (s.name === 'closed') return;
    const reach = this.reach();
    for (const c of candidates) this.addCandidate(c, reach);
    plan = this.withIPv6(plan);
    this.plan = plan;
    if (plan.kind === 'none') {
      this.opts.log.info('punch_skipped', plan.reason, { sid: this.opts.session.sid });
      return;
    }
    const round = this.roundFor(plan, delayMs);
    if (s.name === 'idle') this.transition({ name: 'punching', round, grace: s.grace }, 'punch');
    else if (s.round !== round) this.transition({ ...s, round }, `punch: a new round (${plan.kind})`);
  }

  /**
   * The round under way, its end pushed back to give new candidates their
   * time; or a new round, which the caller hands to the next state (also
   * when the plan changed: the peer escalated, and so must we).
   */
  private roundFor(plan: PunchPlan, delayMs: number): Round {
    const cur = this.round;
    if (cur && cur.plan.kind === plan.kind && planIpv6Only(cur.plan) === planIpv6Only(plan)) {
      cur.until = Math.max(cur.until, performance.now() + delayMs + this.attemptMs(plan));
      return cur;
    }
    this.attempts++;
    const started = performance.now() + delayMs;
    const round: Round = {
      until: started + this.attemptMs(plan),
      started,
      plan,
      timer: setTimeout(() => void this.probeLoop(round), delayMs),
    };
    this.opts.log.debug(
      'punch_start',
      `punching ${this.opts.session.sid} (${plan.kind}) to ${this.candidates.length} candidates`,
      {
        sid: this.opts.session.sid,
        plan: plan.kind,
        candidates: this.candidates.map((c) => formatHostPort(c)),
      },
    );
    return round;
  }

  /**
   * The relay went away while the session was on it (its TCP connection can
   * break alone, e.g. a NAT that lost its state gives it a new port, while
   * the peer is fine). If a hole could be punched before, punch again at once
   * and give the session `graceMs` to find a direct path before closing it.
   * False when there is nothing to hope for (never direct, or both NATs hard).
   */
  recover(graceMs: number, reason: string): boolean {
    const s = this.state;
    if (s.name === 'closed' || this.successes === 0 || this.plan.kind === 'none') return false;
    if (s.name === 'direct' || s.name === 'suspect') return true;
    const grace = s.grace ?? this.graceTimer(graceMs, reason);
    this.backoff.reset();
    this.opts.requestRepunch?.();
    const round = this.roundFor(this.plan, 0);
    this.transition({ name: 'punching', round, grace }, reason);
    return true;
  }

  /** Closes the session unless a direct path is found within `graceMs`. */
  private graceTimer(graceMs: number, reason: string): NodeJS.Timeout {
    const timer = setTimeout(() => {
      if (held(this.state).grace !== timer) return;
      this.opts.session.close(`${reason}, and no direct path within ${graceMs / 1000} s`);
    }, graceMs);
    timer.unref();
    return timer;
  }

  close(): void {
    if (this.state.name === 'closed') return;
    this.transition({ name: 'closed' }, 'session closed');
    this.opts.socket.unregister(this.opts.session.opts.keys.localIndex);
  }

  private attemptMs(plan: PunchPlan): number {
    return this.opts.attemptMs ?? (plan.kind === 'plain' ? PUNCH_BUDGET_PLAIN_MS : PUNCH_BUDGET_HARD_MS);
  }

  private addCandidate(c: Candidate, reach: LocalReach): void {
    if (!probeable(c, reach)) return;
    if (this.candidates.some((x) => x.address === c.address && x.port === c.port)) return;
    if (this.candidates.length >= MAX_CANDIDATES) return;
    this.candidates.push(c);
  }

  private pathFor(sock: dgram.Socket, address: string, port: number): DirectPath {
    const key = `${address}|${port}|${socketId(sock)}`;
    let p = this.paths.get(key);
    if (!p) {
      if (this.paths.size >= MAX_PATHS) {
        const inUse = this.path;
        for (const [k, v] of this.paths) {
          if (v !== inUse) {
            this.paths.delete(k);
            break;
          }
        }
      }
      p = new DirectPath(sock, address, port);
      this.paths.set(key, p);
    }
    return p;
  }

  private onDatagram(msg: Buffer, h: DatagramHeader, rinfo: dgram.RemoteInfo, sock: dgram.Socket): void {
    // Nearly every datagram of an established session arrives on its path: skip building the map key.
    const best = this.path;
    const path =
      best && best.socket === sock && best.port === rinfo.port && best.address === rinfo.address
        ? best
        : this.pathFor(sock, rinfo.address, rinfo.port);
    // Opened (authenticated, not a replay) before anything else: an unauthenticated datagram moves nothing.
    if (!this.receiver?.(msg, path)) return;
    const now = performance.now();
    this.socketRecv.set(sock, now);
    if (path === best) {
      this.lastDirectRecv = now;
      if (h.counter > this.bestCounter) this.bestCounter = h.counter;
      const s = this.state;
      if (s.name === 'suspect') this.pathAnswered(s);
    } else if (
      (h.type === DatagramType.Data ||
        h.type === DatagramType.Heartbeat ||
        (this.controlling && h.type === DatagramType.HeartbeatAck)) &&
      h.counter > this.bestCounter &&
      (!this.controlling || this.rebindable(now))
    ) {
      this.onNomination(path, now, h.counter);
    }
  }

  /**
   * Controlling side: may the peer's authenticated datagrams from a new
   * address move the session (NAT rebinding)? Yes when there is no direct
   * path, or the current one is suspect or has been silent for REBIND_QUIET_MS.
   * (Data and heartbeats only ever come from the one path the peer follows,
   * so a new source address means the peer's mapping changed.)
   */
  private rebindable(now: number): boolean {
    const s = this.state;
    if (s.name === 'closed') return false;
    if (s.name !== 'direct') return true;
    return now - this.lastDirectRecv >= REBIND_QUIET_MS;
  }

  /**
   * The peer sends data or heartbeats on `path`. Controlled side: that is
   * the path the controlling peer chose (nominated). Controlling side: the
   * peer's NAT gave it a new address (rebinding; see rebindable()). Either
   * way, follow it once our own probe has proven it works both ways (a copy
   * of an authenticated datagram raced from another address by an on-path
   * attacker cannot answer our probe, so it cannot steer us).
   */
  private onNomination(path: DirectPath, now: number, counter: bigint): void {
    if (path.verifiedAt && now - path.verifiedAt < VERIFIED_FRESH_MS) {
      this.bestCounter = counter;
      const s = this.state;
      return this.adopt(path, onPath(s) ? s.rttMs : 0, this.controlling ? 'rebind' : 'nominated');
    }
    const pending = this.nominationCheck;
    if (pending && pending.path === path && now - pending.at < NOMINATION_RECHECK_MS) return;
    this.nominationCheck = { path, at: now, counter };
    this.sendProbe(path);
  }

  private sendProbe(path: DirectPath): void {
    const id = this.nextProbeId++ >>> 0;
    this.probes.set(id, { sentAt: performance.now(), path });
    if (this.probes.size > PROBE_TABLE_CAP) {
      const cutoff = performance.now() - PROBE_MAX_AGE_MS;
      for (const [k, v] of this.probes) if (v.sentAt < cutoff) this.probes.delete(k);
    }
    this.opts.session.sendSealed(DatagramType.Probe, encodeProbe(id, path.remote), path);
  }

  private async probeLoop(p: Round): Promise<void> {
    if (this.round !== p) return;
    const { socket } = this.opts;
    const now = performance.now();
    if (now > p.until) return this.roundOver(p);
    const elapsed = now - p.started;
    if (p.plan.kind === 'predict') return this.predictLoop(p, p.plan);
    const v6only = planIpv6Only(p.plan);
    for (const c of this.candidates)
      if (!v6only || ipFamily(c.address) === 'IPv6')
        this.sendProbe(this.pathFor(socket.socketFor(c.address), c.address, c.port));
    if (p.plan.kind === 'open-sockets') {
      await this.birthdayOpen();
      if (this.round !== p) return; // stopped (or restarted) while sockets opened
    }
    if (p.plan.kind === 'spray-ports' && elapsed > SPRAY_START_MS) this.spray();
    // Fast at first, when both sides' first packets are crossing; then back off.
    const next =
      elapsed < PROBE_FAST_UNTIL_MS ? PROBE_FAST_MS : elapsed < PROBE_MEDIUM_UNTIL_MS ? PROBE_MEDIUM_MS : PROBE_SLOW_MS;
    p.timer = setTimeout(() => void this.probeLoop(p), next);
  }

  /**
   * A tick of a 'predict' round (issue 21): sends what predict.ts says (a
   * sweep of predicted ports, a fan of extra sockets toward one, or a window
   * of them), in order, then schedules the next tick.
   */
  private async predictLoop(p: Round, plan: PredictPlan): Promise<void> {
    const main = this.opts.socket.socket;
    const now = performance.now();
    const prev = this.predictRun?.round === p ? this.predictRun.run : newPredictRun(p.started);
    const { run, act } = predictTick(plan, prev, now);
    this.predictRun = { round: p, run };
    for (const c of this.candidates)
      if (act.candidates || c.kind === 'prflx')
        this.sendProbe(this.pathFor(this.opts.socket.socketFor(c.address), c.address, c.port));
    for (const port of act.ports) this.sendProbe(this.pathFor(main, plan.address, port));
    if (act.fan) {
      while (this.birthday.length < act.fan.sockets && this.round === p) {
        try {
          this.birthday.push(await this.opts.socket.openExtra());
        } catch {
          break;
        }
      }
      if (this.round !== p) return;
      for (const s of this.birthday.slice(0, act.fan.sockets))
        this.sendProbe(this.pathFor(s, plan.address, act.fan.port));
    }
    this.predictProbes += run.sent - prev.sent;
    if (act.burst)
      this.opts.log.debug('punch_predict', `${plan.role}: sub-round ${act.subRound}; ${plan.why}`, {
        sid: this.opts.session.sid,
        role: plan.role,
        subRound: act.subRound,
        address: plan.address,
        first: plan.first,
        step: plan.step,
        ports: act.ports.length ? `${act.ports[0]}..${act.ports[act.ports.length - 1]}` : undefined,
        fan: act.fan ? `${act.fan.sockets}x${act.fan.port}` : undefined,
        probes: this.predictProbes,
      });
    p.timer = setTimeout(() => void this.probeLoop(p), PROBE_FAST_MS);
  }

  /** Hard side: many sockets, each probing the peer's public candidates. */
  private async birthdayOpen(): Promise<void> {
    const want = this.opts.birthdaySockets ?? BIRTHDAY_SOCKETS;
    while (this.birthday.length < want && this.round) {
      try {
        this.birthday.push(await this.opts.socket.openExtra());
      } catch {
        break;
      }
    }
    const targets = this.candidates.filter(isPublicV4);
    for (const s of this.birthday) for (const c of targets) this.sendProbe(this.pathFor(s, c.address, c.port));
  }

  /** Easy side facing a symmetric NAT: probe random ports on its public address. */
  private spray(): void {
    const targets = this.candidates.filter(isPublicV4);
    if (!targets.length) return;
    const perTick = Math.max(1, Math.round(((this.opts.sprayRate ?? SPRAY_RATE) * PROBE_FAST_MS) / 1000));
    for (let i = 0; i < perTick; i++) {
      const t = targets[i % targets.length];
      const port = crypto.randomInt(1024, 65536);
      this.sendProbe(this.pathFor(this.opts.socket.socket, t.address, port));
    }
  }

  private onControl(type: DatagramType, payload: Uint8Array, from: Path): void {
    if (!(from instanceof DirectPath)) return;
    if (type === DatagramType.Probe) {
      const probe = decodeProbe(payload);
      if (!probe) return;
      this.opts.session.sendSealed(DatagramType.ProbeAck, encodeProbe(probe.id, from.remote), from);
      // Triggered check: the peer reached us from an address we did not know (peer-reflexive).
      if (!this.path && !this.candidates.some((c) => c.address === from.address && c.port === from.port)) {
        this.opts.planner?.peerSeenAs(this.candidates, from, this.round?.plan.kind === 'spray-ports');
        const family = ipFamily(from.address) ?? 'IPv4';
        this.addCandidate({ address: from.address, port: from.port, family, kind: 'prflx' }, this.reach());
        this.sendProbe(from);
      }
      return;
    }
    if (type === DatagramType.ProbeAck) {
      const ack = decodeProbe(payload);
      const sent = ack ? this.probes.get(ack.id) : undefined;
      if (!ack || !sent || sent.path !== from) return;
      this.probes.delete(ack.id);
      from.verifiedAt = performance.now();
      this.opts.planner?.selfSeenAs(ack.addr, from.socket !== this.opts.socket.socket);
      if (this.nominationCheck?.path === from) {
        if (this.nominationCheck.counter > this.bestCounter) this.bestCounter = this.nominationCheck.counter;
        this.nominationCheck = null;
        this.adopt(from, performance.now() - sent.sentAt, this.controlling ? 'rebind' : 'nominated');
        return;
      }
      this.confirm(from, performance.now() - sent.sentAt, ack.addr);
      return;
    }
  }

  private confirm(path: DirectPath, rttMs: number, observed: string): void {
    const cur = this.state;
    if (onPath(cur)) {
      if (cur.path === path) {
        cur.rttMs = rttMs;
        return;
      }
      // Once the controlling peer has nominated a path, only its nominations move us.
      if (!this.controlling && cur.followed) return;
      if (!betterPath({ address: path.address, rttMs }, { address: cur.path.address, rttMs: cur.rttMs })) return;
    }
    this.opts.log.debug(
      'punch_ok',
      `direct path ${path.remote} confirmed, rtt ${rttMs.toFixed(1)} ms, we are seen as ${observed}`,
      { sid: this.opts.session.sid, rttMs, observed },
    );
    this.adopt(path, rttMs, 'probe');
  }

  /**
   * Makes `path` the session's direct path, and reports it to the session.
   * `how`: our probe was answered, the controlling peer nominated it, or the
   * peer's datagrams come from it now (a NAT rebinding, controlling side).
   */
  private adopt(path: DirectPath, rttMs: number, how: 'probe' | 'nominated' | 'rebind'): void {
    const cur = this.state;
    if (cur.name === 'closed') return;
    const nominated = how === 'nominated';
    if (cur.name === 'direct') {
      if (nominated) cur.followed = true;
      if (cur.path === path) return;
    }
    if (cur.name === 'suspect' && cur.path === path) return this.pathAnswered(cur);
    this.lastDirectRecv = performance.now();
    this.backoff.reset();
    const sid = this.opts.session.sid;
    if (nominated) this.opts.log.debug('path_followed', `following the peer onto ${path.remote}`, { sid });
    if (how === 'rebind')
      this.opts.log.info('path_rebound', `the peer's datagrams come from ${path.remote} now: moving there`, {
        sid,
        remote: path.remote,
        from: this.path?.remote ?? null,
      });
    const round = held(cur).round;
    const why = nominated ? 'the peer nominated another path' : how === 'rebind' ? 'the peer rebound' : 'a better path';
    if (onPath(cur)) {
      const followed = cur.followed || nominated;
      this.transition(
        { name: 'direct', path, rttMs, followed, heartbeat: cur.heartbeat, round, watch: this.watchFor(path) },
        why,
      );
    } else {
      this.successes++;
      this.opts.planner?.succeeded();
      const heartbeat = this.startHeartbeat();
      this.transition(
        { name: 'direct', path, rttMs, followed: nominated, heartbeat, round, watch: this.watchFor(path) },
        nominated
          ? 'the peer nominated a verified path'
          : how === 'rebind'
            ? 'the peer rebound'
            : 'a probe was answered',
      );
    }
    this.opts.session.setPath('direct', path);
    // Nominate at once (the controlled peer follows the path our heartbeats use),
    // rather than at the next heartbeat, while the peer still holds its punching sockets.
    if (this.controlling) this.opts.session.sendSealed(DatagramType.Heartbeat, EMPTY, path);
    // Let better pairs (LAN) still answer for a moment, then stop probing.
    if (round) round.until = Math.min(round.until, performance.now() + ADOPT_LINGER_MS);
  }

  /**
   * Heartbeats and the death check ride the process ticker: one wake-up per
   * tick for all sessions. Returns the unsubscribe, which the `direct` state holds.
   */
  private startHeartbeat(): () => void {
    const every = this.opts.heartbeatMs ?? HEARTBEAT_MS;
    const deadAfter = this.opts.deadAfterMs ?? DIRECT_DEAD_AFTER_MS;
    const resolution = tickFor(Math.min(every, deadAfter));
    return processTicker.subscribe((now) => this.onTick(now, every, deadAfter, resolution), resolution);
  }

  private onTick(now: number, every: number, deadAfter: number, resolution: number): void {
    const s = this.state;
    if (!onPath(s)) return;
    const quiet = now - this.lastDirectRecv;
    if (quiet > deadAfter) return this.directDied(s, `no answer for ${deadAfter / 1000} s`);
    if (s.name === 'suspect') return; // its probes test the path
    // Data went in flight since the last tick: watch for silence more closely.
    if (!s.watch && this.dataInFlight(s.path))
      this.transition({ ...s, watch: this.watchFor(s.path) }, 'data in flight');
    // Only the controlling side (the visitor) pings an idle path; the peer's
    // answer refreshes both NAT mappings. Traffic that is flowing proves the
    // path already, and the controlled side pings only as a backup when it
    // has heard nothing for two intervals. Fewer wake-ups per idle tunnel.
    if (this.controlling ? isDue(quiet, every, resolution) : quiet >= every * CONTROLLED_HEARTBEAT_FACTOR) {
      this.opts.session.sendSealed(DatagramType.Heartbeat, EMPTY, s.path);
    }
    if (!s.round) this.closeQuietSockets(SOCKET_QUIET_MS);
  }

  /** The session's data is on `path` and some of it is unacknowledged. */
  private dataInFlight(path: DirectPath): boolean {
    const session = this.opts.session;
    return session.path === path && session.kcp.inFlight > 0;
  }

  /** The silence watch for a new `direct` state on `path`: a timer while data is in flight, else null. */
  private watchFor(path: DirectPath): Watch | null {
    if (!this.dataInFlight(path)) return null;
    const watch: Watch = { since: performance.now(), timer: setTimeout(() => this.onWatch(watch), SILENCE_CHECK_MS) };
    watch.timer.unref();
    return watch;
  }

  /** The silence watch fired: unacknowledged data on a silent path makes it suspect; none in flight ends the watch. */
  private onWatch(watch: Watch): void {
    const s = this.state;
    if (s.name !== 'direct' || s.watch !== watch) return;
    if (!this.dataInFlight(s.path)) return this.transition({ ...s, watch: null }, 'nothing in flight');
    const now = performance.now();
    const silent = now - Math.max(this.lastDirectRecv, watch.since);
    if (silent < SUSPECT_AFTER_MS) {
      watch.timer = setTimeout(() => this.onWatch(watch), SILENCE_CHECK_MS);
      watch.timer.unref();
      return;
    }
    const { path, rttMs, followed, heartbeat, round } = s;
    const probing: Probing = { sent: 0, timer: setTimeout(() => this.suspectProbe(probing), SUSPECT_PROBE_MS) };
    probing.timer.unref();
    this.transition(
      { name: 'suspect', path, rttMs, followed, heartbeat, round, probing },
      `data unacknowledged and nothing heard for ${Math.round(silent)} ms`,
    );
    this.suspectProbe(probing);
  }

  /** State `suspect`: the next probe, or after the last one, the verdict. */
  private suspectProbe(probing: Probing): void {
    const s = this.state;
    if (s.name !== 'suspect' || s.probing !== probing) return;
    clearTimeout(probing.timer);
    if (probing.sent >= SUSPECT_PROBES) return this.directDied(s, `${SUSPECT_PROBES} quick probes unanswered`);
    probing.sent++;
    this.sendProbe(s.path);
    probing.timer = setTimeout(() => this.suspectProbe(probing), SUSPECT_PROBE_MS);
    probing.timer.unref();
  }

  /** An authenticated datagram came back on the suspect path: it lives. */
  private pathAnswered(s: DirectState & { name: 'suspect' }): void {
    const { path, rttMs, followed, heartbeat, round } = s;
    this.transition(
      { name: 'direct', path, rttMs, followed, heartbeat, round, watch: this.watchFor(path) },
      'the suspect path answered',
    );
  }

  private directDied(s: OnPath, why: string): void {
    this.nominationCheck = null;
    const fast = s.name === 'suspect';
    this.opts.log.warn('direct_lost', `no answer on the direct path ${s.path.remote}: ${why}`, {
      sid: this.opts.session.sid,
      remote: s.path.remote,
      why,
    });
    // A suspect path died of a change of network: punch again at once, not after a backoff.
    const retry = this.retryTimer(this.plan, fast ? REPUNCH_AFTER_SUSPECT_MS : undefined);
    this.transition({ name: 'retry-wait', retry, round: s.round, grace: null }, why);
    this.opts.session.setPath('direct', null);
    if (fast) this.opts.onQuickDeath?.();
  }

  /** The round `p` ran out of time. */
  private roundOver(p: Round): void {
    const s = this.state;
    if (onPath(s)) return this.transition({ ...s, round: null }, 'round over');
    if (s.name !== 'punching' && s.name !== 'retry-wait') return;
    this.opts.log.info(
      'punch_failed',
      `no direct path to the peer this time${this.opts.relay() ? '; staying on the relay' : ''}`,
      { sid: this.opts.session.sid, plan: p.plan.kind },
    );
    // With a planner, the next round escalates (and waits longer the more
    // rounds failed); without, it repeats this round's plan after the backoff.
    const planner = this.opts.planner;
    planner?.failed();
    const delay = planner ? planner.decide(this.candidates).delayMs : undefined;
    const retry = s.name === 'retry-wait' ? s.retry : this.retryTimer(p.plan, delay);
    this.transition({ name: 'retry-wait', retry, round: null, grace: s.grace }, 'no probe answered in the round');
  }

  /** The timer of a `retry-wait` state: asks the peer to punch again and starts (or extends) a round. */
  private retryTimer(lastPlan: PunchPlan, delayMs = this.backoff.next()): NodeJS.Timeout {
    const timer = setTimeout(() => {
      const s = this.state;
      if (s.name !== 'retry-wait' || s.retry !== timer) return;
      this.opts.requestRepunch?.();
      const plan = this.withIPv6(this.opts.planner?.decide(this.candidates).plan ?? lastPlan);
      this.plan = plan;
      if (plan.kind === 'none') {
        this.opts.log.info('punch_skipped', plan.reason, { sid: this.opts.session.sid });
        const next: DirectState = s.round
          ? { name: 'punching', round: s.round, grace: s.grace }
          : { name: 'idle', grace: s.grace };
        return this.transition(next, 'retry, with no plan');
      }
      this.transition({ name: 'punching', round: this.roundFor(plan, 0), grace: s.grace }, 'retry');
    }, delayMs);
    timer.unref();
    return timer;
  }

  /** A round is over (or abandoned): stop probing and forget its probes. */
  private endRound(round: Round): void {
    clearTimeout(round.timer);
    // Keep the sockets the peer still talks to (its chosen pair may use one of
    // ours that is not our own best); the heartbeat closes them once quiet.
    this.closeQuietSockets(SOCKET_QUIET_AFTER_ROUND_MS);
    this.probes.clear();
  }

  /** Closes extra sockets that are not our path's and received nothing authenticated for `quietMs`. */
  private closeQuietSockets(quietMs: number): void {
    if (!this.birthday.length) return;
    const keep = this.path?.socket;
    const now = performance.now();
    const still: dgram.Socket[] = [];
    for (const s of this.birthday) {
      if (s === keep || now - (this.socketRecv.get(s) ?? -Infinity) < quietMs) still.push(s);
      else {
        this.socketRecv.delete(s);
        this.opts.socket.closeExtra(s);
      }
    }
    this.birthday = still;
  }
}

const EMPTY = new Uint8Array(0);

/** Does a round of `plan` probe IPv6 candidates alone? */
function planIpv6Only(plan: PunchPlan): boolean {
  return plan.kind === 'plain' && plan.ipv6Only === true;
}

/**
 * A target of birthday sockets and port spraying: a public IPv4 candidate.
 * Those tricks outguess an IPv4 NAT's mapping; the extra sockets are IPv4,
 * and an IPv6 address has no NAT (its candidates are probed plainly).
 */
function isPublicV4(c: Candidate): boolean {
  return c.kind !== 'host' && ipFamily(c.address) === 'IPv4';
}

/** A cheap per-socket tag for path keys (getsockname on every datagram showed up in profiles). */
const socketIds = new WeakMap<dgram.Socket, number>();
let nextSocketId = 1;
function socketId(s: dgram.Socket): number {
  let id = socketIds.get(s);
  if (id === undefined) socketIds.set(s, (id = nextSocketId++));
  return id;
}
