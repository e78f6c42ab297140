// Self-check of the lab's roaming controls (scripts/netns-lab.ts): before the
// roaming tests mean anything, each change of address or network must be
// proven to happen as its name says, with the independent UDP probe
// (scripts/lab-probe.ts). One lab for every case; each case leaves the
// topology as the next one expects (stated at the top of each).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CLI, REFLECT_PORTS, startLab, startReflector, type Lab } from './lab.js';

const ipOf = (hp: string) => hp.slice(0, hp.lastIndexOf(':'));

/** What rdv saw from one socket of `host` for each of 3 targets; null where no answer (or sending failed). */
async function seen(lab: Lab, host: string): Promise<(string | null)[]> {
  const [ip1, ip2] = lab.addrs('rdv');
  const to = [`${ip1}:${REFLECT_PORTS[0]}`, `${ip1}:${REFLECT_PORTS[1]}`, `${ip2}:${REFLECT_PORTS[0]}`];
  const r = await lab.exec(host, [process.execPath, CLI.probe, 'probe', ...to.flatMap((x) => ['--to', x])], {
    timeoutMs: 20_000,
  });
  if (r.code !== 0) return [null, null, null];
  const rep = JSON.parse(r.stdout) as { results: { seen: string | null }[] };
  return rep.results.map((x) => x.seen);
}

async function addrsOn(lab: Lab, node: string, dev: string): Promise<string[]> {
  const r = await lab.exec(node, ['ip', '-4', '-o', 'addr', 'show', 'dev', dev], { check: true });
  return [...r.stdout.matchAll(/inet (\S+)\//g)].map((m) => m[1]);
}

test('netns lab: roaming controls (new WAN and LAN addresses, outages, NAT type, moving a host)', async (t) => {
  const lab = await startLab(t, { a: 'cone', b: 'cone' });
  if (!lab) return;
  await startReflector(lab);
  const wan = `${lab.prefix}-wan`;
  const eth = `${lab.prefix}-eth0`;

  await t.test(
    'changeWanAddress: the router maps to its new address; the old one and its mappings are gone',
    async () => {
      const before = await seen(lab, 'a');
      assert.equal(ipOf(before[0]!), lab.addr('ra'));
      const old = lab.addr('ra');
      const neu = await lab.changeWanAddress('ra');
      assert.notEqual(neu, old);
      assert.equal(lab.addr('ra'), neu);
      assert.equal(lab.publicAddr('a'), neu);
      assert.deepEqual(await addrsOn(lab, 'ra', wan), [neu], 'only the new address is on the WAN');
      assert.doesNotMatch(await lab.conntrack('ra'), new RegExp(old.replace(/\./g, '\\.') + '\\b'), 'mappings flushed');
      const after = await seen(lab, 'a');
      for (const s of after) assert.equal(s && ipOf(s), neu);
      // The LAN side still works: the router's LAN address was not touched.
      assert.deepEqual(await addrsOn(lab, 'ra', `${lab.prefix}-lan`), ['10.0.1.1']);
    },
  );

  await t.test('changeWanAddress on both routers at once: two distinct new addresses, each its own', async () => {
    const [na, nb] = await Promise.all([lab.changeWanAddress('ra'), lab.changeWanAddress('rb')]);
    assert.notEqual(na, nb, 'one address on two routers of the same bridge: ARP decides who gets the packets');
    assert.deepEqual(await addrsOn(lab, 'ra', wan), [na]);
    assert.deepEqual(await addrsOn(lab, 'rb', wan), [nb]);
    const s = await seen(lab, 'b');
    for (const x of s) assert.equal(x && ipOf(x), nb);
  });

  await t.test('changeLanAddress: the host has only its new lease and still reaches the internet', async () => {
    const old = lab.addr('a');
    const neu = await lab.changeLanAddress('a');
    assert.notEqual(neu, old);
    assert.deepEqual(await addrsOn(lab, 'a', eth), [neu]);
    const s = await seen(lab, 'a');
    assert.equal(s[0] && ipOf(s[0]), lab.addr('ra'), 'NATed to the router as before');
  });

  await t.test('setLinkDown / outage(link): nothing gets through while down, everything after', async () => {
    await lab.setLinkDown('a', true);
    assert.deepEqual(await seen(lab, 'a'), [null, null, null]);
    await lab.setLinkDown('a', false);
    assert.ok(
      (await seen(lab, 'a')).every((x) => x !== null),
      'back up, with its default route',
    );
    await lab.outage('ra', 200, 'link');
    assert.ok(
      (await seen(lab, 'a')).every((x) => x !== null),
      'the router WAN is back after the outage',
    );
  });

  await t.test('setBlackhole: the link stays up but every datagram is dropped, until it is lifted', async () => {
    await lab.setBlackhole('ra', true);
    const link = await lab.exec('ra', ['ip', '-o', 'link', 'show', 'dev', wan], { check: true });
    assert.match(link.stdout, /state UP/);
    assert.deepEqual(await seen(lab, 'a'), [null, null, null]);
    await lab.setBlackhole('ra', false);
    assert.ok((await seen(lab, 'a')).every((x) => x !== null));
  });

  await t.test('setRouterType: a cone router turns symmetric (one mapping per destination) and back', async () => {
    await lab.setRouterType('ra', 'symmetric');
    const sym = await seen(lab, 'a');
    assert.equal(new Set(sym).size, 3, `expected 3 mappings: ${sym.join(' ')}`);
    await lab.setRouterType('ra', 'cone');
    const cone = await seen(lab, 'a');
    assert.equal(new Set(cone).size, 1, `expected 1 mapping: ${cone.join(' ')}`);
  });

  await t.test('moveHost: the host moves behind the other router and leaves through it', async () => {
    const addr = await lab.moveHost('a', 'rb');
    assert.match(addr, /^10\.0\.2\.\d+$/);
    assert.equal(lab.publicAddr('a'), lab.addr('rb'));
    const s = await seen(lab, 'a');
    for (const x of s) assert.equal(x && ipOf(x), lab.addr('rb'));
    const portsA = await lab.exec('ra', ['ip', '-o', 'link', 'show'], { check: true });
    assert.doesNotMatch(portsA.stdout, new RegExp(`${lab.prefix}-l-a\\b`), 'the old LAN port is gone');
  });
});
