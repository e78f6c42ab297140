// The punch matrix: a tunnel between every pair of lab NAT types, across real
// kernel NATs. Each cell asserts the path the session ends on (direct, except
// symmetric against symmetric, which must stay on the relay) and that 1 MB
// comes back through the tunnel byte for byte. The table is printed with
// t.diagnostic: visitor type x server type -> path and time to direct.
//
// NETNS_PAIRS=cone-symmetric,public-cone limits the run to some cells (debugging).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ROUTER_TYPES, waitForEvent, type RouterType } from './lab.js';
import { sleep, startTunnelLab, uniquePrefix, type TunnelLab } from './helpers.js';

const isHard = (t: RouterType) => t === 'symmetric';
const expectedPath = (a: RouterType, b: RouterType) => (isHard(a) && isHard(b) ? 'relay' : 'direct');
/** The punch plan each side must choose from the two NAT classifications. */
function expectedPlan(mine: RouterType, peer: RouterType): string {
  if (isHard(mine) && isHard(peer)) return 'none';
  if (isHard(mine)) return 'open-sockets';
  if (isHard(peer)) return 'spray-ports';
  return 'plain';
}
const planOf = (tl: TunnelLab, who: 'visit' | 'serve') =>
  (tl.events('punch_start', who).at(0)?.plan as string | undefined) ??
  (tl.events('punch_skipped', who).length ? 'none' : undefined);

/**
 * Unordered pairs (visitor a, server b), plus the reverse of each hard-vs-easy
 * pair so that both the visitor-hard and the server-hard orientations of the
 * birthday punch are covered.
 */
function pairs(): [RouterType, RouterType][] {
  const out: [RouterType, RouterType][] = [];
  for (let i = 0; i < ROUTER_TYPES.length; i++) {
    for (let j = i; j < ROUTER_TYPES.length; j++) {
      const a = ROUTER_TYPES[i];
      const b = ROUTER_TYPES[j];
      out.push([a, b]);
      if (isHard(a) !== isHard(b)) out.push([b, a]);
    }
  }
  const only = process.env.NETNS_PAIRS?.split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  return only ? out.filter(([a, b]) => only.includes(`${a}-${b}`)) : out;
}

interface Cell {
  path: string;
  ms: number | null;
  plan?: string;
}

const MB = 1024 * 1024;

test('punch matrix: every pair of {public, fullcone, cone, symmetric}', async (t) => {
  const cells = new Map<string, Cell>();
  for (const [a, b] of pairs()) {
    await t.test(`visitor ${a} x server ${b} -> ${expectedPath(a, b)}`, async (st) => {
      const tl = await startTunnelLab(st, { a, b }, { prefix: uniquePrefix(`m${a[0]}${b[0]}`) });
      if (!tl) return;
      const want = expectedPath(a, b);
      if (want === 'direct') {
        await tl
          .waitPath('direct', 25_000)
          .catch((e: Error) => assert.fail(`no direct path: ${e.message}\n${tl.dump()}`));
      } else {
        // Both sides know at once that no hole can be punched.
        await waitSkipped(tl);
        await sleep(1000);
      }
      const r = await tl.transfer(MB, { timeoutMs: 30_000 });
      assert.ok(r.ok, `transfer failed: ${JSON.stringify(r)}\n${tl.dump()}`);
      assert.equal(r.got, r.sent);
      assert.equal(tl.lastPath(), want, `path sequence ${tl.pathSequence().join(' -> ')}\n${tl.dump()}`);
      if (want === 'relay')
        assert.ok(!tl.pathSequence().includes('direct'), 'symmetric x symmetric must never go direct');
      // The plan shows the NAT classification and strategy both sides chose (birthday where one side is hard).
      assert.equal(planOf(tl, 'visit'), expectedPlan(a, b), 'visitor plan');
      assert.equal(planOf(tl, 'serve'), expectedPlan(b, a), 'server plan');
      cells.set(`${a}|${b}`, { path: tl.lastPath() ?? '-', ms: tl.timeToDirect(), plan: planOf(tl, 'visit') });
    });
  }
  for (const line of renderMatrix(cells).split('\n')) t.diagnostic(line);
});

async function waitSkipped(tl: TunnelLab): Promise<void> {
  await Promise.all([
    tl.waitPath('relay', 10_000),
    // both sides log punch_skipped (the server's and the visitor's plans are both `none`)
    waitForEvent(tl.visit, 'punch_skipped', 10_000),
    waitForEvent(tl.serve, 'punch_skipped', 10_000),
  ]);
}

function renderMatrix(cells: Map<string, Cell>): string {
  const w = 27;
  const lines = [
    'punch matrix (rows: visitor NAT, columns: server NAT; path, time from session start to direct, visitor plan)',
  ];
  lines.push('visitor \\ server'.padEnd(18) + ROUTER_TYPES.map((x) => x.padEnd(w)).join(''));
  for (const a of ROUTER_TYPES) {
    let row = a.padEnd(18);
    for (const b of ROUTER_TYPES) {
      const c = cells.get(`${a}|${b}`);
      const text = !c
        ? '.'
        : c.path === 'direct'
          ? `direct ${c.ms ?? '?'}ms ${c.plan ?? ''}`
          : `${c.path} (${c.plan ?? '?'})`;
      row += text.padEnd(w - 1) + ' ';
    }
    lines.push(row.trimEnd());
  }
  return lines.join('\n');
}

test('symmetric visitor vs cone server: direct through the birthday approach', async (t) => {
  const tl = await startTunnelLab(t, { a: 'symmetric', b: 'cone' }, { prefix: uniquePrefix('bday') });
  if (!tl) return;
  const direct = await tl.waitPath('direct', 25_000);
  // Birthday: the hard side (visitor) opens many sockets, the easy side sprays ports.
  assert.equal(planOf(tl, 'visit'), 'open-sockets');
  assert.equal(planOf(tl, 'serve'), 'spray-ports');
  // The server reaches the visitor through a mapping STUN never saw: one of the
  // extra sockets' (a symmetric NAT maps each destination to a new port).
  const srflx = (tl.events('punch_start', 'serve')[0].candidates as string[]).filter((c) =>
    c.startsWith(`${tl.lab.addr('ra')}:`),
  );
  // The two sides log `direct` independently: the server's can come a moment after the visitor's.
  await tl.waitPath('direct', 10_000, 'serve');
  const serverPath = tl
    .pathEvents('serve')
    .filter((e) => e.path === 'direct')
    .at(-1)!;
  assert.ok(
    !srflx.includes(String(serverPath.remote)),
    `server path ${String(serverPath.remote)} is a STUN candidate ${srflx.join(',')}`,
  );
  assert.equal(String(serverPath.remote).split(':')[0], tl.lab.addr('ra'));
  const r = await tl.transfer(4 * MB, { timeoutMs: 30_000 });
  assert.ok(r.ok, `transfer failed: ${JSON.stringify(r)}\n${tl.dump()}`);
  assert.equal(r.got, r.sent);
  assert.equal(tl.lastPath(), 'direct');
  assert.equal(tl.lastPath('serve'), 'direct');
  t.diagnostic(
    `direct after ${tl.timeToDirect()} ms via ${String(direct.remote)} (visitor) / ` +
      `${String(serverPath.remote)} (server); 4 MB in ${r.ms} ms`,
  );
});

test('symmetric vs symmetric: stays on the relay, data correct', async (t) => {
  const tl = await startTunnelLab(t, { a: 'symmetric', b: 'symmetric' }, { prefix: uniquePrefix('symsym') });
  if (!tl) return;
  await waitSkipped(tl);
  const r = await tl.transfer(4 * MB, { timeoutMs: 30_000 });
  assert.ok(r.ok, `transfer failed: ${JSON.stringify(r)}\n${tl.dump()}`);
  assert.equal(r.got, r.sent);
  await sleep(2000);
  for (const who of ['visit', 'serve'] as const) {
    assert.deepEqual(tl.pathSequence(who), ['relay'], `${who} paths`);
    assert.equal(tl.events('punch_start', who).length, 0, `${who} punched although both NATs are symmetric`);
  }
  assert.ok(tl.events('relay_paired', 'rdv').length >= 1, 'the rendezvous relay never paired the session');
  t.diagnostic(`4 MB over the relay in ${r.ms} ms`);
});
