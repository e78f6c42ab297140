import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { receiveBatched } from '../src/transport/batched-receive.js';
import { udpBatchingAvailable } from '../src/transport/batched-udp.js';
import { sleep } from '../src/util/backoff.js';

// Real sockets on loopback. Without the addon the batched cases skip, saying so.
const NO_ADDON = udpBatchingAvailable()
  ? false
  : 'the optional addon native/udp-batch is not built here (no compiler at install, or PEER_UDP_BATCH=0)';

function bound(type: 'udp4' | 'udp6' = 'udp4', port = 0): Promise<dgram.Socket> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket({ type, recvBufferSize: 8 << 20, ipv6Only: type === 'udp6' });
    s.once('error', reject);
    s.bind(port, type === 'udp6' ? '::1' : '127.0.0.1', () => resolve(s));
  });
}

/** Closes what is still open (a test that failed midway must not keep the process alive). */
function closeAll(...sockets: dgram.Socket[]): void {
  for (const s of sockets) {
    try {
      s.close();
    } catch {
      // closed already
    }
  }
}

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  for (let i = 0; i < ms / 10 && !cond(); i++) await sleep(10);
}

test(
  'batched receive: 300 mixed-size datagrams arrive once each, intact, in order, with the sender address',
  { skip: NO_ADDON },
  async () => {
    const rx = await bound();
    const tx = await bound();
    const got: [Buffer, dgram.RemoteInfo][] = [];
    let viaEvent = 0;
    rx.on('message', () => viaEvent++);
    const r = receiveBatched(rx, (msg, rinfo) => got.push([msg, rinfo]));
    try {
      assert.ok(r, 'receiveBatched refused a bound socket');
      const sizes = Array.from({ length: 300 }, (_, i) => [1, 100, 1472, 700, 2048][i % 5]);
      for (let i = 0; i < sizes.length; i++) {
        const b = Buffer.alloc(sizes[i], i & 0xff);
        if (sizes[i] >= 4) b.writeUInt16BE(i, 0);
        tx.send(b, rx.address().port, '127.0.0.1');
        if (i % 50 === 49) await sleep(1);
      }
      await until(() => got.length >= sizes.length);
      assert.equal(got.length, sizes.length);
      assert.equal(viaEvent, 0, "libuv still read the socket: some datagrams came as 'message' events");
      for (let i = 0; i < sizes.length; i++) {
        const [msg, rinfo] = got[i];
        assert.equal(msg.length, sizes[i], `datagram ${i}: size`);
        if (sizes[i] >= 4) assert.equal(msg.readUInt16BE(0), i, `datagram ${i}: out of order`);
        assert.equal(msg.at(-1), i & 0xff, `datagram ${i}: content`);
        assert.deepEqual(rinfo, { address: '127.0.0.1', family: 'IPv4', port: tx.address().port, size: sizes[i] });
      }
      // Each datagram is its own memory: a handler may keep it.
      assert.notEqual(got[0][0].buffer, got[5][0].buffer);
    } finally {
      rx.close();
      tx.close();
    }
  },
);

test(
  'batched receive: a datagram above the slot size is dropped and counted, the next one arrives',
  { skip: NO_ADDON },
  async (t) => {
    const rx = await bound();
    const tx = await bound();
    t.after(() => closeAll(rx, tx));
    const got: Buffer[] = [];
    const r = receiveBatched(rx, (msg) => got.push(msg), 512);
    assert.ok(r);
    tx.send(Buffer.alloc(1000, 1), rx.address().port, '127.0.0.1');
    tx.send(Buffer.alloc(512, 2), rx.address().port, '127.0.0.1');
    await until(() => got.length >= 1);
    await sleep(20);
    assert.deepEqual(
      got.map((b) => [b.length, b[0]]),
      [[512, 2]],
    );
    closeAll(rx, tx);
    await sleep(10);
    assert.equal(r.truncated, 1);
  },
);

test('batched receive: IPv6 senders are reported as Node does', { skip: NO_ADDON }, async (t) => {
  const rx = await bound('udp6').catch(() => null);
  if (!rx) return t.skip('no IPv6 loopback here');
  const tx = await bound('udp6');
  t.after(() => closeAll(rx, tx));
  const got: dgram.RemoteInfo[] = [];
  receiveBatched(rx, (_m, rinfo) => got.push(rinfo));
  tx.send(Buffer.from('hello'), rx.address().port, '::1');
  await until(() => got.length >= 1);
  assert.deepEqual(got, [{ address: '::1', family: 'IPv6', port: tx.address().port, size: 5 }]);
});

test(
  'batched receive: closing the socket releases its port (the dup is closed) and stops delivery',
  { skip: NO_ADDON },
  async (t) => {
    const rx = await bound();
    const port = rx.address().port;
    const got: Buffer[] = [];
    assert.ok(receiveBatched(rx, (m) => got.push(m)));
    await new Promise<void>((resolve) => rx.close(() => resolve()));
    await sleep(20);
    // Bound again at once: nothing holds the old socket open.
    const again = await bound('udp4', port);
    const tx = await bound();
    t.after(() => closeAll(again, tx));
    tx.send(Buffer.from('x'), port, '127.0.0.1');
    await sleep(50);
    assert.equal(got.length, 0, 'the closed receiver delivered');
  },
);

test('receiveBatched on an unbound socket returns null (the caller keeps its message listener)', () => {
  const s = dgram.createSocket('udp4');
  assert.equal(
    receiveBatched(s, () => {}),
    null,
  );
  s.close();
});
