/**
 * Unit tests for src/kcp: the state machine driven with a simulated clock and
 * an in-memory link (no sockets), so protocol timing (RTO, 7 s window probes,
 * dead link) runs in milliseconds of real time.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import {
  Kcp,
  KcpError,
  KCP_OVERHEAD,
  CMD_ACK,
  CMD_PUSH,
  CMD_WASK,
  CMD_WINS,
  decodeSegmentHeader,
  encodeSegmentHeader,
  readConv,
  kcpErrorName,
  Slab,
} from '../src/kcp/index.js';
import type { SegmentHeader } from '../src/kcp/index.js';
import { SimLink, segments } from './helpers/kcp-link.js';

// ------------------------------------------------------------------ harness

function drain(k: Kcp): Buffer[] {
  const out: Buffer[] = [];
  for (let m = k.recv(); m; m = k.recv()) out.push(m);
  return out;
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

// ------------------------------------------------------------------ codec

test('header encode/decode round-trips and is little-endian as in ikcp.c', () => {
  const h: SegmentHeader = {
    conv: 0x11223344,
    cmd: CMD_PUSH,
    frg: 7,
    wnd: 0xabcd,
    ts: 0xfffffffe,
    sn: 0x80000001,
    una: 0x01020304,
    len: 5,
  };
  const buf = Buffer.alloc(30);
  assert.equal(encodeSegmentHeader(buf, 3, h), 27);
  assert.deepEqual(
    [...buf.subarray(3, 27)],
    [
      0x44, 0x33, 0x22, 0x11, 81, 7, 0xcd, 0xab, 0xfe, 0xff, 0xff, 0xff, 0x01, 0x00, 0x00, 0x80, 0x04, 0x03, 0x02, 0x01,
      0x05, 0x00, 0x00, 0x00,
    ],
  );
  assert.deepEqual(decodeSegmentHeader(buf, 3), h);
  assert.equal(decodeSegmentHeader(buf, 7), null, 'fewer than 24 bytes left');
  assert.equal(encodeSegmentHeader(buf, 10, h), -1, 'no room');
  assert.equal(readConv(buf.subarray(3)), 0x11223344);
  assert.equal(readConv(buf.subarray(0, 23)), null);
});

test('a PUSH on the wire carries conv, sn, una, wnd, ts and the payload', () => {
  const out: Buffer[] = [];
  const k = new Kcp(0xdeadbeef, (d) => out.push(Buffer.from(d)));
  k.setNodelay(0, 100, 0, 1); // nc=1: ikcp's cwnd starts at 0, which would hold the first flush back
  assert.equal(k.conv, 0xdeadbeef);
  assert.equal(k.send(Buffer.from('hello')), 0);
  k.update(1234);
  assert.equal(out.length, 1);
  const d = out[0];
  assert.equal(d.length, KCP_OVERHEAD + 5);
  assert.deepEqual(decodeSegmentHeader(d), {
    conv: 0xdeadbeef,
    cmd: CMD_PUSH,
    frg: 0,
    wnd: 128,
    ts: 1234,
    sn: 0,
    una: 0,
    len: 5,
  });
  assert.equal(d.subarray(KCP_OVERHEAD).toString(), 'hello');
});

test('several segments are packed into one datagram up to the MTU', () => {
  const out: Buffer[] = [];
  const k = new Kcp(1, (d) => out.push(Buffer.from(d)));
  k.setNodelay(0, 100, 0, 1);
  assert.equal(k.setMtu(200), 0);
  assert.equal(k.setMtu(49), KcpError.InvalidMtu);
  for (let i = 0; i < 10; i++) k.send(Buffer.alloc(40, i));
  k.update(0);
  // 10 segments of 64 bytes; 3 fit in 200 bytes.
  assert.deepEqual(
    out.map((d) => d.length),
    [192, 192, 192, 64],
  );
  assert.deepEqual(
    out.flatMap((d) => segments(d).map((s) => s.sn)),
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
  );
  for (const d of out) assert.ok(d.length <= 200);
});

test('segments cut for a larger MTU go out one per datagram after setMtu shrinks it, with no empty datagram', () => {
  // A session moving from the relay (64 KiB records) to UDP shrinks the MTU
  // with big segments still queued and in flight.
  const out: Buffer[] = [];
  const k = new Kcp(1, (d) => out.push(Buffer.from(d)));
  k.setNodelay(1, 10, 0, 1);
  k.setWndSize(4, 128);
  assert.equal(k.setMtu(8000), 0);
  for (let i = 0; i < 6; i++) k.send(Buffer.alloc(7000, i));
  k.update(0);
  assert.equal(out.length, 4, 'the window lets 4 of 6 out');
  out.length = 0;
  assert.equal(k.setMtu(1400), 0);
  k.send(Buffer.alloc(100, 9)); // cut for the new MTU
  // Nothing acknowledged: the window stays full until the RTO, then all four go again.
  k.update(1000);
  assert.ok(out.length >= 4, `${out.length} datagrams`);
  for (const d of out) assert.ok(d.length > 0, 'an empty datagram was emitted');
  assert.deepEqual(
    out.map((d) => segments(d).map((s) => s.len)),
    [[7000], [7000], [7000], [7000]],
  );
});

// ------------------------------------------------------------------ transfer

test('message mode reassembles fragments into one message; oversize message is refused', () => {
  const link = new SimLink(9);
  link.a.setNodelay(0, 10, 0, 1);
  const big = randomBytes(1376 * 10 + 7);
  const small = Buffer.from('x');
  const empty = Buffer.alloc(0);
  assert.equal(link.a.send(big), 0);
  assert.equal(link.a.send(small), 0);
  assert.equal(link.a.send(empty), 0);
  assert.equal(link.a.waitSnd(), 13);
  // Drop the datagram carrying fragment frg=3 the first time: the message must not surface early.
  let dropped = false;
  link.filter = (d, from) => {
    if (from === 'a' && !dropped && segments(d).some((s) => s.cmd === CMD_PUSH && s.frg === 3)) {
      dropped = true;
      return false;
    }
    return true;
  };
  link.runUntil(() => link.b.snapshot().nrcvBuf > 0, 200);
  assert.ok(dropped);
  assert.equal(link.b.peekSize(), -1, 'incomplete message is not readable');
  assert.equal(link.b.recv(), null);
  assert.ok(link.runUntil(() => link.b.peekSize() >= 0, 2000));
  assert.equal(link.b.peekSize(), big.length);
  const msgs = drain(link.b);
  assert.equal(msgs.length, 3);
  assert.equal(sha(msgs[0]), sha(big));
  assert.equal(msgs[1].toString(), 'x');
  assert.equal(msgs[2].length, 0);
  assert.equal(link.a.send(Buffer.alloc(1376 * 127 + 1)), KcpError.MessageTooLarge);
  assert.equal(link.a.send(Buffer.alloc(1376 * 127)), 0, '127 fragments is the largest message');
});

test('stream mode coalesces small sends into full segments and delivers one byte stream', () => {
  const link = new SimLink(3, 5, { stream: true });
  link.a.setNodelay(0, 100, 0, 1);
  const parts: Buffer[] = [];
  for (let i = 0; i < 300; i++) {
    const p = randomBytes(10 + (i % 7));
    parts.push(p);
    assert.equal(link.a.send(p), 0);
  }
  const all = Buffer.concat(parts);
  assert.equal(link.a.waitSnd(), Math.ceil(all.length / 1376), 'coalesced into full MSS segments');
  link.a.update(0);
  const pushes = link.log
    .filter((l) => l.from === 'a')
    .flatMap((l) => l.segs)
    .filter((s) => s.cmd === CMD_PUSH);
  assert.deepEqual(
    pushes.map((s) => s.len),
    [1376, 1376, all.length - 2752],
  );
  assert.ok(pushes.every((s) => s.frg === 0));
  // A later small send extends the partial tail only while it is still queued.
  link.a.send(Buffer.from('tail'));
  assert.ok(link.runUntil(() => link.b.peekSize() === all.length + 4, 500));
  const got = Buffer.concat(drain(link.b));
  assert.equal(sha(got), sha(Buffer.concat([all, Buffer.from('tail')])));
});

test('sequence numbers wrap around 2^32', () => {
  const link = new SimLink(77, 3);
  const start = 0xfffffff0;
  assert.ok(link.a._testSetInitialSn(start));
  assert.ok(link.b._testSetInitialSn(start));
  // Lose every 5th datagram so retransmission and una/ack handling cross the wrap too.
  let n = 0;
  link.filter = () => ++n % 5 !== 0;
  const msgs = Array.from({ length: 40 }, (_, i) => randomBytes(100 + i * 97)); // 1- and multi-fragment
  for (const m of msgs) assert.equal(link.a.send(m), 0);
  const got: Buffer[] = [];
  assert.ok(
    link.runUntil(() => {
      got.push(...drain(link.b));
      return got.length === msgs.length && link.a.waitSnd() === 0;
    }, 20000),
    'all messages delivered and acked',
  );
  assert.deepEqual(got.map(sha), msgs.map(sha));
  const sa = link.a.snapshot();
  const sb = link.b.snapshot();
  assert.ok(sa.sndNxt < 0x1000, `sndNxt wrapped: ${sa.sndNxt}`);
  assert.equal(sa.sndUna, sa.sndNxt);
  assert.equal(sb.rcvNxt, sa.sndNxt);
  assert.equal(link.a._testSetInitialSn(5), false, 'hook refuses after traffic');
});

test('timestamps wrap around 2^32 without disturbing RTT or retransmission', () => {
  const link = new SimLink(5, 20);
  link.a.setNodelay(1, 10, 2, 1);
  link.b.setNodelay(1, 10, 2, 1);
  link.now = 0xffffffff - 300; // the clock crosses 2^32 during the transfer
  let n = 0;
  link.filter = () => ++n % 7 !== 0;
  const data = randomBytes(200_000);
  for (let i = 0; i < data.length; i += 5000) link.a.send(data.subarray(i, i + 5000));
  const got: Buffer[] = [];
  assert.ok(
    link.runUntil(() => {
      got.push(...drain(link.b));
      return link.a.waitSnd() === 0;
    }, 10000),
  );
  got.push(...drain(link.b));
  assert.equal(sha(Buffer.concat(got)), sha(data));
  assert.ok(link.now > 0xffffffff);
  const s = link.a.snapshot();
  assert.ok(s.rxSrtt >= 35 && s.rxSrtt <= 60, `srtt ~ 40ms round trip, got ${s.rxSrtt}`);
  assert.ok(s.rxRto < 500, `rto stays sane across the wrap, got ${s.rxRto}`);
});

test('RTT estimation tracks the link delay (srtt, rttval, rto >= rx_minrto)', () => {
  const link = new SimLink(5, 50);
  link.a.setNodelay(0, 10, 0, 1);
  link.b.setNodelay(0, 10, 0, 1); // ack within 10 ms of arrival
  for (let i = 0; i < 20; i++) link.a.send(Buffer.alloc(100));
  link.runUntil(() => link.a.waitSnd() === 0, 3000);
  const s = link.a.snapshot();
  assert.ok(s.rxSrtt >= 100 && s.rxSrtt <= 120, `srtt ${s.rxSrtt}`);
  assert.ok(s.rxRto >= s.rxSrtt && s.rxRto <= s.rxSrtt + 60, `rto ${s.rxRto}`);
  link.a.setMinRto(400);
  link.a.send(Buffer.alloc(10));
  link.runUntil(() => link.a.waitSnd() === 0, 3000);
  assert.equal(link.a.snapshot().rxRto, 400, 'rx_minrto bounds the rto');
});

test('retransmits after a dropped datagram (RTO) and fast-resends on skipped ACKs', () => {
  // RTO path: normal mode, one segment, first transmission lost.
  const link = new SimLink(11, 5);
  let drops = 1;
  link.filter = (_d, from) => !(from === 'a' && drops-- > 0);
  link.a.send(Buffer.from('again'));
  assert.ok(link.runUntil(() => link.b.peekSize() > 0, 5000));
  assert.equal(link.b.recv()!.toString(), 'again');
  const sent = link.log.filter((l) => l.from === 'a' && l.segs.some((s) => s.cmd === CMD_PUSH));
  assert.equal(sent.length, 2, 'sent once, lost, resent once');
  const gap = sent[1].at - sent[0].at;
  // Initial rto 200 plus rtomin (rto/8) in normal mode, quantised by the 100 ms interval.
  assert.ok(gap >= 200 && gap <= 400, `resent after the RTO, gap ${gap}`);
  assert.ok(link.a.snapshot().xmit >= 1);

  // Fast resend: one segment lost; ACKs for later segments (each in its own
  // datagram: ikcp counts a skip once per input datagram) trigger a resend
  // long before the RTO.
  const f = new SimLink(12, 5);
  f.a.setNodelay(1, 10, 2, 1);
  f.b.setNodelay(1, 10, 2, 1);
  f.a.setMinRto(1000); // make an RTO resend impossible within the test window
  f.a.send(Buffer.from('warm-up')); // so rx_rto is measured (and bounded to 1000) first
  assert.ok(f.runUntil(() => f.a.waitSnd() === 0, 500));
  assert.equal(f.a.snapshot().rxRto, 1000);
  const victim = f.a.snapshot().sndNxt + 2;
  let lostOnce = false;
  f.filter = (d, from) => {
    if (from === 'a' && !lostOnce && segments(d).some((s) => s.sn === victim && s.cmd === CMD_PUSH)) {
      lostOnce = true;
      return false;
    }
    return true;
  };
  const t0 = f.now;
  for (let i = 0; i < 10; i++) {
    f.a.send(Buffer.alloc(50, i));
    f.runUntil(() => false, 10); // one segment per flush interval
  }
  assert.ok(
    f.runUntil(() => f.a.waitSnd() === 0, 500),
    'recovered without waiting for the 1 s RTO',
  );
  assert.ok(f.now - t0 < 1000);
  const sendsV = f.log.filter((l) => l.from === 'a' && l.segs.some((s) => s.sn === victim && s.cmd === CMD_PUSH));
  assert.equal(sendsV.length, 2);
  assert.ok(sendsV[1].at - sendsV[0].at < 100, `fast resend after ${sendsV[1].at - sendsV[0].at} ms`);
  assert.ok(lostOnce);
  drain(f.b);
});

test('congestion window (nc=0): slow start grows cwnd, a timeout collapses it to 1', () => {
  const link = new SimLink(13, 10);
  link.a.setNodelay(1, 10, 0, 0);
  link.a.setWndSize(256, 256);
  link.b.setWndSize(256, 256);
  for (let i = 0; i < 400; i++) link.a.send(Buffer.alloc(1000));
  const pushes = () =>
    link.log
      .filter((l) => l.from === 'a')
      .flatMap((l) => l.segs)
      .filter((s) => s.cmd === CMD_PUSH);
  link.a.update(0);
  assert.equal(pushes().length, 0, 'ikcp starts with cwnd 0: the first flush only raises it to 1');
  link.a.update(10);
  assert.equal(pushes().length, 1, 'then one segment');
  link.runUntil(() => link.a.snapshot().cwnd >= 8, 2000);
  const grown = link.a.snapshot().cwnd;
  assert.ok(grown >= 8, `cwnd grew: ${grown}`);
  link.filter = () => false; // blackhole: the next flush after the RTO is a loss
  link.runUntil(() => link.a.snapshot().xmit > 0, 3000);
  link.step(1);
  assert.equal(link.a.snapshot().cwnd, 1);
  assert.ok(link.a.snapshot().ssthresh >= 2);
});

test('full window then zero-window probing: WASK/WINS are exchanged and transfer resumes', () => {
  const link = new SimLink(21, 5);
  link.a.setNodelay(1, 10, 2, 1);
  link.b.setNodelay(1, 10, 2, 1);
  link.a.setWndSize(256, 128);
  link.b.setWndSize(128, 128);
  const data = randomBytes(400 * 1000);
  for (let i = 0; i < data.length; i += 1000) link.a.send(data.subarray(i, i + 1000));
  // The receiver does not read: its queue fills and it advertises wnd 0.
  assert.ok(
    link.runUntil(() => link.a.snapshot().rmtWnd === 0, 2000),
    'remote window closed',
  );
  assert.equal(link.b.snapshot().nrcvQue, 128);
  const closedAt = link.now;
  // Nothing moves; after PROBE_INIT (7 s) the sender asks, the receiver tells (still 0).
  assert.ok(
    link.runUntil(() => link.cmdsFrom('a', closedAt).includes(CMD_WASK), 8000, 10),
    'WASK sent',
  );
  const waskAt = link.log.find((l) => l.from === 'a' && l.at >= closedAt && l.segs.some((s) => s.cmd === CMD_WASK))!.at;
  assert.ok(waskAt - closedAt >= 7000, `probe waited ${waskAt - closedAt} ms`);
  link.runUntil(() => link.cmdsFrom('b', waskAt).includes(CMD_WINS), 100);
  const wins = link.log
    .filter((l) => l.from === 'b' && l.at >= waskAt)
    .flatMap((l) => l.segs)
    .find((s) => s.cmd === CMD_WINS);
  assert.ok(wins, 'WINS answered the probe');
  assert.equal(wins.wnd, 0);
  assert.equal(link.a.snapshot().rmtWnd, 0);
  // Reading reopens the window: an unsolicited WINS and the transfer completes.
  const got: Buffer[] = drain(link.b);
  const readAt = link.now;
  link.step(10);
  assert.ok(link.cmdsFrom('b', readAt).includes(CMD_WINS), 'window update after reading');
  assert.ok(
    link.runUntil(() => {
      got.push(...drain(link.b));
      return link.a.waitSnd() === 0;
    }, 5000),
  );
  got.push(...drain(link.b));
  assert.equal(sha(Buffer.concat(got)), sha(data));
});

test('dead link: a segment sent dead_link times sets the flag', () => {
  const link = new SimLink(31, 5);
  link.filter = () => false;
  link.a.setNodelay(1, 10, 0, 1);
  link.a.setDeadLink(5);
  link.a.send(Buffer.from('anyone?'));
  assert.equal(link.a.isDeadLink(), false);
  assert.ok(link.runUntil(() => link.a.isDeadLink(), 60000, 10));
  const pushes = link.log
    .filter((l) => l.from === 'a')
    .flatMap((l) => l.segs)
    .filter((s) => s.cmd === CMD_PUSH);
  assert.equal(pushes.length, 5);
  assert.equal(link.a.snapshot().state, -1);
});

test('check() says when update() is due', () => {
  const k = new Kcp(1, () => {});
  k.setNodelay(1, 20, 2, 1);
  assert.equal(k.check(100.5), 100.5, 'before the first update: now');
  k.update(100);
  const next = k.check(101);
  assert.ok(next > 101 && next <= 121, `next flush within interval: ${next}`);
  k.send(Buffer.from('x'));
  k.update(120);
  // one segment in flight with rto 200 (30 min in nodelay) - next due at the flush interval
  assert.equal(k.check(125), 140);
  assert.equal(k.check(140), 140);
});

// ------------------------------------------------------------------ bad input

test('bad input is rejected with an error code and leaves no trace in the state', () => {
  const link = new SimLink(0x1234, 2);
  link.a.send(Buffer.from('before'));
  assert.ok(link.runUntil(() => link.b.peekSize() > 0, 500));
  assert.equal(link.b.recv()!.toString(), 'before');
  // b has some history (rtt, acks, rmt wnd); craft datagrams against it.
  const b = link.b;
  const seg = (h: Partial<SegmentHeader>, payload = Buffer.alloc(0)): Buffer => {
    const full: SegmentHeader = {
      conv: 0x1234,
      cmd: CMD_PUSH,
      frg: 0,
      wnd: 0,
      ts: 0,
      sn: 1,
      una: 0,
      len: payload.length,
      ...h,
    };
    const out = Buffer.alloc(KCP_OVERHEAD + payload.length);
    encodeSegmentHeader(out, 0, full);
    payload.copy(out, KCP_OVERHEAD);
    return out;
  };
  const good = seg({ sn: 1, una: 100, wnd: 0 }, Buffer.from('evil'));
  const cases: [string, Buffer, KcpError][] = [
    ['empty', Buffer.alloc(0), KcpError.TooShort],
    ['truncated header', good.subarray(0, 23), KcpError.TooShort],
    ['wrong conv', seg({ conv: 0x4321 }, Buffer.from('x')), KcpError.WrongConv],
    ['unknown cmd', seg({ cmd: 85 }), KcpError.UnknownCmd],
    ['cmd 0', seg({ cmd: 0 }), KcpError.UnknownCmd],
    ['len beyond datagram', seg({ len: 5 }, Buffer.from('abcd')), KcpError.LenBeyondDatagram],
    ['len huge', seg({ len: 0xffffffff }), KcpError.LenBeyondDatagram],
    ['payload cut short', good.subarray(0, good.length - 1), KcpError.LenBeyondDatagram],
    ['good then wrong conv', Buffer.concat([good, seg({ conv: 9 })]), KcpError.WrongConv],
    ['good then unknown cmd', Buffer.concat([good, seg({ cmd: 99, sn: 2 })]), KcpError.UnknownCmd],
    [
      'good then len beyond',
      Buffer.concat([good, seg({ sn: 2, len: 1000 }, Buffer.from('z'))]),
      KcpError.LenBeyondDatagram,
    ],
    ['good then partial header', Buffer.concat([good, Buffer.alloc(10)]), KcpError.Truncated],
    [
      'good ack then corrupt',
      Buffer.concat([seg({ cmd: CMD_ACK, sn: 0, una: 1 }), seg({ cmd: 200 })]),
      KcpError.UnknownCmd,
    ],
    ['wask then corrupt', Buffer.concat([seg({ cmd: CMD_WASK }), seg({ conv: 1 })]), KcpError.WrongConv],
  ];
  for (const junk of [null, undefined, 'a string', 42, {}, [1, 2, 3]]) {
    assert.equal(b.input(junk as Uint8Array), KcpError.TooShort, `junk ${JSON.stringify(junk)}`);
  }
  for (const [name, d, code] of cases) {
    const before = b.snapshot();
    assert.equal(b.input(d), code, name);
    assert.deepEqual(b.snapshot(), before, `${name}: state unchanged`);
    assert.equal(b.recv(), null, `${name}: nothing new to read`);
    assert.equal(b.peekSize(), -1);
  }
  // The good segment alone would have been accepted (so the rejections above were about the bad tail).
  const probe = new Kcp(0x1234, () => {});
  assert.equal(probe.input(good), 0);
  assert.equal(probe.snapshot().nrcvBuf, 1);
  // ...and the link still works normally afterwards.
  link.a.send(Buffer.from('after'));
  link.b.send(Buffer.from('reply'));
  assert.ok(link.runUntil(() => link.b.peekSize() > 0 && link.a.peekSize() > 0, 1000));
  assert.equal(link.b.recv()!.toString(), 'after');
  assert.equal(link.a.recv()!.toString(), 'reply');
  assert.equal(link.b.recv(), null);
});

test('input never throws on random garbage, and conv-correct fuzz keeps state consistent', () => {
  const k = new Kcp(7, () => {});
  k.update(0);
  let seed = 42;
  const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296;
  for (let i = 0; i < 3000; i++) {
    const len = Math.floor(rnd() * 120);
    const d = Buffer.alloc(len);
    for (let j = 0; j < len; j++) d[j] = Math.floor(rnd() * 256);
    if (len >= 4 && rnd() < 0.5) d.writeUInt32LE(7, 0);
    if (len >= 5 && rnd() < 0.5) d[4] = 81 + Math.floor(rnd() * 4);
    if (len >= 24 && rnd() < 0.5) d.writeUInt32LE(len - 24, 20);
    const rc = k.input(d);
    assert.ok(rc === 0 || rc < 0);
    k.update(i);
    k.recv();
  }
  const s = k.snapshot();
  assert.ok(s.nrcvQue <= s.rcvWnd && s.nrcvBuf <= s.rcvWnd);
  assert.ok((s.sndNxt - s.sndUna) >>> 0 <= s.sndWnd);
});

test('error codes are negative, distinct and named', () => {
  const codes = Object.values(KcpError).filter((v): v is number => typeof v === 'number');
  assert.ok(codes.length >= 7);
  assert.equal(new Set(codes).size, codes.length);
  for (const c of codes) {
    assert.ok(c < 0);
    assert.ok(!kcpErrorName(c).startsWith('KcpError('));
  }
});

test('setWndSize grows the rings without losing in-flight or buffered segments', () => {
  const link = new SimLink(41, 5);
  link.a.setNodelay(1, 10, 2, 1);
  let n = 0;
  link.filter = (_d, from) => from === 'b' || ++n % 4 !== 0; // out-of-order arrivals at b
  const data = randomBytes(300_000);
  for (let i = 0; i < data.length; i += 1376) link.a.send(data.subarray(i, i + 1376));
  const got: Buffer[] = [];
  link.runUntil(() => link.b.snapshot().nrcvBuf > 3 && link.a.snapshot().nsndBuf > 10, 500);
  link.a.setWndSize(1024, 1024);
  link.b.setWndSize(1024, 1024);
  link.filter = () => true;
  assert.ok(
    link.runUntil(() => {
      got.push(...drain(link.b));
      return link.a.waitSnd() === 0;
    }, 5000),
  );
  got.push(...drain(link.b));
  assert.equal(sha(Buffer.concat(got)), sha(data));
});

test('send() and input() copy caller buffers; output reuses one buffer', () => {
  const outs: Buffer[] = [];
  const raw: Buffer[] = [];
  const a = new Kcp(8, (d) => {
    raw.push(d);
    outs.push(Buffer.from(d));
  });
  a.setNodelay(0, 10, 0, 1);
  const msg = Buffer.from('original payload');
  a.send(msg);
  msg.fill(0x78); // caller reuses its buffer before the flush
  a.send(Buffer.alloc(10, 1));
  a.update(0);
  a.send(Buffer.alloc(10, 2));
  a.update(10);
  assert.equal(outs.length, 2);
  assert.equal(raw[0].buffer, raw[1].buffer, 'output datagrams share one backing buffer');
  const b = new Kcp(8, () => {});
  const wire = Buffer.from(outs[0]);
  assert.equal(b.input(wire), 0);
  wire.fill(0); // caller reuses its receive buffer before reading
  assert.equal(b.recv()!.toString(), 'original payload');
  assert.deepEqual(b.recv(), Buffer.alloc(10, 1));
  assert.equal(b.recv(), null);
});

test('Slab copies are independent and large copies get their own buffer', () => {
  const slab = new Slab(1024);
  const src = Buffer.from('abcdef');
  const c1 = slab.copy(src);
  src.fill(0);
  assert.equal(c1.toString(), 'abcdef');
  const c2 = slab.copy(Buffer.from('xyz'));
  assert.equal(c1.toString(), 'abcdef', 'later copies do not overwrite earlier ones');
  assert.equal(c2.byteOffset % 8, 0);
  const big = slab.copy(Buffer.alloc(500, 7));
  assert.equal(big.length, 500);
  assert.notEqual(big.buffer, c1.buffer);
  for (let i = 0; i < 300; i++) assert.equal(slab.copy(Buffer.alloc(100, i & 0xff))[99], i & 0xff);
  assert.equal(c1.toString(), 'abcdef', 'a full slab is replaced, never reused');
});

test('setMinRto raises the current rto at once, so the next segment already waits that long', () => {
  const link = new SimLink(21, 5);
  link.a.setNodelay(1, 10, 2, 1);
  link.b.setNodelay(1, 10, 2, 1);
  link.a.send(Buffer.from('warm-up'));
  assert.ok(link.runUntil(() => link.a.waitSnd() === 0, 500));
  assert.ok(link.a.snapshot().rxRto < 100, 'measured on a 10 ms round trip');
  link.a.setMinRto(2000);
  assert.equal(link.a.snapshot().rxRto, 2000, 'no RTT sample needed');
  // A segment that is delayed (not lost) by 300 ms is not resent meanwhile.
  let held = 0;
  link.filter = (_d, from) => !(from === 'a' && held++ === 0);
  link.a.send(Buffer.from('slow'));
  link.runUntil(() => false, 300);
  const pushes = link.log.filter((l) => l.from === 'a' && l.segs.some((s) => s.cmd === CMD_PUSH && s.len === 4));
  assert.equal(pushes.length, 1, 'one transmission within the 2 s floor');
  assert.equal(link.a.snapshot().xmit, 0);
});

test('retransmitNow resends every unacknowledged segment at the next flush, not at its timeout', () => {
  const link = new SimLink(22, 5);
  link.a.setNodelay(1, 10, 2, 1);
  link.b.setNodelay(1, 10, 2, 1);
  link.a.setMinRto(5000);
  let blackhole = true; // the path they went out on died
  link.filter = (_d, from) => !(from === 'a' && blackhole);
  for (let i = 0; i < 3; i++) link.a.send(Buffer.alloc(100, i));
  link.runUntil(() => false, 50);
  assert.equal(link.a.waitSnd(), 3, 'sent, never acknowledged');
  assert.equal(link.b.peekSize(), -1);
  blackhole = false;
  link.runUntil(() => false, 100);
  assert.equal(link.a.waitSnd(), 3, 'nothing would move before the 5 s timeout');
  const t0 = link.now;
  link.a.retransmitNow();
  assert.ok(
    link.runUntil(() => link.a.waitSnd() === 0, 200),
    'delivered and acknowledged within a flush or two',
  );
  assert.ok(link.now - t0 < 100);
  assert.equal(link.a.snapshot().xmit, 3, 'counted as resends');
  for (let i = 0; i < 3; i++) assert.deepEqual(link.b.recv(), Buffer.alloc(100, i));
});

/**
 * Segments sent into a 30 s outage back off to timeouts of seconds, after
 * about 15 transmissions each (nodelay, a ~40 ms RTO before it). When the path
 * is back, `how` makes them due; the first `lost` resends are lost too (the
 * first datagrams on a new path can hit a NAT not open yet). Returns how long
 * the data then took to be acknowledged, and whether KCP called the link dead.
 */
function afterOutage(how: (k: Kcp) => void, lost: number): { ms: number; dead: boolean } {
  const link = new SimLink(23, 5);
  link.a.setNodelay(1, 10, 2, 1);
  link.b.setNodelay(1, 10, 2, 1);
  // An RTT sample first, as on a path that worked: the RTO comes down near its 30 ms floor.
  link.a.send(Buffer.from('hello'));
  assert.ok(link.runUntil(() => link.a.waitSnd() === 0, 1000));
  assert.ok(link.a.snapshot().rxRto < 60);
  link.b.recv();
  let down = true;
  let dropNext = 0;
  link.filter = (_d, from) => {
    if (from !== 'a') return true;
    if (down) return false;
    if (dropNext > 0) {
      dropNext--;
      return false;
    }
    return true;
  };
  for (let i = 0; i < 3; i++) link.a.send(Buffer.alloc(100, i));
  link.runUntil(() => false, 30_000, 5);
  assert.equal(link.a.waitSnd(), 3, 'nothing got through the outage');
  assert.equal(link.a.isDeadLink(), false, 'not dead yet');
  down = false;
  dropNext = lost;
  const t0 = link.now;
  how(link.a);
  let dead = false;
  const delivered = link.runUntil(() => {
    dead ||= link.a.isDeadLink();
    return link.a.waitSnd() === 0;
  }, 60_000);
  assert.ok(delivered, 'delivered in the end');
  for (let i = 0; i < 3; i++) assert.deepEqual(link.b.recv(), Buffer.alloc(100, i));
  return { ms: link.now - t0, dead };
}

test('restartRetransmits: after an outage, a lost first resend is retried at the RTO, not the backoff', () => {
  const restarted = afterOutage((k) => k.restartRetransmits(), 1);
  // The ~40 ms RTO and its nodelay step: the second resend ~60 ms after the first.
  assert.ok(restarted.ms < 200, `acknowledged ${restarted.ms} ms after the path came back`);
  // What it replaces: retransmitNow() resends at once too, but its next try waits out the backed-off timeout.
  const forced = afterOutage((k) => k.retransmitNow(), 1);
  assert.ok(forced.ms > 10 * restarted.ms, `retransmitNow: ${forced.ms} ms, restartRetransmits: ${restarted.ms} ms`);
});

test('restartRetransmits: the dead_link count starts over, so quick resends after an outage keep the link', () => {
  // Five lost resends 40-200 ms apart: on top of the outage's ~15 transmissions that would reach dead_link (20).
  const r = afterOutage((k) => k.restartRetransmits(), 5);
  assert.equal(r.dead, false, 'the link was not called dead');
  assert.ok(r.ms < 1000, `acknowledged ${r.ms} ms after the path came back`);
});
