/**
 * Runs the path MTU search (pmtu.ts, RFC 8899) for one session's direct
 * path: asks whether the peer answers PMTU probes, sends the search's probes
 * on the direct path, answers the peer's, feeds the search KCP's loss and
 * delivery evidence, and applies each size it settles on to the path
 * (`DirectPath.maxDatagram`) and the session (`Session.refit`). Each side
 * searches its own sending direction. docs/PMTU.md explains the whole.
 *
 * It only reports to the session, like the path managers: the direct path
 * manager (direct.ts) knows nothing of it, and it knows the direct path only
 * through the session's 'direct' event.
 */
import { performance } from 'node:perf_hooks';
import type { Session } from '../session/session.js';
import type { Path } from '../session/path.js';
import { KCP_OVERHEAD } from '../kcp/index.js';
import { DATAGRAM_OVERHEAD, DatagramType, MAX_DATAGRAM_LEN, MAX_UDP_DATAGRAM_LEN } from '../wire/datagram.js';
import {
  decodePmtuProbe,
  decodePmtuProbeAck,
  encodePmtuProbe,
  encodePmtuProbeAck,
  MIN_PMTU_PROBE_LEN,
} from '../wire/pmtu-probe.js';
import type { Logger } from '../util/log.js';
import {
  datagramForMtu,
  DEFAULT_MAX_MTU,
  MIN_DATAGRAM_IPV4,
  mtuForDatagram,
  PmtuSearch,
  RAISE_TIMER_MS,
  type AddressFamily,
  type PmtuOutput,
  type PmtuState,
} from './pmtu.js';
import { DirectPath } from './direct.js';

// Timing and sizes. Those of the search itself are at the top of pmtu.ts.
/** Tries of the small probe that asks whether the peer answers PMTU probes at all... */
export const SUPPORT_PROBES = 3;
/** ...each given this long to come back. */
export const SUPPORT_PROBE_TIMEOUT_MS = 1000;
/** The size sent to a peer that does not answer PMTU probes (an older version): today's fixed one. */
export const LEGACY_DATAGRAM = MAX_DATAGRAM_LEN;
/** Smallest and largest `--max-datagram`: an IPv4 576-byte packet, and what every peer accepts from UDP. */
export const MIN_MAX_DATAGRAM = MIN_DATAGRAM_IPV4;
export const MAX_MAX_DATAGRAM = MAX_UDP_DATAGRAM_LEN;
/** A heartbeat ack is an empty sealed datagram: a small datagram that passes. */
const HEARTBEAT_ACK_LEN = DATAGRAM_OVERHEAD;

export interface PmtuDriverOptions {
  session: Session;
  log: Logger;
  /** Upper bound of the search, a sealed datagram size (`--max-datagram`); default: a 1500-byte MTU. */
  maxDatagram?: number;
  /** Search again this long after a search ended below the bound (`--pmtu-raise-interval`; RAISE_TIMER_MS). */
  raiseIntervalMs?: number;
  /** Probe timeout of the search and of the support probe (tests). */
  probeTimeoutMs?: number;
}

/** Checks a `--max-datagram` value; the message says what is wrong, for a usage error. */
export function checkMaxDatagram(v: unknown): string | null {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < MIN_MAX_DATAGRAM || v > MAX_MAX_DATAGRAM)
    return (
      `expected a whole number of bytes from ${MIN_MAX_DATAGRAM} to ${MAX_MAX_DATAGRAM}` +
      ' (a UDP payload: link MTU minus 28 over IPv4)'
    );
  return null;
}

/**
 * What the driver is doing for the session's direct path. Every change goes
 * through transition(); the timer belongs to the state that holds it.
 */
export type PmtuDriverState =
  /** No direct path. */
  | { readonly name: 'idle' }
  /** A small probe asks whether the peer answers PMTU probes; the path keeps the legacy size meanwhile. */
  | { readonly name: 'asking'; readonly path: DirectPath; id: number; tries: number; timer: NodeJS.Timeout }
  /** The peer answers: the search runs; `timer` wakes it at its nextWakeAt. */
  | { readonly name: 'searching'; readonly path: DirectPath; readonly search: PmtuSearch; timer: NodeJS.Timeout | null }
  /** The peer never answered (an older version): the legacy size. */
  | { readonly name: 'legacy'; readonly path: DirectPath }
  | { readonly name: 'closed' };

/** For `peer status`: the path MTU in use on the direct path. */
export interface PmtuStatus {
  /** Largest sealed datagram sent on the direct path (the UDP payload). */
  datagram: number;
  /** The link MTU that carries it (datagram + IP and UDP headers). */
  mtu: number;
  /** The driver's state, or the search's (RFC 8899 names) while it runs. */
  state: 'asking' | 'legacy' | PmtuState;
}

export class PmtuDriver {
  private state: PmtuDriverState = { name: 'idle' };
  /** Whether the peer answers PMTU probes: null until it does, or until it did not SUPPORT_PROBES times. */
  private peerAnswers: boolean | null = null;
  private readonly bound: number | undefined;
  private nextId = 1;
  /** Losses were reported since the last large ack: only then do acks matter to the search (cheap hot path). */
  private lossesPending = false;
  /** Changes of the path's size, for tests and status. */
  changes = 0;

  constructor(private readonly opts: PmtuDriverOptions) {
    if (opts.maxDatagram !== undefined) {
      const bad = checkMaxDatagram(opts.maxDatagram);
      if (bad) throw new RangeError(`maxDatagram: ${bad}`);
    }
    this.bound = opts.maxDatagram;
    const { session } = opts;
    session.on('direct', (path: Path | null) => this.onDirect(path));
    session.on('control', (type: DatagramType, payload: Uint8Array, from: Path) => this.onControl(type, payload, from));
    session.once('close', () => this.transition({ name: 'closed' }, 'session closed'));
    session.kcp.onLost = (len) => this.onLost(len);
    session.kcp.onAcked = (len) => {
      if (this.lossesPending) this.evidence(len + KCP_OVERHEAD + DATAGRAM_OVERHEAD);
    };
  }

  get stateName(): PmtuDriverState['name'] {
    return this.state.name;
  }

  /** The search, while it runs (tests, status). */
  get search(): PmtuSearch | null {
    return this.state.name === 'searching' ? this.state.search : null;
  }

  status(): PmtuStatus | null {
    const s = this.state;
    if (s.name === 'idle' || s.name === 'closed') return null;
    const family = familyOf(s.path);
    return {
      datagram: s.path.maxDatagram,
      mtu: mtuForDatagram(s.path.maxDatagram, family),
      state: s.name === 'searching' ? s.search.state : s.name,
    };
  }

  private transition(next: PmtuDriverState, why: string): void {
    const prev = this.state;
    if (prev === next) return;
    if (prev.name === 'closed') return;
    this.state = next;
    const sid = this.opts.session.sid;
    this.opts.log.debug('pmtu_state', `session ${sid}: path MTU ${prev.name} -> ${next.name} (${why})`, {
      sid,
      from: prev.name,
      to: next.name,
      why,
    });
    if ('timer' in prev && prev.timer && (!('timer' in next) || next.timer !== prev.timer)) clearTimeout(prev.timer);
    this.lossesPending = false;
  }

  /** The upper bound for a path: --max-datagram, and never above a 1500-byte MTU for its family. */
  private boundFor(path: DirectPath): number {
    const fam = datagramForMtu(DEFAULT_MAX_MTU, familyOf(path));
    return this.bound === undefined ? fam : Math.min(this.bound, fam);
  }

  private onDirect(path: Path | null): void {
    const s = this.state;
    if (s.name === 'closed') return;
    if (!(path instanceof DirectPath)) return this.transition({ name: 'idle' }, 'no direct path');
    if ('path' in s && s.path === path) return;
    if (this.peerAnswers === true) return this.startSearch(path, 'a new direct path');
    // Until the peer is known to answer: today's size (or the bound, if smaller).
    this.setSize(path, Math.min(LEGACY_DATAGRAM, this.boundFor(path)), 'legacy', 'legacy');
    if (this.peerAnswers === false) return this.transition({ name: 'legacy', path }, 'the peer does not answer probes');
    this.ask(path, 0);
  }

  /** Sends the support probe (small: it only asks whether the peer answers at all). */
  private ask(path: DirectPath, tries: number): void {
    const id = this.takeId();
    const timeout = this.opts.probeTimeoutMs ?? SUPPORT_PROBE_TIMEOUT_MS;
    const timer = setTimeout(() => this.onAskTimeout(), timeout);
    timer.unref();
    const s = this.state;
    if (s.name === 'asking' && s.path === path) {
      clearTimeout(s.timer);
      s.id = id;
      s.tries = tries + 1;
      s.timer = timer;
    } else {
      this.transition({ name: 'asking', path, id, tries: tries + 1, timer }, 'asking whether the peer answers probes');
    }
    this.opts.session.sendSealed(DatagramType.PmtuProbe, encodePmtuProbe(id, MIN_PMTU_PROBE_LEN), path);
  }

  private onAskTimeout(): void {
    const s = this.state;
    if (s.name !== 'asking') return;
    if (s.tries < SUPPORT_PROBES) return this.ask(s.path, s.tries);
    this.peerAnswers = false;
    this.transition({ name: 'legacy', path: s.path }, `no answer to ${SUPPORT_PROBES} probes: an older peer`);
  }

  private startSearch(path: DirectPath, why: string): void {
    const search = new PmtuSearch({
      family: familyOf(path),
      maxDatagram: this.boundFor(path),
      raiseTimerMs: this.opts.raiseIntervalMs ?? RAISE_TIMER_MS,
      probeTimeoutMs: this.opts.probeTimeoutMs,
    });
    this.opts.session.allowFragments();
    this.transition({ name: 'searching', path, search, timer: null }, why);
    const now = performance.now();
    const out = search.handle({ type: 'start' }, now);
    // The search starts at its base size: cut for it until probes prove more.
    this.setSize(path, search.maxDatagram, 'start', search.state);
    this.apply(out);
  }

  private takeId(): number {
    const id = this.nextId;
    this.nextId = (id + 1) >>> 0 || 1;
    return id;
  }

  private onControl(type: DatagramType, payload: Uint8Array, from: Path): void {
    const s = this.state;
    if (s.name === 'closed') return;
    if (type === DatagramType.PmtuProbe) {
      // Answer on the path it came from: that is the path (and direction) the peer measures.
      const probe = decodePmtuProbe(payload);
      if (!probe) return;
      this.opts.session.sendSealed(DatagramType.PmtuProbeAck, encodePmtuProbeAck(probe.id, probe.size), from);
      // A peer that probes answers probes too.
      if (s.name === 'asking' && from === s.path) this.onPeerAnswers(s.path);
      return;
    }
    if (type === DatagramType.PmtuProbeAck) {
      const ack = decodePmtuProbeAck(payload);
      if (!ack || !('path' in s) || from !== s.path) return;
      if (s.name === 'asking' && ack.id === s.id) return this.onPeerAnswers(s.path);
      if (s.name === 'searching')
        this.apply(s.search.handle({ type: 'probe-acked', id: ack.id, size: ack.size }, performance.now()));
      return;
    }
    // Small datagrams that got through while big ones vanish: heartbeat acks, and the answers to
    // the direct path's own probes (its `suspect` state probes instead of heartbeating).
    const smallAck = type === DatagramType.HeartbeatAck || type === DatagramType.ProbeAck;
    if (smallAck && this.lossesPending && 'path' in s && from === s.path) this.evidence(HEARTBEAT_ACK_LEN);
  }

  private onPeerAnswers(path: DirectPath): void {
    this.peerAnswers = true;
    this.startSearch(path, 'the peer answers probes');
  }

  /**
   * KCP resent segments at their timeout in one flush, the largest `len`
   * bytes: one loss for the search, however many segments. Timeouts of one
   * flush share one cause: a black hole loses the large segments round after
   * round, but so does, once, a receiver that was descheduled for longer than
   * the RTO (a busy machine) or one burst of congestion, and counted one by
   * one those looked like BLACK_HOLE_LOSSES losses in a row the moment a
   * heartbeat ack came back (a false verdict on a 1500 path under load).
   */
  private onLost(len: number): void {
    const s = this.state;
    if (s.name !== 'searching' || this.opts.session.path !== s.path) return;
    this.lossesPending = true;
    this.apply(s.search.handle({ type: 'data-lost', size: len + KCP_OVERHEAD + DATAGRAM_OVERHEAD }, performance.now()));
  }

  /** A datagram of `size` bytes got through (a data ack, a heartbeat ack). */
  private evidence(size: number): void {
    const s = this.state;
    if (s.name !== 'searching') return;
    if (size > s.search.base) this.lossesPending = false;
    this.apply(s.search.handle({ type: 'data-acked', size }, performance.now()));
  }

  private onTick(): void {
    const s = this.state;
    if (s.name !== 'searching') return;
    s.timer = null;
    this.apply(s.search.handle({ type: 'tick' }, performance.now()));
  }

  /** Does what one answer of the search says: send its probe, apply its size, wake it at nextWakeAt. */
  private apply(out: PmtuOutput): void {
    const s = this.state;
    if (s.name !== 'searching') return;
    if (out.change) {
      const c = out.change;
      this.setSize(s.path, c.new, c.reason, c.state, c.old);
      if (s.search.state === 'error')
        this.opts.session.stallDirect('not even the base size passes the path MTU search');
    }
    if (out.probe)
      this.opts.session.sendSealed(DatagramType.PmtuProbe, encodePmtuProbe(out.probe.id, out.probe.size), s.path);
    if (s.timer) clearTimeout(s.timer);
    s.timer = null;
    const at = s.search.nextWakeAt;
    if (at !== null) {
      s.timer = setTimeout(() => this.onTick(), Math.max(0, at - performance.now()));
      s.timer.unref();
    }
  }

  /** Applies a size to the path and the session; logs the `pmtu` event. */
  private setSize(path: DirectPath, size: number, reason: string, state: string, old = path.maxDatagram): void {
    if (path.maxDatagram === size) return;
    path.maxDatagram = size;
    this.changes++;
    const sid = this.opts.session.sid;
    this.opts.log.info('pmtu', `session ${sid}: direct path datagrams ${old} -> ${size} bytes (${reason}, ${state})`, {
      sid,
      old,
      new: size,
      reason,
      state,
      remote: path.remote,
    });
    // Lost rather than merely too large for the new size: resend what is in flight now.
    const lost = size < old && (reason === 'black-hole' || reason === 'probe-failed' || reason === 'base-failed');
    this.opts.session.refit(lost);
  }
}

function familyOf(path: DirectPath): AddressFamily {
  return path.address.includes(':') && !path.address.startsWith('::ffff:') ? 'IPv6' : 'IPv4';
}
