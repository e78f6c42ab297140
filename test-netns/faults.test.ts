// The direct path under real NATs when things go wrong (issue 4's scenarios):
// a big transfer, a stream that outlives the move from relay to direct,
// NAT tables flushed mid-transfer, the rendezvous killed, idle tunnels with
// short mapping timeouts, and loss on both routers. Every test builds its own
// lab (unique prefix) and tears it down in t.after, also on failure.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ChildProcess } from 'node:child_process';
import { waitExit, waitForEvent } from './lab.js';
import {
  PEER_BLOCK_TABLE,
  peerBlockRuleset,
  sleep,
  startTunnelLab,
  uniquePrefix,
  type EchoResult,
  type TunnelLab,
} from './helpers.js';

const MB = 1024 * 1024;

/** Whether a promise has settled by now (without waiting for it). */
async function settled(p: Promise<unknown>): Promise<boolean> {
  const marker = Symbol('pending');
  return (await Promise.race([p, Promise.resolve(marker)])) !== marker;
}

function assertExact(r: EchoResult, tl: TunnelLab, what: string): void {
  assert.ok(r.ok, `${what}: ${JSON.stringify(r)}\n${tl.dump()}`);
  assert.equal(r.gotBytes, r.bytes);
  assert.equal(r.got, r.sent, `${what}: sha256 differs`);
}

const rate = (r: EchoResult) => `${(r.bytes / MB / (r.ms / 1000)).toFixed(1)} MB/s`;

test('cone x cone: the session goes direct and 50 MB come back with the same sha256', async (t) => {
  const tl = await startTunnelLab(t, { a: 'cone', b: 'cone' }, { prefix: uniquePrefix('fbig') });
  if (!tl) return;
  await tl.waitPath('direct', 20_000);
  const r = await tl.transfer(50 * MB, { timeoutMs: 150_000 });
  assertExact(r, tl, '50 MB echo');
  assert.equal(tl.lastPath(), 'direct', `paths: ${tl.pathSequence().join(' -> ')}`);
  assert.equal(tl.lastPath('serve'), 'direct');
  t.diagnostic(
    `50 MB echoed (100 MB through the tunnel) in ${r.ms} ms, ${rate(r)} each way; time to ` +
      `direct ${tl.timeToDirect()} ms; paths ${tl.pathSequence().join(' -> ')}`,
  );
});

test('a stream opened on the relay keeps flowing, byte for byte, after the move to direct', async (t) => {
  const tl = await startTunnelLab(t, { a: 'cone', b: 'cone' }, { prefix: uniquePrefix('fmove'), noVisit: true });
  if (!tl) return;
  // Hold the hole shut (UDP between the two sites dropped at A's WAN, STUN to
  // the rendezvous still allowed) so the stream surely starts on the relay.
  // The block is lifted while the first punch round is still probing.
  await tl.lab.nft('ra', peerBlockRuleset(tl.lab.addr('rb')));
  const started = Date.now();
  await tl.startVisit();
  assert.equal(tl.lastPath(), 'relay', `paths: ${tl.pathSequence().join(' -> ')}`);
  const { child, result } = tl.startTransfer(Math.round(2.5 * MB), {
    chunk: 16 * 1024,
    delayMs: 40,
    timeoutMs: 60_000,
  });
  // Bytes are flowing (both ways) on the relay before the hole opens.
  await waitProgress(child, 64 * 1024, 15_000);
  assert.ok(!tl.pathSequence().includes('direct'), 'went direct while the hole was blocked');
  await tl.lab.exec('ra', ['nft', 'delete', 'table', 'inet', PEER_BLOCK_TABLE], { check: true });
  const direct = await tl.waitPath('direct', 20_000);
  assert.equal(await settled(result), false, 'the transfer ended before the move to direct: make it longer');
  const r = await result;
  await waitExit(child, 5000);
  assertExact(r, tl, 'stream across the move');
  assert.deepEqual(tl.pathSequence().slice(0, 2), ['relay', 'direct']);
  assert.equal(tl.lastPath(), 'direct');
  // One TCP connection, one stream: the server side saw exactly one.
  assert.equal(tl.events('session_closed', 'serve').length, 0);
  t.diagnostic(
    `moved to direct ${Date.parse(String(direct.time)) - started} ms after start, transfer ` +
      `of ${r.bytes} bytes took ${r.ms} ms; paths ${tl.pathSequence().join(' -> ')}`,
  );
});

// cone x cone: masquerade usually re-creates the same mappings, so the path may
// survive; cone x symmetric: the symmetric side gets a new random port, the
// old hole is gone, and the session must fall back and punch again.
for (const [ta, tb] of [
  ['cone', 'cone'],
  ['cone', 'symmetric'],
] as const) {
  test(`both NATs forget their mappings (conntrack -F) mid-transfer, ${ta} x ${tb}: exact, ends direct`, async (t) => {
    const tl = await startTunnelLab(t, { a: ta, b: tb }, { prefix: uniquePrefix(`fl${ta[0]}${tb[0]}`) });
    if (!tl) return;
    await tl.waitPath('direct', 20_000);
    const { child, result } = tl.startTransfer(12 * MB, { chunk: 64 * 1024, delayMs: 15, timeoutMs: 90_000 });
    await waitProgress(child, 2 * MB, 20_000);
    await Promise.all([tl.lab.flushConntrack('ra'), tl.lab.flushConntrack('rb')]);
    const flushedAt = Date.now();
    const pathsBefore = tl.pathEvents().length;
    assert.equal(await settled(result), false, 'the transfer ended before the flush: make it longer');
    const r = await result;
    await waitExit(child, 5000);
    assertExact(r, tl, 'transfer across the conntrack flush');
    // If the path fell back, give the re-punch its time; then it must be direct.
    if (tl.lastPath() !== 'direct') await tl.waitPath('direct', 30_000, 'visit', tl.mark());
    const seq = (who: 'visit' | 'serve') =>
      tl
        .pathEvents(who)
        .map((e) => `${String(e.path)}(${String(e.remote)})@${Date.parse(String(e.time)) - flushedAt}ms`);
    const after = tl.pathEvents().length - pathsBefore;
    t.diagnostic(`visitor paths (times relative to the flush): ${seq('visit').join(' -> ')}`);
    t.diagnostic(`server paths: ${seq('serve').join(' -> ')}`);
    t.diagnostic(
      `direct_lost: visit ${tl.events('direct_lost').length}, serve ` +
        `${tl.events('direct_lost', 'serve').length}; ${after} path events after the flush; ` +
        `transfer ${r.ms} ms`,
    );
    assert.equal(tl.lastPath(), 'direct');
  });
}

test('rendezvous killed during a direct transfer: the transfer completes, and new streams still work', async (t) => {
  const tl = await startTunnelLab(t, { a: 'cone', b: 'symmetric' }, { prefix: uniquePrefix('fkill') });
  if (!tl) return;
  await tl.waitPath('direct', 25_000);
  const { child, result } = tl.startTransfer(8 * MB, { chunk: 64 * 1024, delayMs: 15, timeoutMs: 60_000 });
  await waitProgress(child, 1 * MB, 20_000);
  process.kill(-tl.rdv.pid!, 'SIGKILL');
  await waitExit(tl.rdv, 5000);
  assert.equal(await settled(result), false, 'the transfer ended before the kill: make it longer');
  const r = await result;
  await waitExit(child, 5000);
  assertExact(r, tl, 'transfer across the rendezvous kill');
  assert.equal(tl.lastPath(), 'direct');
  // The session survives the rendezvous: a brand-new stream (TCP connection) works too.
  const r2 = await tl.transfer(256 * 1024, { timeoutMs: 20_000 });
  assertExact(r2, tl, 'new stream after the kill');
  assert.equal(tl.events('session_closed').length, 0, 'the visitor lost its session');
  assert.ok(tl.events('disconnected', 'serve').length >= 1, 'serve did not notice the rendezvous going away');
});

test('5 s UDP mapping timeout in both NATs, idle 40 s: the next request goes direct, no new punch', async (t) => {
  const tl = await startTunnelLab(
    t,
    { a: { type: 'cone', udpTimeout: 5 }, b: { type: 'cone', udpTimeout: 5 } },
    { prefix: uniquePrefix('fidle') },
  );
  if (!tl) return;
  await tl.waitPath('direct', 20_000);
  assertExact(await tl.transfer(64 * 1024), tl, 'before idling');
  await sleep(1500); // let the first round's stragglers (punch_ok of other pairs) settle
  const mark = { visit: tl.mark('visit'), serve: tl.mark('serve') };
  const counts = () => ({
    path: [tl.events('path').length, tl.events('path', 'serve').length],
    punch: [tl.events('punch_start').length, tl.events('punch_start', 'serve').length],
    lost: [tl.events('direct_lost').length, tl.events('direct_lost', 'serve').length],
  });
  const c0 = counts();
  const conntrackBefore = await tl.lab.conntrack('ra');
  await sleep(40_000);
  const r = await tl.transfer(256 * 1024, { timeoutMs: 20_000 });
  assertExact(r, tl, 'after 40 s idle');
  const c1 = counts();
  assert.deepEqual(
    c1,
    c0,
    `events during/after the idle period: visit ${JSON.stringify(tl.pathSequence())}\n${tl.dump()}`,
  );
  assert.equal(tl.lastPath(), 'direct');
  assert.equal(tl.lastPath('serve'), 'direct');
  t.diagnostic(
    `idle 40 s with 5 s UDP timeouts: no path change, no punch, no direct_lost (lines after ` +
      `mark: visit ${tl.mark('visit') - mark.visit}, serve ${tl.mark('serve') - mark.serve}); ` +
      `ra conntrack udp entries: ${conntrackBefore.split('\n').filter(Boolean).length}`,
  );
});

test('10% loss on both routers: a 20 MB transfer is exact', async (t) => {
  const tl = await startTunnelLab(
    t,
    { a: { type: 'cone', loss: 10 }, b: { type: 'cone', loss: 10 } },
    { prefix: uniquePrefix('floss') },
  );
  if (!tl) return;
  // The loss really is in place on both WANs (else this test proves nothing).
  for (const r of ['ra', 'rb'])
    assert.match(
      (await tl.lab.exec(r, ['nft', 'list', 'table', 'inet', 'labloss'], { check: true })).stdout,
      /mod 100 < 10 drop/,
    );
  await tl.waitPath('direct', 30_000);
  const r = await tl.transfer(20 * MB, { timeoutMs: 150_000 });
  assertExact(r, tl, '20 MB under 10% loss');
  t.diagnostic(
    `20 MB under 10% loss per router per direction: ${r.ms} ms (${rate(r)}); paths ${tl.pathSequence().join(' -> ')}`,
  );
  assert.equal(tl.lastPath(), 'direct');
});

/** Waits until the echo client reports at least `bytes` echoed back. */
async function waitProgress(child: ChildProcess, bytes: number, timeoutMs: number): Promise<void> {
  await waitForEvent(
    child,
    (o) => (o.event === 'progress' && Number(o.gotBytes) >= bytes) || o.event === 'result',
    timeoutMs,
  );
}
