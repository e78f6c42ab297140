// Pinned keys end to end on loopback, with the real CLIs: `peer keygen`,
// `serve --identity --allow`, `visit --identity --server-key`. Every refusal
// (wrong secret, wrong pinned server key, an impostor server that knows the
// secret, a visitor key not in --allow, no visitor key at all) is tried with
// `--mode relay` and with `--mode direct` (on loopback the direct path forms on
// 127.0.0.1): the visitor must exit 1 with a message that says why, and the
// service must never see a connection. The positive cases prove the same
// fixture does work when the keys match, on the relay and on the direct path.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CLI, eventsOf, lineCount } from '../scripts/proc.js';
import { Procs, echoTransfer, outputOf, SECRET, waitExit, waitForEvent } from './helpers/tunnel.js';

const NAME = 'pinned';
// Every peer in this file: no admin socket (several peers run at once and would fight over the default path).
const QUIET = ['--no-admin'];

interface Key {
  file: string;
  pub: string;
}

/** `peer keygen --out FILE`: the public key is the one line on stdout. */
function keygen(dir: string, name: string): Promise<Key> {
  const file = join(dir, `${name}.json`);
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [CLI.peer, 'keygen', '--out', file],
      { encoding: 'utf8', timeout: 30_000 },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`keygen ${name}: ${err.message} ${stderr}`));
        const pub = stdout.trim();
        if (!/^[A-Za-z0-9+/]{43}=$/.test(pub))
          return reject(new Error(`keygen prints a base64 Ed25519 public key, got ${JSON.stringify(stdout)}`));
        resolve({ file, pub });
      },
    );
  });
}

type Keys = { server: Key; visitor: Key; stranger: Key; other: Key };
let keysOnce: Promise<Keys> | null = null;
const keyDir = mkdtempSync(join(tmpdir(), 'hp-pinned-'));
after(() => rmSync(keyDir, { recursive: true, force: true }));

/** The four key pairs, made once for the whole file (keygen is a process start each). */
function allKeys(): Promise<Keys> {
  keysOnce ??= (async () => {
    const [server, visitor, stranger, other] = await Promise.all(
      ['server', 'visitor', 'stranger', 'other'].map((n) => keygen(keyDir, n)),
    );
    return { server: server, visitor: visitor, stranger: stranger, other: other };
  })();
  return keysOnce;
}

interface Fixture {
  p: Procs;
  rdv: { addr: string };
  echo: { port: number; connections: () => number };
  serve: ChildProcess;
  keys: Keys;
}

/**
 * A rendezvous, an echo service, and `serve --identity server --allow visitor`.
 * Keys: `visitor` is allowed, `stranger` is not; `other` is a key nobody serves with.
 */
async function fixture(t: { after(fn: () => unknown): void }): Promise<Fixture> {
  const keys = await allKeys();
  const p = new Procs();
  t.after(() => p.cleanup());
  const rdv = await p.rendezvous();
  const echo = await p.echoServer();
  const serve = await p.serve(NAME, `127.0.0.1:${echo.port}`, rdv.addr, SECRET, [
    '--identity',
    keys.server.file,
    '--allow',
    keys.visitor.pub,
    ...QUIET,
  ]);
  return { p, rdv, echo, serve, keys };
}

function visitArgs(f: Fixture, mode: string, extra: string[], secret = SECRET, server = f.rdv.addr): string[] {
  return [
    'visit',
    NAME,
    '--bind',
    '127.0.0.1:0',
    '--server',
    server,
    '--secret',
    secret,
    '--mode',
    mode,
    '--log-format',
    'json',
    ...QUIET,
    ...extra,
  ];
}

/**
 * Runs a visitor that must be refused: exit code 1, an `error` line matching
 * `why`, never `ready`, and no connection reached the service.
 */
async function expectRefused(
  f: Fixture,
  args: string[],
  why: RegExp,
  server?: { echo: Fixture['echo'] },
): Promise<string> {
  const echo = server?.echo ?? f.echo;
  const before = echo.connections();
  const child = f.p.spawnCli('peer', args);
  const code = await waitExit(child, 30_000);
  const out = outputOf(child);
  assert.equal(code, 1, `visit must exit 1 by itself, got ${code}\n${out.stderr}`);
  const errors = eventsOf(child, 'error');
  assert.ok(errors.length >= 1, `an error line is printed\n${out.stderr}`);
  const message = String(errors.at(-1)!.message);
  assert.match(message, why, `the message says why: ${message}`);
  assert.equal(eventsOf(child, 'ready').length, 0, 'a refused visitor never opens its local port');
  assert.equal(eventsOf(child, 'path').length, 0, 'a refused visitor never has a path');
  assert.equal(echo.connections(), before, 'the service never sees a connection');
  return message;
}

for (const mode of ['relay', 'direct'] as const) {
  // Wrong secret, wrong pinned server key, visitor not in --allow, no visitor key: service untouched.
  test(`--mode ${mode}: bad secret, pinned key, --allow or visitor key: refused, exit 1`, async (t) => {
    const f = await fixture(t);
    const { visitor, stranger, server, other } = f.keys;
    const serveMark = lineCount(f.serve);

    await t.test('wrong secret (right keys)', async () => {
      await expectRefused(
        f,
        visitArgs(f, mode, ['--identity', visitor.file, '--server-key', server.pub], 'not the secret'),
        /secret/i,
      );
      await waitForEvent(f.serve, (o) => o.event === 'error' && /secret/i.test(String(o.message)), 5000, {
        after: serveMark,
      });
    });

    await t.test('wrong pinned server key (right secret)', async () => {
      const msg = await expectRefused(
        f,
        visitArgs(f, mode, ['--identity', visitor.file, '--server-key', other.pub]),
        /pinned key/,
      );
      assert.ok(msg.includes(other.pub), 'the message names the pinned key');
    });

    await t.test('visitor key not in --allow', async () => {
      const mark = lineCount(f.serve);
      await expectRefused(
        f,
        visitArgs(f, mode, ['--identity', stranger.file, '--server-key', server.pub]),
        /not in --allow/,
      );
      const ev = await waitForEvent(
        f.serve,
        (o) => o.event === 'error' && /refused a visitor/.test(String(o.message)),
        5000,
        { after: mark },
      );
      assert.match(String(ev.message), new RegExp(stranger.pub.replace(/[+/=]/g, '\\$&')));
    });

    await t.test('no visitor key at all, to a server with --allow', async () => {
      await expectRefused(f, visitArgs(f, mode, ['--server-key', server.pub]), /--allow/);
    });

    await t.test('the same server still admits the allowed visitor with the right pin', async () => {
      const v = await f.p.visit(NAME, f.rdv.addr, SECRET, [
        '--mode',
        mode,
        '--identity',
        visitor.file,
        '--server-key',
        server.pub,
        ...QUIET,
      ]);
      const path = await waitForEvent(v.child, (o) => o.event === 'path' && o.path === mode, 15_000);
      // IPv4 loopback, or on a dual-stack host one of its IPv6 addresses (both are probed at once).
      assert.match(String(path.remote), /^(127\.0\.0\.1|\[[0-9a-f:]+\]):\d+$/);
      const r = await echoTransfer(v.port, 1024 * 1024, 30_000);
      assert.equal(r.gotBytes, 1024 * 1024);
      assert.equal(r.got, r.sent);
      assert.equal(f.echo.connections(), 1, 'exactly the one legitimate connection reached the service');
    });
  });
}

test('impostor with the secret but not the pinned key refused (relay, direct); real server accepted', async (t) => {
  const f = await fixture(t);
  const { visitor, server } = f.keys;
  // A second rendezvous plays the compromised one: it introduces the visitor to
  // a server of its choosing that has the secret (and any name) but its own key.
  const evilRdv = await f.p.rendezvous();
  const evilEcho = await f.p.echoServer();
  await f.p.serve(NAME, `127.0.0.1:${evilEcho.port}`, evilRdv.addr, SECRET, ['--mode', 'auto', ...QUIET]);
  for (const mode of ['relay', 'direct']) {
    await expectRefused(
      f,
      visitArgs(f, mode, ['--identity', visitor.file, '--server-key', server.pub], SECRET, evilRdv.addr),
      /does not hold the pinned key/,
      { echo: evilEcho },
    );
  }
  assert.equal(evilEcho.connections(), 0);
  // Without the pin the same visitor would have trusted the impostor: the pin is what refused it.
  const unpinned = await f.p.visit(NAME, evilRdv.addr, SECRET, ['--mode', 'relay', ...QUIET]);
  const r = await echoTransfer(unpinned.port, 1000, 15_000);
  assert.equal(r.gotBytes, 1000);
  assert.equal(evilEcho.connections(), 1);
});

test('--mode auto with pinned keys on both sides: relay first, then direct; 4 MB exact', async (t) => {
  const f = await fixture(t);
  const { visitor, server } = f.keys;
  const v = await f.p.visit(NAME, f.rdv.addr, SECRET, [
    '--identity',
    visitor.file,
    '--server-key',
    server.pub,
    ...QUIET,
  ]);
  await waitForEvent(v.child, (o) => o.event === 'path' && o.path === 'direct', 15_000);
  await waitForEvent(f.serve, (o) => o.event === 'path' && o.path === 'direct', 15_000);
  const r = await echoTransfer(v.port, 4 * 1024 * 1024, 60_000);
  assert.equal(r.gotBytes, 4 * 1024 * 1024);
  assert.equal(r.got, r.sent);
  assert.equal(f.echo.connections(), 1);
});
