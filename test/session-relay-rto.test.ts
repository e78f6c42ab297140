/**
 * KCP's retransmission timeout on the relay. The relay is TCP: nothing sent
 * on it is lost while the connection lives, so a timeout there only means
 * queueing delay, and a resend is a duplicate 64 KiB record. Two real
 * Sessions joined by an in-order in-memory path whose delay jumps from 2 ms
 * to 250 ms mid-transfer (a queue building up in the relay chain): over a
 * UDP-kind path that provokes timeout resends (the control: the scenario
 * bites), over the relay it must provoke none, and the bytes arrive exact.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Session } from '../src/session/session.js';
import type { PathKind } from '../src/session/path.js';
import { MemPath } from './helpers/mem-path.js';
import { cryptoReady } from '../src/crypto/index.js';
import { MAX_DATAGRAM_LEN, MAX_RELAY_DATAGRAM_LEN } from '../src/wire/datagram.js';
import type { MuxStream } from '../src/mux/index.js';
import { nullLogger } from '../src/util/log.js';
import { readAll, withTimeout } from './mux-harness.js';
import { sessionKeys } from './helpers/session-keys.js';
import { sleep } from '../src/util/backoff.js';

await cryptoReady();

/** Sends `size` bytes a -> b on one stream; halfway the path's delay jumps. Returns a's timeout resends. */
async function transferWithDelayJump(kind: PathKind, size: number): Promise<number> {
  const k = sessionKeys('session-relay-rto test');
  const a = new Session({ keys: k.visitor, role: 'visitor', log: nullLogger, sid: 'rto-a' });
  const b = new Session({ keys: k.server, role: 'server', log: nullLogger, sid: 'rto-b' });
  const max = kind === 'relay' ? MAX_RELAY_DATAGRAM_LEN : MAX_DATAGRAM_LEN;
  const pa = new MemPath(kind, 'a', max, { delayMs: 2 });
  const pb = new MemPath(kind, 'b', max, { delayMs: 2 });
  pa.peer = { session: b, path: pb };
  pb.peer = { session: a, path: pa };
  a.setPath(pa.kind, pa);
  b.setPath(pb.kind, pb);
  try {
    const data = randomBytes(size);
    const got = new Promise<Buffer>((resolve) => b.mux.on('stream', (s: MuxStream) => resolve(readAll(s))));
    const out = a.mux.openStream();
    const half = size >> 1;
    out.write(data.subarray(0, half));
    // Let the first half flow on the fast path, so KCP's RTO is measured small.
    await withTimeout(new Promise<void>((r) => out.write(Buffer.alloc(0), () => r())), 20_000, 'first half not taken');
    await sleep(100);
    pa.delayMs = pb.delayMs = 250;
    out.end(data.subarray(half));
    const received = await withTimeout(got, 30_000, 'transfer did not finish');
    assert.equal(sha(received), sha(data), `${kind}: every byte, in order`);
    return a.kcp.snapshot().xmit;
  } finally {
    for (const s of [a, b]) {
      for (const st of s.mux.openStreams()) st.on('error', () => {});
      s.close('test over');
    }
    pa.close();
    pb.close();
  }
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

test('a delay jump on a UDP path makes KCP resend on timeout (the scenario bites)', async () => {
  const resends = await transferWithDelayJump('direct', 2 * 1024 * 1024);
  assert.ok(resends > 0, 'KCP timed out segments that were only delayed');
});

test('the same delay jump on the relay resends nothing: TCP does not lose, so a timeout is only a queue', async () => {
  const resends = await transferWithDelayJump('relay', 16 * 1024 * 1024);
  assert.equal(resends, 0);
});
