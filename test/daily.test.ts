/**
 * Daily-use features with the real binaries on loopback: config files, the
 * admin socket and `peer status`, Prometheus metrics and the rendezvous status
 * endpoint, config errors, graceful SIGTERM, secrets kept out of logs, visit
 * re-opening its tunnel, and pinned identities.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import crypto from 'node:crypto';
import { Procs, echoTransfer, connectOutcome, waitForEvent, waitExit, outputOf, SECRET } from './helpers/tunnel.js';
import { eventsOf, lineCount } from '../scripts/proc.js';
import { kernelSpliceAvailable } from '../src/transport/kernel-splice.js';
import { sleep } from '../src/util/backoff.js';
import type { PeerStatus } from '../peer/app.js';

/** The part of the rendezvous /status answer this file reads. */
interface RendezvousStatus {
  sessions: { name: string; path: string; visitor: { address: string }; uptimeS: number }[];
}

function tmpdir(t: { after(fn: () => void): void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-daily-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Runs a CLI to completion; resolves with its exit code and output. */
async function runCli(
  p: Procs,
  which: 'peer' | 'rendezvous' | 'relay',
  args: string[],
  env: NodeJS.ProcessEnv = {},
  timeoutMs = 15_000,
) {
  const child = p.spawnCli(which, args, env);
  child.stdin?.end();
  const code = await waitExit(child, timeoutMs);
  return { code, ...outputOf(child) };
}

/** Value of one Prometheus sample, e.g. sample(text, 'x_total', {name: 'a'}). */
function sample(text: string, metric: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(metric)) continue;
    const m = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== metric) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3]);
  }
  return undefined;
}

function tunnelPath(
  status: { tunnels: { name: string; path: string | null }[] },
  name: string,
): string | null | undefined {
  return status.tunnels.find((x) => x.name === name)?.path;
}

async function httpGet(url: string): Promise<{ status: number; text: string }> {
  const r = await fetch(url, { signal: AbortSignal.timeout(5000) });
  return { status: r.status, text: await r.text() };
}

// status --json, metrics and the rendezvous status agree with what was sent.
test('config file: one `peer run` serves two services, another visits both; the status views agree', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const dir = tmpdir(t);
  const rdv = await p.rendezvous(['--metrics', '127.0.0.1:0']);
  const rdvMetrics = String((await waitForEvent(rdv.child, 'metrics', 5000)).listen);
  const a = await p.echoServer();
  const b = await p.echoServer();

  const serveCfg = path.join(dir, 'serve.toml');
  fs.writeFileSync(
    serveCfg,
    `# two services in one process
server = "${rdv.addr}"
secret = "${SECRET}"
mode = "relay"
log-format = "json"
admin = "${path.join(dir, 'serve.sock')}"

[[serve]]
name = "alpha"
local = "127.0.0.1:${a.port}"

[[serve]]
name = "beta"
local = "127.0.0.1:${b.port}"
mode = "auto"   # this entry may punch
`,
  );
  const serve = p.spawnCli('peer', ['run', '--config', serveCfg]);
  await waitForEvent(serve, (o) => o.event === 'ready' && o.name === 'alpha', 15_000);
  await waitForEvent(serve, (o) => o.event === 'ready' && o.name === 'beta', 15_000);

  // The file names a wrong rendezvous; the --server flag must win over it.
  const visitCfg = path.join(dir, 'visit.toml');
  const visitSock = path.join(dir, 'visit.sock');
  fs.writeFileSync(
    visitCfg,
    `server = "127.0.0.1:1"
secret = "${SECRET}"
mode = "relay"
log-format = "json"
admin = "${visitSock}"
metrics = "127.0.0.1:0"

[[visit]]
name = "alpha"
bind = "127.0.0.1:0"

[[visit]]
name = "beta"
bind = "127.0.0.1:0"
mode = "auto"
`,
  );
  const visit = p.spawnCli('peer', ['run', '--config', visitCfg, '--server', rdv.addr]);
  const readyA = await waitForEvent(visit, (o) => o.event === 'ready' && o.name === 'alpha', 15_000);
  const readyB = await waitForEvent(visit, (o) => o.event === 'ready' && o.name === 'beta', 15_000);
  const peerMetrics = String((await waitForEvent(visit, 'metrics', 5000)).listen);

  const [ra, rb] = await Promise.all([
    echoTransfer(Number(readyA.port), 300_000),
    echoTransfer(Number(readyB.port), 200_000),
  ]);
  assert.equal(ra.got, ra.sent);
  assert.equal(rb.got, rb.sent);
  assert.equal(ra.gotBytes, 300_000);
  assert.equal(rb.gotBytes, 200_000);
  assert.equal(a.connections(), 1, 'alpha reached its own service');
  assert.equal(b.connections(), 1, 'beta reached its own service');

  // peer status --json through the admin socket, from the real binary.
  const st = await runCli(p, 'peer', ['status', '--json', '--admin', visitSock]);
  assert.equal(st.code, 0, st.stderr);
  const status = JSON.parse(st.stdout) as PeerStatus;
  assert.equal(status.entries.length, 2);
  assert.deepEqual(status.entries.map((e) => e.name).sort(), ['alpha', 'beta']);
  assert.equal(status.tunnels.length, 2);
  for (const [name, size] of [
    ['alpha', 300_000],
    ['beta', 200_000],
  ] as const) {
    const tun = status.tunnels.find((x) => x.name === name);
    assert.ok(tun, `tunnel ${name} listed`);
    assert.equal(tun.kind, 'visit');
    if (name === 'alpha') {
      assert.equal(tun.path, 'relay');
      assert.equal(tun.remote, rdv.addr, 'remote is the relay (embedded in the rendezvous)');
    } else {
      assert.ok(tun.path === 'relay' || tun.path === 'direct', `beta path ${tun.path}`);
      // IPv4 loopback, or on a dual-stack host one of its IPv6 addresses (an RTT tie goes to IPv6).
      assert.match(tun.remote ?? '', /^(127\.0\.0\.1|\[[0-9a-f:]+\]):\d+$/);
    }
    assert.equal(typeof tun.rttMs, 'number');
    assert.ok(tun.rttMs !== null && tun.rttMs > 0 && tun.rttMs < 1000, `rtt ${tun.rttMs}`);
    assert.equal(tun.bytesSent, size);
    assert.equal(tun.bytesReceived, size);
    assert.ok(tun.wireBytesSent > size, 'wire bytes include sealing overhead');
    assert.equal(tun.streams, 0);
    assert.ok(tun.uptimeS >= 0);
    assert.match(tun.sid, /^[0-9a-f]+$/);
    if (name === 'alpha') assert.equal(tun.nat.local, null, '--mode relay never runs STUN: NAT not known');
    else {
      assert.equal(typeof tun.nat.local?.type, 'string', 'NAT type from STUN on the data socket');
      assert.equal(typeof tun.nat.peer?.type, 'string', "the server's NAT type");
    }
  }
  const text = await runCli(p, 'peer', ['status', '--admin', visitSock]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /alpha\s+visit\s+relay/);
  assert.match(text.stdout, /beta\s+visit\s+(relay|direct)/);

  // The peer's metrics count exactly the application bytes sent and received.
  const pm = (await httpGet(`http://${peerMetrics}/metrics`)).text;
  for (const [name, size] of [
    ['alpha', 300_000],
    ['beta', 200_000],
  ] as const) {
    assert.equal(sample(pm, 'holepunch_peer_stream_bytes_total', { kind: 'visit', name, direction: 'sent' }), size);
    assert.equal(sample(pm, 'holepunch_peer_stream_bytes_total', { kind: 'visit', name, direction: 'received' }), size);
    assert.equal(sample(pm, 'holepunch_peer_sessions_total', { name }), 1);
    assert.equal(
      (sample(pm, 'holepunch_peer_tunnels', { name, path: 'relay' }) ?? 0) +
        (sample(pm, 'holepunch_peer_tunnels', { name, path: 'direct' }) ?? 0),
      1,
    );
    assert.equal(sample(pm, 'holepunch_peer_up', { name }), 1);
  }

  // The rendezvous: peers, names, sessions by path (reported by the peers), relay bytes.
  const rm = (await httpGet(`http://${rdvMetrics}/metrics`)).text;
  assert.equal(sample(rm, 'holepunch_rendezvous_names'), 2);
  assert.equal(sample(rm, 'holepunch_rendezvous_peers'), 4, 'two serve and two visit control connections');
  assert.equal(
    (sample(rm, 'holepunch_rendezvous_sessions', { path: 'relay' }) ?? 0) +
      (sample(rm, 'holepunch_rendezvous_sessions', { path: 'direct' }) ?? 0),
    2,
  );
  assert.equal(sample(rm, 'holepunch_rendezvous_sessions', { path: 'pending' }), 0, 'both peers reported their path');
  assert.equal(sample(rm, 'holepunch_rendezvous_sessions_total'), 2);
  const relayed = sample(rm, 'holepunch_rendezvous_relay_bytes_total') ?? 0;
  assert.ok(relayed >= 2 * 300_000, `relay forwarded ${relayed} bytes, at least alpha's echo both ways`);
  assert.ok(relayed < 4 * (300_000 + 200_000), `relay bytes ${relayed} not wildly above what was sent`);
  // alpha's session (--mode relay) is still paired: its bytes go through the kernel where the addon is built.
  const inKernel = sample(rm, 'holepunch_rendezvous_relay_kernel_sessions') ?? -1;
  if (kernelSpliceAvailable()) assert.ok(inKernel >= 1, `relay sessions forwarded in the kernel: ${inKernel}`);
  else assert.equal(inKernel, 0);
  assert.notEqual(sample(rm, 'holepunch_rendezvous_limits_hit_total'), undefined);
  assert.notEqual(sample(rm, 'holepunch_rendezvous_rejected_datagrams_total', { reason: 'ignored' }), undefined);
  const rs = await httpGet(`http://${rdvMetrics}/status`);
  assert.equal(rs.status, 200);
  const rstatus = JSON.parse(rs.text) as RendezvousStatus;
  assert.deepEqual(rstatus.sessions.map((s) => s.name).sort(), ['alpha', 'beta']);
  for (const s of rstatus.sessions) {
    assert.equal(s.path, s.name === 'alpha' ? 'relay' : tunnelPath(status, 'beta'));
    assert.match(s.visitor.address, /^(127\.0\.0\.1|\[[0-9a-f:]+\]):\d+$/);
    assert.ok(s.uptimeS >= 0);
  }
  assert.equal(
    (await fetch(`http://${rdvMetrics}/status`, { method: 'POST', signal: AbortSignal.timeout(5000) })).status,
    405,
    'read-only',
  );
});

test('config errors name the file, the line and the key', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const dir = tmpdir(t);
  const cases: { which: 'peer' | 'rendezvous' | 'relay'; body: string; expect: RegExp }[] = [
    {
      which: 'peer',
      body:
        'server = "127.0.0.1:7000"\nsecret = "x"\n\n[[serve]]\nname = "a"\nlocal = ' +
        '"127.0.0.1:22"\n\n[[serve]]\nname = "b"\nlocl = "127.0.0.1:23"\n',
      expect: /:10: key "serve\[1\]\.locl": unknown key/,
    },
    {
      which: 'peer',
      body: 'server = "127.0.0.1:7000"\n\n[[visit]]\nname = "db"\nbind = "127.0.0.1:99999"\n',
      expect: /:5: key "visit\[0\]\.bind": expected HOST:PORT/,
    },
    {
      which: 'peer',
      body: 'secret = "x"\nmode = "fast"\n',
      expect: /:2: key "mode": invalid option: expected one of "auto"\|"direct"\|"relay"/,
    },
    { which: 'peer', body: 'quiet = "yes"\n', expect: /:1: key "quiet": expected boolean, got string "yes"/ },
    { which: 'peer', body: 'server = "127.0.0.1:7000"\n[[serve]\nname = "a"\n', expect: /:2: invalid TOML/ },
    {
      which: 'rendezvous',
      body: '# rendezvous\nlisten = "0.0.0.0:7000"\nmetrcs = "127.0.0.1:9100"\n',
      expect: /:3: key "metrcs": unknown key/,
    },
    {
      which: 'relay',
      body: 'listen = "0.0.0.0:7001"\nkey = 5\n',
      expect: /:2: key "key": expected string, got number 5/,
    },
  ];
  for (const [i, c] of cases.entries()) {
    const file = path.join(dir, `bad${i}.toml`);
    fs.writeFileSync(file, c.body);
    const args = c.which === 'peer' ? ['run', '--config', file] : ['--config', file];
    const r = await runCli(p, c.which, args);
    assert.equal(r.code, 1, `case ${i} exits 1`);
    assert.ok(r.stderr.includes(file), `case ${i} names the file: ${r.stderr}`);
    assert.match(r.stderr, c.expect, `case ${i}`);
    assert.equal(r.stderr.trim().split('\n').length, 1, `case ${i}: one line`);
  }
  const missing = await runCli(p, 'peer', ['run', '--config', path.join(dir, 'nope.toml')]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /cannot read config file .*nope\.toml: no such file/);
});

/**
 * Writes `total` bytes in paced chunks; calls `midway` once after `at` bytes. Resolves with the sha256 of what was
 * sent and of what came back.
 */
function pacedEcho(
  port: number,
  total: number,
  at: number,
  midway: () => void,
  timeoutMs = 30_000,
): Promise<{ sent: string; got: string; gotBytes: number; how: string }> {
  return new Promise((resolve, reject) => {
    const sentH = crypto.createHash('sha256');
    const gotH = crypto.createHash('sha256');
    let got = 0;
    let sent = 0;
    let fired = false;
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`paced echo timed out with ${got}/${total} bytes back`));
    }, timeoutMs);
    s.on('data', (d: Buffer) => {
      gotH.update(d);
      got += d.length;
    });
    s.on('end', () => {
      clearTimeout(timer);
      s.end();
      resolve({ sent: sentH.digest('hex'), got: gotH.digest('hex'), gotBytes: got, how: 'end' });
    });
    s.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve({ sent: sentH.digest('hex'), got: gotH.digest('hex'), gotBytes: got, how: e.code ?? 'error' });
    });
    s.once('connect', () => {
      const tick = setInterval(() => {
        if (sent >= total) {
          clearInterval(tick);
          s.end();
          return;
        }
        const b = crypto.randomBytes(Math.min(16 * 1024, total - sent));
        sentH.update(b);
        sent += b.length;
        s.write(b);
        if (!fired && sent >= at) {
          fired = true;
          midway();
        }
      }, 5);
      s.once('close', () => clearInterval(tick));
    });
  });
}

test('SIGTERM on visit: stops accepting, open streams finish losing nothing, idle one gets FIN, exit 0', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const rdv = await p.rendezvous();
  const echo = await p.echoServer();
  await p.serve('echo', `127.0.0.1:${echo.port}`, rdv.addr, SECRET, ['--mode', 'relay', '--no-admin']);
  const visit = await p.visit('echo', rdv.addr, SECRET, ['--mode', 'relay', '--no-admin', '--drain-timeout', '3']);

  // An idle interactive connection: it must be ended with a FIN (not a reset) when the grace period ends.
  const idle = net.connect({ port: visit.port, host: '127.0.0.1', allowHalfOpen: true });
  t.after(() => idle.destroy());
  const idleOutcome = new Promise<string>((resolve) => {
    idle.on('end', () => resolve('end'));
    idle.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
  });
  await new Promise<void>((r) => idle.once('connect', () => r()));
  idle.write('hello');
  await new Promise<void>((r) => idle.once('data', () => r()));

  // (Assigned in a callback, which narrowing cannot see.)
  let refusedAfterTerm = null as Promise<string> | null;
  const r = await pacedEcho(visit.port, 1_000_000, 200_000, () => {
    visit.child.kill('SIGTERM');
    // Give the signal a moment to land, then a new connection must be refused.
    refusedAfterTerm = new Promise((res) => setTimeout(() => void connectOutcome(visit.port, 3000).then(res), 300));
  });
  assert.equal(r.how, 'end', 'the stream ended cleanly');
  assert.equal(r.gotBytes, 1_000_000, 'every byte sent before and after SIGTERM came back');
  assert.equal(r.got, r.sent);
  assert.equal(await refusedAfterTerm, 'ECONNREFUSED', 'no new connections after SIGTERM');
  assert.equal(await idleOutcome, 'end', 'the idle connection got a FIN');
  assert.equal(await waitExit(visit.child, 10_000), 0);
  assert.ok(eventsOf(visit.child, 'shutdown').length === 1);
  assert.ok(
    eventsOf(visit.child, (o) => o.event === 'drained' && o.forced === 1).length === 1,
    'one connection was ended at the deadline',
  );
});

test('SIGTERM on serve: gives up its name, the open stream finishes with no byte lost, exit 0', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const rdv = await p.rendezvous();
  const echo = await p.echoServer();
  const serve = await p.serve('echo', `127.0.0.1:${echo.port}`, rdv.addr, SECRET, [
    '--mode',
    'relay',
    '--no-admin',
    '--drain-timeout',
    '20',
  ]);
  const visit = await p.visit('echo', rdv.addr, SECRET, ['--mode', 'relay', '--no-admin']);
  const r = await pacedEcho(visit.port, 1_000_000, 200_000, () => serve.kill('SIGTERM'));
  assert.equal(r.how, 'end');
  assert.equal(r.gotBytes, 1_000_000);
  assert.equal(r.got, r.sent);
  const code = await waitExit(serve, 10_000);
  assert.equal(code, 0, outputOf(serve).stderr);
  assert.equal(eventsOf(serve, 'drained').length, 0, 'nothing had to be cut');
});

test('visit --bind re-opens its tunnel on its own after the server dies and comes back', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const rdv = await p.rendezvous();
  const echo = await p.echoServer();
  const serve1 = await p.serve('echo', `127.0.0.1:${echo.port}`, rdv.addr, SECRET, ['--mode', 'relay', '--no-admin']);
  const visit = await p.visit('echo', rdv.addr, SECRET, ['--mode', 'relay', '--no-admin']);
  const r1 = await echoTransfer(visit.port, 50_000);
  assert.equal(r1.got, r1.sent);
  const firstSid = (await waitForEvent(visit.child, 'path', 5000)).sid;

  serve1.kill('SIGKILL');
  await waitForEvent(visit.child, 'session_closed', 15_000);
  const mark = lineCount(visit.child);
  await p.serve('echo', `127.0.0.1:${echo.port}`, rdv.addr, SECRET, ['--mode', 'relay', '--no-admin']);
  // A new connection through the same visit process: the tunnel is re-opened (in the background or on demand).
  const r2 = await echoTransfer(visit.port, 50_000, 30_000);
  assert.equal(r2.gotBytes, 50_000);
  assert.equal(r2.got, r2.sent);
  const again = await waitForEvent(visit.child, 'path', 5000, { after: mark });
  assert.notEqual(again.sid, firstSid, 'a new session');
  assert.equal(visit.child.exitCode, null, 'the same visit process');
  assert.equal(echo.connections(), 2);
});

test('no secret or token is ever logged, even at --log-level debug and on errors', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const dir = tmpdir(t);
  const secret = 'S3cr3t-' + crypto.randomBytes(9).toString('hex');
  const wrong = 'Wr0ng-' + crypto.randomBytes(9).toString('hex');
  const token = 'T0ken-' + crypto.randomBytes(9).toString('hex');
  const rdv = await p.rendezvous(['--token', token, '--log-level', 'debug']);
  const echo = await p.echoServer();
  const serve = p.spawnCli(
    'peer',
    ['serve', '--name', 'echo', '--local', `127.0.0.1:${echo.port}`, '--log-level', 'debug', '--no-admin'],
    { PEER_SERVER: rdv.addr, PEER_SECRET: secret, PEER_TOKEN: token },
  );
  const cfg = path.join(dir, 'visit.toml');
  fs.writeFileSync(
    cfg,
    `server = "${rdv.addr}"\nsecret = "${secret}"\ntoken = "${token}"\nlog-level = ` +
      `"debug"\nlog-format = "json"\nadmin = false\n[[visit]]\nname = "echo"\nbind = ` +
      `"127.0.0.1:0"\n`,
  );
  // Text logs from serve: wait for its ready line the plain way.
  const deadline = Date.now() + 15_000;
  while (!/ready:/.test(outputOf(serve).stderr) && Date.now() < deadline) await sleep(50);
  assert.match(outputOf(serve).stderr, /ready:/);
  const visit = p.spawnCli('peer', ['run', '--config', cfg]);
  const ready = await waitForEvent(visit, 'ready', 15_000);
  const tr = await echoTransfer(Number(ready.port), 20_000);
  assert.equal(tr.got, tr.sent);
  const bad = await runCli(p, 'peer', [
    'visit',
    'echo',
    '--bind',
    '127.0.0.1:0',
    '--server',
    rdv.addr,
    '--secret',
    wrong,
    '--token',
    token,
    '--log-level',
    'debug',
    '--no-admin',
  ]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /handshake failed/);
  const badToken = await runCli(p, 'peer', [
    'visit',
    'echo',
    '--stdio',
    '--server',
    rdv.addr,
    '--secret',
    secret,
    '--token',
    wrong,
    '--log-level',
    'debug',
    '--log-format',
    'json',
  ]);
  assert.equal(badToken.code, 1);
  await p.cleanup();
  const all =
    [rdv.child, serve, visit].map((c) => outputOf(c).stdout + outputOf(c).stderr).join('\n') +
    bad.stderr +
    bad.stdout +
    badToken.stderr;
  assert.ok(all.length > 2000, 'debug logging produced output');
  for (const s of [secret, wrong, token]) assert.ok(!all.includes(s), `"${s.slice(0, 6)}..." never appears in any log`);
});

test('keygen, serve --identity --allow, visit --identity --server-key', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const dir = tmpdir(t);
  const kg = async (file: string) => {
    const r = await runCli(p, 'peer', ['keygen', '--out', file]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    return r.stdout.trim();
  };
  const serverKey = await kg(path.join(dir, 'server.json'));
  const visitorKey = await kg(path.join(dir, 'visitor.json'));
  assert.match(serverKey, /^[A-Za-z0-9+/]{43}=$/);
  assert.notEqual(serverKey, visitorKey);
  const again = await runCli(p, 'peer', ['keygen', '--out', path.join(dir, 'server.json')]);
  assert.equal(again.code, 1, 'never overwrites a key without --force');

  const rdv = await p.rendezvous();
  const echo = await p.echoServer();
  await p.serve('echo', `127.0.0.1:${echo.port}`, rdv.addr, SECRET, [
    '--mode',
    'relay',
    '--no-admin',
    '--identity',
    path.join(dir, 'server.json'),
    '--allow',
    visitorKey,
  ]);
  const ok = await p.visit('echo', rdv.addr, SECRET, [
    '--mode',
    'relay',
    '--no-admin',
    '--identity',
    path.join(dir, 'visitor.json'),
    '--server-key',
    serverKey,
  ]);
  const r = await echoTransfer(ok.port, 10_000);
  assert.equal(r.got, r.sent);

  const wrongPin = await runCli(p, 'peer', [
    'visit',
    'echo',
    '--bind',
    '127.0.0.1:0',
    '--server',
    rdv.addr,
    '--secret',
    SECRET,
    '--mode',
    'relay',
    '--no-admin',
    '--identity',
    path.join(dir, 'visitor.json'),
    '--server-key',
    visitorKey,
  ]);
  assert.equal(wrongPin.code, 1);
  assert.match(wrongPin.stderr, /does not hold the pinned key/);
  const noId = await runCli(p, 'peer', [
    'visit',
    'echo',
    '--bind',
    '127.0.0.1:0',
    '--server',
    rdv.addr,
    '--secret',
    SECRET,
    '--mode',
    'relay',
    '--no-admin',
  ]);
  assert.equal(noId.code, 1);
  assert.match(noId.stderr, /refused us/);
});
