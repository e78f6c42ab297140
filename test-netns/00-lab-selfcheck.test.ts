// Self-check of the netns lab: before the project's own netns tests mean
// anything, each router type must be proven to behave as its name says. The
// proof uses a tiny independent UDP probe (scripts/lab-probe.ts), not the
// project's STUN code, so a bug there cannot hide a lab bug or vice versa.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { outputOf, probe, REFLECT_PORTS, startLab, startReflector, waitExit, waitForEvent, type Lab } from './lab.js';
import { sleep } from '../src/util/backoff.js';

interface Targets {
  p1: string;
  p2: string;
  ip2: string;
}

function targets(lab: Lab): Targets {
  const [ip1, ip2] = lab.addrs('rdv');
  return { p1: `${ip1}:${REFLECT_PORTS[0]}`, p2: `${ip1}:${REFLECT_PORTS[1]}`, ip2: `${ip2}:${REFLECT_PORTS[0]}` };
}

/** From ONE socket: the mapped address seen by rdv:p1, rdv:p2 and rdv2:p1. */
async function mappings(lab: Lab, host: string): Promise<{ local: string; seen: string[] }> {
  const t = targets(lab);
  const rep = await probe(lab, host, ['probe', '--to', t.p1, '--to', t.p2, '--to', t.ip2]);
  const seen = rep.results.map((r) => r.seen);
  for (const [i, s] of seen.entries()) assert.ok(s, `${host}: no answer from ${rep.results[i].to}`);
  return { local: rep.local, seen: seen as string[] };
}

/**
 * From a fresh socket that talked only to rdv:p1: which answers sent from
 * another port / address / both get through the NAT.
 */
async function filtering(lab: Lab, host: string): Promise<{ port: boolean; ip: boolean; both: boolean }> {
  const t = targets(lab);
  const rep = await probe(lab, host, [
    'probe',
    '--to',
    t.p1,
    '--to',
    `${t.p1}/port`,
    '--to',
    `${t.p1}/ip`,
    '--to',
    `${t.p1}/both`,
  ]);
  // Control: the path itself works, so a missing answer below means filtering.
  assert.ok(rep.results[0].seen, `${host}: no answer from ${t.p1} at all`);
  const [, port, ip, both] = rep.results.map((r) => r.seen !== null);
  return { port: port, ip: ip, both: both };
}

/** Datagrams arriving at host:port when rdv sends there unprompted (to the site's public address). */
async function unsolicited(lab: Lab, host: string, port: number): Promise<number> {
  const listener = lab.spawnCli(host, 'probe', ['listen', '--bind', `0.0.0.0:${port}`, '--ms', '1200']);
  await waitForEvent(listener, 'ready', 10_000);
  await probe(lab, 'rdv', ['send', '--to', `${lab.publicAddr(host)}:${port}`, '--n', '5']);
  assert.equal(await waitExit(listener, 10_000), 0, `listener failed: ${outputOf(listener).stderr}`);
  return (JSON.parse(outputOf(listener).stdout) as { received: number }).received;
}

async function burst(lab: Lab, host: string, n: number, size = 0): Promise<number> {
  const r = await probe<{ sent: number; received: number | null }>(lab, host, [
    'burst',
    '--to',
    targets(lab).p1,
    '--n',
    String(n),
    '--size',
    String(size),
    '--tag',
    `b${Date.now()}`,
  ]);
  assert.notEqual(r.received, null, `${host}: the reflector never answered the count query`);
  return r.received!;
}

const portOf = (hp: string) => Number(hp.slice(hp.lastIndexOf(':') + 1));
const ipOf = (hp: string) => hp.slice(0, hp.lastIndexOf(':'));

test('netns lab: cone (A, with a2 on the same LAN) and symmetric (B), attacker', async (t) => {
  const lab = await startLab(t, { a: 'cone', b: 'symmetric', sameLan: true, attacker: true });
  if (!lab) return;
  await startReflector(lab);

  await t.test('cone: endpoint-independent mapping (same mapped address for 3 destinations)', async () => {
    const m = await mappings(lab, 'a');
    assert.equal(new Set(m.seen).size, 1, `mappings differ: ${m.seen.join(' ')}`);
    assert.equal(ipOf(m.seen[0]), lab.addr('ra'));
  });

  await t.test('cone: port-restricted filtering (answers from another port or address dropped)', async () => {
    assert.deepEqual(await filtering(lab, 'a'), { port: false, ip: false, both: false });
    assert.equal(await unsolicited(lab, 'a', 40_000), 0);
  });

  await t.test('symmetric: mapping depends on the destination', async () => {
    const m = await mappings(lab, 'b');
    assert.equal(new Set(m.seen).size, 3, `expected 3 different mappings: ${m.seen.join(' ')}`);
    for (const s of m.seen) assert.equal(ipOf(s), lab.addr('rb'));
    assert.deepEqual(await filtering(lab, 'b'), { port: false, ip: false, both: false });
  });

  await t.test('same LAN: a and a2 share the public address and reach each other directly', async () => {
    const m2 = await mappings(lab, 'a2');
    assert.equal(ipOf(m2.seen[0]), lab.addr('ra'));
    const listener = lab.spawnCli('a2', 'probe', ['listen', '--bind', `${lab.addr('a2')}:40001`, '--ms', '800']);
    await waitForEvent(listener, 'ready', 10_000);
    await probe(lab, 'a', ['send', '--to', `${lab.addr('a2')}:40001`, '--n', '3']);
    await waitExit(listener, 10_000);
    const got = JSON.parse(outputOf(listener).stdout) as { received: number; from: string[] };
    assert.equal(got.received, 3);
    assert.deepEqual(got.from.map(ipOf), [lab.addr('a')], 'LAN traffic must not be NATed');
  });

  await t.test('the internet has no route to private addresses; the attacker reaches rdv only', async () => {
    const toLan = await lab.exec('attacker', ['ip', 'route', 'get', lab.addr('a')]);
    assert.notEqual(toLan.code, 0, `attacker has a route to ${lab.addr('a')}: ${toLan.stdout}`);
    const m = await probe(lab, 'attacker', ['probe', '--to', targets(lab).p1]);
    assert.equal(m.results[0].seen, `${lab.addr('attacker')}:${portOf(m.local)}`);
  });

  await t.test('loss: 30% on the WAN drops about 30% of 200 datagrams', async () => {
    assert.ok((await burst(lab, 'a', 200)) >= 196, 'without loss nearly everything must arrive');
    await lab.setLoss('ra', 30);
    const got = await burst(lab, 'a', 200);
    await lab.setLoss('ra', 0);
    assert.ok(got >= 100 && got <= 180, `received ${got}/200 with 30% loss`);
    assert.ok((await burst(lab, 'a', 50)) >= 49, 'loss 0 must remove the loss rules');
  });

  await t.test('rate: a 1 Mbit/s tbf on the WAN throttles a burst, and can be removed', async () => {
    await lab.setRate('ra', 1);
    const shown = await lab.exec('ra', ['tc', 'qdisc', 'show', 'dev', `${lab.prefix}-wan`]);
    assert.match(shown.stdout, /tbf .*rate 1Mbit/);
    // 600 x 1200 B = 720 kB offered in well under a second; 1 Mbit/s is 125 kB/s.
    const limited = await burst(lab, 'a', 600, 1200);
    await lab.setRate('ra', 0);
    const free = await burst(lab, 'a', 600, 1200);
    assert.ok(limited < 300, `rate limit let ${limited}/600 through`);
    assert.ok(free >= 590, `without the limit only ${free}/600 arrived`);
  });

  await t.test('conntrack: flush forgets the mappings; UDP timeout expires them', async () => {
    await mappings(lab, 'a');
    assert.match(await lab.conntrack('ra'), new RegExp(`src=${lab.addr('a')} .*dport=${REFLECT_PORTS[0]}`));
    await lab.flushConntrack('ra');
    assert.doesNotMatch(await lab.conntrack('ra'), new RegExp(`src=${lab.addr('a')} `));

    await lab.setUdpTimeout('ra', 1);
    const sysctl = await lab.exec('ra', [
      'sysctl',
      '-n',
      'net.netfilter.nf_conntrack_udp_timeout',
      'net.netfilter.nf_conntrack_udp_timeout_stream',
    ]);
    assert.deepEqual(sysctl.stdout.trim().split(/\s+/), ['1', '1']);
    await mappings(lab, 'a');
    await sleep(2500);
    assert.doesNotMatch(
      await lab.conntrack('ra'),
      new RegExp(`src=${lab.addr('a')} `),
      'entries outlived a 1 s timeout',
    );
    await lab.setUdpTimeout('ra', 30, 120);
  });
});

test('netns lab: full cone (A) and public (B)', async (t) => {
  const lab = await startLab(t, { a: 'fullcone', b: 'public' });
  if (!lab) return;
  await startReflector(lab);

  await t.test('fullcone: endpoint-independent mapping', async () => {
    const m = await mappings(lab, 'a');
    assert.equal(new Set(m.seen).size, 1, `mappings differ: ${m.seen.join(' ')}`);
    assert.equal(ipOf(m.seen[0]), lab.addr('ra'));
  });

  await t.test('fullcone: endpoint-independent filtering, unsolicited datagrams reach the host', async () => {
    assert.deepEqual(await filtering(lab, 'a'), { port: true, ip: true, both: true });
    assert.equal(await unsolicited(lab, 'a', 40_000), 5);
  });

  await t.test("public: mapped address is the host's own, nothing filtered", async () => {
    const m = await mappings(lab, 'b');
    assert.deepEqual(m.seen, Array(3).fill(`${lab.addr('b')}:${portOf(m.local)}`));
    assert.deepEqual(await filtering(lab, 'b'), { port: true, ip: true, both: true });
    assert.equal(await unsolicited(lab, 'b', 40_000), 5);
  });

  await t.test('public site: loss applies to the host\'s own link ("rb" names it)', async () => {
    await lab.setLoss('rb', 30);
    const got = await burst(lab, 'b', 200);
    await lab.setLoss('rb', 0);
    assert.ok(got >= 100 && got <= 180, `received ${got}/200 with 30% loss`);
  });
});

test('netns lab: CGNAT (symmetric carrier over a cone home router) and overlapping LANs', async (t) => {
  const lab = await startLab(t, { a: 'cone', b: 'cone', cgnat: { a: 'symmetric' }, overlappingLans: true });
  if (!lab) return;
  await startReflector(lab);

  await t.test(
    "the outer NAT decides: mapping depends on the destination, public address is the carrier's",
    async () => {
      const m = await mappings(lab, 'a');
      assert.equal(new Set(m.seen).size, 3, `expected 3 different mappings: ${m.seen.join(' ')}`);
      for (const s of m.seen) assert.equal(ipOf(s), lab.publicAddr('a'));
      assert.equal(lab.publicAddr('a'), lab.addr('ca'));
    },
  );

  await t.test('both sites use the same private address, each behind its own NAT', async () => {
    assert.equal(lab.addr('a'), lab.addr('b'));
    const m = await mappings(lab, 'b');
    assert.equal(new Set(m.seen).size, 1);
    assert.equal(ipOf(m.seen[0]), lab.addr('rb'));
  });
});
