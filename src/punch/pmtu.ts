/**
 * Datagram Packetization Layer PMTU Discovery (DPLPMTUD, RFC 8899) for one
 * direct UDP path, as a pure state machine: no sockets, no timers, no clock.
 * Its owner feeds it events with a monotonic `now` (performance.now()) and
 * does what each answer says: send a probe of exactly `probe.size` bytes,
 * cut KCP segments for `maxDatagram`, log `change` as a `pmtu` event, and
 * call `handle({ type: 'tick' }, now)` again at `nextWakeAt`.
 *
 * Every size here is a *sealed datagram* length, i.e. the UDP payload (what
 * `socket.send` is given): IP and UDP headers are outside it, the seal's
 * 29 bytes (DATAGRAM_OVERHEAD) inside it. A link MTU of M carries datagrams
 * of M - 28 bytes over IPv4 and M - 48 over IPv6 (`datagramForMtu`).
 *
 * States (RFC 8899 section 5.2, same names):
 *   disabled         not started: maxDatagram = base, nothing is probed.
 *   base             confirming that `base` passes (one probe, up to MAX_PROBES tries).
 *   searching        probing sizes above maxDatagram, one at a time, ascending.
 *   search-complete  nothing left to try; the raise timer starts a new search.
 *   error            even `base` was not acknowledged: maxDatagram = min; base is retried.
 *
 * docs/PMTU.md explains the choices (the probe list, the black-hole evidence).
 */

// ---------------------------------------------------------------------------
// Every size, timing and count in one place.

/** IPv4 header without options (RFC 791). */
export const IPV4_HEADER_LEN = 20;
/** IPv6 fixed header (RFC 8200); we send no extension headers. */
export const IPV6_HEADER_LEN = 40;
export const UDP_HEADER_LEN = 8;
/** Smallest link MTU IPv6 allows (RFC 8200 section 5): every IPv6 path carries it. */
export const IPV6_MIN_MTU = 1280;
/** Smallest MTU an IPv4 router may report (RFC 791: 68); smaller ICMP values are nonsense. */
export const IPV4_MIN_MTU = 68;
/** Largest IP packet at all; a bigger "next-hop MTU" is nonsense. */
export const MAX_IP_MTU = 65535;
/** Every IPv4 host must accept 576-byte packets (RFC 791): the floor in the error state. */
export const IPV4_MIN_REASSEMBLY = 576;

/** BASE_PLPMTU over IPv6: 1280 - 40 - 8. */
export const BASE_DATAGRAM_IPV6 = IPV6_MIN_MTU - IPV6_HEADER_LEN - UDP_HEADER_LEN; // 1232
/** BASE_PLPMTU over IPv4: RFC 8899 recommends 1200 bytes (an IP packet of 1228). */
export const BASE_DATAGRAM_IPV4 = 1200;
/** MIN_PLPMTU, used in the error state: IPv4 576 - 28; IPv6 cannot go below its base. */
export const MIN_DATAGRAM_IPV4 = IPV4_MIN_REASSEMBLY - IPV4_HEADER_LEN - UDP_HEADER_LEN; // 548
export const MIN_DATAGRAM_IPV6 = BASE_DATAGRAM_IPV6;
/** Ethernet MTU: the default upper bound of the search (1472 over IPv4, 1452 over IPv6). */
export const DEFAULT_MAX_MTU = 1500;

/**
 * Link MTUs probed, ascending: 1280 (IPv6 minimum, many tunnels and mobile
 * networks), 1400 (conservative VPN/cloud setting), 1420 (WireGuard), 1450
 * (VXLAN), 1460 (GCP VPC), 1480 (6in4/IPIP), 1492 (PPPoE), 1500 (Ethernet).
 * The search tries those between base and the upper bound, plus the bound
 * itself and any size an ICMP "packet too big" names.
 */
export const PROBE_LINK_MTUS: readonly number[] = [1280, 1400, 1420, 1450, 1460, 1480, 1492, 1500];

/** MAX_PROBES (RFC 8899): tries of one size before it counts as too big. */
export const MAX_PROBES = 3;
/** PROBE_TIMER: how long a probe may go unanswered before it counts as lost. */
export const PROBE_TIMEOUT_MS = 1000;
/**
 * PMTU_RAISE_TIMER: after a search ends below the upper bound, search again
 * this much later. RFC 8899 says 600 s; 60 s here so that a path whose
 * bottleneck went away grows back within 2 minutes (60 s + a few probes).
 */
export const RAISE_TIMER_MS = 60_000;
/** In the error state (base never acknowledged), probe base again this often. */
export const ERROR_RETRY_MS = 10_000;
/**
 * Black-hole evidence: this many losses in a row of datagrams larger than
 * base (and no larger than maxDatagram), with no acknowledgement of any
 * datagram larger than base in between, and at least one acknowledgement of
 * a small (<= base) datagram after the first of those losses.
 */
export const BLACK_HOLE_LOSSES = 5;

// ---------------------------------------------------------------------------

export type AddressFamily = 'IPv4' | 'IPv6';
export type PmtuState = 'disabled' | 'base' | 'searching' | 'search-complete' | 'error';

/** Why maxDatagram changed. */
export type PmtuReason =
  /** a probe of a larger size was acknowledged */
  | 'probe-acked'
  /** base was acknowledged again after the error state */
  | 'base-confirmed'
  /** base was not acknowledged after MAX_PROBES tries: down to min */
  | 'base-failed'
  /** the size in use failed its own probe (after an ICMP hint): back to base */
  | 'probe-failed'
  /** full-size data lost while small datagrams pass: back to base at once */
  | 'black-hole'
  /** an ICMP "fragmentation needed" / "packet too big" named a smaller MTU */
  | 'ptb'
  /** the owner stopped the search */
  | 'stop';

/** One change of maxDatagram, for the `pmtu` JSON log event. */
export interface PmtuChange {
  old: number;
  new: number;
  reason: PmtuReason;
  state: PmtuState;
}

/** Inputs of the state machine (its single transition function is `handle`). */
export type PmtuEvent =
  /** the direct path is confirmed and the peer answers PMTU probes: start at base */
  | { type: 'start' }
  /** stop probing (path gone, peer without PMTU probes): back to disabled */
  | { type: 'stop' }
  /** time passed: call at nextWakeAt (earlier or extra calls are harmless) */
  | { type: 'tick' }
  /** a PmtuProbeAck arrived for probe `id` of `size` bytes */
  | { type: 'probe-acked'; id: number; size: number }
  /** a data datagram of (at least) `size` bytes was acknowledged by the peer; also heartbeat acks */
  | { type: 'data-acked'; size: number }
  /** a data datagram of (at least) `size` bytes was declared lost (retransmission timeout) */
  | { type: 'data-lost'; size: number }
  /** an ICMP frag-needed / packet-too-big reported next-hop MTU `mtu` (link MTU, IP headers included) */
  | { type: 'ptb'; mtu: number };

export interface PmtuProbeRequest {
  /** probe id to put in the probe (and match in the ack) */
  id: number;
  /** exact sealed datagram size to send */
  size: number;
}

/** What the owner must do after one event. */
export interface PmtuOutput {
  /** send this probe now (padded, sealed, exactly `size` bytes) */
  probe: PmtuProbeRequest | null;
  /** maxDatagram changed: re-cut segments, log a `pmtu` event */
  change: PmtuChange | null;
  /** set when the event was ignored (bad or stale input), saying why */
  ignored: string | null;
}

export interface PmtuOptions {
  family?: AddressFamily;
  /** upper bound (`--max-datagram`), a sealed datagram size; default: 1500-byte MTU */
  maxDatagram?: number;
  /** BASE_PLPMTU override (a measured base); default BASE_DATAGRAM_IPV4 / _IPV6 */
  base?: number;
  probeTimeoutMs?: number;
  raiseTimerMs?: number;
  errorRetryMs?: number;
  maxProbes?: number;
  blackHoleLosses?: number;
}

/** Largest sealed datagram a link MTU carries (IP and UDP headers subtracted). */
export function datagramForMtu(mtu: number, family: AddressFamily = 'IPv4'): number {
  return mtu - (family === 'IPv6' ? IPV6_HEADER_LEN : IPV4_HEADER_LEN) - UDP_HEADER_LEN;
}

/** The link MTU a sealed datagram of `size` bytes needs. */
export function mtuForDatagram(size: number, family: AddressFamily = 'IPv4'): number {
  return size + (family === 'IPv6' ? IPV6_HEADER_LEN : IPV4_HEADER_LEN) + UDP_HEADER_LEN;
}

/** Smallest sealed datagram the search accepts as a bound (an IPv4 576-byte packet). */
const MIN_CONFIG_DATAGRAM = MIN_DATAGRAM_IPV4;

interface Probe {
  size: number;
  /** ids of every try of this size: an ack for any of them counts */
  ids: number[];
  deadline: number;
}

const isSize = (n: unknown): n is number => typeof n === 'number' && Number.isInteger(n) && n > 0;

function checkOption(name: string, v: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max)
    throw new RangeError(`pmtu: ${name} must be within ${min}..${max}, got ${v}`);
  return v;
}

export class PmtuSearch {
  readonly family: AddressFamily;
  /** BASE_PLPMTU: where the search starts and where a black hole sends it back. */
  readonly base: number;
  /** MIN_PLPMTU: the size in the error state. */
  readonly min: number;
  /** MAX_PLPMTU: the upper bound (`--max-datagram`). */
  readonly max: number;
  readonly probeTimeoutMs: number;
  readonly raiseTimerMs: number;
  readonly errorRetryMs: number;
  readonly maxProbes: number;
  readonly blackHoleLosses: number;
  /** Sizes probed (besides ICMP hints), ascending, each in (base, max]. */
  readonly candidates: readonly number[];

  private _state: PmtuState = 'disabled';
  private plpmtu: number;
  private probe: Probe | null = null;
  private tries = 0;
  /** smallest size known not to pass since the last raise (probes stay below it) */
  private failedAt = Infinity;
  /** a size named by an ICMP PTB, probed next */
  private hint: number | null = null;
  private raiseAt: number | null = null;
  private retryAt: number | null = null;
  private nextId = 1;
  // Black-hole evidence.
  private bigLosses = 0;
  private firstBigLossAt = 0;
  private smallestLost = Infinity;
  private smallAckAt = -Infinity;
  /** inputs ignored as bad or stale (for status/debugging) */
  ignoredInputs = 0;

  constructor(opts: PmtuOptions = {}) {
    const family = opts.family ?? 'IPv4';
    if (family !== 'IPv4' && family !== 'IPv6') throw new RangeError(`pmtu: family must be IPv4 or IPv6`);
    this.family = family;
    const maxPossible = datagramForMtu(MAX_IP_MTU, family);
    this.max = Math.floor(
      checkOption(
        'maxDatagram',
        opts.maxDatagram ?? datagramForMtu(DEFAULT_MAX_MTU, family),
        MIN_CONFIG_DATAGRAM,
        maxPossible,
      ),
    );
    const base = opts.base ?? (family === 'IPv6' ? BASE_DATAGRAM_IPV6 : BASE_DATAGRAM_IPV4);
    // A user bound below base is the user's knowledge of the path: it wins.
    this.base = Math.min(Math.floor(checkOption('base', base, MIN_CONFIG_DATAGRAM, maxPossible)), this.max);
    this.min = Math.min(family === 'IPv6' ? MIN_DATAGRAM_IPV6 : MIN_DATAGRAM_IPV4, this.base);
    this.probeTimeoutMs = checkOption('probeTimeoutMs', opts.probeTimeoutMs ?? PROBE_TIMEOUT_MS, 1);
    this.raiseTimerMs = checkOption('raiseTimerMs', opts.raiseTimerMs ?? RAISE_TIMER_MS, 1);
    this.errorRetryMs = checkOption('errorRetryMs', opts.errorRetryMs ?? ERROR_RETRY_MS, 1);
    this.maxProbes = Math.floor(checkOption('maxProbes', opts.maxProbes ?? MAX_PROBES, 1, 100));
    this.blackHoleLosses = Math.floor(
      checkOption('blackHoleLosses', opts.blackHoleLosses ?? BLACK_HOLE_LOSSES, 1, 1000),
    );
    const sizes = new Set(PROBE_LINK_MTUS.map((m) => datagramForMtu(m, family)));
    sizes.add(this.max);
    this.candidates = [...sizes].filter((s) => s > this.base && s <= this.max).sort((a, b) => a - b);
    this.plpmtu = this.base;
  }

  get state(): PmtuState {
    return this._state;
  }

  /** PLPMTU: the largest sealed datagram to send now; cut KCP segments for it. */
  get maxDatagram(): number {
    return this.plpmtu;
  }

  /** Size of the probe in flight, or null. */
  get probing(): number | null {
    return this.probe?.size ?? null;
  }

  /** When the owner must call handle({type:'tick'}) next; null: only events can change anything. */
  get nextWakeAt(): number | null {
    if (this.probe) return this.probe.deadline;
    if (this._state === 'search-complete') return this.raiseAt;
    if (this._state === 'error') return this.retryAt;
    return null;
  }

  /** For `peer status`. */
  snapshot(): {
    state: PmtuState;
    maxDatagram: number;
    probing: number | null;
    base: number;
    max: number;
    failedAt: number | null;
  } {
    return {
      state: this._state,
      maxDatagram: this.plpmtu,
      probing: this.probing,
      base: this.base,
      max: this.max,
      failedAt: Number.isFinite(this.failedAt) ? this.failedAt : null,
    };
  }

  // -------------------------------------------------------------------------
  // The transition function.

  handle(ev: PmtuEvent, now: number): PmtuOutput {
    const out: PmtuOutput = { probe: null, change: null, ignored: null };
    if (typeof now !== 'number' || !Number.isFinite(now)) return this.ignore(out, 'now is not a finite number');
    if (!ev || typeof ev !== 'object') return this.ignore(out, 'not an event');
    switch (ev.type) {
      case 'start':
        if (this._state !== 'disabled') return this.ignore(out, `start while ${this._state}`);
        this.resetEvidence();
        this.failedAt = Infinity;
        this.hint = null;
        this._state = 'base';
        this.tries = 0;
        this.sendProbe(out, this.base, now);
        return out;
      case 'stop':
        this._state = 'disabled';
        this.probe = null;
        this.raiseAt = this.retryAt = null;
        this.setSize(out, this.base, 'stop');
        return out;
      case 'tick':
        this.onTick(out, now);
        return out;
      case 'probe-acked':
        return this.onProbeAck(out, ev.id, ev.size, now);
      case 'data-acked':
        if (!isSize(ev.size)) return this.ignore(out, `bad size ${String(ev.size)}`);
        if (ev.size > this.base) this.resetEvidence();
        else this.smallAckAt = now;
        this.checkBlackHole(out, now);
        return out;
      case 'data-lost':
        if (!isSize(ev.size)) return this.ignore(out, `bad size ${String(ev.size)}`);
        // Only datagrams a base-sized path would not carry, and only those cut
        // for the size in use (larger ones predate a shrink).
        if (ev.size <= this.base || ev.size > this.plpmtu) return out;
        if (this.bigLosses === 0) this.firstBigLossAt = now;
        this.bigLosses++;
        this.smallestLost = Math.min(this.smallestLost, ev.size);
        this.checkBlackHole(out, now);
        return out;
      case 'ptb':
        return this.onPtb(out, ev.mtu, now);
      default:
        return this.ignore(out, `unknown event ${String((ev as { type?: unknown }).type)}`);
    }
  }

  // -------------------------------------------------------------------------

  private ignore(out: PmtuOutput, why: string): PmtuOutput {
    this.ignoredInputs++;
    out.ignored = why;
    return out;
  }

  private setSize(out: PmtuOutput, size: number, reason: PmtuReason): void {
    if (size === this.plpmtu) return;
    const old = this.plpmtu;
    this.plpmtu = size;
    // Losses counted against the old size say nothing about the new one.
    this.resetEvidence();
    out.change = { old, new: size, reason, state: this._state };
  }

  private resetEvidence(): void {
    this.bigLosses = 0;
    this.smallestLost = Infinity;
  }

  /** A first try of `size` (tries = 0) or another try of the probe in flight. */
  private sendProbe(out: PmtuOutput, size: number, now: number): void {
    const id = this.nextId;
    this.nextId = (this.nextId + 1) >>> 0 || 1;
    if (this.probe && this.probe.size === size) this.probe.ids.push(id);
    else this.probe = { size, ids: [id], deadline: 0 };
    this.probe.deadline = now + this.probeTimeoutMs;
    this.tries++;
    out.probe = { id, size };
  }

  private startProbe(out: PmtuOutput, size: number, now: number): void {
    this.probe = null;
    this.tries = 0;
    this.sendProbe(out, size, now);
  }

  private onTick(out: PmtuOutput, now: number): void {
    const p = this.probe;
    if (p) {
      if (now < p.deadline) return;
      if (this.tries < this.maxProbes) return this.sendProbe(out, p.size, now);
      return this.onProbeFailed(out, p.size, now);
    }
    if (this._state === 'search-complete' && this.raiseAt !== null && now >= this.raiseAt) {
      // Raise timer: the bottleneck may be gone; forget what failed and look above.
      this.failedAt = Infinity;
      this.hint = null;
      this._state = 'searching';
      return this.continueSearch(out, now);
    }
    if (this._state === 'error' && this.retryAt !== null && now >= this.retryAt) {
      this._state = 'base';
      this.retryAt = null;
      this.startProbe(out, this.base, now);
    }
  }

  private onProbeAck(out: PmtuOutput, id: number, size: number, now: number): PmtuOutput {
    const p = this.probe;
    if (!p || !isSize(size) || size !== p.size || typeof id !== 'number' || !p.ids.includes(id))
      return this.ignore(out, `ack for a probe not in flight (id ${String(id)}, size ${String(size)})`);
    this.probe = null;
    // A probe that came back is a small datagram that passes, when it is one.
    if (size <= this.base) this.smallAckAt = now;
    else this.resetEvidence();
    if (this._state === 'base') {
      this._state = 'searching';
      this.setSize(out, Math.max(this.plpmtu, size), 'base-confirmed');
    } else if (size > this.plpmtu) {
      this.setSize(out, size, 'probe-acked');
    }
    if (this.hint !== null && this.hint <= this.plpmtu) this.hint = null;
    this.continueSearch(out, now);
    return out;
  }

  private onProbeFailed(out: PmtuOutput, size: number, now: number): void {
    this.probe = null;
    if (this._state === 'base') {
      this._state = 'error';
      this.retryAt = now + this.errorRetryMs;
      this.setSize(out, this.min, 'base-failed');
      return;
    }
    this.failedAt = Math.min(this.failedAt, size);
    if (this.hint !== null && this.hint >= size) this.hint = null;
    // The size already in use did not pass its own probe (an ICMP hint that
    // was wrong, or the path shrank again): trust only base.
    if (size <= this.plpmtu) return this.enterBase(out, 'probe-failed', now);
    this.continueSearch(out, now);
  }

  /** Next size to probe above maxDatagram and below failedAt, or search-complete. */
  private continueSearch(out: PmtuOutput, now: number): void {
    const lo = this.plpmtu;
    const hi = Math.min(this.failedAt, this.max + 1);
    let next: number | undefined;
    if (this.hint !== null && this.hint > lo && this.hint < hi) next = this.hint;
    else next = this.candidates.find((s) => s > lo && s < hi);
    if (next !== undefined) return this.startProbe(out, next, now);
    this._state = 'search-complete';
    this.probe = null;
    this.hint = null;
    this.raiseAt = now + this.raiseTimerMs;
  }

  private enterBase(out: PmtuOutput, reason: PmtuReason, now: number): void {
    this._state = 'base';
    this.raiseAt = null;
    this.setSize(out, this.base, reason);
    this.startProbe(out, this.base, now);
  }

  private checkBlackHole(out: PmtuOutput, now: number): void {
    if (this._state !== 'searching' && this._state !== 'search-complete') return;
    if (this.plpmtu <= this.base || this.bigLosses < this.blackHoleLosses) return;
    if (this.smallAckAt < this.firstBigLossAt) return; // nothing passes at all: a dead path, not ours to judge
    // The lost size is not ruled out (RFC 8899: a black hole restarts the search
    // from base): a burst of congestion loss looks the same from here, and its
    // own probes, sent alone, tell the two apart in MAX_PROBES timeouts.
    this.hint = null;
    this.enterBase(out, 'black-hole', now);
  }

  private onPtb(out: PmtuOutput, mtu: number, now: number): PmtuOutput {
    if (this._state === 'disabled') return this.ignore(out, 'ptb while disabled');
    const minMtu = this.family === 'IPv6' ? IPV6_MIN_MTU : IPV4_MIN_MTU;
    if (typeof mtu !== 'number' || !Number.isInteger(mtu) || mtu < minMtu || mtu > MAX_IP_MTU)
      return this.ignore(out, `absurd next-hop MTU ${String(mtu)}`);
    const size = datagramForMtu(mtu, this.family);
    const p = this.probe;
    if (size >= this.plpmtu) {
      // Not below what data uses: it can only be about a probe in flight.
      if (!p || p.size <= size || this._state !== 'searching')
        return this.ignore(out, `next-hop MTU ${mtu} does not limit anything in flight`);
      this.failedAt = Math.min(this.failedAt, p.size);
      this.probe = null;
      this.hint = size > this.plpmtu && size <= this.max ? size : null;
      this.continueSearch(out, now);
      return out;
    }
    // In base and error nothing above base is in use: nothing to lower.
    if (this._state !== 'searching' && this._state !== 'search-complete')
      return this.ignore(out, `next-hop MTU ${mtu} while ${this._state}`);
    // Data is too big for the path (if the ICMP is true). Never below base on
    // the word of an unauthenticated ICMP: base is confirmed by its own probe.
    this.failedAt = Math.min(this.failedAt, this.plpmtu);
    if (size <= this.base) {
      this.enterBase(out, 'ptb', now);
      return out;
    }
    // Use the hint at once, and validate it with a probe of exactly that size:
    // if it does not come back, onProbeFailed goes to base.
    this.failedAt = Math.min(this.failedAt, size + 1);
    this.hint = null;
    this._state = 'searching';
    this.raiseAt = null;
    this.setSize(out, size, 'ptb');
    this.startProbe(out, size, now);
    return out;
  }
}
