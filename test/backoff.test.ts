import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Backoff, sleep, sleepUnless } from '../src/util/backoff.js';

test('backoff doubles up to its bound, peeks without using up, and resets', () => {
  const b = new Backoff({ initialMs: 250, maxMs: 1000 });
  assert.equal(b.peek(), 250);
  assert.deepEqual([b.next(), b.next(), b.next(), b.next()], [250, 500, 1000, 1000]);
  b.reset();
  assert.equal(b.next(), 250);
  const slow = new Backoff({ initialMs: 100, maxMs: 10_000, factor: 1.5 });
  assert.deepEqual([slow.next(), slow.next(), slow.next()], [100, 150, 225]);
});

test('sleep waits at least the time asked', async () => {
  const t0 = performance.now();
  await sleep(30);
  assert.ok(performance.now() - t0 >= 29);
});

test('sleepUnless: the whole wait without news, cut short (true) when the wake promise settles', async () => {
  const never = new Promise<void>(() => {});
  const t0 = performance.now();
  assert.equal(await sleepUnless(30, never), false);
  assert.ok(performance.now() - t0 >= 29);
  let wake!: () => void;
  const news = new Promise<void>((r) => (wake = r));
  const t1 = performance.now();
  setTimeout(() => wake(), 10);
  assert.equal(await sleepUnless(10_000, news), true);
  assert.ok(performance.now() - t1 < 1000, 'woken long before the 10 s');
});
