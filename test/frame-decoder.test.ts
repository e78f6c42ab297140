/**
 * TransientFrameDecoder (frames parsed out of a socket's reusable read buffer)
 * checked against FrameDecoder as the reference, on the same byte streams cut
 * into the same chunks. Every chunk reaches the transient decoder through ONE
 * scratch buffer that is overwritten with garbage as soon as push() returns,
 * as net's `onread` buffer is by the next read: a frame that kept a reference
 * into an earlier chunk (a spanning frame or a split header not copied out)
 * would come out with garbage in it and differ from the reference. The last
 * case runs the same path for real: FramedSocket.connect() over loopback.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import net from 'node:net';
import {
  FRAME_HEADER_LEN,
  FrameDecoder,
  FrameKind,
  MAX_CONTROL_FRAME,
  PROTOCOL_VERSION,
  TransientFrameDecoder,
  encodeFrame,
  encodeFrameHeader,
  type Frame,
  type FrameError,
} from '../src/wire/frame.js';
import { MAX_RELAY_DATAGRAM_LEN } from '../src/wire/datagram.js';
import { mulberry32u } from '../src/util/prng.js';
import { FramedSocket } from '../src/transport/framed-socket.js';
import { withTimeout } from './mux-harness.js';

/** The relay path's limits (framed-socket.ts with maxDatagramFrame = MAX_RELAY_DATAGRAM_LEN). */
const maxBody = (kind: number) => (kind === FrameKind.Control ? MAX_CONTROL_FRAME : MAX_RELAY_DATAGRAM_LEN);
const MAX_FRAME = FRAME_HEADER_LEN + MAX_RELAY_DATAGRAM_LEN;
const MAX_CHUNK = 300 * 1024;

/** What the real consumer keeps of a frame: its kind and a copy of its body, taken at once. */
interface Seen {
  kind: number;
  body: Buffer;
}

interface Stream {
  bytes: Buffer;
  /** Offset of every frame header in `bytes`, ascending. */
  starts: number[];
}

/** 1 MiB of seeded noise that frame bodies are sliced from (cheaper than a PRNG call per byte). */
function noisePool(next: () => number): Buffer {
  const pool = Buffer.allocUnsafe(1 << 20);
  for (let i = 0; i < pool.length; i += 4) pool.writeUInt32LE(next(), i);
  return pool;
}

function bodyLength(next: () => number, kind: FrameKind): number {
  const max = maxBody(kind);
  const r = next() % 100;
  if (r < 25) return next() % 17;
  if (r < 50) return next() % 1453;
  if (r < 90) return next() % (max + 1);
  return max;
}

/** `count` valid control and datagram frames back to back; every body is tagged with its index. */
function frameStream(next: () => number, pool: Buffer, count: number, datagramsOnly = false): Stream {
  const parts: Buffer[] = [];
  const starts: number[] = [];
  let off = 0;
  for (let i = 0; i < count; i++) {
    const kind = !datagramsOnly && next() % 4 === 0 ? FrameKind.Control : FrameKind.Datagram;
    const n = bodyLength(next, kind);
    const at = next() % (pool.length - n + 1);
    const body = Buffer.from(pool.subarray(at, at + n));
    if (n >= 4) body.writeUInt32BE(i, 0);
    const frame = encodeFrame(kind, body);
    starts.push(off);
    parts.push(frame);
    off += frame.length;
  }
  return { bytes: Buffer.concat(parts), starts };
}

/** Length of the next chunk from `off`: anything from 1 byte to 300 KiB, often ending inside a header. */
function nextCut(next: () => number, s: Stream, off: number): number {
  const left = s.bytes.length - off;
  const r = next() % 100;
  let n: number;
  if (r < 15) n = 1 + (next() % 7);
  else if (r < 35) {
    // End 1..5 bytes into the first header that starts at or after `off`+1.
    let lo = 0;
    let hi = s.starts.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (s.starts[mid] <= off) lo = mid + 1;
      else hi = mid;
    }
    n = lo < s.starts.length ? s.starts[lo] + 1 + (next() % (FRAME_HEADER_LEN - 1)) - off : 1;
    if (n > MAX_CHUNK) n = 1 + (next() % MAX_CHUNK);
  } else if (r < 55) n = 1 + (next() % 2048);
  else if (r < 80) n = 1 + (next() % 70_000);
  else n = 1 + (next() % MAX_CHUNK);
  return Math.max(1, Math.min(n, left));
}

/**
 * Feeds one chunk to both decoders, the transient one through the shared
 * scratch, and returns what each produced (bodies copied out right away).
 */
class Pair {
  readonly ref = new FrameDecoder(maxBody);
  readonly dut = new TransientFrameDecoder(maxBody);
  private readonly scratch = Buffer.allocUnsafe(MAX_CHUNK);
  private garbage = 0;

  push(chunk: Buffer): { ref: Seen[]; dut: Seen[]; refError: FrameError | null; dutError: FrameError | null } {
    const s = this.scratch;
    s.set(chunk, 0);
    const d = this.dut.push(s.subarray(0, chunk.length));
    const dut = d.frames.map(copyOut);
    // The next read overwrites the buffer: anything still pointing into it now reads garbage.
    s.fill(0x5a ^ this.garbage++);
    // The reference keeps its chunks, so give it its own copy.
    const r = this.ref.push(Buffer.from(chunk));
    return { ref: r.frames.map(copyOut), dut, refError: r.error, dutError: d.error };
  }
}

function copyOut(f: Frame): Seen {
  return { kind: f.kind, body: Buffer.from(f.body) };
}

function assertSameFrames(ref: Seen[], dut: Seen[], where: string): void {
  assert.equal(dut.length, ref.length, `${where}: frame count`);
  for (let i = 0; i < ref.length; i++) {
    assert.equal(dut[i].kind, ref[i].kind, `${where}: kind of frame ${i}`);
    assert.equal(dut[i].body.length, ref[i].body.length, `${where}: length of frame ${i}`);
    assert.ok(dut[i].body.equals(ref[i].body), `${where}: bytes of frame ${i}`);
  }
}

test('transient decoder matches FrameDecoder on random frame streams cut anywhere, through one reused buffer', () => {
  const deadline = Date.now() + 60_000;
  let frames = 0;
  let pushes = 0;
  let headerCuts = 0;
  let spanning = 0;
  for (let seed = 1; seed <= 8 && Date.now() < deadline; seed++) {
    const next = mulberry32u(0xf7a3e000 + seed);
    const s = frameStream(next, noisePool(next), 300);
    const pair = new Pair();
    let off = 0;
    let got = 0;
    for (let guard = 0; off < s.bytes.length && guard < 10_000_000; guard++) {
      const n = nextCut(next, s, off);
      const r = pair.push(s.bytes.subarray(off, off + n));
      off += n;
      pushes++;
      const where = `seed ${seed}, push ${pushes} (through byte ${off})`;
      assert.equal(r.refError, null, where);
      assert.equal(r.dutError, null, where);
      // Frames come out on the same push, whole and identical.
      assertSameFrames(r.ref, r.dut, where);
      got += r.dut.length;
      // Both hold exactly the part of the frame in progress: never more than one frame.
      assert.equal(pair.dut.bufferedBytes, pair.ref.bufferedBytes, `${where}: buffered bytes`);
      assert.ok(pair.dut.bufferedBytes < MAX_FRAME, `${where}: buffered ${pair.dut.bufferedBytes}`);
      const partial = pair.dut.bufferedBytes;
      if (partial > 0 && partial < FRAME_HEADER_LEN) headerCuts++;
      if (partial >= FRAME_HEADER_LEN) spanning++;
    }
    assert.equal(off, s.bytes.length);
    assert.equal(got, s.starts.length, `seed ${seed}: every frame decoded`);
    assert.equal(pair.dut.bufferedBytes, 0);
    frames += got;
  }
  // The cuts must really have landed inside headers and bodies, or the test proves little.
  assert.ok(headerCuts > 100, `only ${headerCuts} cuts inside a header`);
  assert.ok(spanning > 100, `only ${spanning} frames spanning reads`);
  assert.equal(frames, 8 * 300, 'ran out of time');
});

test('transient decoder: one byte at a time, and exactly one header at a time', () => {
  const next = mulberry32u(0x0b7e);
  const pool = noisePool(next);
  for (const step of [1, FRAME_HEADER_LEN, FRAME_HEADER_LEN + 1]) {
    // Short bodies only, so byte-at-a-time stays fast; two maximal frames at the end.
    const parts: Buffer[] = [];
    for (let i = 0; i < 200; i++)
      parts.push(
        encodeFrame(i % 3 ? FrameKind.Datagram : FrameKind.Control, pool.subarray(i * 37, i * 37 + (next() % 300))),
      );
    parts.push(encodeFrame(FrameKind.Datagram, pool.subarray(0, MAX_RELAY_DATAGRAM_LEN)));
    parts.push(encodeFrame(FrameKind.Control, pool.subarray(5, 5 + MAX_CONTROL_FRAME)));
    parts.push(encodeFrame(FrameKind.Datagram, Buffer.alloc(0)));
    const bytes = Buffer.concat(parts);
    const pair = new Pair();
    let count = 0;
    for (let off = 0; off < bytes.length; off += step) {
      const r = pair.push(bytes.subarray(off, off + step));
      assertSameFrames(r.ref, r.dut, `step ${step} at ${off}`);
      assert.equal(r.dutError, null);
      count += r.dut.length;
    }
    assert.equal(count, parts.length, `step ${step}`);
  }
});

/** A bad header and, when it is well-formed enough, the error both decoders must report. */
function badHeaders(): { name: string; header: Buffer; error: FrameError }[] {
  const withVersion = (v: number) => {
    const h = encodeFrameHeader(FrameKind.Datagram, 10);
    h[4] = v;
    return h;
  };
  return [
    {
      name: 'datagram one byte too large',
      header: encodeFrameHeader(FrameKind.Datagram, MAX_RELAY_DATAGRAM_LEN + 1),
      error: { code: 'frame_too_large', length: MAX_RELAY_DATAGRAM_LEN + 1, max: MAX_RELAY_DATAGRAM_LEN },
    },
    {
      name: 'control one byte too large',
      header: encodeFrameHeader(FrameKind.Control, MAX_CONTROL_FRAME + 1),
      error: { code: 'frame_too_large', length: MAX_CONTROL_FRAME + 1, max: MAX_CONTROL_FRAME },
    },
    {
      name: '4 GiB datagram',
      header: encodeFrameHeader(FrameKind.Datagram, 0xffffffff),
      error: { code: 'frame_too_large', length: 0xffffffff, max: MAX_RELAY_DATAGRAM_LEN },
    },
    { name: 'bad version 0', header: withVersion(0), error: { code: 'bad_version', version: 0 } },
    {
      name: 'bad version 2',
      header: withVersion(PROTOCOL_VERSION + 1),
      error: { code: 'bad_version', version: PROTOCOL_VERSION + 1 },
    },
    { name: 'bad kind 0', header: encodeFrameHeader(0 as FrameKind, 1), error: { code: 'bad_kind', kind: 0 } },
    { name: 'bad kind 3', header: encodeFrameHeader(3 as FrameKind, 1), error: { code: 'bad_kind', kind: 3 } },
    { name: 'bad kind 255', header: encodeFrameHeader(255 as FrameKind, 0), error: { code: 'bad_kind', kind: 255 } },
  ];
}

test('transient decoder: same errors as FrameDecoder, from the header alone, also across reads', () => {
  const next = mulberry32u(0xe4404);
  const pool = noisePool(next);
  for (const bad of badHeaders()) {
    // A few good frames (one spanning), then the bad header and nothing else: no body ever arrives.
    const good = [
      encodeFrame(FrameKind.Control, pool.subarray(0, 100)),
      encodeFrame(FrameKind.Datagram, pool.subarray(0, 40_000)),
    ];
    const prefix = Buffer.concat(good);
    const input = Buffer.concat([prefix, bad.header]);
    // Every cut of the bad header into two reads (0 and 6: it arrives whole), and the prefix cut too.
    for (let split = 0; split <= FRAME_HEADER_LEN; split++) {
      const where = `${bad.name}, header split after ${split} bytes`;
      const pair = new Pair();
      const cut = prefix.length + split;
      const first = pair.push(input.subarray(0, 30_000));
      assert.equal(first.dut.length, 1, where);
      const second = pair.push(input.subarray(30_000, cut));
      const third = cut < input.length ? pair.push(input.subarray(cut)) : null;
      const all = [first, second, third].filter((r) => r !== null);
      for (const r of all) assertSameFrames(r.ref, r.dut, where);
      assert.equal(
        all.reduce((k, r) => k + r.dut.length, 0),
        good.length,
        `${where}: the frames before the error`,
      );
      // The error comes on the push that completes the header, from both.
      const last = all[all.length - 1];
      assert.deepEqual(last.refError, bad.error, `${where}: reference`);
      assert.deepEqual(last.dutError, bad.error, where);
      for (const r of all.slice(0, -1)) assert.equal(r.dutError, null, `${where}: early error`);
      // Nothing of the refused frame is buffered...
      assert.equal(pair.dut.bufferedBytes, 0, where);
      // ...and the stream stays dead: further input gives the error and no frames.
      for (let i = 0; i < 3; i++) {
        const again = pair.push(good[i % 2]);
        assert.deepEqual(again.dutError, bad.error, `${where}: after the error`);
        assert.equal(again.dut.length, 0, `${where}: frames after the error`);
        assert.deepEqual(again.refError, bad.error);
      }
    }
  }
});

test('transient decoder: a bad header after good frames in the same read returns those frames and the error', () => {
  const pool = noisePool(mulberry32u(77));
  for (const bad of badHeaders()) {
    const pair = new Pair();
    const input = Buffer.concat([
      encodeFrame(FrameKind.Datagram, pool.subarray(0, 1000)),
      encodeFrame(FrameKind.Control, pool.subarray(0, 10)),
      bad.header,
      pool.subarray(0, 5000),
    ]);
    const r = pair.push(input);
    assertSameFrames(r.ref, r.dut, bad.name);
    assert.equal(r.dut.length, 2, bad.name);
    assert.deepEqual(r.dutError, bad.error, bad.name);
    assert.deepEqual(r.refError, bad.error, bad.name);
  }
});

test('transient decoder fuzz: 20,000 random and mutated streams agree with FrameDecoder, never throw', () => {
  const next = mulberry32u(0xf0220);
  const pool = noisePool(next);
  const deadline = Date.now() + 60_000;
  let cases = 0;
  let frames = 0;
  let errors = 0;
  const byCode: Record<string, number> = {};
  for (; cases < 20_000 && Date.now() < deadline; cases++) {
    let input: Buffer;
    const shape = next() % 5;
    if (shape === 0) {
      input = Buffer.allocUnsafe(next() % 200);
      for (let i = 0; i < input.length; i++) input[i] = next() & 0xff;
    } else if (shape === 1) {
      // A random header (random length, version and kind) and a little body.
      const h = encodeFrameHeader(next() % 4, next() % 4 === 0 ? next() : next() % 70_000);
      if (next() % 4 === 0) h[4] = next() & 0xff;
      input = Buffer.concat([h, pool.subarray(0, next() % 2000)]);
    } else {
      // Valid frames with a few bytes mutated (often a header byte), maybe truncated.
      const parts: Buffer[] = [];
      const count = 1 + (next() % 6);
      for (let i = 0; i < count; i++) {
        const kind = next() % 3 === 0 ? FrameKind.Control : FrameKind.Datagram;
        const n = next() % 4 === 0 ? next() % (maxBody(kind) + 1) : next() % 300;
        parts.push(encodeFrame(kind, pool.subarray(0, n)));
      }
      input = Buffer.concat(parts);
      const flips = shape === 2 ? 0 : 1 + (next() % 3);
      for (let i = 0; i < flips; i++) {
        const at = next() % 2 === 0 ? next() % Math.min(input.length, 12) : next() % input.length;
        input[at] = next() & 0xff;
      }
      if (shape === 4) input = input.subarray(0, next() % (input.length + 1));
    }
    const pair = new Pair();
    let off = 0;
    let failedAt = -1;
    for (let guard = 0; off < input.length && guard < 100_000; guard++) {
      const r = next() % 3;
      const n = Math.min(
        input.length - off,
        r === 0 ? 1 + (next() % 8) : r === 1 ? 1 + (next() % 512) : 1 + (next() % 80_000),
      );
      const where = `case ${cases}, at ${off}`;
      const out = pair.push(input.subarray(off, off + n));
      off += n;
      assertSameFrames(out.ref, out.dut, where);
      assert.deepEqual(out.dutError, out.refError, where);
      frames += out.dut.length;
      if (failedAt >= 0) assert.equal(out.dut.length, 0, `${where}: frames after an error`);
      if (out.dutError && failedAt < 0) {
        failedAt = off;
        errors++;
        byCode[out.dutError.code] = (byCode[out.dutError.code] ?? 0) + 1;
      }
      assert.ok(pair.dut.bufferedBytes < MAX_FRAME, `${where}: buffered ${pair.dut.bufferedBytes}`);
      assert.equal(pair.dut.bufferedBytes, pair.ref.bufferedBytes, `${where}: buffered bytes`);
    }
  }
  assert.equal(cases, 20_000, 'ran out of time before 20,000 cases');
  // The fuzzer must reach both outcomes and every error, or it tests little.
  assert.ok(frames > 10_000, `only ${frames} frames`);
  for (const code of ['frame_too_large', 'bad_version', 'bad_kind'])
    assert.ok((byCode[code] ?? 0) > 100, `${code}: ${byCode[code] ?? 0}`);
  assert.ok(errors > 1000);
});

test('FramedSocket.connect on loopback: two connections sharing the read buffer get every datagram', async () => {
  const next = mulberry32u(0x10bac);
  const pool = noisePool(next);
  // Per connection: 400 datagram frames, bodies 0..64 KiB, written in random slices.
  // Datagram frames only: a control frame of random bytes would fail validation and close the socket.
  const streams = [0, 1].map(() => frameStream(next, pool, 400, true));
  const expected = streams.map((s) => {
    const h = createHash('sha256');
    for (let i = 0; i < s.starts.length; i++) {
      const at = s.starts[i];
      const len = s.bytes.readUInt32BE(at);
      h.update(s.bytes.subarray(at + FRAME_HEADER_LEN, at + FRAME_HEADER_LEN + len));
    }
    return h.digest('hex');
  });
  let conn = 0;
  const server = net.createServer((sock) => {
    const s = streams[conn++];
    let off = 0;
    // Odd write sizes so reads end inside headers and bodies on the client.
    const pump = () => {
      while (off < s.bytes.length) {
        const n = Math.min(s.bytes.length - off, 1 + (next() % 100_000));
        const ok = sock.write(s.bytes.subarray(off, off + n));
        off += n;
        if (!ok) return void sock.once('drain', pump);
      }
      sock.end();
    };
    pump();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  try {
    const receive = (index: number) =>
      new Promise<{ count: number; hash: string }>((resolve, reject) => {
        const fs = FramedSocket.connect(
          { host: '127.0.0.1', port },
          { maxDatagramFrame: MAX_RELAY_DATAGRAM_LEN, maxControlFrame: MAX_CONTROL_FRAME },
        );
        const h = createHash('sha256');
        let count = 0;
        // A listener must consume the body before returning: hashing does.
        fs.on('datagram', (body: Buffer) => {
          h.update(body);
          count++;
        });
        fs.on('close', (reason: unknown) =>
          count === streams[index].starts.length
            ? resolve({ count, hash: h.digest('hex') })
            : reject(new Error(`closed after ${count} frames: ${String(reason)}`)),
        );
        fs.socket.on('end', () => fs.close());
      });
    const got = await withTimeout(Promise.all([receive(0), receive(1)]), 30_000, 'loopback frames');
    // Connections are accepted in order, but which client got which stream depends on that order.
    const hashes = got.map((g) => g.hash).sort();
    assert.deepEqual(hashes, [...expected].sort());
  } finally {
    server.close();
  }
});
