/**
 * A session moving from the relay (64 KiB records) to a UDP path (1452-byte
 * datagrams) in the middle of a bulk transfer. Two real Sessions (handshake
 * keys, sealing, KCP, mux) joined by in-memory paths that deliver on a later
 * event-loop turn, the UDP one refusing anything above 1452 bytes as a real
 * socket would. KCP segments cut for the relay before the move are still
 * queued or unacknowledged after it: they must finish over the relay (the
 * large-record path), never be offered to UDP, and the byte stream must
 * arrive exact.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Session } from '../src/session/session.js';
import { cryptoReady, type SessionKeys } from '../src/crypto/index.js';
import { MAX_DATAGRAM_LEN, MAX_RELAY_DATAGRAM_LEN } from '../src/wire/datagram.js';
import type { MuxStream } from '../src/mux/index.js';
import { nullLogger } from '../src/util/log.js';
import { mulberry32 } from '../src/util/prng.js';
import { readAll, withTimeout } from './mux-harness.js';
import { sessionKeys } from './helpers/session-keys.js';
import { sleep } from '../src/util/backoff.js';
import { MemPath } from './helpers/mem-path.js';

await cryptoReady();

interface Side {
  session: Session;
  relay: MemPath;
  udp: MemPath;
}

/** Two sessions, both on the relay, the UDP paths ready; the relay registered for large records. */
function connect(udpLoss: number, seed: number): { a: Side; b: Side; close: () => void } {
  const keys = sessionKeys('session-path-switch test');
  const rng = mulberry32(seed);
  const side = (role: 'visitor' | 'server', k: SessionKeys, name: string): Side => ({
    session: new Session({ keys: k, role, log: nullLogger, sid: `switch-${name}` }),
    relay: new MemPath('relay', `relay-${name}`, MAX_RELAY_DATAGRAM_LEN, { gathers: true }),
    udp: new MemPath('direct', `udp-${name}`, MAX_DATAGRAM_LEN, { refuseAbove: MAX_DATAGRAM_LEN, loss: udpLoss, rng }),
  });
  const a = side('visitor', keys.visitor, 'a');
  const b = side('server', keys.server, 'b');
  a.relay.peer = { session: b.session, path: b.relay };
  b.relay.peer = { session: a.session, path: a.relay };
  a.udp.peer = { session: b.session, path: b.udp };
  b.udp.peer = { session: a.session, path: a.udp };
  for (const s of [a, b]) {
    s.session.setPath('relay', s.relay);
  }
  return {
    a,
    b,
    close() {
      for (const s of [a, b]) {
        for (const st of s.session.mux.openStreams()) st.on('error', () => {});
        s.session.close('test over');
        s.relay.close();
        s.udp.close();
      }
    },
  };
}

/**
 * KCP segments `from` has sent that `to` has not received. Before the move
 * the relay is the only path, FIFO and lossless, so these are all still
 * queued on it; and mid-transfer they are full DATA frames (a window update
 * is one frame in hundreds), so two or more include relay-sized segments that
 * the peer does not have. (Counting queued records would not do: a record
 * may be a resent copy of a segment the peer already has.)
 */
function unreceived(from: Side, to: Side): number {
  return (from.session.kcp.snapshot().sndNxt - to.session.kcp.snapshot().rcvNxt) | 0;
}

/** Moves a session to UDP; from now on its relay counts what it still carries. */
function moveToUdp(s: Side): void {
  s.relay.mark = true;
  s.session.setPath('direct', s.udp);
  assert.equal(s.session.path, s.udp);
}

/** The KCP sequence number from which every segment was cut for UDP (read right after the move). */
function firstUdpSized(s: Side): number {
  const k = s.session.kcp.snapshot();
  return (k.sndNxt + k.nsndQue) >>> 0;
}

/** True once the peer acknowledged every segment before `sn`: nothing relay-sized left to send. */
function allAckedBefore(s: Side, sn: number): boolean {
  return ((s.session.kcp.snapshot().sndUna - sn) | 0) >= 0;
}

function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

/**
 * What must never happen during a transfer; checked every few ms so a broken
 * session fails the test at once instead of stalling into the timeout.
 */
function violation(sides: Side[]): string | null {
  for (const s of sides) {
    if (s.udp.stats.large > 0)
      return `${s.session.sid}: ${s.udp.stats.large} datagrams above ${MAX_DATAGRAM_LEN} bytes offered to UDP`;
    if (s.session.oversizeDropped > 0) return `${s.session.sid}: ${s.session.oversizeDropped} segments found no path`;
    if (s.relay.stats.rejectedByPeer + s.udp.stats.rejectedByPeer > 0)
      return `${s.session.sid}: the peer refused datagrams`;
    if (s.session.closed) return `${s.session.sid} closed: ${s.session.closeReason}`;
  }
  return null;
}

/**
 * A sends `up` bytes to B, B sends `down` bytes back, on one stream; resolves
 * with the hashes each side received, or rejects at the first violation().
 */
async function transfer(
  a: Side,
  b: Side,
  up: Buffer,
  down: Buffer,
  timeoutMs: number,
): Promise<{ atB: string; atA: string }> {
  const atB = new Promise<string>((resolve, reject) => {
    b.session.mux.once('stream', (s: MuxStream) => {
      readAll(s).then((got) => resolve(sha256(got)), reject);
      s.end(down);
    });
  });
  const s = a.session.mux.openStream();
  const atA = readAll(s).then(sha256);
  s.end(up);
  let watch: NodeJS.Timeout | undefined;
  const watchdog = new Promise<never>((_, reject) => {
    watch = setInterval(() => {
      const v = violation([a, b]);
      if (v) reject(new Error(v));
    }, 5);
  });
  try {
    const [hb, ha] = await withTimeout(
      Promise.race([Promise.all([atB, atA]), watchdog]),
      timeoutMs,
      'transfer across the path switch',
    );
    return { atB: hb, atA: ha };
  } finally {
    clearInterval(watch);
  }
}

function assertNothingLargeOnUdp(...sides: Side[]): void {
  for (const s of sides) {
    assert.equal(
      s.udp.stats.large,
      0,
      `${s.udp.remote}: datagrams above ${MAX_DATAGRAM_LEN} bytes offered to UDP (largest ${s.udp.stats.largest})`,
    );
    assert.equal(s.udp.stats.refused, 0);
    assert.ok(s.udp.stats.largest <= MAX_DATAGRAM_LEN);
    // A segment too big for the path is skipped without leaving an empty datagram in its place.
    assert.equal(s.udp.stats.emptyData, 0, `${s.udp.remote}: DATA datagrams with nothing in them`);
  }
}

function report(t: { diagnostic(m: string): void }, ...sides: Side[]): void {
  for (const s of sides) {
    const r = s.relay.stats;
    const u = s.udp.stats;
    t.diagnostic(
      `${s.session.sid}: relay ${r.sent} sent (largest ${r.largest}, ${r.sentAfterMark} after ` +
        `the move of which ${r.largeAfterMark} > ${MAX_DATAGRAM_LEN}, ${r.lost} lost); ` +
        `udp ${u.sent} sent (largest ${u.largest}, ${u.lost} lost, ${u.emptyData} empty DATA); ` +
        `oversizeDropped ${s.session.oversizeDropped}; kcp xmit ${s.session.kcp.snapshot().xmit}`,
    );
  }
}

// Large enough that, after the move at ~8 MB, more is left than the relay's
// 16 MiB window can have cut into relay-sized segments before it.
const UP = 36 * 1024 * 1024;
const DOWN = 12 * 1024 * 1024;

test('relay -> UDP mid-transfer: relay-sized segments finish on the relay, none on UDP, data exact', async (t) => {
  const { a, b, close } = connect(0.005, 0x5eed1);
  t.after(close);
  const up = randomBytes(UP);
  const down = randomBytes(DOWN);
  let lostAtMove = 0;
  // A moves once B has taken in ~8 MB, at a moment when the relay still holds
  // data B has not received; the relay loses it then (as a relay dropping
  // from a full queue would), so relay-sized segments must be *retransmitted*
  // after the move. B moves 1 MB later.
  a.relay.onDelivered = a.udp.onDelivered = () => {
    if (!a.relay.mark && b.session.bytesIn > 8e6 && unreceived(a, b) >= 2) {
      moveToUdp(a);
      lostAtMove = a.relay.loseQueued();
    } else if (a.relay.mark && !b.relay.mark && b.session.bytesIn > 9e6) {
      moveToUdp(b);
    }
  };
  const got = await transfer(a, b, up, down, 90_000);
  report(t, a, b);
  assert.equal(got.atB, sha256(up), 'A -> B bytes');
  assert.equal(got.atA, sha256(down), 'B -> A bytes');
  assert.ok(a.relay.mark && b.relay.mark, 'both sessions moved to UDP during the transfer');
  assert.ok(lostAtMove > 0);
  // Relay-sized segments went over the relay after the move...
  assert.ok(a.relay.stats.largeAfterMark > 0, 'no relay-sized datagram went over the relay after the move');
  // ...and nothing above 1452 bytes was ever offered to UDP, by either side.
  assertNothingLargeOnUdp(a, b);
  // The bulk of the rest went over UDP, in UDP-sized datagrams.
  assert.ok(a.udp.stats.sent > 5000, `only ${a.udp.stats.sent} UDP datagrams`);
  for (const s of [a, b]) {
    assert.equal(s.session.oversizeDropped, 0, `${s.session.sid}: oversize drops with the relay open`);
    assert.equal(s.session.closed, false);
    assert.equal(s.relay.stats.rejectedByPeer + s.udp.stats.rejectedByPeer, 0, 'datagrams the peer refused');
  }
});

test('relay closed after the move, nothing relay-sized in flight: the transfer completes on UDP', async (t) => {
  const { a, b, close } = connect(0, 0x5eed2);
  t.after(close);
  const up = randomBytes(UP);
  const down = randomBytes(DOWN);
  const boundary = new Map<Side, number>();
  let relayClosedAt = -1;
  let bytesInAtClose = -1;
  // Both move at once, when the relay still holds data B has not received,
  // which it loses: relay-sized segments are retransmitted over it after the move.
  a.relay.onDelivered = () => {
    if (a.relay.mark || b.session.bytesIn < 6e6 || unreceived(a, b) < 2) return;
    for (const s of [a, b]) {
      moveToUdp(s);
      boundary.set(s, firstUdpSized(s));
    }
    a.relay.loseQueued();
  };
  // Poll (bounded, and no longer than the test) for the moment both sides have
  // every relay-sized segment acknowledged.
  let over = false;
  t.after(() => (over = true));
  const closeRelayWhenSafe = (async () => {
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline && !over) {
      await sleep(2);
      if (boundary.size < 2) continue;
      if (![a, b].every((s) => allAckedBefore(s, boundary.get(s)!))) continue;
      for (const s of [a, b]) {
        s.session.setPath('relay', null);
        s.relay.close();
      }
      relayClosedAt = a.relay.stats.sentAfterMark + b.relay.stats.sentAfterMark;
      bytesInAtClose = b.session.bytesIn;
      return;
    }
  })();
  const got = await transfer(a, b, up, down, 90_000);
  await closeRelayWhenSafe;
  report(t, a, b);
  assert.equal(got.atB, sha256(up), 'A -> B bytes');
  assert.equal(got.atA, sha256(down), 'B -> A bytes');
  assert.ok(
    relayClosedAt > 0,
    `the relay was closed at ${relayClosedAt} datagrams after the move (never, or before it carried any)`,
  );
  // Closed while the transfer was still running, not after it.
  assert.ok(bytesInAtClose > 0 && bytesInAtClose < UP, `relay closed when B had ${bytesInAtClose} bytes`);
  for (const s of [a, b]) {
    assert.equal(s.relay.closed, true);
    assert.equal(s.session.oversizeDropped, 0, `${s.session.sid}: a segment found no path`);
    assert.equal(s.session.closed, false);
  }
  // Nothing went to the relay once it was closed (sendSealed skips a closed path).
  assert.equal(a.relay.stats.sentAfterMark + b.relay.stats.sentAfterMark, relayClosedAt);
  assertNothingLargeOnUdp(a, b);
});

// The session closes with the reason.
test('relay closed with relay-sized segments unacked: session closes at once, nothing large on UDP', async (t) => {
  const { a, b, close } = connect(0, 0x5eed3);
  t.after(close);
  const up = randomBytes(8 * 1024 * 1024);
  let moved = false;
  a.relay.onDelivered = () => {
    if (moved || b.session.bytesIn < 2e6 || unreceived(a, b) < 2) return;
    moved = true;
    moveToUdp(a);
    moveToUdp(b);
    // The relay goes away at the same moment, with records still queued on it.
    for (const s of [a, b]) {
      s.session.setPath('relay', null);
      s.relay.close();
    }
  };
  const s = a.session.mux.openStream();
  s.on('error', () => {});
  s.end(up);
  b.session.mux.once('stream', (x: MuxStream) => x.resume().on('error', () => {}));
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline && !a.session.closed) await sleep(5);
  report(t, a, b);
  assert.ok(moved, 'never moved');
  // The first relay-sized segment that finds no path ends the session with a
  // reason (no retransmitting into nothing until KCP's dead-link limit).
  assert.ok(a.session.closed, 'session still open');
  assert.match(a.session.closeReason ?? '', /relay closed while data cut into relay-sized records/);
  assert.ok(a.session.oversizeDropped >= 1, `oversizeDropped ${a.session.oversizeDropped}`);
  assertNothingLargeOnUdp(a, b);
});

test('after direct, a fallback to the relay keeps UDP-sized segments (losing it cannot strand data)', async (t) => {
  const { a, b, close } = connect(0, 0x5eed4);
  t.after(close);
  assert.ok(a.session.kcp.snapshot().mss > 60_000, 'relay-sized segments before any direct path');
  moveToUdp(a);
  moveToUdp(b);
  assert.ok(a.session.kcp.snapshot().mss < 1452);
  // Back to the relay (the direct path died): segments stay UDP-sized.
  a.session.setPath('direct', null);
  b.session.setPath('direct', null);
  assert.equal(a.session.path, a.relay);
  assert.equal(b.session.path, b.relay);
  assert.ok(a.session.kcp.snapshot().mss < 1452, `mss ${a.session.kcp.snapshot().mss} after the fallback`);
  const data = randomBytes(2 * 1024 * 1024);
  const s = a.session.mux.openStream();
  s.on('error', () => {});
  s.end(data);
  const got: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    b.session.mux.once('stream', (x: MuxStream) =>
      x
        .on('data', (c: Buffer) => got.push(c))
        .on('end', resolve)
        .on('error', reject),
    );
  });
  await Promise.race([
    done,
    new Promise((_, rej) => setTimeout(() => rej(new Error('transfer over the relay timed out')), 20_000)),
  ]);
  assert.deepEqual(Buffer.concat(got), data);
  assert.equal(
    a.relay.stats.largest <= 1452,
    true,
    `largest relay datagram after the fallback: ${a.relay.stats.largest}`,
  );
});
