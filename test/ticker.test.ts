import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { isDue, Ticker, tickFor } from '../src/util/ticker.js';
import { sleep } from '../src/util/backoff.js';

const tickerUrl = new URL('../src/util/ticker.js', import.meta.url).href;

test('every subscriber runs in the same batch: one clock reading per tick', async () => {
  const t = new Ticker();
  const seen: number[][] = [[], [], []];
  const cancels = seen.map((calls) => t.subscribe((now) => calls.push(now), 20));
  await sleep(170);
  cancels.forEach((c) => c());
  assert.ok(seen[0].length >= 3, `only ${seen[0].length} ticks in 170 ms at 20 ms`);
  assert.deepEqual(seen[1], seen[0]);
  assert.deepEqual(seen[2], seen[0]);
  assert.equal(t.period, 0);
});

test('the tick follows the finest resolution asked for, and stops when the last subscriber leaves', () => {
  const t = new Ticker();
  assert.equal(t.period, 0);
  const coarse = t.subscribe(() => {}, 1000);
  const coarse2 = t.subscribe(() => {}, 1000);
  assert.equal(t.period, 1000);
  const fine = t.subscribe(() => {}, 50);
  assert.equal(t.period, 50);
  fine();
  fine(); // idempotent: must not drop another subscriber's resolution
  assert.equal(t.period, 1000);
  coarse();
  assert.equal(t.period, 1000);
  assert.equal(t.subscribers, 1);
  coarse2();
  assert.equal(t.period, 0);
  assert.equal(t.subscribers, 0);
  const tiny = t.subscribe(() => {}, 0.5);
  assert.equal(t.period, 10, 'floored');
  tiny();
});

test('a subscriber that leaves during a tick is not called again', async () => {
  const t = new Ticker();
  let calls = 0;
  const cancel = t.subscribe(() => {
    calls++;
    cancel();
  }, 15);
  let other = 0;
  const keep = t.subscribe(() => other++, 15);
  await sleep(120);
  keep();
  assert.equal(calls, 1);
  assert.ok(other >= 3);
});

test('the ticker never keeps the process alive', () => {
  const src = `import(${JSON.stringify(tickerUrl)}).then((m) => { m.processTicker.subscribe(() => {}, 1000); });`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', src], { timeout: 10_000 });
  assert.equal(r.signal, null, 'child had to be killed: the ticker held the event loop open');
  assert.equal(r.status, 0, r.stderr.toString());
});

test('one throwing subscriber does not cost the others their tick, and its error still surfaces', () => {
  const src = `import(${JSON.stringify(tickerUrl)}).then((m) => {
    const keep = setTimeout(() => {}, 5000);
    m.processTicker.subscribe(() => { throw new Error('boom'); }, 20);
    m.processTicker.subscribe(() => { process.stdout.write('ran\\n'); clearTimeout(keep); }, 20);
  });`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', src], { timeout: 10_000 });
  assert.equal(r.signal, null);
  assert.notEqual(r.status, 0, 'the error was swallowed');
  assert.match(r.stderr.toString(), /boom/);
  assert.match(r.stdout.toString(), /ran/);
});

test('tickFor: two ticks per interval, never coarser than a second', () => {
  assert.equal(tickFor(2000), 1000);
  assert.equal(tickFor(30_000), 1000);
  assert.equal(tickFor(300), 150);
});

test('isDue: a 2 s heartbeat on 1 s ticks fires every 2 s even after a slow answer', () => {
  // The answer that reset the clock came 400 ms after the tick that sent the heartbeat.
  assert.equal(isDue(600, 2000, 1000), false, 'next tick');
  assert.equal(isDue(1600, 2000, 1000), true, 'the tick after');
  assert.equal(isDue(999, 2000, 1000), false);
  // 5 s keepalive on 1 s ticks: the same 0.9 threshold as before.
  assert.equal(isDue(4499, 5000, 1000), false);
  assert.equal(isDue(4500, 5000, 1000), true);
});
