/**
 * Ending a session on purpose tells the peer (a sealed Close datagram), so
 * the peer does not keep it, punching and heart-beating towards a process
 * that is gone, until --resume-timeout runs out.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Session } from '../src/session/session.js';
import { cryptoReady } from '../src/crypto/index.js';
import { DatagramType, MAX_DATAGRAM_LEN } from '../src/wire/datagram.js';
import { nullLogger } from '../src/util/log.js';
import { sessionKeys } from './helpers/session-keys.js';
import { MemPath } from './helpers/mem-path.js';
import { withTimeout } from './mux-harness.js';
import { Procs, SECRET, waitForEvent } from './helpers/tunnel.js';

await cryptoReady();

function pair(name: string) {
  const keys = sessionKeys(`session-close ${name}`);
  const opts = { log: nullLogger, deadAfterMs: 60_000 };
  const a = new Session({ keys: keys.visitor, role: 'visitor', sid: `${name}-a`, ...opts });
  const b = new Session({ keys: keys.server, role: 'server', sid: `${name}-b`, ...opts });
  const atA = new MemPath('direct', `${name}-a`, MAX_DATAGRAM_LEN);
  const atB = new MemPath('direct', `${name}-b`, MAX_DATAGRAM_LEN);
  atA.peer = { session: b, path: atB };
  atB.peer = { session: a, path: atA };
  a.setPath('direct', atA);
  b.setPath('direct', atB);
  const cleanup = () => {
    for (const s of [a, b]) {
      for (const st of s.mux.openStreams()) st.on('error', () => {});
      s.close('test over');
    }
    atA.close();
    atB.close();
  };
  return { a, b, atA, atB, cleanup };
}

test('closing a session tells the peer, which closes at once, without a failure code', async (t) => {
  const { a, b, atA, atB, cleanup } = pair('close');
  t.after(cleanup);
  const stream = a.mux.openStream();
  stream.on('error', () => {});
  const peerStream = new Promise<void>((resolve) =>
    b.mux.once('stream', (s: { on: (e: string, f: () => void) => void }) => {
      s.on('error', () => {});
      resolve();
    }),
  );
  stream.write(Buffer.from('hello'));
  await withTimeout(peerStream, 2000, 'the stream at b');
  const closed = new Promise<[string, string | null]>((resolve) =>
    b.once('close', (reason: string, code: string | null) => resolve([reason, code])),
  );
  const closesFromB: number[] = [];
  const send = atB.send.bind(atB);
  atB.send = (d: Uint8Array) => {
    if (d[0] === DatagramType.Close) closesFromB.push(d.length);
    send(d);
  };
  const closesFromA: number[] = [];
  const sendA = atA.send.bind(atA);
  atA.send = (d: Uint8Array) => {
    if (d[0] === DatagramType.Close) closesFromA.push(d.length);
    sendA(d);
  };
  a.close('visitor stopping');
  assert.equal(closesFromA.length, 1, 'a sent one Close');
  const [reason, code] = await withTimeout(closed, 2000, 'b to close');
  assert.match(reason, /peer ended the session/);
  assert.equal(code, null, 'an ending on purpose is no failure');
  assert.equal(b.closeCode, null);
  // b does not answer a Close with one of its own (a is gone).
  assert.deepEqual(closesFromB, []);
});

test('a Close that is not sealed with the session keys is rejected and changes nothing', (t) => {
  const { b, atA, cleanup } = pair('forged');
  t.after(cleanup);
  const other = pair('other');
  t.after(other.cleanup);
  // Sealed by another session (wrong keys), and a bare type byte: neither opens.
  const forged: Uint8Array[] = [];
  const send = other.atA.send.bind(other.atA);
  other.atA.send = (d: Uint8Array) => {
    forged.push(Buffer.from(d));
    send(d);
  };
  other.a.sendSealed(DatagramType.Close, new Uint8Array(0));
  assert.equal(forged.length, 1);
  assert.equal(b.receive(forged[0], atA), false);
  assert.equal(b.receive(Uint8Array.of(DatagramType.Close), atA), false);
  assert.equal(b.closed, false);
});

test('peer visit stopped with SIGTERM: the serving peer ends that session at once (direct and relay)', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const rdv = await p.rendezvous();
  const echo = await p.echoServer();
  const serve = await p.serve('closer', `127.0.0.1:${echo.port}`, rdv.addr, SECRET, ['--no-admin']);
  for (const mode of ['auto', 'relay']) {
    const v = await p.visit('closer', rdv.addr, SECRET, ['--no-admin', '--mode', mode]);
    const path = await waitForEvent(
      v.child,
      (o) => o.event === 'path' && o.path === (mode === 'relay' ? 'relay' : 'direct'),
      20_000,
    );
    const sid = String(path.sid);
    const t0 = Date.now();
    v.child.kill('SIGTERM');
    const closed = await waitForEvent(serve, (o) => o.event === 'session_closed' && o.sid === sid, 5000);
    assert.match(String(closed.message), /peer ended the session|closed/, JSON.stringify(closed));
    assert.ok(Date.now() - t0 < 5000);
    assert.equal(closed.code, undefined, `no failure code: ${JSON.stringify(closed)}`);
  }
});
