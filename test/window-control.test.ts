import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WindowControl } from '../src/session/window-control.js';

test('window grows while the RTT stays at its floor and the window is used', () => {
  const w = new WindowControl({ minWnd: 32, maxWnd: 1024, targetMs: 10 });
  let now = 0;
  const start = w.window;
  for (let i = 0; i < 100; i++) w.step(20, w.window, (now += 50));
  assert.ok(w.window > start, `window stayed at ${w.window}`);
  assert.equal(w.window, 1024);
});

test('window does not grow when it is not the limit', () => {
  const w = new WindowControl({ maxWnd: 1024 });
  const start = w.window;
  for (let i = 0; i < 50; i++) w.step(20, 10, i * 50);
  assert.equal(w.window, start);
});

test('window shrinks when queueing delay exceeds the target, down to the minimum', () => {
  const w = new WindowControl({ minWnd: 32, maxWnd: 1024, targetMs: 10 });
  let now = 0;
  for (let i = 0; i < 100; i++) w.step(5, w.window, (now += 50));
  assert.equal(w.window, 1024);
  w.step(40, 1024, (now += 50));
  assert.ok(w.window < 1024);
  for (let i = 0; i < 100; i++) w.step(40, w.window, (now += 50));
  assert.equal(w.window, 32);
});

test('a path change forgets the old base RTT', () => {
  const w = new WindowControl({ minWnd: 32, maxWnd: 1024, targetMs: 10 });
  let now = 0;
  for (let i = 0; i < 10; i++) w.step(2, w.window, (now += 50));
  const before = w.window;
  w.reset(now);
  // 50 ms is the new floor, not 48 ms of queueing.
  w.step(50, w.window, (now += 50));
  assert.ok(w.window >= before);
});
