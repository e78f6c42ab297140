/** `peer ping` against real tunnels on loopback: through a running peer's admin socket and on its own. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Procs, SECRET, waitExit, waitForEvent, outputOf } from './helpers/tunnel.js';

/** A direct path's remote on one host: IPv4 loopback, or one of the host's IPv6 addresses in brackets. */
const DIRECT_REMOTE = /^(127\.0\.0\.1|\[[0-9a-f:]+\]):\d+$/;

interface Line {
  seq: number;
  ok: boolean;
  via: string;
  name: string;
  path?: string;
  remote?: string;
  rttMs?: number;
  error?: string;
}

function lines(out: string): Line[] {
  return out
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Line);
}

test(
  'peer ping: path and RTT over direct and relay, --until-direct, through the admin socket and standalone',
  { timeout: 180_000 },
  async (t) => {
    const p = new Procs();
    t.after(() => p.cleanup());
    const runtime = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-ping-'));
    t.after(() => fs.rmSync(runtime, { recursive: true, force: true }));
    const env = { XDG_RUNTIME_DIR: runtime };
    const rdv = await p.rendezvous();
    const echo = await p.echoServer();
    const serve = p.spawnCli(
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
        '--no-admin',
      ],
      env,
    );
    await waitForEvent(serve, 'ready', 15_000);
    // A default visitor (goes direct on loopback), found through its default admin socket...
    const directVisit = p.spawnCli(
      'peer',
      ['visit', 'echo', '--bind', '127.0.0.1:0', '--server', rdv.addr, '--secret', SECRET, '--log-format', 'json'],
      env,
    );
    await waitForEvent(directVisit, 'ready', 15_000);
    await waitForEvent(directVisit, (o) => o.event === 'path' && o.path === 'direct', 20_000);
    // ...and one that never punches, on an admin socket of its own.
    const relaySock = path.join(runtime, 'relay-visit.sock');
    const relayVisit = p.spawnCli(
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
        '--admin',
        relaySock,
      ],
      env,
    );
    await waitForEvent(relayVisit, 'ready', 15_000);

    // Direct, through the running peer found by name.
    const d = p.spawnCli('peer', ['ping', 'echo', '--count', '2', '--json'], env);
    assert.equal(await waitExit(d, 20_000), 0, outputOf(d).stderr);
    const dl = lines(outputOf(d).stdout);
    assert.equal(dl.length, 2);
    for (const l of dl) {
      assert.equal(l.ok, true);
      assert.equal(l.via, 'admin');
      assert.equal(l.path, 'direct');
      // The peers' own address: IPv4 loopback, or on a dual-stack host an IPv6 address of theirs
      // (an RTT tie goes to IPv6), written in brackets.
      assert.match(l.remote!, DIRECT_REMOTE);
      assert.notEqual(l.remote, rdv.addr);
      assert.ok(typeof l.rttMs === 'number' && l.rttMs > 0, String(l.rttMs));
    }

    // Relay: the remote is the relay (embedded in the rendezvous).
    const r = p.spawnCli('peer', ['ping', 'echo', '-c', '2', '--json', '--admin', relaySock], env);
    assert.equal(await waitExit(r, 20_000), 0, outputOf(r).stderr);
    const rl = lines(outputOf(r).stdout);
    assert.equal(rl.length, 2);
    for (const l of rl) {
      assert.equal(l.ok, true);
      assert.equal(l.path, 'relay');
      assert.equal(l.remote, rdv.addr);
      assert.ok(typeof l.rttMs === 'number' && l.rttMs > 0);
    }

    // --until-direct: at once on the direct tunnel (one line), never on the relayed one (exit 1 after --count).
    const ud = p.spawnCli('peer', ['ping', 'echo', '--until-direct', '-c', '10'], env);
    assert.equal(await waitExit(ud, 20_000), 0, outputOf(ud).stderr);
    const udOut = outputOf(ud).stdout.trim().split('\n');
    assert.equal(udOut.length, 1, udOut.join('\n'));
    assert.match(udOut[0], /^pong from echo via direct (127\.0\.0\.1|\[[0-9a-f:]+\]):\d+ in [\d.]+ ms$/);
    const ur = p.spawnCli('peer', ['ping', 'echo', '--until-direct', '-c', '2', '--admin', relaySock], env);
    assert.equal(await waitExit(ur, 20_000), 1);
    assert.equal(outputOf(ur).stdout.trim().split('\n').length, 2);
    assert.match(outputOf(ur).stdout, /via relay/);
    assert.match(outputOf(ur).stderr, /not on a direct path/);

    // Standalone: no running peer has the name here, so it opens a session of its own.
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-ping-none-'));
    t.after(() => fs.rmSync(empty, { recursive: true, force: true }));
    const lone = { XDG_RUNTIME_DIR: empty };
    const sa = p.spawnCli(
      'peer',
      ['ping', 'echo', '--until-direct', '-c', '20', '--json', '--server', rdv.addr, '--secret', SECRET],
      lone,
    );
    assert.equal(await waitExit(sa, 40_000), 0, outputOf(sa).stderr);
    const sl = lines(outputOf(sa).stdout);
    assert.ok(sl.length >= 1 && sl.length <= 20);
    assert.equal(sl[sl.length - 1].path, 'direct');
    assert.ok(
      sl.every((l) => l.via === 'standalone' && l.ok),
      outputOf(sa).stdout + outputOf(sa).stderr,
    );
    const sr = p.spawnCli(
      'peer',
      ['ping', 'echo', '-c', '2', '--json', '--mode', 'relay', '--server', rdv.addr, '--secret', SECRET],
      lone,
    );
    assert.equal(await waitExit(sr, 40_000), 0, outputOf(sr).stderr);
    assert.deepEqual(
      lines(outputOf(sr).stdout).map((l) => [l.path, l.remote]),
      [
        ['relay', rdv.addr],
        ['relay', rdv.addr],
      ],
    );
    // Neither a running peer nor a rendezvous to use: a clear error.
    const none = p.spawnCli('peer', ['ping', 'echo'], lone);
    assert.equal(await waitExit(none, 10_000), 1);
    assert.match(outputOf(none).stderr, /no running peer serves or visits "echo".*--server/);
  },
);
