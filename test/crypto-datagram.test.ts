/**
 * Datagram sealing/opening: tamper detection over every header and ciphertext
 * bit, replay window behaviour (replay, reordering, age, huge jumps), receiver
 * index and key-direction separation, the counter limit, and agreement of the
 * two AEAD backends with plain libsodium.
 */
import { test } from 'node:test';
import { createRequire } from 'node:module';
import { mulberry32 } from '../src/util/prng.js';
import assert from 'node:assert/strict';
import sodium from 'libsodium-wrappers';
import {
  DatagramOpener,
  DatagramSealer,
  MAX_COUNTER,
  REPLAY_WINDOW,
  RekeyNeededError,
  ReplayWindow,
  cryptoReady,
  type SessionKeys,
} from '../src/crypto/index.js';
import { allDatagramAeads, datagramAead, describeAead } from '../src/crypto/aead.js';
import {
  DATAGRAM_OVERHEAD,
  DatagramType,
  MAX_DATAGRAM_LEN,
  MAX_UDP_DATAGRAM_LEN,
  MAX_DATAGRAM_PAYLOAD,
  MAX_RELAY_DATAGRAM_LEN,
  MAX_RELAY_DATAGRAM_PAYLOAD,
  peekDatagramHeader,
  readReceiverIndex,
  sealedLength,
  writeDatagramHeader,
} from '../src/wire/datagram.js';

await cryptoReady();

const rng = mulberry32;

function bytes(n: number, rand: () => number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (rand() * 256) | 0;
  return b;
}

/** A matched pair of session keys, as a handshake would produce. */
function pair(aIndex = 0x0a0a0a0a, bIndex = 0x0b0b0b0b): { a: SessionKeys; b: SessionKeys } {
  const k1 = sodium.randombytes_buf(32);
  const k2 = sodium.randombytes_buf(32);
  return {
    a: { sendKey: k1, recvKey: k2, localIndex: aIndex, remoteIndex: bIndex, conv: 1, isInitiator: true },
    b: { sendKey: k2, recvKey: k1, localIndex: bIndex, remoteIndex: aIndex, conv: 1, isInitiator: false },
  };
}

/** Seals a datagram with an arbitrary counter using plain libsodium, bypassing the sealer's limits. */
function sealRaw(keys: SessionKeys, type: number, counter: bigint, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(sealedLength(payload.length));
  writeDatagramHeader(out, { type, receiver: keys.remoteIndex, counter });
  const nonce = new Uint8Array(12);
  nonce.set(out.subarray(5, 13), 4);
  out.set(
    sodium.crypto_aead_chacha20poly1305_ietf_encrypt(payload, out.subarray(0, 13), null, nonce, keys.sendKey),
    13,
  );
  return out;
}

const nativeSodiumOn = process.env.PEER_NATIVE_SODIUM !== '0';
/**
 * The OpenSSL addon is an optional dependency that npm builds at install
 * time: where it was installed it must load and be used; a machine without a
 * compiler has no copy, and runs on libsodium alone.
 */
const opensslInstalled = (() => {
  try {
    createRequire(import.meta.url).resolve('@ronomon/crypto-async');
    return true;
  } catch {
    return false;
  }
})();
const opensslOn = opensslInstalled && process.env.PEER_OPENSSL_AEAD !== '0';
/** The backends expected for UDP datagrams and for relay records. */
const smallBackend = nativeSodiumOn ? 'sodium-native' : 'raw';
const largeBackend = opensslOn ? 'openssl' : nativeSodiumOn ? 'sodium-native' : 'native';

test(`datagram AEAD backend in use: ${describeAead(datagramAead())}`, () => {
  // Records which backends the hot path runs on; all are tested below. The
  // sodium-native addon ships prebuilt for this platform, so it must load; so
  // must the OpenSSL one wherever npm built it.
  const [small, large] = [smallBackend, largeBackend];
  assert.equal(
    describeAead(datagramAead()),
    small === large ? small : `${small} up to ${MAX_UDP_DATAGRAM_LEN} B, ${large} above`,
  );
});

test("the backend in use opens into the caller's buffer where it can (no allocation per relay record)", () => {
  // node:crypto (the last fallback) and the WASM build always return new memory.
  const writesInto = (backend: string) => backend === 'sodium-native' || backend === 'openssl';
  const be = datagramAead();
  const key = new Uint8Array(32).fill(3);
  for (const n of [100, MAX_DATAGRAM_PAYLOAD, 20_000, MAX_RELAY_DATAGRAM_PAYLOAD]) {
    const payload = new Uint8Array(n).map((_, i) => (i * 7) & 0xff);
    const out = new Uint8Array(sealedLength(n));
    writeDatagramHeader(out, { type: DatagramType.Data, receiver: 9, counter: BigInt(n) });
    be.seal(key, payload, out);
    const into = new Uint8Array(MAX_RELAY_DATAGRAM_PAYLOAD);
    const opened = be.open(key, out, into);
    assert.ok(opened, `${n} bytes open`);
    assert.deepEqual(opened, payload);
    if (writesInto(n > MAX_DATAGRAM_PAYLOAD ? largeBackend : smallBackend))
      assert.equal(opened.buffer, into.buffer, `${n} bytes: a view of the caller's buffer`);
  }
});

test('relay-sized records: sealed up to 64 KiB, opened only where the path allows them', () => {
  const { a, b } = pair();
  const sa = new DatagramSealer(a);
  const ob = new DatagramOpener(b);
  const rand = rng(7);
  for (const n of [MAX_DATAGRAM_PAYLOAD + 1, 4096, 40_000, MAX_RELAY_DATAGRAM_PAYLOAD]) {
    const payload = bytes(n, rand);
    const d = sa.seal(DatagramType.Data, payload);
    assert.equal(d.length, sealedLength(n));
    // Over UDP (the default limit) a record this size is refused before any decryption...
    assert.equal(ob.open(d), null);
    assert.equal(ob.stats.malformed > 0, true);
    // ...and over the relay it opens, once.
    const got = ob.open(d, MAX_RELAY_DATAGRAM_LEN);
    assert.ok(got, `len ${n}`);
    assert.deepEqual(got.payload, payload);
    assert.equal(ob.open(d, MAX_RELAY_DATAGRAM_LEN), null, 'replay');
    const bad = d.slice();
    bad[100] ^= 1;
    assert.equal(ob.open(bad, MAX_RELAY_DATAGRAM_LEN), null, 'tampered');
  }
  // The relay limit is a hard cap, whatever the caller asks for.
  assert.equal(ob.open(new Uint8Array(MAX_RELAY_DATAGRAM_LEN + 1).fill(0xa1), 1 << 20), null);
});

test('seal/open round trip for every type, empty and maximal payloads, both directions', () => {
  const { a, b } = pair();
  const sa = new DatagramSealer(a);
  const sb = new DatagramSealer(b);
  const oa = new DatagramOpener(a);
  const ob = new DatagramOpener(b);
  const rand = rng(1);
  const types = [
    DatagramType.Data,
    DatagramType.Probe,
    DatagramType.ProbeAck,
    DatagramType.Heartbeat,
    DatagramType.HeartbeatAck,
  ];
  let counter = 0n;
  for (const type of types) {
    for (const n of [0, 1, 24, 1371, MAX_DATAGRAM_PAYLOAD]) {
      const payload = bytes(n, rand);
      const d = sa.seal(type, payload);
      assert.equal(d.length, sealedLength(n));
      assert.ok(d.length <= MAX_DATAGRAM_LEN);
      assert.deepEqual(peekDatagramHeader(d), { type, receiver: b.localIndex, counter });
      assert.equal(readReceiverIndex(d), b.localIndex);
      // The payload is not visible in the ciphertext.
      if (n >= 24) assert.notDeepEqual(d.subarray(13, 13 + n), payload);
      const got = ob.open(d);
      assert.ok(got, `type ${type} len ${n}`);
      assert.equal(got.type, type);
      assert.equal(got.counter, counter);
      assert.deepEqual(got.payload, payload);
      const back = oa.open(sb.seal(type, payload));
      assert.ok(back);
      assert.deepEqual(back.payload, payload);
      counter++;
    }
  }
  assert.equal(sa.nextCounter, Number(counter));
  assert.equal(ob.stats.accepted, Number(counter));
});

test('seal() refuses local misuse without burning a counter', () => {
  const { a } = pair();
  const s = new DatagramSealer(a);
  assert.throws(() => s.seal(DatagramType.Data, new Uint8Array(MAX_RELAY_DATAGRAM_PAYLOAD + 1)), RangeError);
  assert.throws(() => s.seal(0x42 as DatagramType, new Uint8Array(1)), TypeError);
  assert.equal(s.nextCounter, 0);
  assert.throws(() => new DatagramSealer({ ...a, sendKey: new Uint8Array(16) }), TypeError);
});

test('every flipped bit in header, ciphertext or tag is rejected, and does not disturb the window', () => {
  const { a, b } = pair();
  const d = new DatagramSealer(a).seal(DatagramType.Data, new TextEncoder().encode('attack at dawn, bring snacks'));
  const o = new DatagramOpener(b);
  for (let i = 0; i < d.length; i++) {
    for (let bit = 0; bit < 8; bit++) {
      const m = d.slice();
      m[i] ^= 1 << bit;
      assert.equal(o.open(m), null, `byte ${i} bit ${bit}`);
    }
  }
  assert.equal(o.highestCounter, -1);
  assert.ok(o.open(d), 'the genuine datagram still opens after all the forgeries');
});

test('a replayed datagram is rejected; so is a datagram sealed for the other direction', () => {
  const { a, b } = pair();
  const sa = new DatagramSealer(a);
  const ob = new DatagramOpener(b);
  const d = sa.seal(DatagramType.Heartbeat, new Uint8Array(0));
  assert.ok(ob.open(d));
  assert.equal(ob.open(d), null);
  assert.equal(ob.open(d.slice()), null);
  assert.equal(ob.stats.replayed, 2);
  // Reflection: a's own datagram fed back to a.
  assert.equal(new DatagramOpener(a).open(sa.seal(DatagramType.Data, new Uint8Array(4))), null);
});

test('reflection with equal indexes still fails: the directions use different keys', () => {
  const { a, b } = pair(7, 7);
  const sa = new DatagramSealer(a);
  const oa = new DatagramOpener(a);
  assert.equal(oa.open(sa.seal(DatagramType.Data, new Uint8Array(8))), null);
  assert.equal(oa.stats.badTag, 1);
  assert.ok(new DatagramOpener(b).open(sa.seal(DatagramType.Data, new Uint8Array(8))));
});

test('wrong receiver index is rejected before any decryption', () => {
  const { a, b } = pair();
  const d = new DatagramSealer(a).seal(DatagramType.Data, new Uint8Array(10));
  const other = new DatagramOpener({ ...b, localIndex: b.localIndex + 1 });
  assert.equal(other.open(d), null);
  assert.equal(other.stats.wrongReceiver, 1);
  assert.equal(other.stats.badTag, 0);
});

test('out-of-order delivery within the window is accepted exactly once', () => {
  const { a, b } = pair();
  const s = new DatagramSealer(a);
  const o = new DatagramOpener(b);
  const ds = Array.from({ length: 300 }, (_, i) => s.seal(DatagramType.Data, new Uint8Array([i & 0xff])));
  const rand = rng(7);
  const order = ds.map((_, i) => i).sort(() => rand() - 0.5);
  for (const i of order) {
    const got = o.open(ds[i]);
    assert.ok(got, `first delivery of ${i}`);
    assert.equal(got.counter, BigInt(i));
  }
  for (const i of order) assert.equal(o.open(ds[i]), null, `second delivery of ${i}`);
  assert.equal(o.highestCounter, 299);
});

test(`window edge: ${REPLAY_WINDOW - 1} behind the newest is accepted, ${REPLAY_WINDOW} behind is too old`, () => {
  assert.ok(REPLAY_WINDOW >= 2048);
  const { a, b } = pair();
  const s = new DatagramSealer(a);
  const o = new DatagramOpener(b);
  const n = REPLAY_WINDOW + 10;
  const ds: Uint8Array[] = [];
  for (let i = 0; i < n; i++) ds.push(s.seal(DatagramType.Data, new Uint8Array(1)));
  const newest = n - 1;
  assert.ok(o.open(ds[newest]));
  assert.equal(o.open(ds[newest - REPLAY_WINDOW]), null, 'exactly one window behind');
  assert.equal(o.open(ds[0]), null, 'far behind');
  assert.ok(o.open(ds[newest - REPLAY_WINDOW + 1]), 'oldest counter still inside');
  assert.ok(o.open(ds[newest - 1]));
});

test('large counter jumps clear stale window bits', () => {
  const { a, b } = pair();
  const o = new DatagramOpener(b);
  const p = new Uint8Array(3);
  assert.ok(o.open(sealRaw(a, DatagramType.Data, 5n, p)));
  // Jump past 5 + one ring (128 words of 32), then deliver 5 + one ring late:
  // it shares counter 5's bit in the ring, which the jump must have cleared.
  const same = 5n + 128n * 32n;
  assert.ok(o.open(sealRaw(a, DatagramType.Data, same + 10n, p)));
  assert.ok(o.open(sealRaw(a, DatagramType.Data, same, p)), 'stale bit from counter 5 was cleared');
  assert.equal(o.open(sealRaw(a, DatagramType.Data, 5n, p)), null, '5 is now too old');
  const far = 10n ** 15n;
  assert.ok(o.open(sealRaw(a, DatagramType.Data, far, p)));
  assert.ok(o.open(sealRaw(a, DatagramType.Data, far - 5n, p)));
  assert.equal(o.open(sealRaw(a, DatagramType.Data, far - 5n, p)), null);
  assert.equal(o.open(sealRaw(a, DatagramType.Data, same, p)), null);
});

test('counter limit: the sealer stops at 2^53-1 with RekeyNeededError; the opener refuses anything above', () => {
  const { a, b } = pair();
  const s = new DatagramSealer(a, { initialCounter: MAX_COUNTER - 1 });
  const o = new DatagramOpener(b);
  const d1 = s.seal(DatagramType.Data, new Uint8Array(2));
  const d2 = s.seal(DatagramType.Data, new Uint8Array(2));
  assert.throws(() => s.seal(DatagramType.Data, new Uint8Array(2)), RekeyNeededError);
  assert.throws(
    () => s.seal(DatagramType.Data, new Uint8Array(2)),
    RekeyNeededError,
    'stays refused, never wraps to 0',
  );
  assert.equal(o.open(d2)?.counter, BigInt(MAX_COUNTER));
  assert.equal(o.open(d1)?.counter, BigInt(MAX_COUNTER) - 1n);
  // Validly sealed datagrams beyond the limit (only a buggy sender could make
  // them) are refused, including the 64-bit wrap region.
  const o2 = new DatagramOpener(b);
  for (const c of [BigInt(MAX_COUNTER) + 1n, 2n ** 63n, 2n ** 64n - 2n, 2n ** 64n - 1n]) {
    assert.equal(o2.open(sealRaw(a, DatagramType.Data, c, new Uint8Array(2))), null, `counter ${c}`);
  }
  assert.equal(o2.highestCounter, -1);
  assert.ok(o2.open(sealRaw(a, DatagramType.Data, 0n, new Uint8Array(2))));
});

test('destroy() wipes keys: sealer refuses, opener opens nothing', () => {
  const { a, b } = pair();
  const s = new DatagramSealer(a);
  const o = new DatagramOpener(b);
  const d = s.seal(DatagramType.Data, new Uint8Array(1));
  s.destroy();
  o.destroy();
  assert.throws(() => s.seal(DatagramType.Data, new Uint8Array(1)), RekeyNeededError);
  assert.equal(o.open(d), null);
  // The caller's key material is untouched (sealer and opener hold copies).
  assert.ok(new DatagramOpener(b).open(d));
});

test('every AEAD backend agrees with plain libsodium, byte for byte, and opens the others', () => {
  const backends = allDatagramAeads();
  assert.deepEqual(
    backends.map((b) => b.name).filter((n) => n !== 'raw'),
    ['wrapper', 'native', 'by-size', ...(nativeSodiumOn ? ['sodium-native'] : []), ...(opensslOn ? ['openssl'] : [])],
  );
  const rand = rng(99);
  for (let i = 0; i < 240; i++) {
    const key = bytes(32, rand);
    // Every 6th case a relay-sized record, which the raw backend does not take.
    const large = i % 6 === 5;
    const payload = bytes(Math.floor(rand() * ((large ? MAX_RELAY_DATAGRAM_PAYLOAD : MAX_DATAGRAM_PAYLOAD) + 1)), rand);
    const counter = BigInt(Math.floor(rand() * 2 ** 32)) * 2n ** 21n + BigInt(i);
    const reference = sealRaw(
      { sendKey: key, recvKey: key, localIndex: 1, remoteIndex: 0xc0ffee, conv: 0, isInitiator: true },
      DatagramType.Probe,
      counter,
      payload,
    );
    for (const be of backends) {
      if (be.name === 'raw' && reference.length > MAX_UDP_DATAGRAM_LEN) continue;
      const out = new Uint8Array(sealedLength(payload.length));
      out.set(reference.subarray(0, 13));
      be.seal(key, payload, out);
      assert.deepEqual(out, reference, `${be.name} seal, case ${i}`);
      assert.deepEqual(be.open(key, reference), payload, `${be.name} open, case ${i}`);
      const bad = reference.slice();
      bad[bad.length - 1] ^= 1;
      assert.equal(be.open(key, bad), null);
    }
  }
});

test('ReplayWindow matches a naive model on a random walk', () => {
  const rand = rng(2024);
  const w = new ReplayWindow();
  const seen = new Set<number>();
  let top = -1;
  let base = 0;
  for (let i = 0; i < 20000; i++) {
    // Mostly near the top, sometimes far behind, sometimes a jump ahead.
    const r = rand();
    if (r < 0.01) base += Math.floor(rand() * 20000);
    const c = Math.max(0, base + Math.floor((rand() - 0.7) * REPLAY_WINDOW * 1.5));
    const expected = c > top || (top - c < REPLAY_WINDOW && !seen.has(c));
    assert.equal(w.check(c), expected, `step ${i} counter ${c} top ${top}`);
    if (expected) {
      w.update(c);
      seen.add(c);
      if (c > top) top = c;
    }
    base++;
  }
  assert.equal(w.highest, top);
  assert.equal(w.check(-1), false);
  assert.equal(w.check(1.5), false);
  assert.equal(w.check(MAX_COUNTER + 1), false);
});

test('opener refuses short, long and non-datagram input', () => {
  const { b } = pair();
  const o = new DatagramOpener(b);
  assert.equal(o.open(new Uint8Array(0)), null);
  assert.equal(o.open(new Uint8Array(DATAGRAM_OVERHEAD - 1).fill(0xa1)), null);
  assert.equal(o.open(new Uint8Array(MAX_DATAGRAM_LEN + 1).fill(0xa1)), null);
  const stunLike = new Uint8Array(40); // STUN's first byte has the top two bits clear
  assert.equal(o.open(stunLike), null);
  assert.equal(o.open(null as unknown as Uint8Array), null);
  assert.equal(o.stats.malformed, 5);
});
