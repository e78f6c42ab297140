/**
 * src/transport/splice.ts on real loopback TCP: two accepted sockets joined
 * with splice() (the relay's data path) forward exact bytes both ways under
 * backpressure, put the rest bytes first, count and rate-limit what they
 * forward and pass FIN on; TokenBucket checked with an injected clock.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import { TokenBucket, splice } from '../src/transport/splice.js';
import { retiredReadBuffers } from '../src/transport/user-reads.js';
import { withTimeout } from './mux-harness.js';
import { sleep, waitFor } from './helpers/wait.js';
import { connectPair, listen } from './helpers/sockets.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const EMPTY = new Uint8Array(0);

type T = { after: (fn: () => void) => void };

/**
 * Two clients connected to one loopback server; the two accepted sockets are
 * what splice() joins (as the relay does with its two legs). Nothing reads
 * from any socket yet.
 */
async function twoLegs(t: T, serverOpts: net.ServerOpts = {}) {
  const server = await listen(t, serverOpts);
  const one = await connectPair(t, server, { allowHalfOpen: true });
  const two = await connectPair(t, server, { allowHalfOpen: true });
  return { c1: one.client, s1: one.accepted, c2: two.client, s2: two.accepted };
}

/** Counts and hashes everything `sock` receives from now on. */
function sink(sock: net.Socket) {
  const hash = createHash('sha256');
  const s = { bytes: 0, digest: () => hash.digest('hex'), first: Buffer.alloc(0) };
  sock.on('data', (c: Buffer) => {
    if (s.first.length < 64) s.first = Buffer.concat([s.first, c]).subarray(0, 64);
    hash.update(c);
    s.bytes += c.length;
  });
  return s;
}

/** Writes `data` in pieces, honouring backpressure (bounded: one await per piece). */
async function writeAll(sock: net.Socket, data: Buffer, piece = 256 * 1024): Promise<void> {
  for (let off = 0; off < data.length; off += piece) {
    if (!sock.write(data.subarray(off, off + piece))) await withTimeout(once(sock, 'drain'), 20_000, 'drain');
  }
}

/**
 * Joins two legs, lets c1 (and, when `reverse`, c2) send `size` random bytes
 * while c2 does not read for 400 ms, so the spliced write to c2 backs up
 * (write() returns false and bytes stay queued in the socket, pointing into
 * the read buffer that splice() must then retire).
 */
async function slowReaderTransfer(t: T, size: number, reverse: boolean) {
  const { c1, s1, c2, s2 } = await twoLegs(t);
  const [n1, n2] = splice(s1, s2, EMPTY, EMPTY);
  assert.notEqual(n1, s1, 's1 moved to shared-buffer reads');
  assert.notEqual(n2, s2, 's2 moved to shared-buffer reads');
  for (const s of [n1, n2]) {
    s.on('error', () => {});
    t.after(() => s.destroy());
  }
  const d12 = randomBytes(size);
  const d21 = reverse ? randomBytes(size) : Buffer.alloc(0);
  const retiredBefore = retiredReadBuffers();

  const at1 = sink(c1);
  c2.pause();
  const w1 = writeAll(c1, d12);
  const w2 = writeAll(c2, d21);
  await sleep(400);
  assert.ok(n2.writableLength > 0 || n2.writableNeedDrain, 'the spliced write to the slow side is backed up');
  const at2 = sink(c2);
  c2.resume();
  await withTimeout(Promise.all([w1, w2]), 20_000, 'writers');
  await waitFor(
    () => at2.bytes >= d12.length && at1.bytes >= d21.length,
    20_000,
    `both directions complete (${at2.bytes}, ${at1.bytes})`,
  );
  await sleep(20);
  assert.equal(at2.bytes, d12.length);
  assert.equal(at1.bytes, d21.length);
  assert.ok(retiredReadBuffers() > retiredBefore, 'a write left bytes queued, so the shared buffer was retired');
  assert.equal(at2.digest(), sha(d12), 'c1 -> c2 bytes corrupted');
  assert.equal(at1.digest(), sha(d21), 'c2 -> c1 bytes corrupted');
}

test('splice: 20 MB one way arrive exact; a slow reader forces backpressure and retired read buffers', async (t) => {
  await slowReaderTransfer(t, 20 * 1024 * 1024, false);
});

// Node asks onread's buffer() for a socket's next read buffer right after
// each read of that same socket, so a buffer shared between sockets could not
// be retired: every other socket would still read into it and overwrite bytes
// a queued write points at (c2 then received some of its own outgoing bytes).
// Each spliced side has its own buffer since; this pins that down.
test('splice: 20 MB each way at once arrive exact; a slow reader forces backpressure, retired buffers', async (t) => {
  await slowReaderTransfer(t, 20 * 1024 * 1024, true);
});

// The same across sessions: a second, independent spliced pair reading at
// full speed must not write into the buffer that the first pair's queued
// write still points into.
test('splice: a busy second pair does not corrupt the queued bytes of a backed-up first pair', async (t) => {
  const x = await twoLegs(t);
  const y = await twoLegs(t);
  const spliced = [...splice(x.s1, x.s2, EMPTY, EMPTY), ...splice(y.s1, y.s2, EMPTY, EMPTY)];
  for (const s of spliced) {
    s.on('error', () => {});
    t.after(() => s.destroy());
  }
  const size = 20 * 1024 * 1024;
  const dx = randomBytes(size);
  const dy = randomBytes(size);
  const retiredBefore = retiredReadBuffers();
  const atY = sink(y.c2);
  x.c2.pause();
  const wx = writeAll(x.c1, dx);
  const wy = writeAll(y.c1, dy);
  await sleep(400);
  const atX = sink(x.c2);
  x.c2.resume();
  await withTimeout(Promise.all([wx, wy]), 20_000, 'writers');
  await waitFor(
    () => atX.bytes >= size && atY.bytes >= size,
    20_000,
    `both pairs complete (${atX.bytes}, ${atY.bytes})`,
  );
  assert.ok(retiredReadBuffers() > retiredBefore);
  assert.equal(atY.digest(), sha(dy), 'pair Y corrupted');
  assert.equal(atX.digest(), sha(dx), "pair X (the backed-up one) corrupted by pair Y's reads");
});

test('splice: rest bytes go first, then what the old socket had buffered, then the live stream', async (t) => {
  const { c1, s1, c2, s2 } = await twoLegs(t);
  // Bytes the leg sent before pairing, still buffered in the accepted socket's stream state.
  c1.write('early-1;');
  c2.write('early-2;');
  await waitFor(() => s1.readableLength === 8 && s2.readableLength === 8, 5000, 'early bytes buffered');
  const at1 = sink(c1);
  const at2 = sink(c2);
  const [n1, n2] = splice(s1, s2, Buffer.from('rest-1;'), Buffer.from('rest-2;'));
  for (const s of [n1, n2]) {
    s.on('error', () => {});
    t.after(() => s.destroy());
  }
  const big1 = randomBytes(1024 * 1024);
  const big2 = randomBytes(1024 * 1024);
  c1.write(big1);
  c2.write(big2);
  const want2 = Buffer.concat([Buffer.from('rest-1;early-1;'), big1]);
  const want1 = Buffer.concat([Buffer.from('rest-2;early-2;'), big2]);
  await waitFor(() => at1.bytes >= want1.length && at2.bytes >= want2.length, 15_000, 'everything forwarded');
  assert.equal(at2.first.subarray(0, 15).toString(), 'rest-1;early-1;');
  assert.equal(at1.first.subarray(0, 15).toString(), 'rest-2;early-2;');
  assert.equal(at2.bytes, want2.length);
  assert.equal(at1.bytes, want1.length);
  assert.equal(at2.digest(), sha(want2));
  assert.equal(at1.digest(), sha(want1));
});

test('splice: onBytes counts exactly the bytes forwarded, both ways', async (t) => {
  const { c1, s1, c2, s2 } = await twoLegs(t);
  let counted = 0;
  let calls = 0;
  const [n1, n2] = splice(s1, s2, EMPTY, EMPTY, {
    onBytes: (n) => {
      counted += n;
      calls++;
    },
  });
  for (const s of [n1, n2]) {
    s.on('error', () => {});
    t.after(() => s.destroy());
  }
  const at1 = sink(c1);
  const at2 = sink(c2);
  const a = randomBytes(3 * 1024 * 1024 + 17);
  const b = randomBytes(1024 * 1024 + 5);
  c1.write(a);
  c2.write(b);
  await waitFor(() => at2.bytes >= a.length && at1.bytes >= b.length, 15_000, 'forwarded');
  await sleep(50);
  assert.equal(at2.bytes, a.length);
  assert.equal(at1.bytes, b.length);
  assert.equal(counted, a.length + b.length);
  assert.ok(calls >= 2);
});

test('splice: rateBytesPerSec holds each direction near the limit, and the bytes arrive exact', async (t) => {
  const { c1, s1, c2, s2 } = await twoLegs(t);
  const rate = 2 * 1024 * 1024;
  const [n1, n2] = splice(s1, s2, EMPTY, EMPTY, { rateBytesPerSec: rate });
  for (const s of [n1, n2]) {
    s.on('error', () => {});
    t.after(() => s.destroy());
  }
  const data = randomBytes(3 * 1024 * 1024);
  const at2 = sink(c2);
  const start = performance.now();
  c1.write(data);
  await waitFor(() => at2.bytes >= data.length, 15_000, 'rate-limited transfer');
  const elapsed = performance.now() - start;
  // Burst is rate/4 (0.5 MiB), the remaining 2.5 MiB need 1.25 s at 2 MiB/s.
  assert.ok(elapsed >= 1000, `3 MiB at 2 MiB/s took only ${Math.round(elapsed)} ms`);
  assert.equal(at2.bytes, data.length);
  assert.equal(at2.digest(), sha(data));
});

test('splice: a socket that cannot move (write queued) falls back to pipe(), same bytes and counts', async (t) => {
  const { c1, s1, c2, s2 } = await twoLegs(t);
  // A corked write stays queued: s2 cannot move to shared-buffer reads.
  s2.cork();
  s2.write('pre;');
  let counted = 0;
  const [n1, n2] = splice(s1, s2, Buffer.from('rest;'), EMPTY, { onBytes: (n) => (counted += n) });
  assert.equal(n1, s1, 'same socket objects when joined with pipe()');
  assert.equal(n2, s2);
  s2.uncork();
  const at1 = sink(c1);
  const at2 = sink(c2);
  const a = randomBytes(2 * 1024 * 1024);
  const b = randomBytes(1024 * 1024);
  c1.write(a);
  c2.write(b);
  const want2 = Buffer.concat([Buffer.from('pre;rest;'), a]);
  await waitFor(() => at2.bytes >= want2.length && at1.bytes >= b.length, 15_000, 'forwarded through pipe()');
  await sleep(20);
  assert.equal(at2.bytes, want2.length);
  assert.equal(at2.digest(), sha(want2));
  assert.equal(at1.bytes, b.length);
  assert.equal(at1.digest(), sha(b));
  assert.equal(counted, a.length + b.length);
});

test('TokenBucket: free within the burst, exact wait in debt, the wait shrinks as the clock advances', () => {
  let now = 1_000_000;
  const b = new TokenBucket(1_000_000, () => now); // burst = max(64 KiB, rate / 4) = 250 000 bytes
  assert.equal(b.wait(), 0);
  assert.equal(b.take(100_000), 0);
  assert.equal(b.take(150_000), 0, 'exactly the burst is still free');
  assert.equal(b.take(250_000), 250, '250 000 bytes in debt at 1 MB/s is 250 ms');
  assert.equal(b.wait(), 250);
  now += 100;
  assert.equal(b.wait(), 150);
  now += 149;
  assert.equal(b.wait(), 1);
  now += 1;
  assert.equal(b.wait(), 0);
  // A long idle time refills only up to the burst.
  now += 60_000;
  assert.equal(b.take(250_000), 0);
  assert.equal(b.take(1000), 1);
  // The small-rate floor: the burst is at least 64 KiB.
  let t2 = 0;
  const slow = new TokenBucket(1000, () => t2);
  assert.equal(slow.take(64 * 1024), 0);
  assert.equal(slow.take(500), 500, '500 bytes of debt at 1000 B/s');
  t2 += 250;
  assert.equal(slow.wait(), 250);
});

test('splice: end() on one side reaches the other as end; the reverse stays open (half-close)', async (t) => {
  const { c1, s1, c2, s2 } = await twoLegs(t, { allowHalfOpen: true });
  const [n1, n2] = splice(s1, s2, EMPTY, EMPTY);
  for (const s of [n1, n2]) {
    s.on('error', () => {});
    t.after(() => s.destroy());
  }
  const at1 = sink(c1);
  const at2 = sink(c2);
  const a = randomBytes(512 * 1024);
  const c2Ended = once(c2, 'end');
  c1.end(a);
  await withTimeout(c2Ended, 10_000, 'end forwarded to c2');
  assert.equal(at2.bytes, a.length);
  assert.equal(at2.digest(), sha(a));
  // c1 only closed its sending side: c2's answer still reaches it, then c2's end.
  const b = randomBytes(256 * 1024);
  const c1Ended = once(c1, 'end');
  c2.end(b);
  await withTimeout(c1Ended, 10_000, 'end forwarded to c1');
  assert.equal(at1.bytes, b.length);
  assert.equal(at1.digest(), sha(b));
});

test('splice: with the default server options (no half-open), end still propagates', async (t) => {
  const { c1, s1, c2, s2 } = await twoLegs(t);
  const [n1, n2] = splice(s1, s2, EMPTY, EMPTY);
  for (const s of [n1, n2]) {
    s.on('error', () => {});
    t.after(() => s.destroy());
  }
  const at2 = sink(c2);
  const c2Ended = once(c2, 'end');
  c1.end('bye');
  await withTimeout(c2Ended, 10_000, 'end forwarded to c2');
  assert.equal(at2.first.toString(), 'bye');
});
