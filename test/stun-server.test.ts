import { test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { performance } from 'node:perf_hooks';
import { StunResponder, StunServer } from '../src/stun/server.js';
import { stunBinding, StunError } from '../src/stun/client.js';
import {
  decodeStun,
  encodeStun,
  newTransactionId,
  StunAttr,
  StunClass,
  StunMethod,
  type StunMessage,
} from '../src/stun/message.js';
import { sleep } from '../src/util/backoff.js';

type Ctx = { after: (fn: () => unknown) => void };

async function udp(t: Ctx, address = '127.0.0.1'): Promise<dgram.Socket> {
  const s = dgram.createSocket(address.includes(':') ? 'udp6' : 'udp4');
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.bind(0, address, () => resolve());
  });
  t.after(
    () =>
      new Promise<void>((r) => {
        try {
          s.close(() => r());
        } catch {
          r();
        }
      }),
  );
  return s;
}

async function stunServer(
  t: Ctx,
  opts: Partial<ConstructorParameters<typeof StunServer>[0]> = {},
): Promise<StunServer> {
  const srv = new StunServer({ primary: { address: '127.0.0.1', port: 0 }, ...opts });
  await srv.listen();
  t.after(() => srv.close());
  return srv;
}

/** Everything `s` receives during `ms`. */
function collect(s: dgram.Socket, ms: number): Promise<{ msg: Buffer; rinfo: dgram.RemoteInfo }[]> {
  const got: { msg: Buffer; rinfo: dgram.RemoteInfo }[] = [];
  const on = (msg: Buffer, rinfo: dgram.RemoteInfo) => got.push({ msg, rinfo });
  s.on('message', on);
  return new Promise((resolve) =>
    setTimeout(() => {
      s.off('message', on);
      resolve(got);
    }, ms),
  );
}

function send(s: dgram.Socket, buf: Buffer, to: { address: string; port: number }): Promise<void> {
  return new Promise((resolve, reject) => s.send(buf, to.port, to.address, (e) => (e ? reject(e) : resolve())));
}

/** Sends a raw request and returns the first STUN reply with its transaction id (or null after `ms`). */
async function exchange(s: dgram.Socket, req: StunMessage, to: { address: string; port: number }, ms = 1000) {
  let onMsg: ((m: Buffer, r: dgram.RemoteInfo) => void) | undefined;
  let timer: NodeJS.Timeout | undefined;
  const reply = new Promise<{ msg: StunMessage; rinfo: dgram.RemoteInfo } | null>((resolve) => {
    onMsg = (m, rinfo) => {
      const d = decodeStun(m);
      if (d?.transactionId.equals(req.transactionId)) resolve({ msg: d, rinfo });
    };
    s.on('message', onMsg);
    timer = setTimeout(() => resolve(null), ms);
  });
  try {
    await send(s, encodeStun(req), to);
    return await reply;
  } finally {
    clearTimeout(timer);
    s.off('message', onMsg!);
  }
}

const bindingRequest = (extra: Partial<StunMessage> = {}): StunMessage => ({
  cls: StunClass.Request,
  method: StunMethod.Binding,
  transactionId: newTransactionId(),
  ...extra,
});

test('single-address server: (XOR-)MAPPED-ADDRESS = client socket, FINGERPRINT, no OTHER-ADDRESS', async (t) => {
  const srv = await stunServer(t);
  const c = await udp(t);
  const r = await exchange(c, bindingRequest(), srv.address());
  assert.ok(r, 'no reply');
  const local = c.address();
  const me = { address: '127.0.0.1', port: local.port, family: 'IPv4' };
  assert.equal(r.msg.cls, StunClass.SuccessResponse);
  assert.deepEqual(r.msg.xorMappedAddress, me);
  assert.deepEqual(r.msg.mappedAddress, me);
  assert.equal(r.msg.fingerprint, true);
  assert.equal(r.msg.otherAddress, undefined);
  assert.deepEqual(r.msg.responseOrigin, srv.address());
  assert.equal(r.msg.software, 'holepunch');

  const res = await stunBinding(c, srv.address());
  assert.deepEqual(res.mapped, me);
  assert.deepEqual(res.source, srv.address());
  assert.equal(res.otherAddress, undefined);
  assert.equal(res.attempts, 1);
});

test('single-address server: CHANGE-REQUEST with a flag gets 420 naming it; with no flags, answered', async (t) => {
  const srv = await stunServer(t);
  const c = await udp(t);
  const r = await exchange(c, bindingRequest({ changeRequest: { changeIp: false, changePort: true } }), srv.address());
  assert.ok(r);
  assert.equal(r.msg.cls, StunClass.ErrorResponse);
  assert.equal(r.msg.errorCode?.code, 420);
  assert.deepEqual(r.msg.unknownAttributes, [StunAttr.ChangeRequest]);

  await assert.rejects(stunBinding(c, srv.address(), { changeIp: true }), (e: unknown) => {
    assert.ok(e instanceof StunError);
    assert.equal(e.code, 'ESTUNERROR');
    assert.equal(e.stunCode, 420);
    assert.match(e.message, /420/);
    return true;
  });

  const ok = await exchange(
    c,
    bindingRequest({ changeRequest: { changeIp: false, changePort: false } }),
    srv.address(),
  );
  assert.equal(ok?.msg.cls, StunClass.SuccessResponse);
});

test('unknown comprehension-required attribute: 420 with UNKNOWN-ATTRIBUTES; optional ones ignored', async (t) => {
  const srv = await stunServer(t);
  const c = await udp(t);
  const r = await exchange(
    c,
    bindingRequest({
      attributes: [
        { type: 0x0024, value: Buffer.alloc(4) },
        { type: 0x8029, value: Buffer.alloc(8) },
      ],
    }),
    srv.address(),
  );
  assert.equal(r?.msg.errorCode?.code, 420);
  assert.deepEqual(r?.msg.unknownAttributes, [0x0024]);
  const ok = await exchange(
    c,
    bindingRequest({ attributes: [{ type: 0x8029, value: Buffer.alloc(8) }], fingerprint: true }),
    srv.address(),
  );
  assert.equal(ok?.msg.cls, StunClass.SuccessResponse);
});

// The answers carry OTHER-ADDRESS and RESPONSE-ORIGIN.
test('RFC 5780 server on 127.0.0.1 + .2: CHANGE-REQUEST answered from the other IP/port, with origin', async (t) => {
  const srv = await stunServer(t, { alternate: { address: '127.0.0.2', port: 0 } });
  const [pp, pa, ap, aa] = srv.endpoints;
  assert.equal(srv.endpoints.length, 4);
  assert.equal(pp.address, '127.0.0.1');
  assert.equal(pa.address, '127.0.0.1');
  assert.equal(ap.address, '127.0.0.2');
  assert.equal(aa.address, '127.0.0.2');
  assert.equal(ap.port, pp.port);
  assert.equal(aa.port, pa.port);
  assert.notEqual(pa.port, pp.port);

  const c = await udp(t);
  const me = { address: '127.0.0.1', port: c.address().port, family: 'IPv4' };
  const cases = [
    { opts: {}, from: pp },
    { opts: { changeIp: true }, from: ap },
    { opts: { changePort: true }, from: pa },
    { opts: { changeIp: true, changePort: true }, from: aa },
  ];
  for (const { opts, from } of cases) {
    const r = await stunBinding(c, pp, { ...opts, timeoutMs: 2000 });
    assert.deepEqual(r.source, from, `source for ${JSON.stringify(opts)}`);
    assert.deepEqual(r.responseOrigin, from, `RESPONSE-ORIGIN for ${JSON.stringify(opts)}`);
    assert.deepEqual(r.otherAddress, aa);
    assert.deepEqual(r.mapped, me);
  }
  // Requests to the other sockets: OTHER-ADDRESS is the one differing in both IP and port.
  assert.deepEqual((await stunBinding(c, aa)).otherAddress, pp);
  assert.deepEqual((await stunBinding(c, pa)).otherAddress, ap);
  const fromAp = await stunBinding(c, ap, { changePort: true });
  assert.deepEqual(fromAp.source, aa);
  assert.deepEqual(fromAp.otherAddress, pa);
});

test('port-only alternate: two sockets, change port works, change IP gets 420', async (t) => {
  const srv = await stunServer(t, { alternate: { address: '127.0.0.1', port: 0 } });
  assert.equal(srv.endpoints.length, 2);
  const [pp, pa] = srv.endpoints;
  const c = await udp(t);
  const r = await stunBinding(c, pp, { changePort: true });
  assert.deepEqual(r.source, pa);
  assert.deepEqual(r.otherAddress, pa);
  await assert.rejects(stunBinding(c, pp, { changeIp: true }), { code: 'ESTUNERROR', stunCode: 420 });
});

test('RESPONSE-PORT sends the response to that port on the client IP', async (t) => {
  const srv = await stunServer(t);
  const a = await udp(t);
  const b = await udp(t);
  const req = bindingRequest({ responsePort: b.address().port });
  const atB = collect(b, 500);
  const atA = collect(a, 500);
  await send(a, encodeStun(req), srv.address());
  const [gotB, gotA] = [await atB, await atA];
  assert.equal(gotA.length, 0);
  assert.equal(gotB.length, 1);
  assert.deepEqual(decodeStun(gotB[0].msg)?.xorMappedAddress?.port, a.address().port);
});

test('junk gets no reply (300 ms of silence); non-STUN datagrams reach onOtherDatagram with socket', async (t) => {
  const others: { msg: Buffer; socket: dgram.Socket }[] = [];
  const srv = await stunServer(t, { onOtherDatagram: (msg, _rinfo, socket) => others.push({ msg, socket }) });
  const c = await udp(t);
  const tid = newTransactionId();
  const good = encodeStun({
    cls: StunClass.Request,
    method: StunMethod.Binding,
    transactionId: tid,
    fingerprint: true,
  });
  const badFp = Buffer.from(good);
  badFp[badFp.length - 1] ^= 0xff;
  const sealedLike = Buffer.concat([Buffer.from([0xa1]), Buffer.alloc(40, 0x55)]);
  const junk = [
    Buffer.from('hello'),
    sealedLike,
    Buffer.alloc(0),
    badFp,
    encodeStun({
      cls: StunClass.SuccessResponse,
      method: StunMethod.Binding,
      transactionId: tid,
      xorMappedAddress: { address: '1.2.3.4', port: 1, family: 'IPv4' },
    }),
    encodeStun({ cls: StunClass.Indication, method: StunMethod.Binding, transactionId: tid }),
    encodeStun({ cls: StunClass.Request, method: 0x003, transactionId: tid }), // TURN Allocate
    good.subarray(0, 19),
    encodeStun({ cls: StunClass.Request, method: StunMethod.Binding, transactionId: tid, responsePort: 0 }),
  ];
  const heard = collect(c, 300);
  for (const j of junk) await send(c, j, srv.address());
  assert.deepEqual(await heard, [], 'the server answered junk');
  assert.deepEqual(
    others.map((o) => o.msg.toString('hex')),
    [Buffer.from('hello'), sealedLike, Buffer.alloc(0), good.subarray(0, 19)].map((b) => b.toString('hex')),
  );
  assert.equal(others[1].socket, srv.sockets[0]);
  // The silence meant something: the same socket still answers a valid request.
  const r = await exchange(
    c,
    { cls: StunClass.Request, method: StunMethod.Binding, transactionId: tid, fingerprint: true },
    srv.address(),
  );
  assert.equal(r?.msg.cls, StunClass.SuccessResponse);
  assert.ok(srv.responder.stats.ignored >= 5);
});

test('onOtherDatagram can answer through the socket it was given (shared punch-coordination port)', async (t) => {
  const srv = await stunServer(t, {
    onOtherDatagram: (msg, rinfo, socket) =>
      socket.send(Buffer.concat([Buffer.from('echo:'), msg]), rinfo.port, rinfo.address),
  });
  const c = await udp(t);
  const heard = collect(c, 300);
  await send(c, Buffer.from([0xa2, 1, 2, 3]), srv.address());
  const got = await heard;
  assert.equal(got.length, 1);
  assert.equal(
    got[0].msg.toString('hex'),
    Buffer.concat([Buffer.from('echo:'), Buffer.from([0xa2, 1, 2, 3])]).toString('hex'),
  );
});

test('client ignores unrelated datagrams and wrong transaction ids; other listeners see them all', async (t) => {
  const fake = await udp(t); // a hand-driven "server"
  const c = await udp(t);
  const seenByOther: Buffer[] = [];
  c.on('message', (m) => seenByOther.push(m));
  fake.on('message', (msg, rinfo) => {
    const req = decodeStun(msg);
    if (!req) return;
    const to = { address: rinfo.address, port: rinfo.port };
    const wrongTid = newTransactionId();
    const wrong = encodeStun({
      cls: StunClass.SuccessResponse,
      method: 1,
      transactionId: wrongTid,
      xorMappedAddress: { address: '9.9.9.9', port: 9, family: 'IPv4' },
    });
    const right = encodeStun({
      cls: StunClass.SuccessResponse,
      method: 1,
      transactionId: req.transactionId,
      xorMappedAddress: { address: '203.0.113.7', port: 4242, family: 'IPv4' },
      fingerprint: true,
    });
    const sealed = Buffer.concat([Buffer.from([0xa1]), Buffer.alloc(30, 1)]);
    // Junk, a response for someone else, a sealed datagram, a request bearing our id, then the answer.
    void (async () => {
      await send(fake, Buffer.from('noise'), to);
      await send(fake, wrong, to);
      await send(fake, sealed, to);
      await send(fake, encodeStun({ cls: StunClass.Request, method: 1, transactionId: req.transactionId }), to);
      await send(fake, right, to);
    })();
  });
  const before = c.listenerCount('message');
  const r = await stunBinding(c, { address: '127.0.0.1', port: fake.address().port }, { timeoutMs: 2000 });
  assert.deepEqual(r.mapped, { address: '203.0.113.7', port: 4242, family: 'IPv4' });
  assert.equal(c.listenerCount('message'), before, 'listener not removed');
  await sleep(50);
  assert.equal(seenByOther.length, 5, 'the other listener must receive all five datagrams');
  assert.equal(seenByOther[0].toString(), 'noise');
});

test('retransmits the same transaction with doubling RTO until answered', async (t) => {
  const fake = await udp(t);
  const c = await udp(t);
  const arrivals: { at: number; tid: string }[] = [];
  fake.on('message', (msg, rinfo) => {
    const req = decodeStun(msg)!;
    arrivals.push({ at: performance.now(), tid: req.transactionId.toString('hex') });
    if (arrivals.length === 3) {
      const res = encodeStun({
        cls: StunClass.SuccessResponse,
        method: 1,
        transactionId: req.transactionId,
        mappedAddress: { address: '127.0.0.1', port: rinfo.port, family: 'IPv4' },
      });
      fake.send(res, rinfo.port, rinfo.address);
    }
  });
  const r = await stunBinding(c, { address: '127.0.0.1', port: fake.address().port }, { rtoMs: 50, timeoutMs: 3000 });
  assert.equal(r.attempts, 3);
  assert.equal(new Set(arrivals.map((a) => a.tid)).size, 1, 'retransmissions must reuse the transaction id');
  // A lower bound on the whole: 50 + 100 ms if the RTO doubles, 100 ms if it did not. Arrivals are
  // stamped by this same event loop, so a busy machine stamps the first one late and shortens the
  // first gap alone; the sum from the first to the third still tells doubling from a fixed RTO.
  const span = arrivals[2].at - arrivals[0].at;
  assert.ok(span >= 125, `first to third request ${span.toFixed(1)} ms: the RTO did not double`);
  assert.deepEqual(r.mapped.port, c.address().port); // MAPPED-ADDRESS alone is accepted (old servers)
});

test('timeout rejects with a clear error, bounded retransmissions, and leaves no listener behind', async (t) => {
  const silent = await udp(t);
  let requests = 0;
  silent.on('message', () => requests++);
  const c = await udp(t);
  const before = c.listenerCount('message');
  const started = performance.now();
  await assert.rejects(
    stunBinding(c, { address: '127.0.0.1', port: silent.address().port }, { timeoutMs: 400, rtoMs: 50, retries: 2 }),
    (e: unknown) => {
      assert.ok(e instanceof StunError);
      assert.equal(e.code, 'ESTUNTIMEOUT');
      assert.match(e.message, /timed out after 400 ms \(3 requests sent/);
      return true;
    },
  );
  assert.ok(performance.now() - started >= 395);
  assert.equal(requests, 3);
  assert.equal(c.listenerCount('message'), before);
});

test('abort and socket close reject the pending binding', async (t) => {
  const silent = await udp(t);
  const c = await udp(t);
  const ac = new AbortController();
  const p = stunBinding(
    c,
    { address: '127.0.0.1', port: silent.address().port },
    { signal: ac.signal, timeoutMs: 5000 },
  );
  ac.abort();
  await assert.rejects(p, { code: 'ESTUNABORTED' });
  const d = dgram.createSocket('udp4');
  await new Promise<void>((r) => d.bind(0, '127.0.0.1', () => r()));
  const q = stunBinding(d, { address: '127.0.0.1', port: silent.address().port }, { timeoutMs: 5000 });
  d.close();
  await assert.rejects(q, { code: 'ESTUNCLOSED' });
});

test('IPv6 loopback: XOR-MAPPED-ADDRESS for ::1', async (t) => {
  const probe = dgram.createSocket('udp6');
  const ok = await new Promise<boolean>((r) => {
    probe.once('error', () => r(false));
    probe.bind(0, '::1', () => r(true));
  });
  probe.close();
  if (!ok) {
    t.skip('::1 is not available here');
    return;
  }
  const srv = await stunServer(t, { primary: { address: '::1', port: 0 } });
  const c = await udp(t, '::1');
  const r = await stunBinding(c, srv.address());
  assert.deepEqual(r.mapped, { address: '::1', port: c.address().port, family: 'IPv6' });
  assert.deepEqual(r.responseOrigin, { address: '::1', port: srv.address().port, family: 'IPv6' });
});

test('StunResponder: out-of-range socket index and bad config', () => {
  const r = new StunResponder({ primary: { address: '127.0.0.1', port: 3478 } });
  const req = encodeStun({ cls: StunClass.Request, method: 1, transactionId: newTransactionId() });
  assert.equal(r.handle(req, { address: '127.0.0.1', port: 1 }, 1), null);
  assert.equal(r.handle(req, { address: '127.0.0.1', port: 1 }, -1), null);
  assert.ok(r.handle(req, { address: '127.0.0.1', port: 1 }, 0));
  assert.throws(
    () => new StunResponder({ primary: { address: '0.0.0.0', port: 1 }, alternate: { address: '10.0.0.2', port: 2 } }),
    /concrete IPs/,
  );
  assert.throws(
    () => new StunResponder({ primary: { address: '127.0.0.1', port: 1 }, alternate: { address: '::1', port: 2 } }),
    /same family/,
  );
  assert.throws(() => new StunResponder({ primary: { address: 'example', port: 1 } }), /IP literal/);
  // A wildcard primary still answers; it just cannot name RESPONSE-ORIGIN.
  const w = new StunResponder({ primary: { address: '0.0.0.0', port: 3478 } });
  const out = w.handle(req, { address: '::ffff:192.0.2.9', port: 7, family: 'IPv6' }, 0)!;
  const m = decodeStun(out.reply)!;
  assert.deepEqual(m.xorMappedAddress, { address: '192.0.2.9', port: 7, family: 'IPv4' });
  assert.equal(m.responseOrigin, undefined);
});
