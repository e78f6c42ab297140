/**
 * Pooled memory on the bulk path: BlockPool's hand-back rules, ByteQueue's
 * copies into pool blocks (seeded fuzz against a reference byte array, every
 * block back at the end), Kcp.onRelease reporting sent segments only once
 * acknowledged, and MuxStream.writeTransient end to end over a real Mux pair.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import { BlockPool, sharedBlockPool } from '../src/util/block-pool.js';
import { ByteQueue } from '../src/mux/byte-queue.js';
import { KCP_OVERHEAD } from '../src/kcp/index.js';
import type { MuxStream } from '../src/mux/index.js';
import { mulberry32, mulberry32u } from '../src/util/prng.js';
import { createMuxPair, readAll, withTimeout } from './mux-harness.js';
import { SimLink } from './helpers/kcp-link.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

// ------------------------------------------------------------------ BlockPool

test('BlockPool: a block given back is reused by the next take', () => {
  const pool = new BlockPool(1024, 8);
  const a = pool.take(100);
  assert.equal(a.length, 100);
  assert.equal(a.byteOffset, 0);
  assert.equal(a.buffer.byteLength, 1024, 'a whole block behind the view');
  assert.equal(pool.taken, 1);
  assert.equal(pool.reused, 0);
  assert.equal(pool.freeCount, 0);
  pool.give(a);
  assert.equal(pool.freeCount, 1);
  const b = pool.take(1024);
  assert.equal(b.buffer, a.buffer, 'the same block again');
  assert.equal(b.length, 1024);
  assert.equal(pool.taken, 2);
  assert.equal(pool.reused, 1);
  assert.equal(pool.freeCount, 0);
  const c = pool.take(0);
  assert.notEqual(c.buffer, b.buffer, 'a block still out is never handed out twice');
  assert.equal(pool.reused, 1);
  assert.throws(() => pool.take(1025), RangeError);
  assert.equal(pool.taken, 3, 'a refused take counts nothing');
});

test('BlockPool: fragments, other offsets, copies and second gives are ignored', () => {
  const pool = new BlockPool(4096, 8);
  const v = pool.take(100);
  pool.give(v.subarray(0, 50)); // shorter
  pool.give(v.subarray(10)); // other offset
  pool.give(new Uint8Array(v.buffer, 10, 100)); // same length at another offset in the block
  pool.give(Buffer.from(v)); // a copy
  pool.give(Buffer.from(v.buffer, 0, 4096)); // the whole block, but not what take() returned
  pool.give(new Uint8Array(100));
  assert.equal(pool.freeCount, 0, 'none of these hands the block back');
  pool.give(new Uint8Array(v.buffer, 0, 100)); // another view of exactly the same bytes: accepted
  assert.equal(pool.freeCount, 1);
  pool.give(v); // second give
  assert.equal(pool.freeCount, 1, 'a block given twice is in the free list once');
  const x = pool.take(100);
  const y = pool.take(100);
  assert.equal(x.buffer, v.buffer);
  assert.notEqual(y.buffer, x.buffer, 'a double give would hand one block to two owners');
  // A block from another pool is not ours.
  const other = new BlockPool(4096, 8).take(100);
  pool.give(other);
  assert.equal(pool.freeCount, 0);
});

test('BlockPool: at most maxFree blocks are kept', () => {
  const pool = new BlockPool(64, 2);
  const out = Array.from({ length: 5 }, () => pool.take(64));
  assert.equal(new Set(out.map((b) => b.buffer)).size, 5);
  for (const b of out) pool.give(b);
  assert.equal(pool.freeCount, 2);
  const again = Array.from({ length: 3 }, () => pool.take(10));
  assert.equal(pool.reused, 2);
  assert.equal(pool.taken, 8);
  assert.equal(pool.freeCount, 0);
  assert.equal(new Set(again.map((b) => b.buffer)).size, 3);
  for (const b of again) pool.give(b);
  assert.equal(pool.freeCount, 2);
  assert.equal(sharedBlockPool.blockSize, 64 * 1024);
});

// ------------------------------------------------------------------ ByteQueue

/** A real BlockPool that also counts gives it ignored (a wrong view, or a block given twice). */
class CountingPool extends BlockPool {
  ignored = 0;
  accepted = 0;
  override give(view: Uint8Array): void {
    const before = this.freeCount;
    super.give(view);
    if (this.freeCount === before) this.ignored++;
    else this.accepted++;
  }
}

/** The expected byte stream: copies of what was queued, read from the front. */
class Reference {
  private chunks: Buffer[] = [];
  private off = 0;
  length = 0;
  push(b: Uint8Array): void {
    if (b.length === 0) return;
    this.chunks.push(Buffer.from(b));
    this.length += b.length;
  }
  take(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let p = 0;
    while (p < n) {
      const c = this.chunks[0];
      const k = Math.min(n - p, c.length - this.off);
      c.copy(out, p, this.off, this.off + k);
      p += k;
      this.off += k;
      if (this.off === c.length) {
        this.chunks.shift();
        this.off = 0;
      }
    }
    this.length -= n;
    return out;
  }
}

function fillSeeded(buf: Uint8Array, next: () => number): void {
  const whole = buf.length & ~3;
  for (let i = 0; i < whole; i += 4) {
    const v = next();
    buf[i] = v;
    buf[i + 1] = v >>> 8;
    buf[i + 2] = v >>> 16;
    buf[i + 3] = v >>> 24;
  }
  for (let i = whole; i < buf.length; i++) buf[i] = next();
}

test('ByteQueue fuzz: push, pushCopy of overwritten sources, copyOut match a reference; all blocks return', () => {
  for (const seed of [1, 0xbeef, 20260101]) {
    const rnd = mulberry32(seed);
    const bytes = mulberry32u(seed ^ 0x5a5a5a5a);
    const pool = new CountingPool(4096, 1_000_000);
    const q = new ByteQueue();
    const ref = new Reference();
    const scratch = Buffer.allocUnsafe(200 * 1024 + 64);
    const out = Buffer.allocUnsafe(300 * 1024 + 64);
    // Mostly small, sometimes up to 200 KiB.
    const size = () => Math.floor(rnd() ** 3 * 200 * 1024);
    let pushCopies = 0;
    let copyOuts = 0;
    for (let op = 0; op < 1200; op++) {
      const r = rnd();
      if (r < 0.4) {
        // pushCopy of a transient chunk at a random offset in a reused buffer...
        const n = size();
        const at = Math.floor(rnd() * 64);
        const src = scratch.subarray(at, at + n);
        fillSeeded(src, bytes);
        q.pushCopy(src, pool);
        ref.push(src);
        // ...which the caller overwrites right after the call.
        scratch.fill(op & 0xff);
        pushCopies++;
      } else if (r < 0.6) {
        // push by reference: the queue keeps this buffer, nobody touches it again.
        const b = Buffer.alloc(size());
        fillSeeded(b, bytes);
        q.push(b);
        ref.push(b);
      } else {
        const n = Math.min(q.length, Math.floor(rnd() * 300 * 1024), rnd() < 0.1 ? q.length : Infinity);
        const at = Math.floor(rnd() * 64);
        out.fill(0xee);
        q.copyOut(out, at, n);
        const want = ref.take(n);
        if (!out.subarray(at, at + n).equals(want))
          assert.fail(`seed ${seed} op ${op}: copyOut of ${n} bytes differs from the reference`);
        assert.equal(out[at + n], 0xee, 'copyOut wrote past n');
        if (at > 0) assert.equal(out[at - 1], 0xee, 'copyOut wrote before offset');
        copyOuts++;
      }
      assert.equal(q.length, ref.length, `seed ${seed} op ${op}: length`);
    }
    assert.ok(pushCopies > 300 && copyOuts > 300);
    // Drain the rest.
    const rest = Buffer.allocUnsafe(q.length);
    const n = q.length;
    q.copyOut(rest, 0, n);
    assert.ok(rest.equals(ref.take(n)), `seed ${seed}: final drain`);
    assert.equal(q.length, 0);
    const created = pool.taken - pool.reused;
    assert.ok(pool.taken > 1000, `many blocks used (${pool.taken})`);
    assert.ok(pool.reused > 0, 'blocks came back during the run and were reused');
    assert.equal(pool.freeCount, created, `seed ${seed}: every block went back to the pool`);
    assert.equal(pool.accepted, pool.taken, 'one accepted give per take');
    assert.equal(pool.ignored, 0, 'the queue never gives a wrong view or a block twice');
  }
});

test('ByteQueue.clear gives every block back, also a partly read one; the queue works afterwards', () => {
  const pool = new CountingPool(4096, 1000);
  const q = new ByteQueue();
  const src = randomBytes(50_000);
  q.pushCopy(src, pool);
  q.push(Buffer.from('by reference'));
  q.pushCopy(src.subarray(0, 5000), pool);
  const first = Buffer.alloc(1000);
  q.copyOut(first, 0, 1000); // the head block is partly read
  assert.ok(first.equals(src.subarray(0, 1000)));
  const created = pool.taken - pool.reused;
  assert.equal(created, Math.ceil(50_000 / 4096) + Math.ceil(5000 / 4096));
  assert.equal(pool.freeCount, 0);
  q.clear();
  assert.equal(q.length, 0);
  assert.equal(pool.freeCount, created, 'clear() hands every block back');
  assert.equal(pool.ignored, 0);
  // Usable again, with reused blocks.
  q.pushCopy(Buffer.from('again'), pool);
  const again = Buffer.alloc(5);
  q.copyOut(again, 0, 5);
  assert.equal(again.toString(), 'again');
  assert.equal(pool.freeCount, created);
  assert.equal(pool.reused, 1);
});

test('ByteQueue.push keeps the chunk by reference; pushCopy does not', () => {
  const pool = new BlockPool(4096, 10);
  const q = new ByteQueue();
  const byRef = Buffer.from('aaaa');
  const copied = Buffer.from('bbbb');
  q.push(byRef);
  q.pushCopy(copied, pool);
  byRef.fill('x');
  copied.fill('y');
  const out = Buffer.alloc(8);
  q.copyOut(out, 0, 8);
  assert.equal(out.toString(), 'xxxxbbbb');
});

// ------------------------------------------------------------------ Kcp.onRelease

/** SimLink in the session's fast mode; `dropBtoA` loses b's datagrams (its ACKs). */
class KcpPair extends SimLink {
  dropBtoA = false;

  constructor() {
    super(42, 5);
    this.filter = (_d, from) => !(from === 'b' && this.dropBtoA);
    for (const k of [this.a, this.b]) {
      k.setNodelay(1, 10, 2, 1);
      k.setWndSize(256, 256);
    }
  }
}

const MSS = 1400 - KCP_OVERHEAD;

test('Kcp.onRelease: each sent segment reported once, after its ACK, as a view of the owned buffer', () => {
  const link = new KcpPair();
  const sizes = [1, 100, MSS - 1, MSS, MSS + 1, 5000, 3 * MSS, 40_000];
  const msgs = sizes.map((n) => {
    const b = Buffer.alloc(n); // its own ArrayBuffer, handed over to KCP
    fillSeeded(b, mulberry32u(n));
    return b;
  });
  const copies = msgs.map((m) => Buffer.from(m));
  const released: { msg: number; view: Uint8Array; bytesOk: boolean }[] = [];
  link.a.onRelease = (seg) => {
    const i = msgs.findIndex((m) => m.buffer === seg.buffer);
    // Checked at release time: KCP must not have touched the bytes.
    const ok =
      i >= 0 &&
      Buffer.from(seg).equals(
        copies[i].subarray(seg.byteOffset - msgs[i].byteOffset, seg.byteOffset - msgs[i].byteOffset + seg.length),
      );
    released.push({ msg: i, view: seg, bytesOk: ok });
  };
  for (const m of msgs) assert.equal(link.a.send(m, true), 0);
  const segmentsSent = sizes.reduce((n, s) => n + Math.max(1, Math.ceil(s / MSS)), 0);
  assert.equal(link.a.waitSnd(), segmentsSent);

  // ACKs lost: b gets every message, but a has nothing acknowledged and releases nothing.
  link.dropBtoA = true;
  const got: Buffer[] = [];
  assert.ok(
    link.runUntil(() => {
      for (let m = link.b.recv(); m; m = link.b.recv()) got.push(m);
      return got.length === msgs.length;
    }, 5000),
    'b received everything',
  );
  link.runUntil(() => false, 300); // retransmissions go on, still without ACKs
  assert.equal(released.length, 0, 'released before being acknowledged');
  assert.equal(link.a.waitSnd(), segmentsSent);

  link.dropBtoA = false;
  assert.ok(
    link.runUntil(() => link.a.waitSnd() === 0, 10_000),
    'everything acknowledged',
  );
  link.runUntil(() => false, 200); // late duplicate ACKs must not release anything again
  assert.equal(released.length, segmentsSent, 'one release per segment');
  assert.ok(
    released.every((r) => r.msg >= 0),
    'every released view points into an owned buffer (no copy)',
  );
  assert.ok(
    released.every((r) => r.bytesOk),
    'a released view holds exactly the bytes sent',
  );
  // Per message, the released views tile it exactly, each byte once.
  msgs.forEach((m, i) => {
    const views = released
      .filter((r) => r.msg === i)
      .map((r) => r.view)
      .sort((x, y) => x.byteOffset - y.byteOffset);
    assert.equal(views.length, Math.max(1, Math.ceil(m.length / MSS)), `message ${i} segment count`);
    let pos = m.byteOffset;
    for (const v of views) {
      assert.equal(v.byteOffset, pos, `message ${i}: gap or overlap`);
      pos += v.length;
    }
    assert.equal(pos, m.byteOffset + m.length);
  });
  got.forEach((g, i) => assert.equal(sha(g), sha(copies[i]), `message ${i} at b`));
});

test('Kcp.onRelease with a BlockPool: one-segment pool frames all come back once acked (as in Session)', () => {
  const link = new KcpPair();
  const pool = new CountingPool(MSS, 10_000);
  link.a.onRelease = (seg) => pool.give(seg);
  const rnd = mulberry32(7);
  const sent: Buffer[] = [];
  let received = 0;
  const hashIn = createHash('sha256');
  const hashOut = createHash('sha256');
  for (let round = 0; round < 40; round++) {
    for (let i = 0; i < 20; i++) {
      const frame = pool.take(1 + Math.floor(rnd() * MSS));
      fillSeeded(frame, mulberry32u(round * 100 + i));
      hashIn.update(frame);
      sent.push(frame);
      assert.equal(link.a.send(frame, true), 0);
    }
    link.runUntil(() => {
      for (let m = link.b.recv(); m; m = link.b.recv()) {
        hashOut.update(m);
        received++;
      }
      return false;
    }, 15);
  }
  assert.ok(
    link.runUntil(() => {
      for (let m = link.b.recv(); m; m = link.b.recv()) {
        hashOut.update(m);
        received++;
      }
      return received === sent.length && link.a.waitSnd() === 0;
    }, 10_000),
  );
  // Blocks were reused while frames were still in flight: a block released too
  // early would have been overwritten before it reached b.
  assert.equal(hashOut.digest('hex'), hashIn.digest('hex'));
  assert.ok(pool.reused > 0, 'blocks were reused during the run');
  assert.equal(pool.accepted, pool.taken, 'every frame block came back exactly once');
  assert.equal(pool.ignored, 0);
  assert.equal(pool.freeCount, pool.taken - pool.reused);
});

// ------------------------------------------------------------------ MuxStream.writeTransient

test('MuxStream.writeTransient: 5 MB from one reused buffer arrive exact, honouring false/sendable', async (t) => {
  const p = createMuxPair();
  t.after(() => p.close());
  const accepted = new Promise<MuxStream>((r) => p.b.once('stream', r));
  const s = p.a.openStream();
  s.on('error', () => {});
  const total = 5 * 1024 * 1024;
  const data = randomBytes(total);
  const scratch = Buffer.allocUnsafe(150 * 1024);
  const rnd = mulberry32(99);
  const poolTaken0 = sharedBlockPool.taken;
  let falses = 0;
  let off = 0;
  let got: Promise<Buffer> | null = null;
  for (let i = 0; i < 100_000 && off < total; i++) {
    const n = Math.min(total - off, 1 + Math.floor(rnd() * scratch.length));
    data.copy(scratch, 0, off, off + n);
    const ok = s.writeTransient(scratch.subarray(0, n));
    scratch.fill(0x5c); // the chunk was only valid during the call
    off += n;
    if (!got) got = accepted.then((b) => readAll(b));
    if (!ok) {
      falses++;
      await withTimeout(once(s, 'sendable'), 10_000, `'sendable' after false #${falses}`);
      assert.ok(s.queuedBytes < 64 * 1024, "'sendable' only once below the high-water mark");
    }
  }
  assert.equal(off, total);
  s.end();
  const received = await withTimeout(got!, 20_000, 'reader end');
  assert.equal(received.length, total);
  assert.equal(sha(received), sha(data));
  assert.ok(falses > 0, 'writeTransient returned false at the high-water mark at least once');
  assert.equal(s.writeTransient(Buffer.from('late')), false, 'refused after end()');
  await p.settle();
  assert.equal(s.queuedBytes, 0);
  // The send queue's blocks all went back to the shared pool (few were ever out at once).
  assert.ok(sharedBlockPool.taken - poolTaken0 >= total / sharedBlockPool.blockSize);
  const created = sharedBlockPool.taken - sharedBlockPool.reused;
  assert.ok(created <= sharedBlockPool.maxFree);
  assert.equal(sharedBlockPool.freeCount, created, 'every send-queue block is back in sharedBlockPool');
});
