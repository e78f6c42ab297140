/**
 * The `code` field of the JSON `error` event (src/util/errors.ts, docs/CLI.md):
 * real failing commands, run as the built binaries on loopback, exit 1 with
 * one error event whose code names the failure.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Procs, waitExit, SECRET } from './helpers/tunnel.js';
import { eventsOf } from '../scripts/proc.js';

const JSON_LOG = ['--log-format', 'json'];

/** Runs a CLI to completion; resolves with its exit code and its `error` events. */
async function fails(p: Procs, which: 'peer' | 'rendezvous' | 'relay', args: string[]) {
  const child = p.spawnCli(which, [...args, ...JSON_LOG]);
  child.stdin?.end();
  const code = await waitExit(child, 20_000);
  return { code, errors: eventsOf(child, 'error') };
}

function assertCode(r: { code: number | null; errors: Record<string, unknown>[] }, expected: string): void {
  assert.equal(r.code, 1);
  assert.ok(r.errors.length >= 1, 'an error event');
  assert.equal(r.errors[r.errors.length - 1].code, expected, JSON.stringify(r.errors));
}

test('error events carry a code: wrong secret, unknown name, port in use, bad flag, no rendezvous', async (t) => {
  const p = new Procs();
  t.after(() => p.cleanup());
  const rdv = await p.rendezvous();
  const echo = await p.echoServer();
  await p.serve('codes', `127.0.0.1:${echo.port}`, rdv.addr, SECRET);
  const visit = (name: string, secret: string, bind = '127.0.0.1:0') =>
    fails(p, 'peer', ['visit', name, '--bind', bind, '--server', rdv.addr, '--secret', secret, '--no-admin']);

  await t.test('wrong secret: auth_failed', async () =>
    assertCode(await visit('codes', 'not the secret'), 'auth_failed'),
  );
  await t.test('unknown name: unknown_name', async () => assertCode(await visit('nobody', SECRET), 'unknown_name'));

  await t.test('the wrong --proto for a name: proto_mismatch, both ways', async () => {
    await p.serve('codes-udp', `127.0.0.1:${echo.port}`, rdv.addr, SECRET, ['--proto', 'udp', '--no-admin']);
    assertCode(await visit('codes-udp', SECRET), 'proto_mismatch');
    const udpVisit = await fails(p, 'peer', [
      'visit',
      'codes',
      '--proto',
      'udp',
      '--bind',
      '127.0.0.1:0',
      '--server',
      rdv.addr,
      '--secret',
      SECRET,
      '--no-admin',
    ]);
    assertCode(udpVisit, 'proto_mismatch');
    assert.match(String(udpVisit.errors.at(-1)?.message), /served as TCP/);
  });

  await t.test('visit --bind on a port in use: address_in_use', async () => {
    const taken = net.createServer();
    p.track(taken);
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()));
    const port = (taken.address() as net.AddressInfo).port;
    assertCode(await visit('codes', SECRET, `127.0.0.1:${port}`), 'address_in_use');
  });

  await t.test('rendezvous --listen on a port in use: address_in_use', async () => {
    assertCode(await fails(p, 'rendezvous', ['--listen', rdv.addr]), 'address_in_use');
  });

  await t.test('bad flag value: usage', async () => {
    assertCode(await fails(p, 'peer', ['visit', 'bad name!', '--bind', '127.0.0.1:0']), 'usage');
  });

  await t.test('nothing listening at --server: unreachable', async () => {
    const gone = net.createServer();
    await new Promise<void>((r) => gone.listen(0, '127.0.0.1', () => r()));
    const port = (gone.address() as net.AddressInfo).port;
    await new Promise<void>((r) => gone.close(() => r()));
    const r = await fails(p, 'peer', [
      'visit',
      'codes',
      '--bind',
      '127.0.0.1:0',
      '--server',
      `127.0.0.1:${port}`,
      '--secret',
      SECRET,
      '--no-admin',
    ]);
    assertCode(r, 'unreachable');
  });
});
