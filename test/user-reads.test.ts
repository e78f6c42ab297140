/**
 * src/transport/user-reads.ts on real loopback TCP: an accepted socket moved
 * to net's onread (switchToUserReads) keeps every byte in order, including
 * what the old object had buffered; sockets that cannot move are left as they
 * were; ReadTarget keeps early chunks (by copy) and pauses until a consumer
 * takes over.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import {
  ReadTarget,
  canSwitchToUserReads,
  sharedReadBuffer,
  switchToUserReads,
  userReadOptions,
} from '../src/transport/user-reads.js';
import { bridgeUserReads } from '../src/session/bridge.js';
import type { MuxStream } from '../src/mux/index.js';
import { createMuxPair, readAll, withTimeout } from './mux-harness.js';
import { sleep, waitFor } from './helpers/wait.js';
import { connectPair, listen } from './helpers/sockets.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

function getConnections(server: net.Server): Promise<number> {
  return new Promise((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n))));
}

test('switchToUserReads: bytes buffered before the move and sent after it arrive exact and in order', async (t) => {
  const server = await listen(t);
  const { client, accepted } = await connectPair(t, server);
  const data = randomBytes(3 * 1024 * 1024);
  const before = data.subarray(0, 1024 * 1024);
  const after = data.subarray(before.length);

  // Written before the move: the accepted socket reads up to its high-water
  // mark into its own buffer (no 'data' listener, nobody consumes it).
  client.write(before);
  await waitFor(() => accepted.readableLength >= accepted.readableHighWaterMark, 5000, 'the old socket buffered data');
  assert.equal(await getConnections(server), 1);

  const parts: Buffer[] = [];
  let chunks = 0;
  let notShared = 0;
  const moved = switchToUserReads(accepted, (chunk) => {
    chunks++;
    // The chunk must be a view of the shared read buffer (net's onread in use)...
    if (chunk.buffer !== sharedReadBuffer().buffer) notShared++;
    // ...and is only valid during this call: keep a copy.
    parts.push(Buffer.from(chunk));
    return true;
  });
  assert.ok(moved, 'an accepted TCP socket with nothing queued can move');
  assert.notEqual(moved.socket, accepted, 'a new socket object');
  const restBytes = moved.rest.reduce((n, c) => n + c.length, 0);
  assert.ok(restBytes > 0, 'what the old object had buffered comes back in rest');
  assert.ok(restBytes < before.length, 'the old object stopped reading at its high-water mark');
  assert.equal(accepted.destroyed, true, 'the old object is destroyed');

  const ended = once(moved.socket, 'end');
  client.end(after);
  await withTimeout(ended, 15_000, 'end on the moved socket');

  const got = Buffer.concat([...moved.rest, ...parts]);
  assert.equal(got.length, data.length);
  assert.equal(sha(got), sha(data), 'bytes lost, duplicated or reordered across the move');
  assert.ok(chunks > 0);
  assert.equal(notShared, 0, 'every chunk was read into sharedReadBuffer()');

  const closed = once(moved.socket, 'close');
  moved.socket.end();
  await withTimeout(closed, 5000, 'close of the moved socket');
  assert.equal(await getConnections(server), 0, 'the server no longer counts the connection');
  assert.equal(accepted.destroyed, true);
});

test('switchToUserReads keeps allowHalfOpen: the moved socket replies after the client ended its side', async (t) => {
  const server = await listen(t, { allowHalfOpen: true });
  const { client, accepted } = await connectPair(t, server);
  const received: Buffer[] = [];
  const moved = switchToUserReads(accepted, (chunk) => {
    received.push(Buffer.from(chunk));
    return true;
  });
  assert.ok(moved);
  assert.equal(moved.socket.allowHalfOpen, true);

  const fromServer: Buffer[] = [];
  client.on('data', (c: Buffer) => fromServer.push(c));
  const clientEnded = once(client, 'end');
  const serverGotEnd = once(moved.socket, 'end');
  client.end('request');
  await withTimeout(serverGotEnd, 5000, 'FIN on the moved socket');
  assert.equal(Buffer.concat([...moved.rest, ...received]).toString(), 'request');

  // Half-open: our write side is still open after the peer's FIN (with
  // allowHalfOpen false Node ends it on 'end' and this write would fail).
  await sleep(20);
  assert.equal(moved.socket.writable, true, 'write side still open after the peer FIN');
  const errors: Error[] = [];
  moved.socket.on('error', (e) => errors.push(e));
  moved.socket.end('reply after your FIN');
  await withTimeout(clientEnded, 5000, 'client end');
  assert.equal(Buffer.concat(fromServer).toString(), 'reply after your FIN');
  assert.deepEqual(errors, []);
});

test('canSwitchToUserReads is false with writes queued; the socket is left untouched and works', async (t) => {
  const server = await listen(t);
  const { client, accepted } = await connectPair(t, server);
  // The client does not read yet, so the kernel buffers fill and the rest stays queued in the socket.
  const big = randomBytes(32 * 1024 * 1024);
  accepted.write(big);
  await sleep(50);
  assert.ok(accepted.writableLength > 0, 'precondition: a write is still queued');
  assert.equal(canSwitchToUserReads(accepted), false);
  let called = 0;
  assert.equal(
    switchToUserReads(accepted, () => (called++, true)),
    null,
  );
  assert.equal(accepted.destroyed, false);
  assert.equal(accepted.readyState, 'open');

  // Still the same working socket: the queued write completes, and reads
  // arrive through its 'data' events, not through the handler.
  const hash = createHash('sha256');
  let n = 0;
  client.on('data', (c: Buffer) => {
    hash.update(c);
    n += c.length;
  });
  await waitFor(() => n === big.length, 15_000, 'client got the queued write');
  assert.equal(hash.digest('hex'), sha(big));
  const gotPing = once(accepted, 'data');
  client.write('ping');
  const [chunk] = (await withTimeout(gotPing, 5000, 'data on the untouched socket')) as [Buffer];
  assert.equal(chunk.toString(), 'ping');
  assert.equal(called, 0);
  assert.equal(await getConnections(server), 1, 'the server still counts it');
});

test('canSwitchToUserReads is false once the end of stream was read, even before anyone consumed it', async (t) => {
  const server = await listen(t);
  const { client, accepted } = await connectPair(t, server);
  client.end('abc');
  // Nobody consumes the data: the EOF is read into the stream state but 'end' is not emitted yet.
  await waitFor(() => accepted.readableLength === 3, 5000, 'data buffered');
  await sleep(100); // the FIN follows the data at once on loopback
  assert.equal(accepted.readableEnded, false, 'precondition: end not emitted yet');
  assert.equal(canSwitchToUserReads(accepted), false, 'the read EOF would be lost with the old object');
  assert.equal(
    switchToUserReads(accepted, () => true),
    null,
  );
  assert.equal(accepted.destroyed, false);

  // Untouched: the data and the end are still there.
  const parts: Buffer[] = [];
  accepted.on('data', (c: Buffer) => parts.push(c));
  await withTimeout(once(accepted, 'end'), 5000, 'end on the untouched socket');
  assert.equal(Buffer.concat(parts).toString(), 'abc');
  assert.equal(accepted.readableEnded, true);
  assert.equal(canSwitchToUserReads(accepted), false, 'after end too');
  accepted.destroy();
  assert.equal(canSwitchToUserReads(accepted), false, 'destroyed');
});

test('userReadOptions with net.connect: chunks come to the callback in sharedReadBuffer()', async (t) => {
  const server = await listen(t);
  const data = randomBytes(4 * 1024 * 1024);
  server.on('connection', (s: net.Socket) => {
    s.on('error', () => {});
    s.end(data);
  });
  const parts: Buffer[] = [];
  let notShared = 0;
  let maxChunk = 0;
  const client = net.connect({
    port: (server.address() as AddressInfo).port,
    host: '127.0.0.1',
    onread: userReadOptions((chunk) => {
      if (chunk.buffer !== sharedReadBuffer().buffer || chunk.byteOffset !== 0) notShared++;
      maxChunk = Math.max(maxChunk, chunk.length);
      parts.push(Buffer.from(chunk));
      return true;
    }),
  });
  client.on('error', () => {});
  t.after(() => client.destroy());
  await withTimeout(once(client, 'end'), 15_000, 'end of the download');
  const got = Buffer.concat(parts);
  assert.equal(got.length, data.length);
  assert.equal(sha(got), sha(data));
  assert.equal(notShared, 0, 'every chunk is a view at the start of sharedReadBuffer()');
  assert.ok(maxChunk <= sharedReadBuffer().length);
  assert.equal(client.readableLength, 0, 'nothing went through the stream buffer');
});

test('ReadTarget: early chunks are copied and reading pauses until a handler is set; the rest follows', async (t) => {
  const server = await listen(t);
  const data = randomBytes(4 * 1024 * 1024);
  server.on('connection', (s: net.Socket) => {
    s.on('error', () => {});
    s.end(data);
  });
  const target = new ReadTarget();
  const client = net.connect({
    port: (server.address() as AddressInfo).port,
    host: '127.0.0.1',
    onread: userReadOptions(target.onChunk),
  });
  client.on('error', () => {});
  t.after(() => client.destroy());

  await waitFor(() => target.early.length > 0, 5000, 'an early chunk');
  const earlyCount = () => target.early.length;
  const earlyBytes = () => target.early.reduce((n, c) => n + c.length, 0);
  const count0 = earlyCount();
  const bytes0 = earlyBytes();
  // Paused: nothing more is read while no handler is set, although the server keeps sending.
  await sleep(200);
  assert.equal(earlyCount(), count0, 'reading did not pause after the early chunk');
  assert.equal(earlyBytes(), bytes0);
  assert.ok(bytes0 < data.length, 'the socket paused before the end of the data');
  for (const c of target.early) assert.notEqual(c.buffer, sharedReadBuffer().buffer, 'an early chunk must be a copy');

  const parts: Buffer[] = [];
  target.handler = (chunk) => {
    parts.push(Buffer.from(chunk));
    return true;
  };
  const ended = once(client, 'end');
  client.resume();
  await withTimeout(ended, 15_000, 'end after resume');
  const got = Buffer.concat([...target.early, ...parts]);
  assert.equal(got.length, data.length);
  assert.equal(sha(got), sha(data), 'early copies and later chunks together are the exact stream');
});

// ------------------------------------------------------------------ bridgeUserReads (the visit path)

test('bridgeUserReads: an accepted socket on user reads reaches a mux stream exact, rest first, end', async (t) => {
  const server = await listen(t, { allowHalfOpen: true });
  const { client, accepted } = await connectPair(t, server);
  const p = createMuxPair();
  t.after(() => p.close());
  const data = randomBytes(3 * 1024 * 1024);
  // Some bytes are buffered in the old object before the move (they come back as rest).
  client.write(data.subarray(0, 100_000));
  await waitFor(() => accepted.readableLength > 0, 5000, 'buffered before the move');
  const target = new ReadTarget();
  const moved = switchToUserReads(accepted, target.onChunk);
  assert.ok(moved);
  assert.ok(moved.rest.length > 0);
  moved.socket.on('error', () => {});
  t.after(() => moved.socket.destroy());
  const acceptedStream = new Promise<MuxStream>((r) => p.b.once('stream', r));
  const s = p.a.openStream();
  s.on('error', () => {});
  const done = bridgeUserReads(moved.socket, target, s, moved.rest);
  const far = await withTimeout(acceptedStream, 5000, 'stream at the far mux');
  const got = readAll(far);
  client.end(data.subarray(100_000));
  const received = await withTimeout(got, 20_000, 'all bytes and FIN through the mux');
  assert.equal(received.length, data.length);
  assert.equal(sha(received), sha(data));
  // The other way, after the client's FIN (half-close): the far side answers and ends.
  const back: Buffer[] = [];
  client.on('data', (c: Buffer) => back.push(c));
  const clientEnded = once(client, 'end');
  far.end('answer after FIN');
  await withTimeout(clientEnded, 5000, 'answer reaches the client');
  assert.equal(Buffer.concat(back).toString(), 'answer after FIN');
  await withTimeout(done, 5000, 'bridge finished');
});

// ReadTarget's default handler stops reading by returning false from onread,
// which makes Node call readStop() without marking the stream paused. So
// bridgeUserReads() must restart reading itself after a small early chunk (a
// server banner), not only `if (sock.isPaused())`, or the socket never reads
// again.
test('bridgeUserReads after ReadTarget kept a small early chunk: reading restarts and the rest arrives', async (t) => {
  const server = await listen(t);
  const later = randomBytes(1024 * 1024);
  server.on('connection', (sock: net.Socket) => {
    sock.on('error', () => {});
    sock.write('SSH-2.0-banner\r\n');
    setTimeout(() => sock.end(later), 200).unref();
  });
  const target = new ReadTarget();
  const sock = net.connect({
    port: (server.address() as AddressInfo).port,
    host: '127.0.0.1',
    allowHalfOpen: true,
    onread: userReadOptions(target.onChunk),
  });
  sock.on('error', () => {});
  t.after(() => sock.destroy());
  await waitFor(() => target.early.length > 0, 5000, 'the banner arrived before the bridge');
  const p = createMuxPair();
  t.after(() => p.close());
  const acceptedStream = new Promise<MuxStream>((r) => p.b.once('stream', r));
  const s = p.a.openStream();
  s.on('error', () => {});
  void bridgeUserReads(sock, target, s);
  const far = await withTimeout(acceptedStream, 5000, 'stream at the far mux');
  const received = await withTimeout(readAll(far), 3000, 'the bytes after the banner');
  assert.equal(sha(received), sha(Buffer.concat([Buffer.from('SSH-2.0-banner\r\n'), later])));
});
