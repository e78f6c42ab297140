// `peer nat --json` against the rendezvous (two addresses, RFC 5780) must name
// each lab NAT type correctly. The lab self-check proved independently what
// each router does, so a wrong answer here is the project's STUN/NAT code.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startLab, waitForEvent, type Lab, type RouterType } from './lab.js';
import { RDV, RDV_ALT, uniquePrefix } from './helpers.js';

interface NatJson {
  publicAddress: { address: string; port: number };
  localAddress: { address: string; port: number };
  mapping: string;
  filtering: string;
  natType: string;
  isPublic: boolean;
  notes: string[];
}

async function natReport(lab: Lab, host: 'a' | 'b'): Promise<NatJson> {
  const r = await lab.execCli(host, 'peer', ['nat', '--server', `${RDV.host}:${RDV.port}`, '--json'], {
    timeoutMs: 30_000,
  });
  assert.equal(r.code, 0, `peer nat on ${host} failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as NatJson;
}

function expectType(type: RouterType, rep: NatJson, lab: Lab, host: 'a' | 'b'): void {
  const msg = `${type}: ${JSON.stringify(rep)}`;
  assert.equal(rep.publicAddress.address, lab.publicAddr(host), msg);
  switch (type) {
    case 'public':
      assert.equal(rep.isPublic, true, msg);
      assert.equal(rep.mapping, 'endpoint-independent', msg);
      assert.equal(rep.natType, 'open', msg);
      break;
    case 'fullcone':
      assert.equal(rep.isPublic, false, msg);
      assert.equal(rep.mapping, 'endpoint-independent', msg);
      assert.equal(rep.filtering, 'endpoint-independent', msg);
      assert.equal(rep.natType, 'full-cone', msg);
      break;
    case 'cone':
      assert.equal(rep.isPublic, false, msg);
      assert.equal(rep.mapping, 'endpoint-independent', msg);
      assert.equal(rep.filtering, 'address-and-port-dependent', msg);
      assert.equal(rep.natType, 'port-restricted-cone', msg);
      break;
    case 'symmetric':
      assert.equal(rep.isPublic, false, msg);
      assert.match(rep.mapping, /^address(-and-port)?-dependent$/, msg);
      assert.equal(rep.natType, 'symmetric', msg);
      break;
  }
}

// Two labs cover the four types: each host reports its own site's NAT.
const LABS: [RouterType, RouterType][] = [
  ['cone', 'symmetric'],
  ['fullcone', 'public'],
];

for (const [ta, tb] of LABS) {
  test(`peer nat --json names the lab NATs: a=${ta}, b=${tb}`, async (t) => {
    const lab = await startLab(t, { a: ta, b: tb }, uniquePrefix(`n${ta[0]}${tb[0]}`));
    if (!lab) return;
    const rdv = lab.spawnCli('rdv', 'rendezvous', [
      '--listen',
      `${RDV.host}:${RDV.port}`,
      '--alt-udp',
      `${RDV_ALT.host}:${RDV_ALT.port}`,
      '--log-format',
      'json',
    ]);
    await waitForEvent(rdv, 'ready', 15_000);
    const [ra, rb] = await Promise.all([natReport(lab, 'a'), natReport(lab, 'b')]);
    t.diagnostic(
      `a (${ta}): mapping ${ra.mapping}, filtering ${ra.filtering}, ${ra.natType}, public ` +
        `${ra.isPublic}, seen as ${ra.publicAddress.address}:${ra.publicAddress.port}`,
    );
    t.diagnostic(
      `b (${tb}): mapping ${rb.mapping}, filtering ${rb.filtering}, ${rb.natType}, public ` +
        `${rb.isPublic}, seen as ${rb.publicAddress.address}:${rb.publicAddress.port}`,
    );
    expectType(ta, ra, lab, 'a');
    expectType(tb, rb, lab, 'b');
  });
}
