import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Procs, waitExit, waitForEvent, outputOf, SECRET } from './helpers/tunnel.js';

test('peers get their own admin socket by default, and `peer status` finds every one of them', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const runtime = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-admin-'));
  t.after(() => fs.rmSync(runtime, { recursive: true, force: true }));
  const env = { XDG_RUNTIME_DIR: runtime };
  const rdv = await p.rendezvous();
  const echo = await p.echoServer();
  // Two peers on the default admin path: neither may warn nor lose its socket.
  const serveChild = p.spawnCli(
    'peer',
    [
      'serve',
      '--name',
      'echo',
      '--local',
      `127.0.0.1:${echo.port}`,
      '--server',
      rdv.addr,
      '--secret',
      SECRET,
      '--log-format',
      'json',
      '--mode',
      'relay',
    ],
    env,
  );
  await waitForEvent(serveChild, 'ready', 15_000);
  const visitChild = p.spawnCli(
    'peer',
    [
      'visit',
      'echo',
      '--bind',
      '127.0.0.1:0',
      '--server',
      rdv.addr,
      '--secret',
      SECRET,
      '--log-format',
      'json',
      '--mode',
      'relay',
    ],
    env,
  );
  await waitForEvent(visitChild, 'ready', 15_000);
  for (const c of [serveChild, visitChild]) assert.doesNotMatch(outputOf(c).stderr, /admin_unavailable/);
  const status = p.spawnCli('peer', ['status', '--json'], env);
  assert.equal(await waitExit(status, 10_000), 0, outputOf(status).stderr);
  const lines = outputOf(status)
    .stdout.trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { pid: number; aead: string; entries: { kind: string }[] });
  assert.equal(lines.length, 2);
  assert.deepEqual(lines.map((l) => l.pid).sort(), [serveChild.pid, visitChild.pid].sort());
  assert.deepEqual(lines.flatMap((l) => l.entries.map((e) => e.kind)).sort(), ['serve', 'visit']);
  // Which crypto backends the process runs on, so a slow fallback is visible.
  for (const l of lines)
    assert.match(l.aead, /^(sodium-native|raw)( up to \d+ B, (openssl|sodium-native|native) above)?$/);
  // Nobody running: a clear error.
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-admin-empty-'));
  t.after(() => fs.rmSync(empty, { recursive: true, force: true }));
  const none = p.spawnCli('peer', ['status'], { XDG_RUNTIME_DIR: empty });
  assert.equal(await waitExit(none, 10_000), 1);
  assert.match(outputOf(none).stderr, /no running peer found/);
});
