/**
 * The installable package: `npm pack` gives a tarball that installs globally
 * and offline (its runtime dependencies are bundled), puts working `peer`,
 * `rendezvous` and `relay` on the PATH, and leaves tests, benchmarks and
 * TypeScript sources out. Packs the dist/ that `npm test` has just built.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { captureOutput, outputOf, stopProcess, waitExit, waitForEvent } from '../scripts/proc.js';
import { echoTransfer, SECRET } from './helpers/tunnel.js';

const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';

async function run(cmd: string, args: string[], opts: { cwd?: string; timeoutMs?: number } = {}) {
  const child = spawn(cmd, args, { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
  captureOutput(child);
  const code = await waitExit(child, opts.timeoutMs ?? 120_000);
  if (code === null) await stopProcess(child, 1000);
  return { code, ...outputOf(child) };
}

test('npm pack installs globally offline and its binaries run a loopback tunnel', { timeout: 300_000 }, async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-pkg-'));
  const children: ChildProcess[] = [];
  t.after(async () => {
    await Promise.all(children.map((c) => stopProcess(c, 2000)));
    fs.rmSync(dir, { recursive: true, force: true });
  });
  // dist/ is fresh from the test build: skip `prepare` (tsc) rather than build a second time.
  const pack = await run(NPM, ['pack', '--ignore-scripts', '--json', '--pack-destination', dir]);
  assert.equal(pack.code, 0, pack.stderr);
  const info = (JSON.parse(pack.stdout) as { filename: string; files: { path: string }[] }[])[0];
  const files = info.files.map((f) => f.path);
  for (const want of [
    'dist/peer/cli.js',
    'dist/rendezvous/cli.js',
    'dist/relay/cli.js',
    'dist/rendezvous/dashboard/client.js',
  ])
    assert.ok(files.includes(want), `${want} is in the package`);
  const own = files.filter((f) => !f.startsWith('node_modules/'));
  assert.deepEqual(
    own.filter(
      (f) => /^(test|test-netns|bench|scripts)\//.test(f) || /^dist\/(test|test-netns|bench|scripts)\//.test(f),
    ),
    [],
  );
  assert.deepEqual(
    own.filter((f) => f.endsWith('.ts') || f.endsWith('.map')),
    [],
  );

  // Offline: nothing may come from a registry.
  const prefix = path.join(dir, 'prefix');
  const install = await run(
    NPM,
    ['install', '-g', '--prefix', prefix, path.join(dir, info.filename), '--offline', '--no-audit', '--no-fund'],
    { timeoutMs: 240_000 },
  );
  assert.equal(install.code, 0, `npm install -g failed:\n${install.stderr}`);
  const bin = (name: string) => path.join(prefix, 'bin', name);
  for (const name of ['peer', 'rendezvous', 'relay']) {
    const v = await run(bin(name), ['--version'], { timeoutMs: 30_000 });
    assert.equal(v.code, 0, v.stderr);
    assert.match(v.stdout.trim(), new RegExp(`^${name} \\d+\\.\\d+\\.\\d+\\S* \\(protocol \\d+\\)$`));
  }

  // A loopback tunnel, every program from the installed package.
  const start = (name: string, args: string[]) => {
    const c = spawn(bin(name), args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
      env: { ...process.env, PEER_SECRET: '' },
    });
    captureOutput(c);
    children.push(c);
    return c;
  };
  const rdv = start('rendezvous', ['--listen', '127.0.0.1:0', '--log-format', 'json']);
  const ready = await waitForEvent(rdv, 'ready', 15_000);
  const server = `127.0.0.1:${Number(ready.port)}`;
  const net = await import('node:net');
  const echo = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
  t.after(() => echo.close());
  const echoPort = (echo.address() as { port: number }).port;
  const serve = start('peer', [
    'serve',
    '--name',
    'pkg-echo',
    '--local',
    `127.0.0.1:${echoPort}`,
    '--server',
    server,
    '--secret',
    SECRET,
    '--log-format',
    'json',
    '--no-admin',
  ]);
  await waitForEvent(serve, 'ready', 15_000);
  const visit = start('peer', [
    'visit',
    'pkg-echo',
    '--bind',
    '127.0.0.1:0',
    '--server',
    server,
    '--secret',
    SECRET,
    '--log-format',
    'json',
    '--no-admin',
  ]);
  const bound = await waitForEvent(visit, 'ready', 15_000);
  const r = await echoTransfer(Number(bound.port), 1024 * 1024, 60_000);
  assert.equal(r.got, r.sent);
  assert.equal(r.gotBytes, 1024 * 1024);
});
