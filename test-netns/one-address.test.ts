// Issue 25: hard NAT on a rendezvous with ONE address, started as README says
// (no --alt-udp). The rendezvous answers STUN on a second port of that address
// (UDP port + 1 = 7001 by default), so a peer behind a symmetric NAT can see
// that its mapping changes with the destination port, and the birthday punch
// is chosen. Real binaries, real kernel NATs (docs/NETNS-LAB.md).
//
// One lab per topology; `peer nat` runs in the labs the tunnels already use.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Lab } from './lab.js';
import { ONE_ADDRESS_RDV, RDV, README_RDV, sleep, startTunnelLab, uniquePrefix, type TunnelLab } from './helpers.js';
import { waitForEvent } from './lab.js';

const MB = 1024 * 1024;
const ALT_PORT = RDV.port + 1;

interface NatJson {
  publicAddress: { address: string; port: number };
  mapping: string;
  filtering: string;
  natType: string;
  isPublic: boolean;
  mappingTested: { port: boolean; address: boolean };
  notes: string[];
}

async function natReport(lab: Lab, host: 'a' | 'b'): Promise<NatJson> {
  const r = await lab.execCli(host, 'peer', ['nat', '--server', `${RDV.host}:${RDV.port}`, '--json'], {
    timeoutMs: 30_000,
  });
  assert.equal(r.code, 0, `peer nat on ${host} failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as NatJson;
}

async function natText(lab: Lab, host: 'a' | 'b'): Promise<string> {
  const r = await lab.execCli(host, 'peer', ['nat', '--server', `${RDV.host}:${RDV.port}`], { timeoutMs: 30_000 });
  assert.equal(r.code, 0, `peer nat on ${host} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

function expectCone(rep: NatJson, lab: Lab, host: 'a' | 'b'): void {
  const msg = `cone on ${host}: ${JSON.stringify(rep)}`;
  assert.equal(rep.publicAddress.address, lab.publicAddr(host), msg);
  assert.equal(rep.isPublic, false, msg);
  assert.equal(rep.mapping, 'endpoint-independent', msg);
  // The change-port response is dropped by a port-restricted NAT: filtering is known with one address too.
  assert.equal(rep.filtering, 'address-and-port-dependent', msg);
  assert.equal(rep.natType, 'port-restricted-cone', msg);
  assert.deepEqual(rep.mappingTested, { port: true, address: false }, msg);
  assert.match(rep.notes.join('\n'), /address dependence could not be tested/, msg);
}

function expectSymmetric(rep: NatJson, lab: Lab, host: 'a' | 'b'): void {
  const msg = `symmetric on ${host}: ${JSON.stringify(rep)}`;
  assert.equal(rep.publicAddress.address, lab.publicAddr(host), msg);
  assert.equal(rep.isPublic, false, msg);
  assert.equal(rep.mapping, 'address-and-port-dependent', msg);
  assert.equal(rep.natType, 'symmetric', msg);
  assert.deepEqual(rep.mappingTested, { port: true, address: false }, msg);
}

const planOf = (tl: TunnelLab, who: 'visit' | 'serve') =>
  (tl.events('punch_start', who).at(0)?.plan as string | undefined) ??
  (tl.events('punch_skipped', who).length ? 'none' : undefined);

/** Direct on both sides, the birthday plans on the right sides, 20 MB exact over the direct path. */
async function expectDirect20MB(tl: TunnelLab, visitorHard: boolean, t: { diagnostic(s: string): void }) {
  await tl.waitPath('direct', 30_000).catch((e: Error) => assert.fail(`no direct path: ${e.message}\n${tl.dump()}`));
  await tl.waitPath('direct', 10_000, 'serve');
  assert.equal(planOf(tl, 'visit'), visitorHard ? 'open-sockets' : 'spray-ports', tl.dump());
  assert.equal(planOf(tl, 'serve'), visitorHard ? 'spray-ports' : 'open-sockets', tl.dump());
  const r = await tl.transfer(20 * MB, { timeoutMs: 90_000 });
  assert.ok(r.ok, `transfer failed: ${JSON.stringify(r)}\n${tl.dump()}`);
  assert.equal(r.gotBytes, 20 * MB);
  assert.equal(r.got, r.sent);
  assert.equal(tl.lastPath(), 'direct', `visitor paths ${tl.pathSequence().join(' -> ')}`);
  assert.equal(tl.lastPath('serve'), 'direct', `server paths ${tl.pathSequence('serve').join(' -> ')}`);
  t.diagnostic(`direct after ${tl.timeToDirect()} ms; 20 MB exact in ${r.ms} ms`);
}

// As in the README (--listen 0.0.0.0:7000): 20 MB arrive exact, and `peer nat` names both NATs.
test('one-address rendezvous (0.0.0.0:7000): symmetric visitor x cone server goes direct', async (t) => {
  const tl = await startTunnelLab(
    t,
    { a: 'symmetric', b: 'cone' },
    { prefix: uniquePrefix('oasc'), rdvArgs: README_RDV },
  );
  if (!tl) return;
  const ready = await waitForEvent(tl.rdv, 'ready', 1000);
  assert.deepEqual(
    ready.udp,
    [`0.0.0.0:${RDV.port}`, `0.0.0.0:${ALT_PORT}`],
    'the rendezvous answers STUN on 7000 and 7001',
  );
  await expectDirect20MB(tl, true, t);
  // `peer nat` against the same one-address rendezvous, from both sites.
  const [ra, rb] = await Promise.all([natReport(tl.lab, 'a'), natReport(tl.lab, 'b')]);
  expectSymmetric(ra, tl.lab, 'a');
  expectCone(rb, tl.lab, 'b');
  const text = await natText(tl.lab, 'b');
  assert.match(text, /mapping: +endpoint-independent \(tested across server ports; address dependence NOT tested/);
  t.diagnostic(`a: ${ra.mapping} ${ra.natType}; b: ${rb.mapping} ${rb.natType}`);
});

// --listen and --udp on 203.0.113.10 only; 20 MB arrive exact.
test('one-address rendezvous (203.0.113.10): cone visitor x symmetric server goes direct', async (t) => {
  const tl = await startTunnelLab(
    t,
    { a: 'cone', b: 'symmetric' },
    { prefix: uniquePrefix('oacs'), rdvArgs: ONE_ADDRESS_RDV },
  );
  if (!tl) return;
  await expectDirect20MB(tl, false, t);
  const [ra, rb] = await Promise.all([natReport(tl.lab, 'a'), natReport(tl.lab, 'b')]);
  expectCone(ra, tl.lab, 'a');
  expectSymmetric(rb, tl.lab, 'b');
});

// The data arrive exact over the relay.
test('one-address rendezvous: symmetric x symmetric ends on the relay at once (no punch rounds)', async (t) => {
  const tl = await startTunnelLab(
    t,
    { a: 'symmetric', b: 'symmetric' },
    { prefix: uniquePrefix('oass'), rdvArgs: ONE_ADDRESS_RDV },
  );
  if (!tl) return;
  await Promise.all([
    tl.waitPath('relay', 10_000),
    waitForEvent(tl.visit, 'punch_skipped', 10_000),
    waitForEvent(tl.serve, 'punch_skipped', 10_000),
  ]);
  const r = await tl.transfer(4 * MB, { timeoutMs: 60_000 });
  assert.ok(r.ok, `transfer failed: ${JSON.stringify(r)}\n${tl.dump()}`);
  assert.equal(r.got, r.sent);
  await sleep(1000);
  for (const who of ['visit', 'serve'] as const) {
    assert.deepEqual(tl.pathSequence(who), ['relay'], `${who} paths`);
    assert.equal(tl.events('punch_start', who).length, 0, `${who} punched although both NATs are symmetric`);
  }
});

// With the second port firewalled, nobody can classify: only the escalation
// (plain fails -> birthday on the side that looks hard -> the other side) can
// find the hole (src/punch/planner.ts over nextPunchPlan in strategy.ts). The
// issue's goal is 30 s; the bound here leaves room for a loaded CI machine,
// and the time is printed for docs/BENCHMARKS.md.
for (const [a, b] of [
  ['symmetric', 'cone'],
  ['cone', 'symmetric'],
] as const) {
  // The rendezvous's firewall blocks its second port (ALT_PORT); the visitor escalates until the path is direct.
  test(`one-address rendezvous, UDP ${ALT_PORT} blocked: visitor ${a} x server ${b} direct within 30 s`, async (t) => {
    const tl = await startTunnelLab(
      t,
      { a, b },
      { prefix: uniquePrefix(`ob${a[0]}${b[0]}`), rdvArgs: ONE_ADDRESS_RDV, noVisit: true },
    );
    if (!tl) return;
    await tl.lab.nft(
      'rdv',
      `table inet blockalt {\n  chain input {\n    type filter hook input priority filter; policy accept;\n` +
        `    udp dport ${ALT_PORT} drop\n  }\n}\n`,
    );
    const started = performance.now();
    await tl.startVisit();
    await tl.waitPath('direct', 45_000).catch((e: Error) => assert.fail(`no direct path: ${e.message}\n${tl.dump()}`));
    t.diagnostic(`direct after ${((performance.now() - started) / 1000).toFixed(1)} s`);
    const plans = tl.events('punch_start', 'visit').map((e) => e.plan);
    assert.ok(plans.length >= 2 && plans[0] === 'plain', `the visitor escalated from plain: ${plans.join(', ')}`);
    const r = await tl.transfer(20 * MB, { timeoutMs: 90_000 });
    assert.ok(r.ok, `transfer failed: ${JSON.stringify(r)}`);
    assert.equal(r.got, r.sent);
    assert.equal(tl.lastPath(), 'direct');
  });
}
