import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MAX_WINDOW_BYTES,
  MIN_WINDOW_BYTES,
  RELAY_QUEUE_TARGET_MS,
  UDP_QUEUE_TARGET_MS,
  UDP_WINDOW_BYTES,
  WindowControl,
  windowLimits,
} from '../src/session/window-control.js';

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

test('window bounds hold the same bytes at every UDP segment size, and 16 MiB of relay records', () => {
  const full = windowLimits(1443); // a 1472-byte datagram: a 1500-byte MTU over IPv4
  assert.deepEqual(full, { min: 32, max: 1024, receive: 1261, targetMs: UDP_QUEUE_TARGET_MS });
  for (const segment of [1443, 1423, 1223, 1171, 519]) {
    const { min, max } = windowLimits(segment);
    // A smaller path MTU gets more segments, so the bytes in flight stay within one segment of the full size's.
    assert.ok(Math.abs(max * segment - UDP_WINDOW_BYTES) < segment, `max ${max} x ${segment}`);
    assert.ok(Math.abs(min * segment - MIN_WINDOW_BYTES) < segment, `min ${min} x ${segment}`);
  }
  assert.equal(windowLimits(1223).max, 1208); // a 1280-byte MTU
  // The receive window counts the peer's segments, whatever size they are cut for: the same everywhere on UDP.
  for (const segment of [1443, 1223, 1171, 519]) assert.equal(windowLimits(segment).receive, 1261);
  // Relay records (up to 64 KiB): bounded by MAX_WINDOW_BYTES, with a floor in segments.
  assert.deepEqual(windowLimits(64 * 1024 - 29), { min: 8, max: 256, receive: 256, targetMs: RELAY_QUEUE_TARGET_MS });
  assert.equal(windowLimits(MAX_WINDOW_BYTES).max, 8);
});

test("the relay's queue target lets a window ride out scheduling delay that would shrink a UDP path's", () => {
  const relay = windowLimits(64 * 1024 - 29);
  const udp = windowLimits(1443);
  assert.ok(relay.targetMs > udp.targetMs);
  const run = (limits: typeof relay) => {
    const w = new WindowControl({ minWnd: limits.min, maxWnd: limits.max, targetMs: limits.targetMs });
    let now = 0;
    for (let i = 0; i < 20; i++) w.step(2, w.window, (now += 50)); // idle RTT 2 ms
    const before = w.window;
    // Under load the round trip sits 12 ms above it (hand-offs waiting for a CPU).
    for (let i = 0; i < 20; i++) w.step(14, w.window, (now += 50));
    return { before, after: w.window };
  };
  const r = run(relay);
  assert.ok(r.after >= r.before, `relay window shrank from ${r.before} to ${r.after}`);
  const u = run(udp);
  assert.ok(u.after < u.before, `UDP window stayed at ${u.after}`);
});

test('setLimits moves the queue target with the bounds', () => {
  const w = new WindowControl({ minWnd: 32, maxWnd: 1024 });
  assert.equal(w.targetMs, UDP_QUEUE_TARGET_MS);
  const relay = windowLimits(64 * 1024 - 29);
  w.setLimits(relay.min, relay.max, relay.targetMs);
  assert.equal(w.targetMs, RELAY_QUEUE_TARGET_MS);
  assert.ok(w.window <= relay.max);
});
