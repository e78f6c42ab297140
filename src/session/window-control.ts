/**
 * Delay-based send-window control (in the spirit of TCP Vegas / LEDBAT).
 *
 * KCP in fast mode (nc=1) has no congestion control: it keeps a full window in
 * flight. When the bottleneck is slower than the sender (a receiver's CPU, a
 * home uplink, the relay's TCP), that window piles up in a queue, and every
 * interactive byte waits behind it: hundreds of milliseconds with a 1024-segment
 * window. This controller keeps the queue short instead: it grows the window
 * while the smoothed RTT stays near the lowest RTT seen, and shrinks it when the
 * RTT rises more than `targetMs` above that floor. Pure: the session feeds it
 * RTT samples and applies the window it returns.
 */
import { DATAGRAM_OVERHEAD, MAX_UDP_DATAGRAM_LEN } from '../wire/datagram.js';

// Window sizes. A window is bytes in flight; KCP counts it in segments, so
// each bound is converted for the segment size in use (windowLimits()).
/** A KCP segment filling the largest UDP datagram (a 1500-byte MTU over IPv4). */
const FULL_UDP_SEGMENT = MAX_UDP_DATAGRAM_LEN - DATAGRAM_OVERHEAD;
/**
 * Most bytes a window spans over UDP: 1024 full-size segments (~1.4 MB,
 * enough for 100+ MB/s at LAN round-trip times). A smaller path MTU gets
 * more, smaller segments, not fewer bytes in flight.
 */
export const UDP_WINDOW_BYTES = 1024 * FULL_UDP_SEGMENT;
/**
 * Most bytes any window spans. Binding only on the relay, whose segments are
 * 64 KiB (256 of them): 16 MiB covers 2 Gbit/s at 60 ms, bounds what a move
 * to UDP leaves behind on the relay, and bounds what a peer can make us
 * buffer out of order. (8 MiB, with the relay's queue target, left the relay
 * window-bound and a fifth of the CPU idle: docs/BENCHMARKS.md.)
 */
export const MAX_WINDOW_BYTES = 16 * 1024 * 1024;
/** Fewest bytes the delay-based control shrinks the send window to (32 UDP-sized segments). */
export const MIN_WINDOW_BYTES = 32 * FULL_UDP_SEGMENT;
/** Fewest segments in any window, however large they are. */
export const MIN_WINDOW_SEGMENTS = 8;
/**
 * The smallest segments a working path MTU search settles on: RFC 8899's
 * IPv4 base datagram (1200 bytes, punch/pmtu.ts). The receive window counts
 * the peer's segments, cut for the peer's own direction, so it is sized for
 * these: UDP_WINDOW_BYTES of them (~1.8 MB of full-size ones at most).
 */
const SMALL_UDP_SEGMENT = 1200 - DATAGRAM_OVERHEAD;

/**
 * Queueing delay accepted above a UDP path's base RTT: the delay an
 * interactive stream pays behind bulk data of the same session.
 */
export const UDP_QUEUE_TARGET_MS = 5;
/**
 * The same on the relay. Its round trip crosses two TCP connections and five
 * processes (the peers, the relay, the applications), and under load each
 * hand-off can wait a few milliseconds for a CPU: 5 ms above the idle RTT is
 * reached by scheduling alone, so the window shrank until the relay path
 * idled. 20 ms lets it fill. The cost falls on a relay whose network is the
 * bottleneck: there an interactive stream beside bulk data of the same
 * session waits longer than with 5 ms, for no throughput (docs/BENCHMARKS.md,
 * "The relay's windows").
 */
export const RELAY_QUEUE_TARGET_MS = 20;

export interface WindowLimits {
  /** Send window bounds, in segments. */
  min: number;
  max: number;
  /** Receive window, in segments. */
  receive: number;
  /** Queueing delay the send window control aims for (WindowControl's targetMs). */
  targetMs: number;
}

/**
 * Pure: the windows in segments of `segmentBytes` (KCP's MTU: a datagram's
 * plaintext): the send window's bounds, the receive window, and the queueing
 * target. Segments larger than a UDP datagram's are the relay's.
 */
export function windowLimits(segmentBytes: number): WindowLimits {
  const segments = (bytes: number) => Math.max(MIN_WINDOW_SEGMENTS, Math.floor(bytes / segmentBytes));
  const min = segments(MIN_WINDOW_BYTES);
  // Relay records (up to 64 KiB): MAX_WINDOW_BYTES of them, both ways.
  if (segmentBytes > FULL_UDP_SEGMENT) {
    const max = segments(MAX_WINDOW_BYTES);
    return { min: Math.min(min, max), max, receive: max, targetMs: RELAY_QUEUE_TARGET_MS };
  }
  return {
    min,
    max: segments(UDP_WINDOW_BYTES),
    receive: Math.floor(UDP_WINDOW_BYTES / SMALL_UDP_SEGMENT),
    targetMs: UDP_QUEUE_TARGET_MS,
  };
}

export interface WindowControlOptions {
  minWnd?: number;
  maxWnd?: number;
  /** Queueing delay we accept above the path's base RTT. */
  targetMs?: number;
  /** How long the base RTT estimate is remembered (paths change). */
  baseWindowMs?: number;
}

export class WindowControl {
  minWnd: number;
  maxWnd: number;
  targetMs: number;
  private readonly baseWindowMs: number;
  private wnd: number;
  private baseRtt = Infinity;
  private baseAt = 0;

  constructor(opts: WindowControlOptions = {}) {
    this.minWnd = opts.minWnd ?? 32;
    this.maxWnd = opts.maxWnd ?? 1024;
    this.targetMs = opts.targetMs ?? UDP_QUEUE_TARGET_MS;
    this.baseWindowMs = opts.baseWindowMs ?? 10_000;
    this.wnd = Math.min(this.maxWnd, 256);
  }

  get window(): number {
    return this.wnd;
  }

  /** New bounds (a path with another segment size); the window is clamped into them. */
  setLimits(minWnd: number, maxWnd: number, targetMs = this.targetMs): void {
    this.targetMs = targetMs;
    this.minWnd = minWnd;
    this.maxWnd = Math.max(minWnd, maxWnd);
    this.wnd = Math.min(this.maxWnd, Math.max(this.minWnd, this.wnd));
  }

  /** Forget the base RTT (the path changed). */
  reset(now: number): void {
    this.baseRtt = Infinity;
    this.baseAt = now;
  }

  /**
   * One control step. `srttMs`: KCP's smoothed RTT; `inFlight`: segments sent
   * and unacknowledged; `now`: ms. Returns the new send window.
   */
  step(srttMs: number, inFlight: number, now: number): number {
    if (!(srttMs > 0)) return this.wnd;
    if (srttMs < this.baseRtt || now - this.baseAt > this.baseWindowMs) {
      // Slowly let the floor rise again, so a path that got slower is not punished forever.
      this.baseRtt = srttMs;
      this.baseAt = now;
    }
    const queueing = srttMs - this.baseRtt;
    if (queueing > this.targetMs) {
      this.wnd = Math.max(this.minWnd, Math.floor(this.wnd * 0.85));
    } else if (inFlight >= this.wnd * 0.8) {
      // Window-limited and the queue is short: there is room to grow.
      this.wnd = Math.min(this.maxWnd, this.wnd + Math.max(4, Math.ceil(this.wnd / 8)));
    }
    return this.wnd;
  }
}
