/**
 * The path MTU pieces around the search (issue 17): KCP's loss and delivery
 * evidence, DataFragment pieces, the session that stalls a direct path
 * instead of dying with it, and the PmtuDriver between two real Sessions
 * over in-memory paths (a UDP one that silently drops datagrams above its
 * "link MTU", as a black hole does).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { Kcp } from '../src/kcp/index.js';
import { Session } from '../src/session/session.js';
import { cryptoReady, type SessionKeys } from '../src/crypto/index.js';
import { MAX_RELAY_DATAGRAM_LEN, MAX_UDP_DATAGRAM_LEN } from '../src/wire/datagram.js';
import { encodeFragments, Reassembler, MAX_REASSEMBLIES } from '../src/wire/data-fragment.js';
import type { Path } from '../src/session/path.js';
import type { MuxStream } from '../src/mux/index.js';
import { DirectPath } from '../src/punch/direct.js';
import { PmtuDriver, checkMaxDatagram, LEGACY_DATAGRAM } from '../src/punch/pmtu-driver.js';
import { nullLogger } from '../src/util/log.js';
import { sleep } from '../src/util/backoff.js';
import { readAll, withTimeout } from './mux-harness.js';
import { sessionKeys } from './helpers/session-keys.js';
import { MemPath } from './helpers/mem-path.js';

await cryptoReady();

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

// ---------------------------------------------------------------- KCP evidence

// Timeouts report losses with their size, acks the largest acked; forced resends are no loss.
test('KCP evidence: losses, acks and forced resends', () => {
  let now = 0;
  const toB: Buffer[] = [];
  const toA: Buffer[] = [];
  const a = new Kcp(1, (b) => toB.push(Buffer.from(b)));
  const b = new Kcp(1, (d) => toA.push(Buffer.from(d)));
  for (const k of [a, b]) {
    k.setNodelay(1, 10, 0, 1);
    k.setMtu(1200);
  }
  const lost: [number, number][] = [];
  const acked: number[] = [];
  a.onLost = (len, n) => lost.push([len, n]);
  a.onAcked = (len) => acked.push(len);
  a.send(Buffer.alloc(3000, 1)); // 1176 + 1176 + 648
  a.update(now);
  assert.equal(toB.length, 3);
  toB.length = 0; // all lost
  for (let i = 0; i < 20 && !lost.length; i++) a.update((now += 10));
  assert.deepEqual(lost.at(-1), [1176, 3], 'three segments timed out, the largest 1176 bytes');
  // Deliver the resends: b acks, a hears of the largest acked segment once per input.
  for (const d of toB.splice(0)) b.input(d);
  b.update((now += 10));
  for (const d of toA.splice(0)) a.input(d);
  assert.equal(acked.at(-1), 1176);
  // retransmitNow() resends everything at once, and that is not evidence of loss.
  a.send(Buffer.alloc(500, 2));
  a.update((now += 10));
  toB.length = 0;
  const before = lost.length;
  a.retransmitNow();
  a.update((now += 10));
  assert.equal(lost.length, before, 'forced resend reported as loss');
  assert.equal(toB.length, 1, 'but it was resent');
});

test('KCP clearDeadLink: the flag goes, and counting starts again', () => {
  let now = 0;
  const a = new Kcp(1, () => {});
  a.setNodelay(1, 10, 0, 1);
  a.setDeadLink(3);
  a.send(Buffer.alloc(10));
  for (let i = 0; i < 200 && !a.isDeadLink(); i++) a.update((now += 10));
  assert.ok(a.isDeadLink());
  a.clearDeadLink();
  assert.ok(!a.isDeadLink());
  a.update((now += 10));
  assert.ok(!a.isDeadLink(), 'not dead again at the very next flush');
});

// ---------------------------------------------------------------- fragments

test('DataFragment: pieces fit, come back whole in any order, bounded', () => {
  const data = randomBytes(5000);
  const parts = encodeFragments(7, data, 1200);
  assert.ok(parts.length >= 5);
  for (const p of parts) assert.ok(p.length + 29 <= 1200);
  const r = new Reassembler();
  const shuffled = [...parts].reverse();
  let whole: Uint8Array | null = null;
  for (const p of shuffled) whole = r.add(p) ?? whole;
  assert.ok(whole);
  assert.equal(sha(whole), sha(data));
  // Garbage changes nothing, nor does a piece seen twice; only MAX_REASSEMBLIES datagrams wait at once.
  assert.equal(r.add(new Uint8Array(3)), null);
  const other = encodeFragments(8, data, 1200);
  assert.equal(r.add(other[0]), null);
  assert.equal(r.add(other[0]), null);
  for (let id = 100; id < 100 + MAX_REASSEMBLIES; id++) r.add(encodeFragments(id, data, 1200)[0]);
  assert.equal(r.dropped, 1, 'the oldest unfinished datagram made room');
  assert.throws(() => encodeFragments(1, new Uint8Array(100), 1200), RangeError, 'one piece is no fragment');
});

// ---------------------------------------------------------------- the session and its paths

interface Side {
  session: Session;
  relay: MemPath;
  udp: MemPath;
}

/**
 * Two sessions with a relay and a UDP path each. The UDP path drops what the
 * `udpFilter` says (a black hole, a dead path) silently.
 */
function pair(opts: { relay: boolean; stallRetryMs?: number }): { a: Side; b: Side; close: () => void } {
  const keys = sessionKeys('pmtu integration');
  const side = (role: 'visitor' | 'server', k: SessionKeys, name: string): Side => ({
    session: new Session({ keys: k, role, log: nullLogger, sid: `pmtu-${name}`, stallRetryMs: opts.stallRetryMs }),
    relay: new MemPath('relay', `relay-${name}`, MAX_RELAY_DATAGRAM_LEN, { gathers: true }),
    udp: new MemPath('direct', `udp-${name}`, 1452),
  });
  const a = side('visitor', keys.visitor, 'a');
  const b = side('server', keys.server, 'b');
  a.relay.peer = { session: b.session, path: b.relay };
  b.relay.peer = { session: a.session, path: a.relay };
  a.udp.peer = { session: b.session, path: b.udp };
  b.udp.peer = { session: a.session, path: a.udp };
  for (const s of [a, b]) {
    if (opts.relay) s.session.setPath('relay', s.relay);
    s.session.setPath('direct', s.udp);
  }
  return {
    a,
    b,
    close: () => {
      for (const s of [a, b]) {
        for (const st of s.session.mux.openStreams()) st.on('error', () => {});
        s.session.close('test over');
        s.relay.close();
        s.udp.close();
      }
    },
  };
}

/** Makes a MemPath drop data datagrams above `max` bytes (small ones, heartbeats, pass). */
function blackHole(p: MemPath, max: number): void {
  const send = p.send.bind(p);
  p.send = (d: Uint8Array) => {
    if (d.length > max) return;
    send(d);
  };
}

async function echoOnce(a: Side, b: Side, bytes: number, timeoutMs: number): Promise<void> {
  const up = randomBytes(bytes);
  const atB = new Promise<string>((resolve, reject) => {
    b.session.mux.once('stream', (s: MuxStream) => {
      readAll(s).then((got) => resolve(sha(got)), reject);
      s.end();
    });
  });
  const s = a.session.mux.openStream();
  void readAll(s).catch(() => {});
  s.end(up);
  assert.equal(await withTimeout(atB, timeoutMs, 'transfer'), sha(up));
}

// The session stalls the direct path and moves data to the relay; it never closes.
test('dead link on the direct path with the relay open: stalled, not closed', async (t) => {
  const { a, b, close } = pair({ relay: true, stallRetryMs: 60_000 });
  t.after(close);
  for (const s of [a, b]) s.session.kcp.setDeadLink(4);
  // From a to b, only datagrams up to 1000 bytes pass the direct path:
  // heartbeats would, full data segments (1452) do not. Not from b to a: b's
  // acks, bundled up to a full segment under load, would vanish too, and
  // nothing on b's side would notice (no PmtuDriver here; it is what shrinks
  // b's datagrams in the tunnel).
  blackHole(a.udp, 1000);
  assert.equal(a.session.path, a.udp);
  await echoOnce(a, b, 2 * 1024 * 1024, 30_000);
  assert.ok(!a.session.closed, `closed: ${a.session.closeReason}`);
  assert.equal(a.session.stalledPath, a.udp, 'the direct path is stalled');
  assert.equal(a.session.path, a.relay, 'data moved to the relay');
  assert.ok(a.relay.stats.sent > 0);
});

test('a stalled direct path is tried again after the retry interval', async (t) => {
  const { a, close } = pair({ relay: true, stallRetryMs: 50 });
  t.after(close);
  assert.ok(a.session.stallDirect('test'));
  assert.equal(a.session.path, a.relay);
  for (let i = 0; i < 100 && a.session.path !== a.udp; i++) await sleep(10);
  assert.equal(a.session.path, a.udp, 'back on the direct path');
  assert.equal(a.session.stalledPath, null);
});

test('dead link with no other path: the session closes with code no_path', async (t) => {
  const { a, b, close } = pair({ relay: false });
  t.after(close);
  a.session.kcp.setDeadLink(3);
  blackHole(a.udp, 0);
  const closed = new Promise<[string, string]>((r) => a.session.once('close', (reason, code) => r([reason, code])));
  const s = a.session.mux.openStream();
  s.on('error', () => {});
  s.write(Buffer.alloc(10_000));
  const [reason, code] = await withTimeout(closed, 30_000, 'close');
  assert.equal(code, 'no_path');
  assert.equal(a.session.closeCode, 'no_path');
  assert.match(reason, /every path/);
  void b;
});

test('shrinking with no relay: segments cut larger cross in pieces to a peer that reassembles, exact', async (t) => {
  const { a, b, close } = pair({ relay: false });
  t.after(close);
  for (const s of [a, b]) s.session.allowFragments();
  // Data flows at 1452, then the path shrinks to 1200 under it (black hole for anything larger).
  const up = randomBytes(4 * 1024 * 1024);
  const atB = new Promise<string>((resolve, reject) => {
    b.session.mux.once('stream', (st: MuxStream) => {
      readAll(st).then((got) => resolve(sha(got)), reject);
      st.end();
    });
  });
  const st = a.session.mux.openStream();
  void readAll(st).catch(() => {});
  st.end(up);
  for (let i = 0; i < 500 && b.session.bytesIn < 500_000; i++) await sleep(2);
  blackHole(a.udp, 1200);
  (a.udp as { maxDatagram: number }).maxDatagram = 1200;
  a.session.refit(true);
  assert.equal(await withTimeout(atB, 60_000, 'transfer'), sha(up));
  assert.ok(a.session.fragmentedDatagrams > 0, 'nothing went in pieces');
  assert.equal(a.session.segmentDatagram, 1200);
});

// ---------------------------------------------------------------- the driver over real UDP sockets

/** Two sessions joined by real UDP sockets on loopback (DirectPath), with a send filter playing a small MTU. */
async function udpPair(
  t: { after(fn: () => void): void },
  opts: { driverB: boolean; maxA?: number },
): Promise<{ a: Session; b: Session; pa: DirectPath; pb: DirectPath; da: PmtuDriver; db: PmtuDriver | null }> {
  const keys = sessionKeys('pmtu driver');
  const sa = dgram.createSocket('udp4');
  const sb = dgram.createSocket('udp4');
  await Promise.all([sa, sb].map((s) => new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()))));
  const a = new Session({ keys: keys.visitor, role: 'visitor', log: nullLogger, sid: 'drv-a' });
  const b = new Session({ keys: keys.server, role: 'server', log: nullLogger, sid: 'drv-b' });
  const pa = new DirectPath(sa, '127.0.0.1', sb.address().port);
  const pb = new DirectPath(sb, '127.0.0.1', sa.address().port);
  // The "link": a's datagrams above 1252 bytes (a 1280 MTU) vanish; b's pass up to 1472.
  const send = pa.send.bind(pa);
  pa.send = (d: Uint8Array) => {
    if (d.length <= 1252) send(d);
  };
  sa.on('message', (m) => a.receive(m, pa));
  sb.on('message', (m) => b.receive(m, pb));
  const da = new PmtuDriver({ session: a, log: nullLogger, probeTimeoutMs: 100, maxDatagram: opts.maxA });
  const db = opts.driverB ? new PmtuDriver({ session: b, log: nullLogger, probeTimeoutMs: 100 }) : null;
  t.after(() => {
    a.close();
    b.close();
    sa.close();
    sb.close();
  });
  a.setPath('direct', pa);
  b.setPath('direct', pb);
  return { a, b, pa, pb, da, db };
}

// 1252 one way, 1472 the other; segments follow; data exact.
test('PmtuDriver: each side finds the MTU of its own direction', async (t) => {
  const { a, b, pa, pb, da, db } = await udpPair(t, { driverB: true });
  for (let i = 0; i < 300 && (da.search?.state !== 'search-complete' || db!.search?.state !== 'search-complete'); i++)
    await sleep(20);
  assert.equal(da.search?.state, 'search-complete');
  assert.equal(pa.maxDatagram, 1252, 'a -> b: a 1280 link');
  assert.equal(pb.maxDatagram, MAX_UDP_DATAGRAM_LEN, 'b -> a: a 1500 link');
  assert.equal(a.segmentDatagram, 1252);
  assert.equal(b.segmentDatagram, 1472);
  // Windows follow in bytes: more, smaller segments on the small side (window-control.ts).
  assert.equal(a.kcp.snapshot().sndWnd <= 1208 && a.kcp.snapshot().rcvWnd, 1261);
  assert.equal(b.kcp.snapshot().rcvWnd, 1261);
  assert.deepEqual(da.status(), { datagram: 1252, mtu: 1280, state: 'search-complete' });
  await echoOnce(
    { session: a, relay: null as unknown as MemPath, udp: null as unknown as MemPath },
    { session: b, relay: null as unknown as MemPath, udp: null as unknown as MemPath },
    3 * 1024 * 1024,
    30_000,
  );
});

test("PmtuDriver against a peer that does not answer probes: today's size, no search", async (t) => {
  const { pa, da } = await udpPair(t, { driverB: false });
  for (let i = 0; i < 100 && da.stateName === 'asking'; i++) await sleep(20);
  assert.equal(da.stateName, 'legacy');
  assert.equal(pa.maxDatagram, LEGACY_DATAGRAM);
  assert.equal(da.search, null);
});

test('--max-datagram bounds the search; bad values are refused with the reason', async (t) => {
  const { pb, db } = await udpPair(t, { driverB: true });
  void pb;
  void db;
  assert.equal(checkMaxDatagram(1400), null);
  for (const bad of [0, 547, 1473, 1400.5, NaN, '1400' as unknown as number])
    assert.match(checkMaxDatagram(bad) ?? '', /whole number of bytes from 548 to 1472/);
  const s = new Session({ keys: sessionKeys('x').visitor, role: 'visitor', log: nullLogger, sid: 'bad' });
  t.after(() => s.close());
  assert.throws(() => new PmtuDriver({ session: s, log: nullLogger, maxDatagram: 2000 }), RangeError);
});

test('PmtuDriver with --max-datagram 1300: never above it', async (t) => {
  const { pb, db } = await udpPair(t, { driverB: true, maxA: 1300 });
  void pb;
  void db;
  // a's bound applies to a's sending direction only; b keeps its own.
  const { pa, da } = await udpPair(t, { driverB: true, maxA: 1240 });
  for (let i = 0; i < 300 && da.search?.state !== 'search-complete'; i++) await sleep(20);
  assert.equal(pa.maxDatagram, 1240);
});

void ({} as Path);
