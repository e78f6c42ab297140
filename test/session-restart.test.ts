/**
 * A session whose direct path died with data in flight, and a new direct
 * path after seconds of silence (a roaming peer): two real Sessions joined by
 * in-memory paths. KCP's timeouts backed off during the silence, and the
 * first datagrams on the new path are lost (a NAT not open yet). The data
 * must still arrive within a few round trips of the new path, not at the
 * backed-off timeout (Session.setPath -> Kcp.restartRetransmits).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import type { MuxStream } from '../src/mux/index.js';
import { Session, type SessionOptions } from '../src/session/session.js';
import { cryptoReady } from '../src/crypto/index.js';
import { MAX_DATAGRAM_LEN } from '../src/wire/datagram.js';
import { createLogger, nullLogger } from '../src/util/log.js';
import { sleep } from '../src/util/backoff.js';
import { sessionKeys } from './helpers/session-keys.js';
import { MemPath } from './helpers/mem-path.js';
import { readAll, withTimeout } from './mux-harness.js';

await cryptoReady();

/** Long enough for KCP's timeouts (nodelay, ~30 ms RTO) to back off past a second. */
const SILENCE_MS = 4000;
/** Datagrams the new path loses first (the whole first resend of the few segments in flight). */
const LOST_FIRST = 40;

/** A path pair a <-> b with a one-way delay; `loseFirst` datagrams from a's end are lost first. */
function pathPair(a: Session, b: Session, name: string, loseFirst = 0): { atA: MemPath; atB: MemPath } {
  let toLose = loseFirst;
  const atA = new MemPath('direct', `${name}-a`, MAX_DATAGRAM_LEN, {
    delayMs: 2,
    loss: loseFirst ? 1 : 0,
    rng: () => (toLose-- > 0 ? 0 : 1),
  });
  const atB = new MemPath('direct', `${name}-b`, MAX_DATAGRAM_LEN, { delayMs: 2 });
  atA.peer = { session: b, path: atB };
  atB.peer = { session: a, path: atA };
  return { atA, atB };
}

/**
 * Two sessions on one direct path pair, a stream from a to b whose first
 * 1000 bytes are through and acknowledged (an RTT sample, as on a path that
 * worked). `got`: everything b reads on that stream.
 */
async function connectedPair(t: { after: (f: () => void) => void }, name: string, opts: Partial<SessionOptions> = {}) {
  const keys = sessionKeys(`session-${name} test`);
  const common = { log: nullLogger, ...opts };
  const a = new Session({ keys: keys.visitor, role: 'visitor', sid: `${name}-a`, ...common });
  const b = new Session({ keys: keys.server, role: 'server', sid: `${name}-b`, ...common });
  const old = pathPair(a, b, 'old');
  const paths = [old.atA, old.atB];
  t.after(() => {
    for (const s of [a, b]) {
      for (const st of s.mux.openStreams()) st.on('error', () => {});
      s.close('test over');
    }
    for (const p of paths) p.close();
  });
  a.setPath('direct', old.atA);
  b.setPath('direct', old.atB);
  const got = new Promise<Buffer>((resolve, reject) => {
    b.mux.once('stream', (s: MuxStream) => {
      readAll(s).then(resolve, reject);
    });
  });
  const stream = a.mux.openStream();
  stream.write(Buffer.alloc(1000, 1));
  await withTimeout(
    (async () => {
      while (a.kcp.inFlight > 0 || a.kcp.waitSnd() > 0) await sleep(5);
    })(),
    2000,
    'the first message acknowledged',
  );
  return { a, b, old, paths, got, stream };
}

test('a new path after a silence: the data in flight arrives within round trips, not at the backoff', async (t) => {
  const { a, b, old, paths, got, stream } = await connectedPair(t, 'restart');

  // The path dies under a write: nothing from a reaches b any more.
  old.atA.close();
  a.setPath('direct', null);
  const data = Buffer.alloc(20_000, 2);
  stream.end(data);
  await sleep(SILENCE_MS);
  assert.ok(a.kcp.inFlight > 0, 'the data is still in flight after the silence');
  assert.ok(!a.closed, 'the session lives');

  // A new path (the peer at a new address): its first datagrams from a are lost.
  const neu = pathPair(a, b, 'new', LOST_FIRST);
  paths.push(neu.atA, neu.atB);
  b.setPath('direct', neu.atB);
  const t0 = performance.now();
  a.setPath('direct', neu.atA);
  const all = await withTimeout(got, 20_000, 'the data at b');
  const ms = performance.now() - t0;
  assert.equal(all.length, 1000 + data.length);
  assert.ok(all.subarray(1000).equals(data), 'the bytes, exact');
  assert.ok(neu.atA.stats.lost >= 1, 'the first resend was lost');
  assert.ok(ms < 1000, `the data arrived ${Math.round(ms)} ms after the new path`);
});

test('an outage outlasting KCP dead_link: the session waits for its deadline, and resumes within it', async (t) => {
  const events: string[] = [];
  const log = createLogger({ format: 'json', level: 'debug', sink: { write: (l) => void events.push(l) } });
  const { a, b, old, paths, got, stream } = await connectedPair(t, 'outage', {
    log,
    deadAfterMs: 6000,
    silenceCode: 'resume_timeout',
  });
  // Every path gone (both ends); KCP gives up after 3 transmissions, which it reaches in well under a second.
  a.kcp.setDeadLink(3);
  for (const p of [old.atA, old.atB]) p.close();
  a.setPath('direct', null);
  b.setPath('direct', null);
  const data = Buffer.alloc(20_000, 2);
  stream.end(data);
  await sleep(3000);
  const outage = events.filter((l) => l.includes('"dead_link_outage"'));
  assert.ok(outage.length >= 1, 'KCP reached dead_link during the outage');
  assert.ok(!a.closed, 'the session lives on');
  // A path again, within the deadline: the data arrives, exact.
  const neu = pathPair(a, b, 'new');
  paths.push(neu.atA, neu.atB);
  b.setPath('direct', neu.atB);
  a.setPath('direct', neu.atA);
  const all = await withTimeout(got, 10_000, 'the data at b');
  assert.ok(all.subarray(1000).equals(data), 'the bytes, exact');
});

test('an outage that outlasts the silence deadline ends the session with its code, not before', async (t) => {
  const keys = sessionKeys('session-outage-end test');
  const opts = { log: nullLogger, deadAfterMs: 2500, silenceCode: 'resume_timeout' as const };
  const a = new Session({ keys: keys.visitor, role: 'visitor', sid: 'end-a', ...opts });
  const b = new Session({ keys: keys.server, role: 'server', sid: 'end-b', ...opts });
  const old = pathPair(a, b, 'old');
  t.after(() => {
    for (const s of [a, b]) {
      for (const st of s.mux.openStreams()) st.on('error', () => {});
      s.close('test over');
    }
  });
  a.setPath('direct', old.atA);
  b.setPath('direct', old.atB);
  const stream = a.mux.openStream();
  stream.on('error', () => {});
  a.kcp.setDeadLink(2);
  for (const p of [old.atA, old.atB]) p.close();
  a.setPath('direct', null);
  b.setPath('direct', null);
  const t0 = performance.now();
  const closed = new Promise<[string, string | null]>((resolve) =>
    a.once('close', (reason: string, code: string | null) => resolve([reason, code])),
  );
  stream.write(Buffer.alloc(5000, 3));
  const [, code] = await withTimeout(closed, 8000, 'the session to end');
  assert.equal(code, 'resume_timeout');
  assert.ok(performance.now() - t0 >= 2000, 'not before the deadline');
});
