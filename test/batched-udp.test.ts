import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { forceDontFragment, sendDatagram, udpBatchingAvailable, udpBatchStats } from '../src/transport/batched-udp.js';
import { sleep } from '../src/util/backoff.js';

// Real sockets on loopback. Without the addon (no compiler at install) the
// batching cases skip, saying so; the fallback case runs either way.
const NO_ADDON = udpBatchingAvailable()
  ? false
  : 'the optional addon native/udp-batch is not built here (no compiler at install, or PEER_UDP_BATCH=0)';

function socket(): Promise<dgram.Socket> {
  return new Promise((resolve) => {
    const s = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 << 20 });
    s.bind(0, '127.0.0.1', () => resolve(s));
  });
}

async function receiveUntil(got: Buffer[], n: number): Promise<void> {
  for (let i = 0; i < 200 && got.length < n; i++) await sleep(10);
}

/** Datagram i: `size` bytes, its index in the first four, the rest a pattern of it. */
function datagram(i: number, size: number): Buffer {
  const b = Buffer.alloc(size, i & 0xff);
  b.writeUInt32BE(i, 0);
  return b;
}

test(
  'batched: 300 datagrams sent in one turn arrive intact and in order, in far fewer system calls',
  { skip: NO_ADDON },
  async () => {
    const [rx, tx] = await Promise.all([socket(), socket()]);
    const got: Buffer[] = [];
    rx.on('message', (m) => got.push(m));
    try {
      // Runs of equal sizes (GSO super-packets), a short one ending a run, and odd ones between.
      const sizes = Array.from({ length: 300 }, (_, i) => (i % 37 === 36 ? 200 + i : i % 50 === 49 ? 700 : 1400));
      const sent = sizes.map((s, i) => datagram(i, s));
      const before = { ...udpBatchStats };
      for (const d of sent) sendDatagram(tx, d, rx.address().port, '127.0.0.1');
      await receiveUntil(got, sent.length);
      assert.equal(got.length, sent.length);
      got.forEach((g, i) => assert.ok(g.equals(sent[i]), `datagram ${i} intact and in its place`));
      assert.equal(udpBatchStats.datagrams - before.datagrams, 300);
      assert.ok(
        udpBatchStats.calls - before.calls <= 5,
        `${udpBatchStats.calls - before.calls} calls for 300 datagrams`,
      );
      assert.equal(udpBatchStats.fallbacks, before.fallbacks);
    } finally {
      rx.close();
      tx.close();
    }
  },
);

test(
  'batched: a datagram the kernel refuses is reported to its sender, and the ones after it still go',
  { skip: NO_ADDON },
  async () => {
    const [rx, tx] = await Promise.all([socket(), socket()]);
    const got: Buffer[] = [];
    rx.on('message', (m) => got.push(m));
    const errors: string[] = [];
    try {
      sendDatagram(tx, datagram(1, 100), rx.address().port, '127.0.0.1', (c) => errors.push(`1 ${c}`));
      sendDatagram(tx, Buffer.alloc(70_000), rx.address().port, '127.0.0.1', (c) => errors.push(`big ${c}`));
      sendDatagram(tx, datagram(3, 100), rx.address().port, '127.0.0.1', (c) => errors.push(`3 ${c}`));
      await receiveUntil(got, 2);
      assert.deepEqual(errors, ['big EMSGSIZE']);
      assert.deepEqual(
        got.map((g) => g.readUInt32BE(0)),
        [1, 3],
      );
    } finally {
      rx.close();
      tx.close();
    }
  },
);

test(
  'batched: a connected socket whose peer is gone hears ECONNREFUSED (on a send or a read, as with node:dgram)',
  { skip: NO_ADDON },
  async () => {
    const gone = await socket();
    const port = gone.address().port;
    gone.close();
    const tx = dgram.createSocket('udp4');
    const errors: string[] = [];
    // The ICMP error is pending on the socket: libuv's next read takes it if it comes first.
    tx.on('error', (e: NodeJS.ErrnoException) => errors.push(`read ${e.code}`));
    await new Promise<void>((r) => tx.connect(port, '127.0.0.1', () => r()));
    try {
      for (let i = 0; i < 20 && errors.length < 3; i++) {
        sendDatagram(tx, datagram(i, 100), 0, '', (c) => errors.push(`send ${c}`));
        await sleep(20); // the ICMP port unreachable comes back
      }
      assert.ok(errors.length >= 3, JSON.stringify(errors));
      assert.ok(
        errors.every((e) => e.endsWith(' ECONNREFUSED')),
        JSON.stringify(errors),
      );
    } finally {
      tx.close();
    }
  },
);

test('batched: a socket closed before the turn ends drops its queue without a crash', { skip: NO_ADDON }, async () => {
  const [rx, tx] = await Promise.all([socket(), socket()]);
  const got: Buffer[] = [];
  rx.on('message', (m) => got.push(m));
  try {
    for (let i = 0; i < 10; i++) sendDatagram(tx, datagram(i, 500), rx.address().port, '127.0.0.1');
    tx.close();
    await sleep(50);
    assert.equal(got.length, 0);
  } finally {
    rx.close();
  }
});

test('an unbound socket (no fd yet) goes through node:dgram, and its datagrams arrive', async () => {
  const rx = await socket();
  const got: Buffer[] = [];
  rx.on('message', (m) => got.push(m));
  const tx = dgram.createSocket('udp4');
  try {
    const before = udpBatchStats.fallbacks;
    sendDatagram(tx, datagram(7, 300), rx.address().port, '127.0.0.1');
    assert.equal(udpBatchStats.fallbacks, before + 1);
    await receiveUntil(got, 1);
    assert.equal(got[0]?.readUInt32BE(0), 7);
  } finally {
    rx.close();
    tx.close();
  }
});

const DF_CASE = 'forceDontFragment: DF on bound IPv4 and IPv6 sockets, which still send; false unbound';
test(DF_CASE, { skip: NO_ADDON }, async () => {
  // The kernel's side is proved in test-netns/pmtu.test.ts (a black hole drops the big
  // datagrams of a GSO run instead of passing them as fragments); here: the call itself.
  const rx = await socket();
  const tx = await socket();
  const unbound = dgram.createSocket('udp4');
  const six = dgram.createSocket({ type: 'udp6', ipv6Only: true });
  const got: Buffer[] = [];
  rx.on('message', (m) => got.push(m));
  try {
    assert.equal(forceDontFragment(tx), true);
    assert.equal(forceDontFragment(unbound), false);
    const bound6 = await new Promise<boolean>((resolve) => {
      six.once('error', () => resolve(false));
      six.bind(0, '::1', () => resolve(true));
    });
    if (bound6) assert.equal(forceDontFragment(six), true);
    for (let i = 0; i < 20; i++) sendDatagram(tx, datagram(i, 1400), rx.address().port, '127.0.0.1');
    await receiveUntil(got, 20);
    assert.equal(got.length, 20);
  } finally {
    for (const s of [rx, tx, unbound, six]) s.close();
  }
});
