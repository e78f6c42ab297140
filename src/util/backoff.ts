/**
 * Exponential backoff with an upper bound, for every "try again later" in the
 * project (reconnects, re-punching, reopening a tunnel). One helper, so every
 * retry loop grows and resets the same way.
 */
export interface BackoffOptions {
  /** The first delay. */
  initialMs: number;
  /** Delays never grow past this. */
  maxMs: number;
  /** Growth per attempt; 2 unless told. */
  factor?: number;
}

export class Backoff {
  private nextMs: number;

  constructor(readonly opts: BackoffOptions) {
    this.nextMs = opts.initialMs;
  }

  /** The delay to wait now; the one after it grows by the factor, up to maxMs. */
  next(): number {
    const d = this.nextMs;
    this.nextMs = Math.min(this.opts.maxMs, Math.round(d * (this.opts.factor ?? 2)));
    return d;
  }

  /** The delay next() would return, without using it up (for "retrying in N ms" logs). */
  peek(): number {
    return this.nextMs;
  }

  /** Back to the first delay: the thing we retried worked. */
  reset(): void {
    this.nextMs = this.opts.initialMs;
  }
}

/** Resolves after `ms`. The one sleep of the project: tests, scripts and the peers import it from here. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Resolves after `ms` with false, or earlier with true once `wake` resolves
 * (news that makes waiting out a backoff pointless: the network is back).
 */
export async function sleepUnless(ms: number, wake: Promise<void>): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), ms);
      }),
      wake.then(() => true),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
