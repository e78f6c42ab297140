import assert from 'node:assert/strict';
import { sleep } from '../../src/util/backoff.js';
export { sleep };

/** Polls cond() every 5 ms for at most `ms`; fails the test if it never holds. */
export async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  for (let i = 0; i < 100_000 && Date.now() < end; i++) {
    if (cond()) return;
    await sleep(5);
  }
  assert.ok(cond(), `never happened within ${ms} ms: ${what}`);
}
