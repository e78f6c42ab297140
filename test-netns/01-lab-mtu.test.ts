// Self-check of the lab's small-MTU links (Lab.setMtu): before PMTU tests
// mean anything, a black hole must drop big datagrams silently both ways while
// small ones pass, the ICMP flavour must really send "fragmentation needed",
// and TCP (the relay's transport) must survive both thanks to MSS clamping.
// Uses the independent UDP probe (scripts/lab-probe.ts), not the project's code.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { probe, REFLECT_PORTS, startLab, startReflector, waitForEvent, type Lab } from './lab.js';

const BIG = 1400;
const SMALL = 1200;

/** Datagrams of `size` bytes from `host` that reach the reflector on rdv, out of n. */
async function burst(lab: Lab, host: string, size: number, n = 20): Promise<number> {
  const r = await probe<{ sent: number; received: number | null }>(lab, host, [
    'burst',
    '--to',
    `${lab.addr('rdv')}:${REFLECT_PORTS[0]}`,
    '--n',
    String(n),
    '--size',
    String(size),
    '--tag',
    `m${size}x${Date.now()}`,
  ]);
  assert.notEqual(r.received, null, `${host}: the reflector never answered the count query`);
  return r.received!;
}

/** Whether an answer of `size` bytes from rdv reaches `host` (the request is small). */
async function answerArrives(lab: Lab, host: string, size: number): Promise<boolean> {
  const rep = await probe(lab, host, [
    'probe',
    '--to',
    `${lab.addr('rdv')}:${REFLECT_PORTS[0]}`,
    '--reply',
    String(size),
    '--tries',
    '4',
    '--timeout',
    '400',
  ]);
  return rep.results[0].seen !== null;
}

/** The MTU the kernel in `node` has cached for `dst` (learned from ICMP), or null. */
async function cachedMtu(lab: Lab, node: string, dst: string): Promise<number | null> {
  const r = await lab.exec(node, ['ip', 'route', 'get', dst], { check: true });
  const m = r.stdout.match(/\bmtu (\d+)/);
  return m ? Number(m[1]) : null;
}

async function flushRouteCaches(lab: Lab): Promise<void> {
  for (const n of ['a', 'b', 'rdv', 'ra']) await lab.exec(n, ['ip', 'route', 'flush', 'cache']);
}

/**
 * TCP through the link, both ways: `host` uploads `bytes` to rdv, rdv then
 * sends `bytes` back. Returns [received by rdv, received by host].
 */
async function tcpBothWays(lab: Lab, host: string, bytes: number, port: number): Promise<[number, number]> {
  const server = `
const net = require('node:net');
const srv = net.createServer((s) => {
  let n = 0;
  s.on('data', (d) => { n += d.length; });
  s.on('end', () => { s.end(Buffer.alloc(${bytes}, 7)); console.log(JSON.stringify({ event: 'got', n })); });
});
srv.listen(${port}, '${lab.addr('rdv')}', () => console.error(JSON.stringify({ event: 'ready' })));`;
  const srv = lab.spawn('rdv', [process.execPath, '-e', server]);
  await waitForEvent(srv, 'ready', 10_000);
  const client = `
const net = require('node:net');
const s = net.connect(${port}, '${lab.addr('rdv')}');
let n = 0;
const t = setTimeout(() => { console.log(JSON.stringify({ n, timeout: true })); process.exit(0); }, 20000);
s.on('data', (d) => { n += d.length; });
s.on('end', () => { clearTimeout(t); console.log(JSON.stringify({ n })); });
s.on('error', (e) => { clearTimeout(t); console.log(JSON.stringify({ n, error: e.code })); });
s.end(Buffer.alloc(${bytes}, 9));`;
  const r = await lab.exec(host, [process.execPath, '-e', client], { timeoutMs: 30_000 });
  const got = JSON.parse(r.stdout) as { n: number; timeout?: boolean; error?: string };
  const upEv = await waitForEvent(srv, 'got', 5000).catch(() => ({ n: -1 }));
  return [(upEv as { n: number }).n, got.n];
}

test('netns lab: links with a small MTU (black hole and ICMP), TCP MSS clamping', async (t) => {
  const lab = await startLab(t, { a: 'cone', b: 'public' });
  if (!lab) return;
  await startReflector(lab);

  await t.test('baseline: 1400-byte datagrams pass both ways; routers clamp TCP MSS', async () => {
    assert.equal(await burst(lab, 'a', BIG), 20);
    assert.ok(await answerArrives(lab, 'a', BIG));
    const rules = await lab.exec('ra', ['nft', 'list', 'table', 'inet', 'labmss'], { check: true });
    assert.match(rules.stdout, /maxseg size set rt mtu/);
    assert.deepEqual(lab.mtuOf('ra'), { mtu: 1500, mode: 'blackhole' });
  });

  await t.test('black hole on the WAN (1280): big datagrams vanish silently both ways, small ones pass', async () => {
    await lab.setMtu('ra', 1280);
    assert.deepEqual(lab.mtuOf('ra'), { mtu: 1280, mode: 'blackhole' });
    assert.equal(await burst(lab, 'a', BIG), 0, 'outbound 1400-byte datagrams must be dropped');
    assert.ok((await burst(lab, 'a', SMALL)) >= 19, 'outbound 1200-byte datagrams must pass');
    assert.equal(await answerArrives(lab, 'a', BIG), false, 'inbound 1400-byte answers must be dropped');
    assert.ok(await answerArrives(lab, 'a', SMALL), 'inbound 1200-byte answers must pass');
    // Silent: no ICMP reached either side, so no kernel learned a smaller MTU.
    assert.equal(await cachedMtu(lab, 'a', lab.addr('rdv')), null);
    assert.equal(await cachedMtu(lab, 'rdv', lab.addr('ra')), null);
    const rules = await lab.exec('ra', ['nft', 'list', 'table', 'inet', 'labmss'], { check: true });
    assert.match(rules.stdout, /maxseg size > 1240 .*maxseg size set 1240/);
  });

  await t.test('black hole: TCP still works both ways (MSS clamped to the link)', async () => {
    const [up, down] = await tcpBothWays(lab, 'a', 2_000_000, 45_001);
    assert.equal(up, 2_000_000, 'upload across the black hole');
    assert.equal(down, 2_000_000, 'download across the black hole');
  });

  await t.test('the MTU changes mid-test: back to 1500, big datagrams pass again', async () => {
    await lab.setMtu('ra', 0);
    assert.equal(await burst(lab, 'a', BIG), 20);
    assert.ok(await answerArrives(lab, 'a', BIG));
    assert.deepEqual(lab.mtuOf('ra'), { mtu: 1500, mode: 'blackhole' });
  });

  await t.test('ICMP on the WAN (1280): the sender gets EMSGSIZE and its kernel learns the MTU', async () => {
    await flushRouteCaches(lab);
    await lab.setMtu('ra', 1280, 'icmp');
    const r = await probe<{ sends: string[]; errors: string[] }>(lab, 'a', [
      'connected',
      '--to',
      `${lab.addr('rdv')}:${REFLECT_PORTS[0]}`,
      '--size',
      String(BIG),
      '--n',
      '4',
    ]);
    assert.ok(r.errors.includes('EMSGSIZE'), `a connected socket must see EMSGSIZE: ${JSON.stringify(r)}`);
    assert.equal(await cachedMtu(lab, 'a', lab.addr('rdv')), 1280);
    // With the MTU known, the kernel fragments bigger datagrams (Node cannot set DF): they arrive.
    assert.ok((await burst(lab, 'a', BIG)) >= 19);
    const [up, down] = await tcpBothWays(lab, 'a', 1_000_000, 45_002);
    assert.deepEqual([up, down], [1_000_000, 1_000_000]);
    await lab.setMtu('ra', 0);
  });

  await t.test("ICMP on a host's LAN link (1280): the router answers the far sender with frag-needed", async () => {
    await flushRouteCaches(lab);
    await lab.setMtu('a', 1280, 'icmp');
    // rdv's first big answer is refused by ra with ICMP; rdv learns 1280 for
    // the site's address and its retried answers arrive fragmented.
    assert.ok(await answerArrives(lab, 'a', BIG), 'retried answers must arrive');
    assert.equal(await cachedMtu(lab, 'rdv', lab.addr('ra')), 1280);
    await lab.setMtu('a', 0);
    await flushRouteCaches(lab);
    assert.equal(await burst(lab, 'a', BIG), 20);
  });

  await t.test('black hole on a public host\'s own link ("rb" names it)', async () => {
    await lab.setMtu('rb', 1280);
    assert.equal(await burst(lab, 'b', BIG), 0);
    assert.ok((await burst(lab, 'b', SMALL)) >= 19);
    assert.equal(await answerArrives(lab, 'b', BIG), false);
    await lab.setMtu('rb', 0);
    assert.equal(await burst(lab, 'b', BIG), 20);
  });

  await t.test('bad MTUs are refused', async () => {
    await assert.rejects(lab.setMtu('ra', 100), /mtu must be/);
    await assert.rejects(lab.setMtu('ra', 1280, 'nope' as 'icmp'), /mode/);
    await assert.rejects(lab.setMtu('rdv', 1280), /not a router or public host/);
  });
});
