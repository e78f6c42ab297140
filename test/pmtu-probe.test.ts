import { test } from 'node:test';
import assert from 'node:assert/strict';
import sodium from 'libsodium-wrappers';
import { DatagramOpener, DatagramSealer, cryptoReady, type SessionKeys } from '../src/crypto/index.js';
import {
  DATAGRAM_OVERHEAD,
  DatagramType,
  MAX_DATAGRAM_LEN,
  MAX_UDP_DATAGRAM_LEN,
  peekDatagramHeader,
  readReceiverIndex,
  sealedLength,
  writeDatagramHeader,
} from '../src/wire/datagram.js';
import {
  MAX_PMTU_PROBE_LEN,
  MIN_PMTU_PROBE_LEN,
  decodePmtuProbe,
  decodePmtuProbeAck,
  encodePmtuProbe,
  encodePmtuProbeAck,
  pmtuProbePayloadLength,
} from '../src/wire/pmtu-probe.js';
import { mulberry32 } from '../src/util/prng.js';

await cryptoReady();

function pair(): { a: SessionKeys; b: SessionKeys } {
  const k1 = sodium.randombytes_buf(32);
  const k2 = sodium.randombytes_buf(32);
  return {
    a: { sendKey: k1, recvKey: k2, localIndex: 0x0a0a0a0a, remoteIndex: 0x0b0b0b0b, conv: 1, isInitiator: true },
    b: { sendKey: k2, recvKey: k1, localIndex: 0x0b0b0b0b, remoteIndex: 0x0a0a0a0a, conv: 1, isInitiator: false },
  };
}

test('PMTU probe: encode/decode round trip, any id, sizes from the smallest to the largest', () => {
  for (const size of [MIN_PMTU_PROBE_LEN, 548, 1200, 1232, 1252, 1452, 1472, 9000, MAX_PMTU_PROBE_LEN]) {
    for (const id of [0, 1, 0x7fffffff, 0xffffffff]) {
      const p = encodePmtuProbe(id, size);
      assert.equal(p.length, pmtuProbePayloadLength(size));
      assert.equal(p.length + DATAGRAM_OVERHEAD, size);
      assert.deepEqual(decodePmtuProbe(p), { id, size });
      const a = encodePmtuProbeAck(id, size);
      assert.equal(a.length, 6);
      assert.deepEqual(decodePmtuProbeAck(a), { id, size });
    }
  }
  // Padding is zeros.
  assert.ok(
    encodePmtuProbe(7, 1472)
      .subarray(6)
      .every((b) => b === 0),
  );
});

test('PMTU probe: the sealed datagram is exactly the size asked for, and opens on the other side', () => {
  const { a, b } = pair();
  const sealer = new DatagramSealer(a);
  const opener = new DatagramOpener(b);
  for (const size of [MIN_PMTU_PROBE_LEN, 1200, 1232, 1400, 1452, 1472]) {
    const d = sealer.seal(DatagramType.PmtuProbe, encodePmtuProbe(size * 3, size));
    assert.equal(d.length, size);
    assert.deepEqual(peekDatagramHeader(d)?.type, DatagramType.PmtuProbe);
    assert.equal(readReceiverIndex(d), b.localIndex);
    const opened = opener.open(d, MAX_UDP_DATAGRAM_LEN);
    assert.ok(opened, `a ${size}-byte probe must open`);
    assert.equal(opened.type, DatagramType.PmtuProbe);
    const body = decodePmtuProbe(opened.payload);
    assert.deepEqual(body, { id: size * 3, size });
    // The answer: small, sealed, back the other way.
    const ack = new DatagramSealer(b).seal(DatagramType.PmtuProbeAck, encodePmtuProbeAck(body.id, body.size));
    assert.equal(ack.length, MIN_PMTU_PROBE_LEN);
    const back = new DatagramOpener(a).open(ack);
    assert.equal(back?.type, DatagramType.PmtuProbeAck);
    assert.deepEqual(decodePmtuProbeAck(back.payload), { id: size * 3, size });
  }
});

test('receive limits: routing takes UDP datagrams up to 1472 bytes; the opener only as far as it is told', () => {
  const { a, b } = pair();
  const sealer = new DatagramSealer(a);
  const d = sealer.seal(DatagramType.PmtuProbe, encodePmtuProbe(1, MAX_UDP_DATAGRAM_LEN));
  assert.equal(peekDatagramHeader(d)?.type, DatagramType.PmtuProbe);
  const over = sealer.seal(DatagramType.PmtuProbe, encodePmtuProbe(2, MAX_UDP_DATAGRAM_LEN + 1));
  assert.equal(peekDatagramHeader(over), null);
  assert.equal(readReceiverIndex(over), -1);
  // Today's default bound (MAX_DATAGRAM_LEN, what a DirectPath passes) drops a
  // 1472-byte probe: the integration must open direct datagrams with MAX_UDP_DATAGRAM_LEN.
  const opener = new DatagramOpener(b);
  assert.ok(MAX_DATAGRAM_LEN < MAX_UDP_DATAGRAM_LEN);
  assert.equal(opener.open(d), null);
  assert.equal(opener.stats.malformed, 1);
  assert.ok(opener.open(d, MAX_UDP_DATAGRAM_LEN), 'the same datagram opens under the UDP receive limit');
});

test('PMTU probe: truncated, padded, mislabelled and garbage payloads are rejected without throwing', () => {
  const p = encodePmtuProbe(42, 1400);
  assert.equal(decodePmtuProbe(p.subarray(0, p.length - 1)), null, 'one byte short');
  assert.equal(decodePmtuProbe(p.subarray(0, 5)), null, 'shorter than the header');
  assert.equal(decodePmtuProbe(new Uint8Array(0)), null);
  const longer = new Uint8Array(p.length + 1);
  longer.set(p);
  assert.equal(decodePmtuProbe(longer), null, 'one byte more than the size field says');
  const wrongSize = Uint8Array.from(p);
  wrongSize[5] ^= 1;
  assert.equal(decodePmtuProbe(wrongSize), null);
  const ack = encodePmtuProbeAck(42, 1400);
  assert.equal(decodePmtuProbeAck(ack.subarray(0, 5)), null);
  assert.equal(decodePmtuProbeAck(Uint8Array.of(...ack, 0)), null);
  assert.equal(decodePmtuProbeAck(Uint8Array.of(0, 0, 0, 1, 0, 10)), null, 'a size no probe can have');
  for (const junk of [null, undefined, 'probe', 42, {}, [1, 2, 3, 4, 5, 6]])
    assert.equal(decodePmtuProbe(junk as Uint8Array), null);
  const rand = mulberry32(17);
  let accepted = 0;
  for (let i = 0; i < 20_000; i++) {
    const n = Math.floor(rand() * 1600);
    const b = new Uint8Array(n);
    for (let j = 0; j < Math.min(n, 8); j++) b[j] = Math.floor(rand() * 256);
    if (decodePmtuProbe(b)) accepted++;
    decodePmtuProbeAck(b);
  }
  // A random header matches its own length about once in 65536.
  assert.ok(accepted < 5, `${accepted} random payloads decoded`);
  // A sealed probe cut short on the way is dropped by the opener.
  const { a, b } = pair();
  const d = new DatagramSealer(a).seal(DatagramType.PmtuProbe, encodePmtuProbe(1, 1300));
  const opener = new DatagramOpener(b);
  assert.equal(opener.open(d.subarray(0, 1299), MAX_UDP_DATAGRAM_LEN), null);
  assert.ok(opener.open(d, MAX_UDP_DATAGRAM_LEN));
});

test('encoding refuses sizes a probe cannot have', () => {
  for (const size of [0, MIN_PMTU_PROBE_LEN - 1, MAX_PMTU_PROBE_LEN + 1, 1400.5, Number.NaN]) {
    assert.throws(() => encodePmtuProbe(1, size), RangeError, String(size));
    assert.throws(() => encodePmtuProbeAck(1, size), RangeError, String(size));
  }
});

test('a type a peer does not know is dropped unread: no reply, no replay-window slot', () => {
  // What a peer older than PmtuProbe does with it, shown with the next unused type.
  const { a, b } = pair();
  const payload = encodePmtuProbe(1, 1300);
  const out = new Uint8Array(sealedLength(payload.length));
  writeDatagramHeader(out, { type: 0xab as DatagramType, receiver: a.remoteIndex, counter: 5n });
  const nonce = new Uint8Array(12);
  nonce.set(out.subarray(5, 13), 4);
  out.set(sodium.crypto_aead_chacha20poly1305_ietf_encrypt(payload, out.subarray(0, 13), null, nonce, a.sendKey), 13);
  assert.equal(peekDatagramHeader(out), null, 'the UDP socket does not route it');
  assert.equal(readReceiverIndex(out), -1);
  const opener = new DatagramOpener(b);
  assert.equal(opener.open(out, MAX_UDP_DATAGRAM_LEN), null);
  assert.equal(opener.stats.malformed, 1);
  assert.equal(opener.highestCounter, -1, 'the replay window did not move');
});
