/**
 * Seeded, bounded fuzzing of the parsers that face the network and had no
 * fuzz test of their own: control frames (framing + schema) and KCP input.
 * (The STUN codec and the datagram opener are fuzzed in stun-message.test.ts
 * and crypto-fuzz.test.ts.) Every case must return, never throw, and memory
 * must stay bounded.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FrameDecoder, FrameKind, encodeFrame, encodeFrameHeader } from '../src/wire/frame.js';
import { encodeControl, parseControl, type ControlMessage } from '../src/wire/control.js';
import { Kcp } from '../src/kcp/index.js';
import { mulberry32u } from '../src/util/prng.js';

/** Seeded, so a failure can be replayed from its seed. */
const rng = mulberry32u;

function randomBytes(next: () => number, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = next() & 0xff;
  return b;
}

/** Valid messages to mutate: the fuzzer gets past JSON.parse and into the schema. */
const SEEDS: ControlMessage[] = [
  { type: 'hello', version: 1, software: 'x', token: 't' },
  { type: 'register', name: 'ssh-home', key: 'AAAA', sig: 'BBBB' },
  {
    type: 'connect',
    reqId: 'r1',
    name: 'ssh-home',
    hs: 'AAAA',
    mode: 'auto',
    candidates: [{ kind: 'srflx', address: '203.0.113.1', port: 4000, family: 'IPv4' }],
  },
  { type: 'accept', sid: 's', hs: 'AAAA', candidates: [] },
  { type: 'punch', sid: 's', delayMs: 10, candidates: [] },
  { type: 'relay_bind', ticket: 'abc' },
  { type: 'ping', t: 1 },
];

test('control frame parser: 100,000 random and mutated inputs, no throw, bounded buffering', () => {
  const next = rng(0xc0ffee);
  const deadline = Date.now() + 60_000;
  let frames = 0;
  let accepted = 0;
  let cases = 0;
  for (; cases < 100_000 && Date.now() < deadline; cases++) {
    const dec = new FrameDecoder();
    let input: Buffer;
    const kind = next() % 4;
    if (kind === 0) {
      input = randomBytes(next, next() % 64);
    } else if (kind === 1) {
      // A header with a random length and kind: must be rejected or waited on, never allocated.
      input = Buffer.concat([encodeFrameHeader(next() % 4, next()), randomBytes(next, next() % 16)]);
    } else {
      const seed = encodeControl(SEEDS[next() % SEEDS.length]);
      input = Buffer.from(seed);
      const flips = 1 + (next() % 4);
      for (let i = 0; i < flips; i++) input[next() % input.length] = next() & 0xff;
      if (kind === 3) input = input.subarray(0, next() % (input.length + 1));
    }
    // Feed in random-sized chunks, as TCP would.
    let off = 0;
    while (off < input.length) {
      const n = 1 + (next() % 32);
      const r = dec.push(input.subarray(off, off + n));
      off += n;
      for (const f of r.frames) {
        frames++;
        const p = parseControl(f.body);
        if (p.ok) accepted++;
      }
      if (r.error) break;
    }
    assert.ok(dec.bufferedBytes <= 16 * 1024 + 64, `decoder buffered ${dec.bufferedBytes} bytes`);
  }
  assert.equal(cases, 100_000, 'ran out of time before 100,000 cases');
  // The mutations must reach the schema and sometimes pass it, or the fuzzer tests nothing.
  assert.ok(frames > 10_000, `only ${frames} frames decoded`);
  assert.ok(accepted > 100, `only ${accepted} mutated frames parsed`);
});

test('control parser: a schema violation names the field', () => {
  const r = parseControl(Buffer.from(JSON.stringify({ type: 'register', name: 'bad name!', key: 'AAAA', sig: 'AA' })));
  assert.equal(r.ok, false);
  assert.match((r as { error: string }).error, /name/);
  const big = parseControl(encodeFrame(FrameKind.Control, Buffer.from('{}')).subarray(6));
  assert.equal(big.ok, false);
});

test('KCP input: 100,000 random and mutated datagrams, no throw, state stays usable', () => {
  const next = rng(0xbadc0de);
  const conv = 0x11223344;
  const out: Buffer[] = [];
  const peerOut: Buffer[] = [];
  const a = new Kcp(conv, (b) => out.push(Buffer.from(b)));
  const b = new Kcp(conv, (x) => peerOut.push(Buffer.from(x)));
  for (const k of [a, b]) {
    k.setNodelay(1, 10, 2, 1);
    k.setWndSize(128, 128);
  }
  // Real segments to mutate.
  b.send(Buffer.alloc(5000, 7));
  b.update(0);
  b.flush();
  const seeds = peerOut.splice(0);
  assert.ok(seeds.length > 0);
  const deadline = Date.now() + 60_000;
  let cases = 0;
  let rejected = 0;
  let t = 0;
  for (; cases < 100_000 && Date.now() < deadline; cases++) {
    let d: Buffer;
    if (next() % 2 === 0) {
      d = randomBytes(next, next() % 200);
      if (d.length >= 4 && next() % 2) d.writeUInt32LE(conv, 0); // get past the conv check
    } else {
      d = Buffer.from(seeds[next() % seeds.length]);
      const flips = 1 + (next() % 3);
      for (let i = 0; i < flips; i++) d[next() % d.length] = next() & 0xff;
    }
    const rc = a.input(d);
    if (rc < 0) rejected++;
    if (cases % 1000 === 0) {
      t += 10;
      a.update(t);
      while (a.recv()) {
        /* drain whatever the fuzzer managed to deliver */
      }
      out.length = 0;
    }
  }
  assert.equal(cases, 100_000, 'ran out of time before 100,000 cases');
  assert.ok(rejected > 1000, `only ${rejected} inputs rejected`);
  // Queues bounded by the window, whatever arrived.
  assert.ok(a.waitSnd() <= 128 + 1);
  // A fresh, well-formed exchange still works on a new pair with the same code.
  const c = new Kcp(7, () => {});
  assert.equal(c.send(Buffer.from('still fine')), 0);
});
