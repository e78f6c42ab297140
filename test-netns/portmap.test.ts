// Port mapping (issue 20) across real kernel NATs: routers run Debian's
// miniupnpd (UPnP IGD, NAT-PMP, PCP) in front of a symmetric NAT, so a
// symmetric home NAT becomes reachable on its mapped port and the session goes
// direct where it used to stay on the relay. One lab for every case (CI time):
// the router's miniupnpd is restarted with other options between cases, and
// the peers are restarted to ask again.
//
//   a (visitor) -- ra symmetric [miniupnpd in the last cases] --+-- rdv
//   b (serve)   -- rb symmetric + miniupnpd (100.128.0.2) -------+

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ChildProcess } from 'node:child_process';
import {
  CLI,
  execJson,
  run,
  eventsOf as eventsFrom,
  miniupnpdRules,
  restartMiniupnpd,
  startMiniupnpd,
  stopProcess,
  waitExit,
  waitForEvent,
  type MiniupnpdProtocol,
} from './lab.js';
import { RDV, SECRET, SERVICE, startTunnelLab, uniquePrefix, type TunnelLab } from './helpers.js';

const MB = 1024 * 1024;
const DIRECT_WITHIN_MS = 30_000;

/** The serve's first portmap outcome after `after`: mapped, or none (with the reasons). */
function portmapOutcome(child: ChildProcess, after = 0, timeoutMs = 10_000) {
  return waitForEvent(child, (o) => o.event === 'portmap_mapped' || o.event === 'portmap_none', timeoutMs, { after });
}

/**
 * Stops serve and visit (SIGTERM: they delete their mappings and leave the
 * rendezvous), runs `between` (a router change: done while no peer is
 * connected, since a new WAN address breaks their TCP connections), and starts
 * them again so both gather, map and punch afresh; resolves when the visit is ready.
 */
async function restartPeers(tl: TunnelLab, between: () => Promise<unknown>, opts: { waitMapping?: boolean } = {}) {
  await stopProcess(tl.visit, 5000);
  await stopProcess(tl.serve, 5000);
  await between();
  tl.serve = tl.lab.spawnCli('b', 'peer', [
    'serve',
    '--name',
    SERVICE,
    '--local',
    `127.0.0.1:${tl.echoPort}`,
    '--server',
    `${RDV.host}:${RDV.port}`,
    '--secret',
    SECRET,
    '--no-admin',
    '--log-format',
    'json',
    '--log-level',
    'debug',
  ]);
  await waitForEvent(tl.serve, 'ready', 20_000);
  if (opts.waitMapping !== false) await portmapOutcome(tl.serve);
  await tl.startVisit();
}

/** The port the serve's mapping forwards to (its data socket), from its portmap_mapped event. */
function mappedPort(child: ChildProcess): number {
  const ev = eventsFrom(child, 'portmap_mapped').at(-1);
  return Number(ev?.internalPort);
}

test('port mapping: symmetric NATs with miniupnpd go direct', async (t) => {
  if ((await run('miniupnpd', ['--version'], { timeoutMs: 5000 })).code !== 0)
    return t.skip('miniupnpd is not installed (apt-get install miniupnpd-nftables)');
  const tl = await startTunnelLab(
    t,
    { a: 'symmetric', b: { type: 'symmetric', miniupnpd: true } },
    { prefix: uniquePrefix('pmap'), noVisit: true },
  );
  if (!tl) return;
  const { lab } = tl;
  // serve's mapping exists before the visitor comes (it is asked for at start, in the background).
  await portmapOutcome(tl.serve);
  await tl.startVisit();

  await t.test('symmetric + miniupnpd x plain symmetric: direct, 50 MB exact', async () => {
    const mapped = eventsFrom(tl.serve, 'portmap_mapped');
    assert.equal(mapped.length, 1, tl.dump());
    assert.equal(mapped[0].externalIp, '100.128.0.2');
    await tl.waitPath('direct', DIRECT_WITHIN_MS).catch((e: Error) => assert.fail(`${e.message}\n${tl.dump()}`));
    // Both sides planned a plain punch: the mapped side is a full cone on its mapped port.
    assert.equal(tl.events('punch_start', 'visit').at(0)?.plan, 'plain', tl.dump());
    assert.equal(tl.events('punch_start', 'serve').at(0)?.plan, 'plain', tl.dump());
    // `peer nat` shows what the gateway offers and the mapping it grants (then deletes it).
    const nat = await execJson<{
      portmap: { offers: string[]; mapping: { protocol: string; externalIp: string } | null };
    }>(lab, 'b', [process.execPath, CLI.peer, 'nat', '--server', `${RDV.host}:${RDV.port}`, '--json']);
    assert.deepEqual(nat.portmap.offers, ['pcp', 'nat-pmp', 'upnp']);
    assert.equal(nat.portmap.mapping?.protocol, 'pcp');
    assert.equal(nat.portmap.mapping?.externalIp, '100.128.0.2');
    const r = await tl.transfer(50 * MB, { timeoutMs: 120_000 });
    assert.ok(r.ok, `50 MB transfer: ${JSON.stringify(r)}\n${tl.dump()}`);
    assert.equal(r.gotBytes, 50 * MB);
    assert.equal(tl.lastPath(), 'direct');
  });

  await t.test('miniupnpd restarted mid-session: mapping re-made, no stall, no byte lost', async () => {
    const port = mappedPort(tl.serve);
    assert.ok((await miniupnpdRules(lab, 'rb')).includes(`:${port}`), 'the mapping is on the router');
    const mark = tl.mark('serve');
    const { child, result } = tl.startTransfer(20 * MB, { timeoutMs: 120_000, delayMs: 1, chunk: 16384 });
    await waitForEvent(child, (o) => o.event === 'progress' || o.event === 'result', 20_000).catch(() => {});
    await restartMiniupnpd(lab, 'rb');
    assert.ok(!(await miniupnpdRules(lab, 'rb')).includes(`:${port}`), 'the restart lost the mapping');
    // Re-made at once: the restarted daemon announces itself (PCP ANNOUNCE / NAT-PMP) and the peer asks again.
    const again = await waitForEvent(
      tl.serve,
      (o) => o.event === 'portmap_mapped' && String(o.why).includes('re-created'),
      30_000,
      { after: mark },
    ).catch((e: Error) => assert.fail(`${e.message}\n${tl.dump()}`));
    assert.equal(Number(again.internalPort), port);
    assert.ok((await miniupnpdRules(lab, 'rb')).includes(`:${port}`), 'the mapping is back on the router');
    const r = await result;
    assert.ok(r.ok, `transfer across the restart: ${JSON.stringify(r)}\n${tl.dump()}`);
    assert.equal(r.gotBytes, 20 * MB);
    await waitExit(child, 5000);
  });

  for (const proto of ['pcp', 'nat-pmp', 'upnp'] as MiniupnpdProtocol[]) {
    await t.test(`only ${proto}: direct`, async () => {
      await restartPeers(tl, () => restartMiniupnpd(lab, 'rb', { protocols: [proto] }));
      const m = eventsFrom(tl.serve, 'portmap_mapped');
      assert.equal(m.at(-1)?.protocol, proto, tl.dump());
      await tl.waitPath('direct', DIRECT_WITHIN_MS).catch((e: Error) => assert.fail(`${e.message}\n${tl.dump()}`));
      const r = await tl.transfer(1 * MB);
      assert.ok(r.ok, JSON.stringify(r));
    });
  }

  await t.test('the router refuses: clean fallback to the relay, the reason in the log', async () => {
    // miniupnpd on a WAN address it deems reserved (a router behind another NAT) refuses every mapping.
    await restartPeers(tl, () => restartMiniupnpd(lab, 'rb', { reservedWan: true }));
    const none = eventsFrom(tl.serve, 'portmap_none').at(-1);
    assert.ok(none, tl.dump());
    const reasons = (none.reasons as string[]).join('; ');
    assert.match(reasons, /pcp: NO_RESOURCES/, reasons);
    assert.match(reasons, /upnp: no external address/, reasons);
    assert.ok(eventsFrom(tl.serve, 'portmap_failed').length >= 1);
    await tl.waitPath('relay', 20_000);
    const r = await tl.transfer(1 * MB);
    assert.ok(r.ok, JSON.stringify(r));
    assert.deepEqual(tl.pathSequence(), ['relay'], 'symmetric x symmetric without a mapping stays on the relay');
  });

  await t.test('both routers with miniupnpd: direct (the visitor maps too)', async () => {
    await restartPeers(tl, async () => {
      await restartMiniupnpd(lab, 'rb', {});
      await startMiniupnpd(lab, 'ra', {});
    });
    await portmapOutcome(tl.visit, 0, 10_000);
    assert.equal(eventsFrom(tl.visit, 'portmap_mapped').at(-1)?.externalIp, '100.128.0.1', tl.dump());
    await tl.waitPath('direct', DIRECT_WITHIN_MS).catch((e: Error) => assert.fail(`${e.message}\n${tl.dump()}`));
    const r = await tl.transfer(1 * MB);
    assert.ok(r.ok, JSON.stringify(r));
  });

  await t.test('the peer exits (SIGTERM): its mapping is gone from the router', async () => {
    const sp = mappedPort(tl.serve);
    const vp = mappedPort(tl.visit);
    assert.ok((await miniupnpdRules(lab, 'rb')).includes(`:${sp}`));
    assert.ok((await miniupnpdRules(lab, 'ra')).includes(`:${vp}`));
    await stopProcess(tl.visit, 10_000);
    await stopProcess(tl.serve, 10_000);
    assert.equal(eventsFrom(tl.serve, 'portmap_deleted').at(-1)?.ok, true, tl.dump());
    assert.ok(!(await miniupnpdRules(lab, 'rb')).includes(`:${sp}`), await miniupnpdRules(lab, 'rb'));
    assert.ok(!(await miniupnpdRules(lab, 'ra')).includes(`:${vp}`), await miniupnpdRules(lab, 'ra'));
  });
});
