/**
 * PSK derivation and the two-message handshake, against the attacks the
 * rendezvous (or anyone on the path) can mount: wrong secret, forged or
 * swapped ephemerals, replay, misrouting, context confusion.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import sodium from 'libsodium-wrappers';
import {
  DatagramOpener,
  DatagramSealer,
  HandshakeError,
  createInitiator,
  cryptoReady,
  deriveSecretKey,
  generateSecret,
  randomIndex,
  respond,
  type SessionKeys,
} from '../src/crypto/index.js';
import { contextHash, handshakeKeys, initMac, responseMac } from '../src/crypto/kdf.js';
import {
  HANDSHAKE_INIT_LEN,
  HS_MAC_LEN,
  HS_MAC_OFFSET,
  encodeHandshakeInit,
  encodeHandshakeResponse,
  peekHandshake,
  HandshakeKind,
} from '../src/wire/handshake.js';
import { DatagramType } from '../src/wire/datagram.js';

await cryptoReady();

const CONTEXT = 'ssh-home|rv-session-42';
// Derived once: each derivation is a deliberate ~100 ms of scrypt.
const PSK = await deriveSecretKey('correct horse battery staple');
const WRONG_PSK = await deriveSecretKey('correct horse battery stapler');

function expectHsError(fn: () => unknown, code: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof HandshakeError, `expected HandshakeError, got ${String(e)}`);
    assert.equal(e.code, code);
    return true;
  });
}

function handshake(): { ik: SessionKeys; rk: SessionKeys; init: Uint8Array; response: Uint8Array } {
  const hs = createInitiator(PSK, { initiatorIndex: 0x11223344, conv: 0xdeadbeef, context: CONTEXT });
  const r = respond(PSK, hs.message, { responderIndex: 0x55667788, context: CONTEXT });
  return { ik: hs.finish(r.response), rk: r.keys, init: hs.message, response: r.response };
}

/** True when a datagram sealed with `from` opens with `to`. */
function datagramFlows(from: SessionKeys, to: SessionKeys): boolean {
  const d = new DatagramSealer(from).seal(DatagramType.Data, new TextEncoder().encode('ping'));
  const opened = new DatagramOpener(to).open(d);
  return opened !== null && new TextDecoder().decode(opened.payload) === 'ping';
}

test('deriveSecretKey: deterministic 32-byte key, secret-sensitive, NFC-normalised, rejects empty', async () => {
  const again = await deriveSecretKey('correct horse battery staple');
  assert.equal(PSK.length, 32);
  assert.deepEqual(again, PSK);
  assert.notDeepEqual(WRONG_PSK, PSK);
  // "é" precomposed vs e + combining acute: the same secret to a human.
  assert.deepEqual(await deriveSecretKey('caf\u00e9'), await deriveSecretKey('cafe\u0301'));
  await assert.rejects(deriveSecretKey(''), RangeError);
});

test('generateSecret gives distinct 256-bit base64url strings', () => {
  const a = generateSecret();
  const b = generateSecret();
  assert.match(a, /^[A-Za-z0-9_-]{43}$/);
  assert.notEqual(a, b);
});

test('handshake round trip: matching directional keys, indexes and conv', () => {
  const { ik, rk } = handshake();
  assert.deepEqual(ik.sendKey, rk.recvKey);
  assert.deepEqual(ik.recvKey, rk.sendKey);
  assert.notDeepEqual(ik.sendKey, ik.recvKey);
  assert.equal(ik.localIndex, 0x11223344);
  assert.equal(ik.remoteIndex, 0x55667788);
  assert.equal(rk.localIndex, 0x55667788);
  assert.equal(rk.remoteIndex, 0x11223344);
  assert.equal(ik.conv, 0xdeadbeef);
  assert.equal(rk.conv, 0xdeadbeef);
  assert.equal(ik.isInitiator, true);
  assert.equal(rk.isInitiator, false);
  assert.ok(datagramFlows(ik, rk));
  assert.ok(datagramFlows(rk, ik));
});

test('two handshakes with the same secret give unrelated keys (fresh ephemerals)', () => {
  const a = handshake();
  const b = handshake();
  assert.notDeepEqual(a.ik.sendKey, b.ik.sendKey);
  assert.notDeepEqual(a.init.subarray(10, 42), b.init.subarray(10, 42));
  assert.ok(!datagramFlows(a.ik, b.rk));
});

test('respond() reports init fields and peekHandshake reads them without keys', () => {
  const hs = createInitiator(PSK, { initiatorIndex: 1, conv: 2, context: CONTEXT });
  assert.equal(hs.message.length, HANDSHAKE_INIT_LEN);
  assert.deepEqual(peekHandshake(hs.message), { kind: HandshakeKind.Init, initiatorIndex: 1, conv: 2 });
  const r = respond(PSK, hs.message, { responderIndex: 3, context: CONTEXT });
  assert.equal(r.initiatorIndex, 1);
  assert.equal(r.conv, 2);
  assert.deepEqual(peekHandshake(r.response), { kind: HandshakeKind.Response, initiatorIndex: 1, responderIndex: 3 });
  assert.equal(peekHandshake(new Uint8Array(5)), null);
});

test('messages survive base64 transport as Node Buffers (as the rendezvous carries them)', () => {
  const hs = createInitiator(PSK, { initiatorIndex: 1, conv: 2, context: CONTEXT });
  const viaRendezvous = (b: Uint8Array): Buffer => Buffer.from(Buffer.from(b).toString('base64'), 'base64');
  const initBuf = viaRendezvous(hs.message);
  hs.message.fill(0); // the initiator verifies against its own copy of the init
  const r = respond(PSK, initBuf, { responderIndex: 3, context: CONTEXT });
  initBuf.fill(0); // the responder kept nothing that aliases the caller's buffer
  const respBuf = viaRendezvous(r.response);
  const ik = hs.finish(respBuf);
  respBuf.fill(0);
  assert.ok(datagramFlows(ik, r.keys));
  assert.ok(datagramFlows(r.keys, ik));
});

test('wrong secret: the responder rejects the init with auth_failed', () => {
  const hs = createInitiator(WRONG_PSK, { initiatorIndex: 1, conv: 2, context: CONTEXT });
  expectHsError(() => respond(PSK, hs.message, { responderIndex: 3, context: CONTEXT }), 'auth_failed');
});

test('different context (service or rendezvous session): auth_failed', () => {
  const hs = createInitiator(PSK, { initiatorIndex: 1, conv: 2, context: 'ssh-home|rv-session-42' });
  expectHsError(
    () => respond(PSK, hs.message, { responderIndex: 3, context: 'ssh-home|rv-session-43' }),
    'auth_failed',
  );
  const bytes = new TextEncoder().encode('ssh-home|rv-session-42');
  assert.doesNotThrow(() => respond(PSK, hs.message, { responderIndex: 3, context: bytes }));
});

test('a response forged with a wrong secret fails on the initiator, which then still accepts the genuine one', () => {
  const hs = createInitiator(PSK, { initiatorIndex: 10, conv: 20, context: CONTEXT });
  // The forger builds a well-formed response for this very init, MAC'd with its own guess of the key.
  const { macKey } = handshakeKeys(WRONG_PSK);
  const forged = encodeHandshakeResponse({
    responderIndex: 99,
    initiatorIndex: 10,
    ephemeral: sodium.crypto_scalarmult_base(sodium.randombytes_buf(32)),
    nonce: sodium.randombytes_buf(16),
    mac: new Uint8Array(HS_MAC_LEN),
  });
  forged.set(responseMac(macKey, contextHash(new TextEncoder().encode(CONTEXT)), hs.message, forged), HS_MAC_OFFSET);
  expectHsError(() => hs.finish(forged), 'auth_failed');

  const genuine = respond(PSK, hs.message, { responderIndex: 30, context: CONTEXT });
  const ik = hs.finish(genuine.response);
  assert.deepEqual(ik.sendKey, genuine.keys.recvKey);
});

test('man in the middle replacing the init ephemeral: responder says auth_failed', () => {
  const hs = createInitiator(PSK, { initiatorIndex: 1, conv: 2, context: CONTEXT });
  const tampered = hs.message.slice();
  tampered.set(sodium.crypto_scalarmult_base(sodium.randombytes_buf(32)), 10);
  expectHsError(() => respond(PSK, tampered, { responderIndex: 3, context: CONTEXT }), 'auth_failed');
});

test('man in the middle replacing the response ephemeral: initiator says auth_failed', () => {
  const hs = createInitiator(PSK, { initiatorIndex: 1, conv: 2, context: CONTEXT });
  const r = respond(PSK, hs.message, { responderIndex: 3, context: CONTEXT });
  const tampered = r.response.slice();
  tampered.set(sodium.crypto_scalarmult_base(sodium.randombytes_buf(32)), 10);
  expectHsError(() => hs.finish(tampered), 'auth_failed');
});

test('every single-byte change to the init or the response is rejected', () => {
  const hs = createInitiator(PSK, { initiatorIndex: 1, conv: 2, context: CONTEXT });
  for (let i = 0; i < hs.message.length; i++) {
    const m = hs.message.slice();
    m[i] ^= 0x01;
    assert.throws(() => respond(PSK, m, { responderIndex: 3, context: CONTEXT }), HandshakeError, `init byte ${i}`);
  }
  const r = respond(PSK, hs.message, { responderIndex: 3, context: CONTEXT });
  for (let i = 0; i < r.response.length; i++) {
    const m = r.response.slice();
    m[i] ^= 0x80;
    assert.throws(() => hs.finish(m), HandshakeError, `response byte ${i}`);
  }
  // None of those attempts consumed the initiator.
  assert.deepEqual(hs.finish(r.response).sendKey, r.keys.recvKey);
});

test('replayed init gives the replayer nothing usable', () => {
  const { ik, rk, init } = handshake();
  // Later, someone who recorded the init replays it to the serving peer.
  const replay = respond(PSK, init, { responderIndex: 0x55667788, context: CONTEXT });
  assert.notDeepEqual(replay.keys.recvKey, rk.recvKey);
  assert.notDeepEqual(replay.keys.sendKey, rk.sendKey);
  // Traffic of the real session does not open under the replayed session's keys,
  // and the replayed session's responses mean nothing to the real initiator.
  assert.ok(!datagramFlows(ik, replay.keys));
  assert.ok(!datagramFlows(replay.keys, ik));
});

test('finish() after success refuses: the ephemeral secret is gone', () => {
  const hs = createInitiator(PSK, { initiatorIndex: 1, conv: 2, context: CONTEXT });
  const r1 = respond(PSK, hs.message, { responderIndex: 3, context: CONTEXT });
  const r2 = respond(PSK, hs.message, { responderIndex: 4, context: CONTEXT });
  hs.finish(r1.response);
  expectHsError(() => hs.finish(r2.response), 'already_finished');
});

test('response routed to the wrong initiator is rejected', () => {
  const a = createInitiator(PSK, { initiatorIndex: 1, conv: 2, context: CONTEXT });
  const b = createInitiator(PSK, { initiatorIndex: 1, conv: 2, context: CONTEXT });
  const c = createInitiator(PSK, { initiatorIndex: 7, conv: 2, context: CONTEXT });
  const ra = respond(PSK, a.message, { responderIndex: 3, context: CONTEXT });
  expectHsError(() => b.finish(ra.response), 'auth_failed'); // same index, different transcript
  expectHsError(() => c.finish(ra.response), 'auth_failed'); // different index
});

test('an init reflected back to the initiator as a response is rejected', () => {
  const hs = createInitiator(PSK, { initiatorIndex: 1, conv: 2, context: CONTEXT });
  expectHsError(() => hs.finish(hs.message), 'bad_format');
});

test('format errors: garbage, truncation, wrong version', () => {
  const hs = createInitiator(PSK, { initiatorIndex: 1, conv: 2, context: CONTEXT });
  const opts = { responderIndex: 3, context: CONTEXT };
  expectHsError(() => respond(PSK, new Uint8Array(0), opts), 'bad_format');
  expectHsError(() => respond(PSK, hs.message.subarray(0, 89), opts), 'bad_format');
  const longer = new Uint8Array(91);
  longer.set(hs.message);
  expectHsError(() => respond(PSK, longer, opts), 'bad_format');
  expectHsError(() => respond(PSK, 'not bytes' as unknown as Uint8Array, opts), 'bad_format');
  const v2 = hs.message.slice();
  v2[1] = 2;
  expectHsError(() => respond(PSK, v2, opts), 'bad_version');
});

test('a PSK holder sending a low-order ephemeral gets weak_key, not a zero shared secret', () => {
  // Only someone with the secret can get this far; the check keeps a buggy or
  // malicious peer from forcing an all-zero DH output.
  const ctx = contextHash(new TextEncoder().encode(CONTEXT));
  const { macKey } = handshakeKeys(PSK);
  const init = encodeHandshakeInit({
    initiatorIndex: 1,
    conv: 2,
    ephemeral: new Uint8Array(32), // the identity point
    nonce: new Uint8Array(16),
    mac: new Uint8Array(HS_MAC_LEN),
  });
  init.set(initMac(macKey, ctx, init), HS_MAC_OFFSET);
  expectHsError(() => respond(PSK, init, { responderIndex: 3, context: CONTEXT }), 'weak_key');
});

test('local misuse is a TypeError, not a HandshakeError', () => {
  assert.throws(
    () => createInitiator(PSK.subarray(0, 16), { initiatorIndex: 1, conv: 2, context: CONTEXT }),
    TypeError,
  );
  assert.throws(() => createInitiator(PSK, { initiatorIndex: -1, conv: 2, context: CONTEXT }), TypeError);
  assert.throws(() => createInitiator(PSK, { initiatorIndex: 1, conv: 2 ** 32, context: CONTEXT }), TypeError);
  const hs = createInitiator(PSK, { initiatorIndex: 1, conv: 2, context: CONTEXT });
  assert.throws(() => respond(PSK, hs.message, { responderIndex: 1.5, context: CONTEXT }), TypeError);
});

test('randomIndex is a non-zero uint32', () => {
  const seen = new Set<number>();
  for (let i = 0; i < 1000; i++) {
    const v = randomIndex();
    assert.ok(Number.isInteger(v) && v > 0 && v <= 0xffffffff);
    seen.add(v);
  }
  assert.ok(seen.size > 990);
});
