import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Procs, echoTransfer, waitForEvent, waitExit, outputOf, SECRET } from './helpers/tunnel.js';
import { FrameDecoder } from '../src/wire/frame.js';
import { parseControl } from '../src/wire/control.js';

/** Opens an idle TCP connection; resolves with the error code it is sent, or 'open' if none within waitMs. */
function idleConnection(port: number, waitMs = 700): Promise<{ outcome: string; socket: net.Socket }> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    const dec = new FrameDecoder();
    s.on('error', () => {});
    const timer = setTimeout(() => resolve({ outcome: 'open', socket: s }), waitMs);
    s.on('data', (d: Buffer) => {
      for (const f of dec.push(d).frames) {
        const r = parseControl(f.body);
        if (r.ok && r.msg.type === 'error') {
          clearTimeout(timer);
          resolve({ outcome: r.msg.code, socket: s });
        }
      }
    });
  });
}

test('--max-conns-per-ip: counts live connections (relay legs too), refuses the rest with a clear error', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const rdv = await p.rendezvous(['--max-conns-per-ip', '8']);
  const echo = await p.echoServer();
  await p.serve('echo', `127.0.0.1:${echo.port}`, rdv.addr, SECRET, ['--mode', 'relay', '--no-admin']);
  const visit = await p.visit('echo', rdv.addr, SECRET, ['--mode', 'relay', '--no-admin']);
  const r = await echoTransfer(visit.port, 100_000);
  assert.equal(r.got, r.sent);
  // Live now: serve's and visit's control connections (2). The relay legs were handed to the relay.
  const sockets: net.Socket[] = [];
  t.after(() => sockets.forEach((s) => s.destroy()));
  const outcomes: string[] = [];
  for (let i = 0; i < 8; i++) {
    const c = await idleConnection(rdv.port);
    sockets.push(c.socket);
    outcomes.push(c.outcome);
  }
  assert.deepEqual(outcomes, ['open', 'open', 'open', 'open', 'open', 'open', 'limit', 'limit']);
  await waitForEvent(rdv.child, 'limit', 2000);
  // The tunnel that was already up is unaffected.
  const r2 = await echoTransfer(visit.port, 100_000);
  assert.equal(r2.got, r2.sent);
});

test('limit flags reject bad values by name', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const bad = p.spawnCli('rendezvous', ['--listen', '127.0.0.1:0', '--max-sessions', 'lots']);
  assert.equal(await waitExit(bad, 10_000), 1);
  assert.match(outputOf(bad).stderr, /invalid --max-sessions "lots"/);
});

test('standalone relay: a frame dripped a byte at a time is closed at the bind deadline, not held', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const relay = p.spawnCli('relay', ['--listen', '127.0.0.1:0', '--key', 'drip-key', '--log-format', 'json']);
  const rr = await waitForEvent(relay, 'ready', 10_000);
  const s = net.connect({ port: Number(rr.port), host: '127.0.0.1' });
  t.after(() => s.destroy());
  s.on('error', () => {});
  let closed = false;
  const codes: string[] = [];
  const dec = new FrameDecoder();
  s.on('data', (d: Buffer) => {
    for (const f of dec.push(d).frames) {
      const r = parseControl(f.body);
      if (r.ok && r.msg.type === 'error') codes.push(r.msg.code);
    }
  });
  s.on('close', () => (closed = true));
  await new Promise<void>((r) => s.once('connect', () => r()));
  s.write(Buffer.from([0, 0, 0x3e, 0x80, 1, 1])); // a 16 000-byte control frame, never finished
  // A byte every 2 s keeps an idle timer (10 s) from ever firing; the deadline is 10 s from the accept.
  for (let i = 0; i < 10 && !closed; i++) {
    s.write('x');
    await new Promise((r) => setTimeout(r, 2000));
  }
  assert.ok(closed, 'closed within 20 s');
  assert.deepEqual(codes, ['timeout']);
});
