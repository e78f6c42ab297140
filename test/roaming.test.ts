// Roaming on loopback with the real binaries: a session keeps its id, keys,
// KCP state and streams when its relay leg or its control connection is cut.
// The standalone relay and the rendezvous sit behind a TCP proxy run by the
// test (a network element, not a mock), which cuts a connection with a RST,
// as a vanished address does. The transfer on one TCP connection must
// complete exactly, and no second session may appear.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import crypto from 'node:crypto';
import { FrameDecoder } from '../src/wire/frame.js';
import { encodeControl, parseControl, type ControlMessage } from '../src/wire/control.js';
import { eventsOf } from '../scripts/proc.js';
import { Procs, echoTransfer, outputOf, waitForEvent, SECRET } from './helpers/tunnel.js';
import { CutProxy } from './helpers/cut-proxy.js';

async function until(what: string, cond: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const SIZE = 40 * 1024 * 1024;

// The same session resumes and the transfer is exact.
test('relay leg and control connection cut mid-transfer', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const relay = p.spawnCli('relay', ['--listen', '127.0.0.1:0', '--key', 'roam-key', '--log-format', 'json']);
  const rr = await waitForEvent(relay, 'ready', 10_000);
  const relayProxy = await new CutProxy(Number(rr.port)).start();
  t.after(() => relayProxy.close());
  const rdv = await p.rendezvous(['--relay', `127.0.0.1:${relayProxy.port}`, '--relay-key', 'roam-key']);
  const rdvProxy = await new CutProxy(rdv.port).start();
  t.after(() => rdvProxy.close());
  const via = `127.0.0.1:${rdvProxy.port}`;
  const echo = await p.echoServer();
  const serve = await p.serve('roam', `127.0.0.1:${echo.port}`, via, SECRET, ['--mode', 'relay', '--no-admin']);
  const visit = await p.visit('roam', via, SECRET, ['--mode', 'relay', '--no-admin']);
  const first = await waitForEvent(visit.child, 'path', 10_000);
  const sid = String(first.sid);

  const transfer = echoTransfer(visit.port, SIZE, 120_000);
  // Cut the busier relay leg a quarter of the way in.
  await until('a quarter of the transfer', () => relayProxy.conns.some((c) => c.bytes > SIZE / 2), 60_000);
  const leg = relayProxy.conns.reduce((a, b) => (a.bytes >= b.bytes ? a : b));
  relayProxy.cut(leg);
  // And the visitor's control connection (the last one opened), while the relay is still away.
  rdvProxy.cut(rdvProxy.conns[rdvProxy.conns.length - 1]);

  const r = await transfer.catch((e: Error) => {
    for (const [n, c] of [
      ['visit', visit.child],
      ['serve', serve],
      ['relay', relay],
      ['rdv', rdv.child],
    ] as const)
      console.error(
        `--- ${n}\n${outputOf(c)
          .stderr.split('\n')
          .filter((l) => !l.includes('"debug"'))
          .slice(-30)
          .join('\n')}`,
      );
    throw e;
  });
  assert.equal(r.gotBytes, SIZE);
  assert.equal(r.got, r.sent, 'every byte came back, in order');

  const resumes = [...eventsOf(visit.child, 'resume'), ...eventsOf(serve, 'resume')];
  assert.ok(
    resumes.some((e) => e.what === 'relay' && e.sid === sid),
    `a relay resume was logged: ${JSON.stringify(resumes)}`,
  );
  await waitForEvent(visit.child, (o) => o.event === 'resume' && o.what === 'rendezvous', 20_000);
  for (const child of [visit.child, serve]) {
    assert.equal(eventsOf(child, 'session_closed').length, 0, 'no session closed');
    for (const e of eventsOf(child, 'path')) assert.equal(e.sid, sid, 'one session id throughout');
  }
  assert.ok(relayProxy.conns.length >= 3, 'a new relay connection replaced the cut one');
});

/** A raw control client: hello, then whatever the test sends; collects every message. */
async function rawClient(port: number, first: ControlMessage[]): Promise<{ msgs: ControlMessage[]; sock: net.Socket }> {
  const sock = net.connect({ port, host: '127.0.0.1' });
  const msgs: ControlMessage[] = [];
  const dec = new FrameDecoder(() => 1 << 20);
  sock.on('data', (d: Buffer) => {
    for (const f of dec.push(d).frames) {
      const p = parseControl(f.body);
      if (p.ok) msgs.push(p.msg);
    }
  });
  sock.on('error', () => {});
  await new Promise<void>((r) => sock.once('connect', () => r()));
  for (const m of first) sock.write(encodeControl(m));
  return { msgs, sock };
}

// Knowing the session id without the keys, nobody can resume it at the rendezvous or the relay.
test('attack: resuming without the keys', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const rdv = await p.rendezvous();
  const echo = await p.echoServer();
  const serve = await p.serve('roam2', `127.0.0.1:${echo.port}`, rdv.addr, SECRET, ['--mode', 'relay', '--no-admin']);
  const visit = await p.visit('roam2', rdv.addr, SECRET, ['--mode', 'relay', '--no-admin']);
  const sid = String((await waitForEvent(visit.child, 'path', 10_000)).sid);
  const forged = () => crypto.randomBytes(32).toString('base64url');
  const hello: ControlMessage = { type: 'hello', version: 1, software: 'attacker' };

  // Through the rendezvous: take over either side of the session.
  const atk = await rawClient(rdv.port, [
    hello,
    { type: 'session_resume', sid, role: 'visitor', token: forged(), candidates: [] },
    { type: 'session_resume', sid, role: 'server', token: forged(), candidates: [] },
    { type: 'session_resume', sid: '0011223344556677', role: 'visitor', token: forged(), candidates: [] },
  ]);
  t.after(() => atk.sock.destroy());
  await until('three refusals', () => atk.msgs.filter((m) => m.type === 'error').length === 3, 10_000);
  const codes = atk.msgs.filter((m) => m.type === 'error').map((m) => (m as { code: string }).code);
  assert.deepEqual(codes, ['bad_proof', 'bad_proof', 'unknown_session']);
  assert.ok(!atk.msgs.some((m) => m.type === 'session_resumed' || m.type === 'punch'), 'nothing was granted');

  // Through the (embedded) relay: take over a relay leg.
  const leg = await rawClient(rdv.port, [{ type: 'relay_resume', sid, role: 'server', token: forged() }]);
  t.after(() => leg.sock.destroy());
  await until('relay refusal', () => leg.msgs.some((m) => m.type === 'error'), 10_000);
  assert.equal((leg.msgs.find((m) => m.type === 'error') as { code: string }).code, 'bad_proof');
  assert.ok(!leg.msgs.some((m) => m.type === 'relay_ready'));

  // The session is untouched: same id, still carrying data.
  const r = await echoTransfer(visit.port, 2_000_000);
  assert.equal(r.got, r.sent);
  for (const child of [visit.child, serve]) {
    assert.equal(eventsOf(child, 'session_closed').length, 0);
    assert.equal(eventsOf(child, 'resume').length, 0);
    for (const e of eventsOf(child, 'path')) assert.equal(e.sid, sid);
  }
});

test('no resume within --resume-timeout: an error event (code resume_timeout), connections reset', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const relay = p.spawnCli('relay', ['--listen', '127.0.0.1:0', '--key', 'end-key', '--log-format', 'json']);
  const rr = await waitForEvent(relay, 'ready', 10_000);
  const relayProxy = await new CutProxy(Number(rr.port)).start();
  t.after(() => relayProxy.close());
  const rdv = await p.rendezvous(['--relay', `127.0.0.1:${relayProxy.port}`, '--relay-key', 'end-key']);
  const echo = await p.echoServer();
  const args = ['--mode', 'relay', '--no-admin', '--resume-timeout', '3'];
  const serve = await p.serve('end', `127.0.0.1:${echo.port}`, rdv.addr, SECRET, args);
  const visit = await p.visit('end', rdv.addr, SECRET, args);
  const sid = String((await waitForEvent(visit.child, 'path', 10_000)).sid);

  // One local connection, proven to work.
  const conn = net.connect({ port: visit.port, host: '127.0.0.1' });
  let closedWith: string | null = null;
  conn.on('error', (e: NodeJS.ErrnoException) => (closedWith ??= e.code ?? 'error'));
  conn.on('close', () => (closedWith ??= 'close'));
  let back = 0;
  conn.on('data', (d: Buffer) => (back += d.length));
  conn.write(Buffer.alloc(1000, 1));
  await until('the echo', () => back === 1000, 10_000);

  // The relay becomes unreachable for good: both legs cut, no new connection accepted.
  relayProxy.stopAccepting();
  for (const c of relayProxy.conns) relayProxy.cut(c);
  const lost = await waitForEvent(visit.child, 'relay_lost', 10_000);
  assert.equal(lost.sid, sid);
  // The local connection waits while the session tries to resume.
  assert.equal(closedWith, null, 'the connection was not closed when the relay was lost');
  conn.write(Buffer.alloc(1000, 2));

  for (const child of [visit.child, serve]) {
    const err = await waitForEvent(child, (o) => o.event === 'error' && o.sid === sid, 30_000);
    assert.equal(err.code, 'resume_timeout', JSON.stringify(err));
    const closed = await waitForEvent(child, 'session_closed', 10_000);
    assert.equal(closed.code, 'resume_timeout');
  }
  await until('the local connection is reset', () => closedWith !== null, 10_000);
  assert.equal(closedWith, 'ECONNRESET');
});
