// IPv6 (issue 19), with real binaries in the netns lab: routed 2001:db8::/32
// behind routers whose stateful firewall lets in only established flows, no
// NAT66 (docs/NETNS-LAB.md "IPv6"). The rendezvous's name, rdv.lab, resolves
// to both of its families through a per-namespace hosts file (lab.setHosts:
// `ip netns exec`, which starts every lab process, bind-mounts
// /etc/netns/<ns>/hosts over /etc/hosts in a private mount namespace, so the
// machine's own /etc/hosts is never touched and no DNS server is needed).

import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { ADDR, ADDR6, CLI, execJson, startLab, type Lab, type Topology } from './lab.js';
import { RDV, sleep, TunnelLab, uniquePrefix, type LogEvent, type TunnelOptions } from './helpers.js';

const MB = 1024 * 1024;
const NAME = 'rdv.lab';
/** The rendezvous on both families: one dual-stack listener, TCP and UDP (STUN on 7000 and 7001). */
const DUAL_RDV = ['--listen', `[::]:${RDV.port}`];

/**
 * A lab with the tunnel running, the peers using `--server rdv.lab:7000`;
 * `before` changes the lab first (firewall rules). Torn down by startLab's t.after.
 */
async function tunnelLab(
  t: TestContext,
  topo: Topology,
  tag: string,
  opts: { before?: (lab: Lab) => Promise<void>; tunnel?: TunnelOptions } = {},
): Promise<TunnelLab | null> {
  const lab = await startLab(t, topo, uniquePrefix(tag));
  if (!lab) return null;
  await opts.before?.(lab);
  // rdv.lab -> the rendezvous's first address of each family it has (IPv6 first, as a resolver sorts).
  const addresses = [...lab.addrs6('rdv').slice(0, 1), ...lab.addrs('rdv').slice(0, 1)];
  for (const n of ['a', 'b']) await lab.setHosts(n, [{ name: NAME, addresses }]);
  const tl = new TunnelLab(lab);
  try {
    await tl.start({ rdvArgs: DUAL_RDV, server: `${NAME}:${RDV.port}`, ...opts.tunnel });
  } catch (e) {
    throw new Error(`${(e as Error).message}\n${tl.dump()}`);
  }
  return tl;
}

const remoteOf = (e: LogEvent | undefined) => (typeof e?.remote === 'string' ? e.remote : '');
const isV6Remote = (e: LogEvent | undefined) => remoteOf(e).startsWith('[2001:db8:');
const isV4Remote = (e: LogEvent | undefined) => /^\d+\.\d+\.\d+\.\d+:\d+$/.test(remoteOf(e));

async function direct(tl: TunnelLab): Promise<LogEvent> {
  return tl.waitPath('direct', 30_000).catch((e: Error) => assert.fail(`no direct path: ${e.message}\n${tl.dump()}`));
}

/** Echoes `bytes` through the tunnel and checks they came back exact; returns how long it took (ms). */
async function exact(tl: TunnelLab, bytes: number, timeoutMs = 30_000): Promise<number> {
  const r = await tl.transfer(bytes, { timeoutMs });
  assert.ok(r.ok, `transfer failed: ${JSON.stringify(r)}\n${tl.dump()}`);
  assert.equal(r.gotBytes, bytes);
  assert.equal(r.got, r.sent, 'the digest of what came back equals what went');
  return r.ms;
}

interface NatJson {
  mapping: string;
  server: { family: string };
  ipv6: { nat: string; firewall: string; summary: string; publicAddress: { address: string } } | null;
}

test('IPv4 symmetric on both sides plus IPv6: 50 MB exact, direct over IPv6', async (t) => {
  const tl = await tunnelLab(t, { a: 'symmetric', b: 'symmetric', ipv6: {} }, 'v6sym');
  if (!tl) return;
  const d = await direct(tl);
  assert.ok(isV6Remote(d), `the path event names the IPv6 remote: ${JSON.stringify(d)}`);
  assert.ok(remoteOf(d).startsWith(`[${ADDR6.lan('b')}`), `b's global address, untranslated: ${remoteOf(d)}`);
  const ms = await exact(tl, 50 * MB, 120_000);
  t.diagnostic(`50 MB echoed over the IPv6 direct path in ${ms} ms`);
  assert.equal(tl.lastPath(), 'direct', tl.pathSequence().join(' -> '));
  assert.ok(isV6Remote(tl.pathEvents().at(-1)));
  // The IPv4 plan is 'none' (both symmetric): the round that found the path ran over IPv6 alone.
  assert.ok(
    tl.events('punch_start').some((e) => e.plan === 'plain'),
    'an IPv6 plain round ran',
  );
  // `peer nat` reports each family: IPv4 symmetric, IPv6 no NAT behind a stateful firewall.
  const nat = await execJson<NatJson>(tl.lab, 'a', [
    process.execPath,
    CLI.peer,
    'nat',
    '--server',
    `${NAME}:${RDV.port}`,
    '--json',
    '--no-portmap',
  ]);
  assert.equal(nat.server.family, 'IPv4');
  assert.equal(nat.mapping, 'address-and-port-dependent');
  assert.equal(nat.ipv6?.nat, 'none', JSON.stringify(nat.ipv6));
  assert.equal(nat.ipv6?.firewall, 'stateful');
  assert.equal(nat.ipv6?.summary, 'no NAT, firewall: stateful');
  assert.equal(nat.ipv6?.publicAddress.address, tl.lab.addr6('a'));
});

test('IPv6-only hosts, rendezvous name with both families: direct over IPv6', async (t) => {
  const tl = await tunnelLab(t, { a: 'cone', b: 'cone', ipv6: { a: 'v6', b: 'v6' } }, 'v6only');
  if (!tl) return;
  const d = await direct(tl);
  assert.ok(isV6Remote(d), JSON.stringify(d));
  await exact(tl, MB);
  assert.equal(tl.lastPath(), 'direct');
});

test('IPv4-only visitor, dual-stack server: direct over IPv4', async (t) => {
  const tl = await tunnelLab(t, { a: 'cone', b: 'cone', ipv6: { a: 'v4' } }, 'v4vis');
  if (!tl) return;
  const d = await direct(tl);
  assert.ok(remoteOf(d).startsWith(`${ADDR.edgeB}:`), `b's public IPv4: ${remoteOf(d)}`);
  await exact(tl, MB);
  assert.ok(tl.pathEvents().every((e) => !isV6Remote(e)));
});

test('IPv6 UDP dropped by one firewall: IPv4 direct, or the relay; no stall', async (t) => {
  const block = (lab: Lab) => lab.blockUdp6('rb', true);
  await t.test('cone x cone: direct over IPv4', async (st) => {
    const tl = await tunnelLab(st, { a: 'cone', b: 'cone', ipv6: {} }, 'v6blk', { before: block });
    if (!tl) return;
    const d = await direct(tl);
    assert.ok(isV4Remote(d), JSON.stringify(d));
    await exact(tl, MB);
  });
  await t.test('symmetric x symmetric: the relay carries it', async (st) => {
    const topo: Topology = { a: 'symmetric', b: 'symmetric', ipv6: {} };
    const tl = await tunnelLab(st, topo, 'v6blr', { before: block });
    if (!tl) return;
    await sleep(6000); // a whole IPv6 round (5 s) fails meanwhile
    await exact(tl, 4 * MB);
    assert.ok(!tl.pathSequence().includes('direct'), tl.pathSequence().join(' -> '));
    assert.equal(tl.lastPath(), 'relay');
  });
});

test('the rendezvous reached over IPv6 only: register, visit, relay, STUN', async (t) => {
  // The rendezvous has no IPv4 address at all and listens on its IPv6 address alone.
  const lab = await startLab(t, { a: 'cone', b: 'cone', ipv6: { rdv: 'v6' } }, uniquePrefix('v6rdv'));
  if (!lab) return;
  const at = `[${lab.addr6('rdv')}]:${RDV.port}`;
  const tl = new TunnelLab(lab);
  try {
    await tl.start({ rdvArgs: ['--listen', at], server: at, visitArgs: ['--mode', 'relay'] });
  } catch (e) {
    throw new Error(`${(e as Error).message}\n${tl.dump()}`);
  }
  const relay = await tl.waitPath('relay', 10_000);
  assert.equal(remoteOf(relay), at, 'the relay leg goes to the IPv6 address, in brackets');
  await exact(tl, 4 * MB);
  const nat = await execJson<NatJson & { isPublic: boolean }>(lab, 'a', [
    process.execPath,
    CLI.peer,
    'nat',
    '--server',
    at,
    '--json',
    '--no-portmap',
  ]);
  assert.equal(nat.server.family, 'IPv6', 'no IPv4 to test: the report is the IPv6 one');
  assert.equal(nat.ipv6?.summary, 'no NAT, firewall: stateful', JSON.stringify(nat));
});

test('Happy Eyeballs: IPv6 TCP to the rendezvous silently dropped, the visitor connects over IPv4', async (t) => {
  // Site A's firewall drops the visitor's TCP to the rendezvous's IPv6 address, without a reset:
  // a family that is "up" but leads nowhere. rdv.lab lists the IPv6 address first.
  const dropV6Tcp = (lab: Lab) =>
    lab.nft(
      'ra',
      `table inet labhe {
  chain v6tcp {
    type filter hook forward priority -10; policy accept;
    ip6 daddr ${lab.addr6('rdv')} tcp dport ${RDV.port} drop
  }
}`,
    );
  const tl = await tunnelLab(t, { a: 'cone', b: 'cone', ipv6: {} }, 'v6he', {
    before: dropV6Tcp,
    tunnel: { noVisit: true },
  });
  if (!tl) return;
  const started = Date.now();
  await tl.startVisit();
  const ms = Date.now() - started;
  // Without Happy Eyeballs the first (IPv6) attempt would wait for the 10 s connect timeout.
  assert.ok(ms < 8000, `the visitor took ${ms} ms to open its tunnel`);
  t.diagnostic(`visitor ready in ${ms} ms with IPv6 TCP to the rendezvous dropped`);
  await exact(tl, MB);
});
