/**
 * Seeded fuzzing of every entry point that takes network bytes: open(),
 * respond() and finish(). Each loop is bounded by a case count and a time
 * budget; the assertions are that nothing forged is accepted, nothing but
 * HandshakeError is thrown, and state (replay window, pending initiator) is
 * unchanged so genuine traffic still goes through afterwards.
 */
import { test } from 'node:test';
import { mulberry32 } from '../src/util/prng.js';
import assert from 'node:assert/strict';
import {
  DatagramOpener,
  DatagramSealer,
  HandshakeError,
  createInitiator,
  cryptoReady,
  deriveSecretKey,
  respond,
  type HandshakeErrorCode,
  type SessionKeys,
} from '../src/crypto/index.js';
import { DatagramType, MAX_DATAGRAM_PAYLOAD } from '../src/wire/datagram.js';
import { HANDSHAKE_INIT_LEN } from '../src/wire/handshake.js';

await cryptoReady();

const MAX_CASES = 100_000;
const BUDGET_MS = 3_000;
/** Below this many cases in the budget the test would prove little; fail loudly instead. */
const MIN_CASES = 5_000;
const CONTEXT = 'fuzz-service|fuzz-session';
const PSK = await deriveSecretKey('fuzz secret');

const rng = mulberry32;

function int(rand: () => number, n: number): number {
  return Math.floor(rand() * n);
}

function randomBytes(rand: () => number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = int(rand, 256);
  return b;
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Returns a variant of `src` guaranteed to differ from both genuine inputs. */
function mutate(rand: () => number, src: Uint8Array, other: Uint8Array): Uint8Array {
  for (;;) {
    let m: Uint8Array;
    switch (int(rand, 5)) {
      case 0: {
        m = src.slice();
        const flips = 1 + int(rand, 4);
        for (let i = 0; i < flips; i++) m[int(rand, m.length)] ^= 1 + int(rand, 255);
        break;
      }
      case 1:
        m = src.slice(0, int(rand, src.length));
        break;
      case 2: {
        m = new Uint8Array(src.length + 1 + int(rand, 64));
        m.set(src);
        m.set(randomBytes(rand, m.length - src.length), src.length);
        break;
      }
      case 3: {
        // Header of one message, body of another.
        const cut = 1 + int(rand, Math.min(src.length, other.length) - 1);
        m = new Uint8Array(other.length);
        m.set(other);
        m.set(src.subarray(0, cut));
        break;
      }
      default:
        m = randomBytes(rand, src.length);
        m.set(src.subarray(0, 13)); // a genuine header over random ciphertext
    }
    if (!equal(m, src) && !equal(m, other)) return m;
  }
}

function fakeKeys(): { a: SessionKeys; b: SessionKeys } {
  const k1 = new Uint8Array(32).fill(1);
  const k2 = new Uint8Array(32).fill(2);
  return {
    a: { sendKey: k1, recvKey: k2, localIndex: 0x01020304, remoteIndex: 0x0a0b0c0d, conv: 9, isInitiator: true },
    b: { sendKey: k2, recvKey: k1, localIndex: 0x0a0b0c0d, remoteIndex: 0x01020304, conv: 9, isInitiator: false },
  };
}

test('fuzz open(): random, mutated, replayed datagrams refused without throwing or moving the window', (t) => {
  const rand = rng(0xc0ffee);
  const { a, b } = fakeKeys();
  const sealer = new DatagramSealer(a);
  const opener = new DatagramOpener(b);
  // Some accepted history, so replays and the window's bitmap are exercised.
  const accepted: Uint8Array[] = [];
  for (let i = 0; i < 64; i++) {
    const d = sealer.seal(DatagramType.Data, randomBytes(rand, int(rand, 200)));
    if (i % 2 === 0) {
      assert.ok(opener.open(d));
      accepted.push(d);
    }
  }
  // Fresh datagrams that are never delivered intact during the loop.
  const fresh: Uint8Array[] = [];
  for (let i = 0; i < 64; i++)
    fresh.push(sealer.seal(DatagramType.Data, randomBytes(rand, int(rand, MAX_DATAGRAM_PAYLOAD + 1))));
  const highest = opener.highestCounter;
  const acceptedCount = opener.stats.accepted;

  const deadline = performance.now() + BUDGET_MS;
  let n = 0;
  for (; n < MAX_CASES && performance.now() < deadline; n++) {
    const r = rand();
    let input: Uint8Array;
    if (r < 0.3) {
      input = randomBytes(rand, int(rand, 1500));
      if (input.length > 0 && rand() < 0.7) input[0] = 0xa1 + int(rand, 5);
      if (input.length > 4 && rand() < 0.7) input.set([0x0a, 0x0b, 0x0c, 0x0d], 1);
    } else if (r < 0.85) {
      input = mutate(rand, fresh[int(rand, fresh.length)], fresh[int(rand, fresh.length)]);
    } else {
      input = accepted[int(rand, accepted.length)];
    }
    let out: unknown;
    try {
      out = opener.open(input);
    } catch (e) {
      assert.fail(`open() threw on case ${n}: ${String(e)}`);
    }
    if (out !== null) assert.fail(`forged datagram accepted on case ${n}`);
  }
  t.diagnostic(`open() cases: ${n}`);
  assert.ok(n >= MIN_CASES, `only ${n} cases ran`);
  assert.equal(opener.highestCounter, highest);
  assert.equal(opener.stats.accepted, acceptedCount);
  for (const d of fresh) assert.ok(opener.open(d), 'genuine datagram opens after the fuzzing');
});

const HANDSHAKE_CODES = new Set<HandshakeErrorCode>(['bad_format', 'bad_version', 'auth_failed', 'weak_key']);

function expectOnlyHandshakeError(fn: () => unknown, label: string): void {
  try {
    fn();
  } catch (e) {
    if (e instanceof HandshakeError && HANDSHAKE_CODES.has(e.code)) return;
    assert.fail(`${label}: unexpected ${String(e)}`);
  }
  assert.fail(`${label}: forged message accepted`);
}

function randomHandshakeInput(rand: () => number, genuine: Uint8Array, other: Uint8Array, kind: number): Uint8Array {
  const r = rand();
  if (r < 0.25) return randomBytes(rand, int(rand, 200));
  if (r < 0.5) {
    // Right kind, version and length: forces the MAC check to run.
    const m = randomBytes(rand, HANDSHAKE_INIT_LEN);
    m[0] = kind;
    m[1] = 1;
    return m;
  }
  return mutate(rand, genuine, other);
}

test('fuzz respond(): only HandshakeError, never acceptance', (t) => {
  const rand = rng(0xbadf00d);
  const genuine = createInitiator(PSK, { initiatorIndex: 5, conv: 6, context: CONTEXT }).message;
  const other = createInitiator(PSK, { initiatorIndex: 7, conv: 8, context: CONTEXT }).message;
  const opts = { responderIndex: 11, context: CONTEXT };
  const deadline = performance.now() + BUDGET_MS;
  let n = 0;
  for (; n < MAX_CASES && performance.now() < deadline; n++) {
    const input = randomHandshakeInput(rand, genuine, other, 0x01);
    expectOnlyHandshakeError(() => respond(PSK, input, opts), `respond case ${n}`);
  }
  t.diagnostic(`respond() cases: ${n}`);
  assert.ok(n >= MIN_CASES, `only ${n} cases ran`);
  assert.doesNotThrow(() => respond(PSK, genuine, opts));
});

test('fuzz finish(): only HandshakeError, and the initiator still completes with the genuine response', (t) => {
  const rand = rng(0x5eed);
  const hs = createInitiator(PSK, { initiatorIndex: 5, conv: 6, context: CONTEXT });
  const genuine = respond(PSK, hs.message, { responderIndex: 11, context: CONTEXT });
  const other = respond(PSK, hs.message, { responderIndex: 12, context: CONTEXT }).response;
  const deadline = performance.now() + BUDGET_MS;
  let n = 0;
  for (; n < MAX_CASES && performance.now() < deadline; n++) {
    const input = randomHandshakeInput(rand, genuine.response, other, 0x02);
    expectOnlyHandshakeError(() => hs.finish(input), `finish case ${n}`);
  }
  t.diagnostic(`finish() cases: ${n}`);
  assert.ok(n >= MIN_CASES, `only ${n} cases ran`);
  assert.deepEqual(hs.finish(genuine.response).sendKey, genuine.keys.recvKey);
});
