import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import crypto from 'node:crypto';
import { Procs, echoTransfer, connectOutcome, waitForEvent, waitExit, outputOf, SECRET } from './helpers/tunnel.js';
import { spawn } from 'node:child_process';
import { CLI, eventsOf } from '../scripts/proc.js';
import { encodeFrameHeader, FrameKind, FrameDecoder } from '../src/wire/frame.js';
import { parseControl } from '../src/wire/control.js';
import { sleep } from '../src/util/backoff.js';

/** One rendezvous + one echo service + serve + visit, the common fixture; relay path unless told otherwise. */
async function tunnel(
  t: { after(fn: () => Promise<void>): void },
  serveExtra: string[] = ['--mode', 'relay'],
  visitExtra: string[] = ['--mode', 'relay'],
) {
  const p = new Procs();
  t.after(() => p.cleanup());
  const rdv = await p.rendezvous();
  const echo = await p.echoServer();
  const serve = await p.serve('echo', `127.0.0.1:${echo.port}`, rdv.addr, SECRET, serveExtra);
  const visit = await p.visit('echo', rdv.addr, SECRET, visitExtra);
  return { p, rdv, echo, serve, visit };
}

test('echo through visit --bind over the relay, path event says relay', async (t) => {
  const { serve, visit } = await tunnel(t);
  const r = await echoTransfer(visit.port, 10_000);
  assert.equal(r.gotBytes, 10_000);
  assert.equal(r.got, r.sent);
  for (const child of [serve, visit.child]) {
    const ev = await waitForEvent(child, 'path', 5000);
    assert.equal(ev.path, 'relay');
    assert.match(String(ev.remote), /127\.0\.0\.1:\d+/);
  }
});

test('--mode auto on loopback: relay first, then direct, with a stream open across the move', async (t) => {
  const { visit, serve } = await tunnel(t, [], []);
  // Start a transfer at once: it begins on whatever path is up first and must survive the move.
  const transfer = echoTransfer(visit.port, 8 * 1024 * 1024, 60_000);
  const direct = await waitForEvent(visit.child, (o) => o.event === 'path' && o.path === 'direct', 15_000);
  assert.match(String(direct.remote), /^(127\.0\.0\.1|\[[0-9a-f:]+\]):\d+$/); // or one of the host's IPv6 addresses
  await waitForEvent(serve, (o) => o.event === 'path' && o.path === 'direct', 15_000);
  const r = await transfer;
  assert.equal(r.gotBytes, 8 * 1024 * 1024);
  assert.equal(r.got, r.sent);
  const first = eventsOf(visit.child, 'path')[0];
  assert.ok(first, 'a path event was logged');
});

test('echo through visit --stdio (ssh ProxyCommand style)', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const rdv = await p.rendezvous();
  const echo = await p.echoServer();
  await p.serve('echo', `127.0.0.1:${echo.port}`, rdv.addr, SECRET);
  // --stdio prints warnings and errors only, unless --log-level asks for more (then `ready` is there).
  for (const extra of [['--log-level', 'info'], []]) {
    // Spawned without output capture: stdout carries binary tunnel data here.
    const child = spawn(process.execPath, [CLI.peer, 'visit', 'echo', '--stdio', '--log-format', 'json', ...extra], {
      env: { ...process.env, PEER_SERVER: rdv.addr, PEER_SECRET: SECRET },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    t.after(() => child.kill('SIGKILL'));
    const payload = crypto.randomBytes(300_000);
    const chunks: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => chunks.push(d));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdin.end(payload);
    const code = await waitExit(child, 20_000);
    assert.equal(code, 0, stderr);
    if (extra.length) assert.match(stderr, /"event":"ready"/);
    else assert.equal(stderr, '', 'visit --stdio printed on stderr without --log-level');
    assert.equal(
      crypto.createHash('sha256').update(Buffer.concat(chunks)).digest('hex'),
      crypto.createHash('sha256').update(payload).digest('hex'),
    );
  }
});

test('50 MB both ways, sha256 equal', async (t) => {
  const { visit } = await tunnel(t);
  const r = await echoTransfer(visit.port, 50 * 1024 * 1024, 120_000);
  assert.equal(r.gotBytes, 50 * 1024 * 1024);
  assert.equal(r.got, r.sent);
  t.diagnostic(`50 MB echo took ${r.ms} ms (${((2 * 50) / (r.ms / 1000)).toFixed(1)} MB/s both directions)`);
});

test('200 concurrent streams, each exact', async (t) => {
  const { visit, echo } = await tunnel(t);
  const results = await Promise.all(Array.from({ length: 200 }, () => echoTransfer(visit.port, 32 * 1024, 60_000)));
  for (const r of results) {
    assert.equal(r.gotBytes, 32 * 1024);
    assert.equal(r.got, r.sent);
  }
  assert.ok(echo.connections() >= 200);
});

test('half-close: FIN reaches the service and the reply still comes back', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const rdv = await p.rendezvous();
  // A service that answers only after the client has finished sending (like `wc`).
  const svc = net.createServer({ allowHalfOpen: true }, (s) => {
    let n = 0;
    s.on('data', (d: Buffer) => (n += d.length));
    s.on('end', () => s.end(`received ${n} bytes`));
  });
  p.track(svc);
  await new Promise<void>((r) => svc.listen(0, '127.0.0.1', () => r()));
  await p.serve('wc', `127.0.0.1:${(svc.address() as net.AddressInfo).port}`, rdv.addr, SECRET);
  const visit = await p.visit('wc', rdv.addr, SECRET);
  const reply = await new Promise<string>((resolve, reject) => {
    const s = net.connect({ port: visit.port, host: '127.0.0.1', allowHalfOpen: true });
    let out = '';
    const timer = setTimeout(() => reject(new Error('no reply after half-close')), 15_000);
    s.on('data', (d) => (out += d.toString()));
    s.on('end', () => {
      clearTimeout(timer);
      s.end();
      resolve(out);
    });
    s.on('error', reject);
    s.end(Buffer.alloc(12345, 7));
  });
  assert.equal(reply, 'received 12345 bytes');
});

test('service refused: the visitor connection is reset, the tunnel keeps working', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const rdv = await p.rendezvous();
  const dead = net.createServer();
  await new Promise<void>((r) => dead.listen(0, '127.0.0.1', () => r()));
  const deadPort = (dead.address() as net.AddressInfo).port;
  await new Promise<void>((r) => dead.close(() => r()));
  const serve = await p.serve('nothing', `127.0.0.1:${deadPort}`, rdv.addr, SECRET);
  const visit = await p.visit('nothing', rdv.addr, SECRET);
  const outcome = await connectOutcome(visit.port);
  assert.equal(outcome, 'ECONNRESET');
  await waitForEvent(serve, 'service_unreachable', 5000);
  // The session survives a refused stream: a second try gets the same clean answer.
  assert.equal(await connectOutcome(visit.port), 'ECONNRESET');
});

test('wrong secret: both sides report it, visit exits non-zero, the service never sees a connection', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const rdv = await p.rendezvous();
  const echo = await p.echoServer();
  const serve = await p.serve('echo', `127.0.0.1:${echo.port}`, rdv.addr, SECRET);
  const child = p.spawnCli('peer', [
    'visit',
    'echo',
    '--bind',
    '127.0.0.1:0',
    '--server',
    rdv.addr,
    '--secret',
    'not the secret',
    '--log-format',
    'json',
  ]);
  const code = await waitExit(child, 20_000);
  assert.notEqual(code, 0);
  assert.equal(code !== null, true, 'visit must exit by itself');
  const err = await waitForEvent(child, 'error', 1000);
  assert.match(String(err.message), /secret/i);
  const serveErr = await waitForEvent(serve, 'error', 5000);
  assert.match(String(serveErr.message), /secret/i);
  assert.equal(echo.connections(), 0);
});

test('unknown name: visit exits non-zero with a one-line reason', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const rdv = await p.rendezvous();
  const child = p.spawnCli('peer', [
    'visit',
    'nobody-here',
    '--bind',
    '127.0.0.1:0',
    '--server',
    rdv.addr,
    '--secret',
    SECRET,
  ]);
  const code = await waitExit(child, 15_000);
  assert.equal(code, 1);
  const lines = outputOf(child).stderr.trim().split('\n');
  assert.equal(lines.length, 1, outputOf(child).stderr);
  assert.match(lines[0], /no peer is serving "nobody-here"/);
});

test('a name already taken is refused while its owner is connected', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const rdv = await p.rendezvous();
  const echo = await p.echoServer();
  const first = await p.serve('taken', `127.0.0.1:${echo.port}`, rdv.addr, SECRET);
  const second = p.spawnCli('peer', [
    'serve',
    '--name',
    'taken',
    '--local',
    `127.0.0.1:${echo.port}`,
    '--server',
    rdv.addr,
    '--secret',
    SECRET,
    '--log-format',
    'json',
  ]);
  assert.equal(await waitExit(second, 15_000), 1);
  const err = await waitForEvent(second, 'error', 1000);
  assert.match(String(err.message), /already served/);
  // The first owner still serves.
  assert.equal(first.exitCode, null);
  const visit = await p.visit('taken', rdv.addr, SECRET);
  const r = await echoTransfer(visit.port, 1000);
  assert.equal(r.got, r.sent);
});

test('rendezvous restart: serve re-registers on its own and new visits work', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const rdv = await p.rendezvous();
  const echo = await p.echoServer();
  const serve = await p.serve('echo', `127.0.0.1:${echo.port}`, rdv.addr, SECRET);
  rdv.child.kill('SIGKILL');
  await waitExit(rdv.child, 5000);
  await waitForEvent(serve, 'disconnected', 5000);
  const rdv2 = p.spawnCli('rendezvous', ['--listen', rdv.addr, '--log-format', 'json']);
  await waitForEvent(rdv2, 'ready', 10_000);
  await waitForEvent(serve, (o) => o.event === 'ready' && o.reconnect === true, 30_000);
  const visit = await p.visit('echo', rdv.addr, SECRET);
  const r = await echoTransfer(visit.port, 100_000);
  assert.equal(r.got, r.sent);
});

/** Opens a raw TCP connection to the rendezvous, sends bytes, and returns the control messages it answers with. */
function rawExchange(port: number, bytes: Buffer): Promise<{ messages: unknown[]; closed: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    const dec = new FrameDecoder();
    const messages: unknown[] = [];
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ messages, closed: false });
    }, 5000);
    s.on('data', (d: Buffer) => {
      for (const f of dec.push(d).frames) {
        const r = parseControl(f.body);
        messages.push(r.ok ? r.msg : r.error);
      }
    });
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ messages, closed: true });
    });
    s.on('error', () => {});
    s.write(bytes);
  });
}

test('malformed and oversized control frames get an error, and the rendezvous keeps serving others', async (t) => {
  const { rdv, visit } = await tunnel(t);
  const oversized = await rawExchange(rdv.port, encodeFrameHeader(FrameKind.Control, 10 * 1024 * 1024));
  assert.equal(oversized.closed, true);
  assert.deepEqual((oversized.messages[0] as { code: string }).code, 'frame_too_large');
  const junkJson = Buffer.from('{"type":"hello","version":"one"}');
  const bad = await rawExchange(
    rdv.port,
    Buffer.concat([encodeFrameHeader(FrameKind.Control, junkJson.length), junkJson]),
  );
  assert.equal(bad.closed, true);
  assert.equal((bad.messages[0] as { code: string }).code, 'bad_message');
  const garbage = await rawExchange(rdv.port, crypto.randomBytes(64));
  assert.equal(garbage.closed, true);
  // Everyone else is unaffected.
  const r = await echoTransfer(visit.port, 50_000);
  assert.equal(r.got, r.sent);
  const warn = eventsOf(rdv.child, 'protocol_error');
  assert.ok(warn.length >= 3, `expected protocol_error log lines, got ${warn.length}`);
});

test('--token gates who may register and visit', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const rdv = await p.rendezvous(['--token', 'let-me-in']);
  const echo = await p.echoServer();
  const noToken = p.spawnCli('peer', [
    'serve',
    '--name',
    'x',
    '--local',
    `127.0.0.1:${echo.port}`,
    '--server',
    rdv.addr,
    '--secret',
    SECRET,
  ]);
  assert.equal(await waitExit(noToken, 10_000), 1);
  assert.match(outputOf(noToken).stderr, /token/);
  await p.serve('x', `127.0.0.1:${echo.port}`, rdv.addr, SECRET, ['--token', 'let-me-in']);
  const badVisit = p.spawnCli('peer', [
    'visit',
    'x',
    '--bind',
    '127.0.0.1:0',
    '--server',
    rdv.addr,
    '--secret',
    SECRET,
    '--token',
    'wrong',
  ]);
  assert.equal(await waitExit(badVisit, 10_000), 1);
  const visit = await p.visit('x', rdv.addr, SECRET, ['--token', 'let-me-in']);
  const r = await echoTransfer(visit.port, 1000);
  assert.equal(r.got, r.sent);
});

test('a port already in use and an unreachable rendezvous are clear errors', async (t) => {
  const { p, rdv } = await tunnel(t);
  const busy = net.createServer();
  p.track(busy);
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
  const busyPort = (busy.address() as net.AddressInfo).port;
  const v = p.spawnCli('peer', [
    'visit',
    'echo',
    '--bind',
    `127.0.0.1:${busyPort}`,
    '--server',
    rdv.addr,
    '--secret',
    SECRET,
  ]);
  assert.equal(await waitExit(v, 15_000), 1);
  assert.match(outputOf(v).stderr, /already in use/);
  const r2 = p.spawnCli('rendezvous', ['--listen', rdv.addr]);
  assert.equal(await waitExit(r2, 10_000), 1);
  assert.match(outputOf(r2).stderr, /already in use/);
  const u = p.spawnCli('peer', [
    'visit',
    'echo',
    '--bind',
    '127.0.0.1:0',
    '--server',
    `127.0.0.1:${busyPort}`,
    '--secret',
    SECRET,
  ]);
  assert.equal(await waitExit(u, 15_000), 1);
  assert.match(outputOf(u).stderr, /is a rendezvous listening there/);
});

test('standalone relay: rendezvous --relay hands out a separate relay process', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const relay = p.spawnCli('relay', ['--listen', '127.0.0.1:0', '--key', 'relay-key-1', '--log-format', 'json']);
  const rr = await waitForEvent(relay, 'ready', 10_000);
  const rdv = await p.rendezvous(['--relay', `127.0.0.1:${String(rr.port)}`, '--relay-key', 'relay-key-1']);
  const echo = await p.echoServer();
  await p.serve('echo', `127.0.0.1:${echo.port}`, rdv.addr, SECRET, ['--mode', 'relay']);
  const visit = await p.visit('echo', rdv.addr, SECRET, ['--mode', 'relay']);
  const ev = await waitForEvent(visit.child, 'path', 10_000);
  assert.equal(ev.path, 'relay');
  assert.equal(ev.remote, `127.0.0.1:${String(rr.port)}`, 'the relay path goes to the standalone relay');
  const r = await echoTransfer(visit.port, 2_000_000);
  assert.equal(r.got, r.sent);
  // A relay with a different key refuses the rendezvous's tickets.
  const rdvBad = await p.rendezvous(['--relay', `127.0.0.1:${String(rr.port)}`, '--relay-key', 'some-other-key']);
  await p.serve('echo2', `127.0.0.1:${echo.port}`, rdvBad.addr, SECRET, ['--mode', 'relay']);
  const bad = p.spawnCli('peer', [
    'visit',
    'echo2',
    '--bind',
    '127.0.0.1:0',
    '--server',
    rdvBad.addr,
    '--secret',
    SECRET,
    '--mode',
    'relay',
  ]);
  assert.equal(await waitExit(bad, 20_000), 1);
  assert.match(outputOf(bad).stderr, /relay/i);
});

test('one stalled session does not slow another on the relay', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const rdv = await p.rendezvous();
  // A service that sends forever: the stalled visitor never reads it.
  const firehose = net.createServer((s) => {
    s.on('error', () => {});
    const buf = Buffer.alloc(64 * 1024, 1);
    const pump = () => {
      while (!s.destroyed && s.write(buf));
      if (!s.destroyed) s.once('drain', pump);
    };
    pump();
  });
  p.track(firehose);
  await new Promise<void>((r) => firehose.listen(0, '127.0.0.1', () => r()));
  const echo = await p.echoServer();
  await p.serve('hose', `127.0.0.1:${(firehose.address() as net.AddressInfo).port}`, rdv.addr, SECRET, [
    '--mode',
    'relay',
  ]);
  await p.serve('echo', `127.0.0.1:${echo.port}`, rdv.addr, SECRET, ['--mode', 'relay']);
  const stalled = await p.visit('hose', rdv.addr, SECRET, ['--mode', 'relay']);
  const healthy = await p.visit('echo', rdv.addr, SECRET, ['--mode', 'relay']);
  // Open the firehose and never read from it: its session's buffers fill up.
  const sink = net.connect({ port: stalled.port, host: '127.0.0.1' });
  sink.on('error', () => {});
  sink.pause();
  t.after(() => sink.destroy());
  await sleep(1500);
  const r = await echoTransfer(healthy.port, 5_000_000, 30_000);
  assert.equal(r.got, r.sent);
  t.diagnostic(`5 MB echo beside a stalled session: ${r.ms} ms`);
});
