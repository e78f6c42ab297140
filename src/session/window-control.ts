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
  readonly targetMs: number;
  private readonly baseWindowMs: number;
  private wnd: number;
  private baseRtt = Infinity;
  private baseAt = 0;

  constructor(opts: WindowControlOptions = {}) {
    this.minWnd = opts.minWnd ?? 32;
    this.maxWnd = opts.maxWnd ?? 1024;
    this.targetMs = opts.targetMs ?? 5;
    this.baseWindowMs = opts.baseWindowMs ?? 10_000;
    this.wnd = Math.min(this.maxWnd, 256);
  }

  get window(): number {
    return this.wnd;
  }

  /** New bounds (a path with another segment size); the window is clamped into them. */
  setLimits(minWnd: number, maxWnd: number): void {
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
