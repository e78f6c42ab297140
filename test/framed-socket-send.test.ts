/**
 * FramedSocket.sendDatagramFilled() reuses pooled record buffers: a buffer
 * must never be reused while the socket's write queue still holds it, or a
 * later record would overwrite bytes not yet sent. Real TCP on loopback, with
 * a reader slow enough that the write queue grows.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { FramedSocket, sendRecordPool } from '../src/transport/framed-socket.js';
import { FRAME_HEADER_LEN } from '../src/wire/frame.js';

const RECORD = 60_000;

/** Every byte of record `i` is a function of `i` and its offset. */
function fillRecord(i: number, body: Uint8Array): void {
  for (let k = 0; k < body.length; k++) body[k] = (i * 31 + k) & 0xff;
}

/** A loopback server handling each connection with `onConn`, and a FramedSocket connected to it. */
async function framedClient(
  t: { after: (fn: () => void) => void },
  onConn: (sock: net.Socket) => void,
): Promise<FramedSocket> {
  const server = net.createServer(onConn);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  const fs = FramedSocket.connect({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port });
  t.after(() => fs.socket.destroy());
  await once(fs.socket, 'connect');
  return fs;
}

test('records stay intact while their pooled buffers are reused behind a deep write queue', async (t) => {
  const N = 400;
  let checked = 0;
  let bad = -1;
  const fs = await framedClient(t, (sock) => {
    let pending = Buffer.alloc(0);
    sock.on('data', (d: Buffer) => {
      pending = Buffer.concat([pending, d]);
      while (pending.length >= FRAME_HEADER_LEN + RECORD) {
        const body = pending.subarray(FRAME_HEADER_LEN, FRAME_HEADER_LEN + RECORD);
        for (let k = 0; k < RECORD; k += 997) if (body[k] !== ((checked * 31 + k) & 0xff) && bad < 0) bad = checked;
        checked++;
        pending = pending.subarray(FRAME_HEADER_LEN + RECORD);
      }
      // A slow reader: the sender's kernel buffer fills and records wait in its write queue.
      sock.pause();
      setTimeout(() => sock.resume(), 1);
    });
  });

  const reusedBefore = sendRecordPool.reused;
  let sent = 0;
  let maxQueued = 0;
  // Bursts of 40 records without waiting for 'drain', as a KCP flush writes
  // what its window allows at once; the window keeps about 4 MB unacknowledged.
  const sendDeadline = Date.now() + 20_000;
  while (sent < N && Date.now() < sendDeadline) {
    if (fs.socket.writableLength > 4_000_000) {
      await new Promise((r) => setTimeout(r, 2));
      continue;
    }
    for (let k = 0; k < 40 && sent < N; k++, sent++) {
      const i = sent;
      fs.sendDatagramFilled(RECORD, (body) => fillRecord(i, body));
    }
    maxQueued = Math.max(maxQueued, fs.socket.writableLength);
    await new Promise((r) => setTimeout(r, 2));
  }
  const deadline = Date.now() + 20_000;
  while (checked < N && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));

  assert.equal(checked, N, 'every record arrived');
  assert.equal(bad, -1, `record ${bad} arrived overwritten`);
  assert.ok(maxQueued > 4 * RECORD, `the write queue grew (${maxQueued} bytes), so buffers waited in it`);
  assert.ok(sendRecordPool.reused - reusedBefore > N / 4, 'buffers were reused');
});

test('a fill that throws sends nothing, and the stream of records goes on', async (t) => {
  const chunks: Buffer[] = [];
  const fs = await framedClient(t, (sock) => sock.on('data', (d: Buffer) => chunks.push(d)));

  assert.throws(
    () =>
      fs.sendDatagramFilled(100, () => {
        throw new RangeError('fill failed');
      }),
    RangeError,
  );
  fs.sendDatagramFilled(3, (body) => body.set([7, 8, 9]));
  const deadline = Date.now() + 5000;
  while (Buffer.concat(chunks).length < FRAME_HEADER_LEN + 3 && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 5));
  const all = Buffer.concat(chunks);
  assert.equal(all.length, FRAME_HEADER_LEN + 3, 'only the second record went out');
  assert.deepEqual([...all.subarray(FRAME_HEADER_LEN)], [7, 8, 9]);
});
