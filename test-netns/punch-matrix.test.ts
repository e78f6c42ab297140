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

/**
 * Unordered pairs (visitor a, server b), plus the reverse of each hard-vs-easy
 * pair so that both the visitor-hard and the server-hard orientations of the
 * birthday punch are covered.
 */
function pairs(): [RouterType, RouterType][] {
  const out: [RouterType, RouterType][] = [];
  for (let i = 0; i < ROUTER_TYPES.length; i++) {
    for (let j = i; j < ROUTER_TYPES.length; j++) {
      const a = ROUTER_TYPES[i]!;
      const b = ROUTER_TYPES[j]!;
      out.push([a, b]);
      if (isHard(a) !== isHard(b)) out.push([b, a]);
    }
  }
  const only = process.env.NETNS_PAIRS?.split(',').map((s) => s.trim()).filter(Boolean);
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
        await tl.waitPath('direct', 25_000).catch((e: Error) => assert.fail(`no direct path: ${e.message}\n${tl.dump()}`));
      } else {
        // Both sides know at once that no hole can be punched.
        await waitSkipped(tl);
        await sleep(1000);
      }
      const r = await tl.transfer(MB, { timeoutMs: 30_000 });
      assert.ok(r.ok, `transfer failed: ${JSON.stringify(r)}\n${tl.dump()}`);
      assert.equal(r.got, r.sent);
      assert.equal(tl.lastPath(), want, `path sequence ${tl.pathSequence().join(' -> ')}\n${tl.dump()}`);
      if (want === 'relay') assert.ok(!tl.pathSequence().includes('direct'), 'symmetric x symmetric must never go direct');
      const plan = tl.events('punch_start').map((e) => e.plan).at(0) as string | undefined;
      cells.set(`${a}|${b}`, { path: tl.lastPath() ?? '-', ms: tl.timeToDirect(), plan });
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
  const w = 22;
  const lines = ['punch matrix (rows: visitor NAT, columns: server NAT; path, time from session start to direct, visitor plan)'];
  lines.push('visitor \\ server'.padEnd(18) + ROUTER_TYPES.map((x) => x.padEnd(w)).join(''));
  for (const a of ROUTER_TYPES) {
    let row = a.padEnd(18);
    for (const b of ROUTER_TYPES) {
      const c = cells.get(`${a}|${b}`);
      const text = !c ? '.' : c.path === 'direct' ? `direct ${c.ms ?? '?'}ms ${c.plan ?? ''}` : `${c.path}`;
      row += text.padEnd(w);
    }
    lines.push(row.trimEnd());
  }
  return lines.join('\n');
}
