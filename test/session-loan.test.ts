/**
 * The receive side of the zero-allocation bulk path: a relay record is opened
 * into a pooled block that is lent down KCP, the mux and a stream's sink, and
 * goes back to the pool when the call returns unless a consumer kept a view
 * (src/util/loan.ts). Real Sessions over an in-memory relay-sized path.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Session } from '../src/session/session.js';
import { MemPath } from './helpers/mem-path.js';
import { cryptoReady } from '../src/crypto/index.js';
import { MAX_RELAY_DATAGRAM_LEN } from '../src/wire/datagram.js';
import type { MuxStream } from '../src/mux/index.js';
import { nullLogger } from '../src/util/log.js';
import { keepLoan } from '../src/util/loan.js';
import { withTimeout } from './mux-harness.js';
import { sessionKeys } from './helpers/session-keys.js';

await cryptoReady();

function pair(): { a: Session; b: Session; close(): void } {
  const k = sessionKeys('session-loan test');
  const a = new Session({ keys: k.visitor, role: 'visitor', log: nullLogger, sid: 'loan-a' });
  const b = new Session({ keys: k.server, role: 'server', log: nullLogger, sid: 'loan-b' });
  const pa = new MemPath('relay', 'relay-a', MAX_RELAY_DATAGRAM_LEN);
  const pb = new MemPath('relay', 'relay-b', MAX_RELAY_DATAGRAM_LEN);
  pa.peer = { session: b, path: pb };
  pb.peer = { session: a, path: pa };
  a.setPath(pa.kind, pa);
  b.setPath(pb.kind, pb);
  return {
    a,
    b,
    close() {
      for (const s of [a, b]) {
        for (const st of s.mux.openStreams()) st.on('error', () => {});
        s.close('test over');
      }
      pa.close();
      pb.close();
    },
  };
}

/**
 * Sends `data` from a to b on one stream, written with writeTransient from one
 * reused buffer (as a local socket's shared read buffer would be), and hands
 * each arriving payload to `onChunk` through the stream's sink.
 */
async function transfer(data: Buffer, onChunk: (chunk: Uint8Array) => void): Promise<void> {
  const { a, b, close } = pair();
  try {
    const ended = new Promise<void>((resolve, reject) => {
      b.mux.on('stream', (s: MuxStream) => {
        s.attachSink({
          write(chunk) {
            onChunk(chunk);
            return true;
          },
        });
        s.once('end', resolve);
        s.once('error', reject);
      });
    });
    const out = a.mux.openStream();
    const scratch = Buffer.alloc(200 * 1024);
    for (let pos = 0; pos < data.length;) {
      const n = Math.min(scratch.length, data.length - pos);
      data.copy(scratch, 0, pos, pos + n);
      const more = out.writeTransient(scratch.subarray(0, n));
      scratch.fill(0x5a); // the "read buffer" is reused at once
      pos += n;
      if (!more) await new Promise((r) => out.once('sendable', r));
    }
    out.end();
    await withTimeout(ended, 60_000, 'transfer did not finish');
  } finally {
    close();
  }
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

test('a sink that copies what it needs gets every byte exact while blocks are reused', async () => {
  const data = randomBytes(24 * 1024 * 1024);
  const got = Buffer.alloc(data.length);
  let at = 0;
  let largest = 0;
  await transfer(data, (chunk) => {
    got.set(chunk, at);
    at += chunk.length;
    largest = Math.max(largest, chunk.length);
  });
  assert.equal(at, data.length);
  assert.ok(largest > 32 * 1024, `payloads came in relay-sized records (largest ${largest})`);
  assert.equal(sha(got), sha(data));
});

test('a sink that keeps views and says so (keepLoan) still has them intact at the end', async () => {
  const data = randomBytes(12 * 1024 * 1024);
  const kept: Uint8Array[] = [];
  await transfer(data, (chunk) => {
    kept.push(chunk);
    keepLoan();
  });
  assert.equal(sha(Buffer.concat(kept)), sha(data));
});

test('control: views kept without keepLoan are overwritten, so blocks really are reused', async () => {
  // The contract's other half. If this ever passes with intact data, received
  // blocks stopped going back to the pool and the path allocates again.
  const data = randomBytes(12 * 1024 * 1024);
  const kept: Uint8Array[] = [];
  await transfer(data, (chunk) => kept.push(chunk));
  const joined = Buffer.concat(kept);
  assert.equal(joined.length, data.length);
  assert.notEqual(sha(joined), sha(data));
});

test('without a sink, chunks go through the Readable and are never reused under a reader that keeps them', async () => {
  const { a, b, close } = pair();
  try {
    const data = randomBytes(8 * 1024 * 1024);
    const got = new Promise<Buffer>((resolve, reject) => {
      b.mux.on('stream', (s: MuxStream) => {
        const chunks: Buffer[] = [];
        s.on('data', (c: Buffer) => chunks.push(c)); // kept, uncopied, until the end
        s.once('end', () => resolve(Buffer.concat(chunks)));
        s.once('error', reject);
      });
    });
    const out = a.mux.openStream();
    out.end(data);
    assert.equal(sha(await withTimeout(got, 60_000, 'transfer did not finish')), sha(data));
  } finally {
    close();
  }
});

test('a datagram too large for any path is refused, not thrown on, and the session goes on', async () => {
  const { a, b, close } = pair();
  try {
    const path = b.path!;
    for (const n of [MAX_RELAY_DATAGRAM_LEN + 1, 70_000, 1 << 20]) {
      const junk = randomBytes(n);
      assert.equal(b.receive(junk, path), false, `${n} bytes`);
    }
    assert.equal(b.closed, false);
    // Still carries data afterwards.
    const got = new Promise<Buffer>((resolve, reject) => {
      b.mux.on('stream', (s: MuxStream) => {
        const chunks: Buffer[] = [];
        s.on('data', (c: Buffer) => chunks.push(c));
        s.once('end', () => resolve(Buffer.concat(chunks)));
        s.once('error', reject);
      });
    });
    const data = randomBytes(200_000);
    a.mux.openStream().end(data);
    assert.equal(sha(await withTimeout(got, 30_000, 'transfer after junk')), sha(data));
  } finally {
    close();
  }
});
