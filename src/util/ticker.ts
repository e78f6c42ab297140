import { performance } from 'node:perf_hooks';

/**
 * One coarse clock for the whole process, shared by every session's periodic
 * checks (direct-path heartbeats, session keepalive and death, control pings).
 *
 * Why: an idle tunnel's cost is its wake-ups, not its work. Each session
 * owning a few setIntervals meant one event-loop wake-up per timer per session
 * (~100 µs of CPU each); one shared interval runs all of them in a single
 * batch, so 100 idle tunnels cost one wake-up per tick instead of ~100 a
 * second, and the packets those checks send leave together (the peer reads
 * them in a few wake-ups, not one each).
 *
 * Subscribers say how often they need to be called at least (their
 * resolution); the clock ticks at the finest resolution asked for, runs only
 * while someone is subscribed, and never keeps the process alive.
 */
export type TickFn = (now: number) => void;

/** The default tick: fine enough for 2 s heartbeats, coarse enough to cost nothing. */
export const COARSE_TICK_MS = 1000;
/** Floor for the tick, whatever a (test) option asks for. */
const MIN_TICK_MS = 10;

/** The resolution a check that runs every `intervalMs` needs: two ticks per interval, at most one tick a second. */
export function tickFor(intervalMs: number): number {
  return Math.min(COARSE_TICK_MS, intervalMs / 2);
}

/**
 * Whether something meant to happen every `everyMs` is due, `sinceMs` after it
 * last happened, on a clock read once per tick of `resolutionMs`. Half a tick
 * early rather than a whole tick late: with 1 s ticks a 2 s heartbeat goes
 * every 2 s even when the answer that reset it took a few hundred ms.
 */
export function isDue(sinceMs: number, everyMs: number, resolutionMs: number): boolean {
  return sinceMs >= everyMs - resolutionMs / 2;
}

interface Subscription {
  readonly fn: TickFn;
  readonly resolution: number;
}

export class Ticker {
  private readonly subs = new Set<Subscription>();
  /** Subscribers per requested resolution: the finest is found without walking every subscriber. */
  private readonly resolutions = new Map<number, number>();
  private timer: NodeJS.Timeout | null = null;
  private periodMs = 0;

  /** Calls `fn(now)` at least every `resolutionMs` until the returned function is called. */
  subscribe(fn: TickFn, resolutionMs: number): () => void {
    const sub: Subscription = { fn, resolution: Math.max(MIN_TICK_MS, Math.round(resolutionMs)) };
    this.subs.add(sub);
    this.resolutions.set(sub.resolution, (this.resolutions.get(sub.resolution) ?? 0) + 1);
    this.retune();
    return () => {
      if (!this.subs.delete(sub)) return;
      const left = this.resolutions.get(sub.resolution)! - 1;
      if (left) this.resolutions.set(sub.resolution, left);
      else this.resolutions.delete(sub.resolution);
      this.retune();
    };
  }

  /** The current tick in ms; 0 while nobody is subscribed (no timer at all). */
  get period(): number {
    return this.periodMs;
  }

  get subscribers(): number {
    return this.subs.size;
  }

  private retune(): void {
    const period = this.resolutions.size ? Math.min(...this.resolutions.keys()) : 0;
    if (period === this.periodMs) return;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.periodMs = period;
    if (!period) return;
    this.timer = setInterval(() => this.tick(), period);
    this.timer.unref();
  }

  private tick(): void {
    const now = performance.now();
    // One failing check must not starve the others of their tick; the first
    // error is still thrown, as it would have been from its own timer.
    let failed = false;
    let failure: unknown;
    for (const sub of this.subs) {
      try {
        sub.fn(now);
      } catch (e) {
        if (!failed) failure = e;
        failed = true;
      }
    }
    if (failed) throw failure;
  }
}

/** The process's shared ticker. */
export const processTicker = new Ticker();
