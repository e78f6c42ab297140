/**
 * --mode direct and --mode relay across real NATs: direct never touches the
 * relay and fails clearly where no hole can be punched; relay never punches.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startTunnelLab, uniquePrefix, SERVICE, SECRET, RDV } from './helpers.js';
import { waitExit, outputOf, eventsOf, waitForEvent } from './lab.js';

test('--mode direct, cone x cone: direct from the first byte, the relay is never used', async (t) => {
  const tl = await startTunnelLab(
    t,
    { a: 'cone', b: 'cone' },
    { prefix: uniquePrefix('md'), visitArgs: ['--mode', 'direct'], serveArgs: ['--mode', 'direct'] },
  );
  if (!tl) return;
  const r = await tl.transfer(2_000_000);
  assert.ok(r.ok, r.error);
  assert.equal(r.got, r.sent);
  assert.deepEqual([...new Set(tl.pathSequence('visit'))], ['direct']);
  assert.deepEqual([...new Set(tl.pathSequence('serve'))], ['direct']);
  // The relay never paired a session for this tunnel.
  assert.equal(eventsOf(tl.rdv, 'relay_paired').length, 0);
});

test('--mode direct, symmetric x symmetric: visit fails at start with a clear reason', async (t) => {
  const tl = await startTunnelLab(
    t,
    { a: 'symmetric', b: 'symmetric' },
    { prefix: uniquePrefix('mds'), noVisit: true },
  );
  if (!tl) return;
  const visit = tl.lab.spawnCli('a', 'peer', [
    'visit',
    SERVICE,
    '--bind',
    '127.0.0.1:0',
    '--mode',
    'direct',
    '--server',
    `${RDV.host}:${RDV.port}`,
    '--secret',
    SECRET,
    '--no-admin',
    '--log-format',
    'json',
  ]);
  const code = await waitExit(visit, 40_000);
  assert.equal(code, 1, outputOf(visit).stderr);
  const err = await waitForEvent(visit, 'error', 1000);
  assert.match(String(err.message), /no direct path/);
  assert.equal(eventsOf(visit, 'ready').length, 0, 'visit must not report ready without a path');
});

test('--mode relay, cone x cone: stays on the relay and never punches', async (t) => {
  const tl = await startTunnelLab(
    t,
    { a: 'cone', b: 'cone' },
    { prefix: uniquePrefix('mr'), visitArgs: ['--mode', 'relay'] },
  );
  if (!tl) return;
  const r = await tl.transfer(2_000_000);
  assert.ok(r.ok, r.error);
  assert.equal(r.got, r.sent);
  assert.deepEqual([...new Set(tl.pathSequence('visit'))], ['relay']);
  assert.deepEqual([...new Set(tl.pathSequence('serve'))], ['relay']);
  assert.equal(tl.events('punch_start', 'visit').length + tl.events('punch_start', 'serve').length, 0);
});
