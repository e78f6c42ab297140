// The rendezvous dashboard follows one session from the relay to a direct
// path, live, in a real browser (issue 23). Two cone NATs; UDP between the two
// sites is dropped at A's router, so the visitor's session opens on the relay
// and its punch rounds fail; the test lifts the block and the next round goes
// direct. Chromium runs inside the rendezvous's namespace and reads the
// dashboard on that namespace's loopback (no token needed there).
// Screenshots of both states: test-results/dashboard-move-{relay,direct}.png.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Page } from 'playwright-core';
import { stopProcess, waitForEvent } from './lab.js';
import { PEER_BLOCK_TABLE, RDV, RDV_ALT, SECRET, peerBlockRuleset, startTunnelLab, uniquePrefix } from './helpers.js';
import { browserMissing, launchBrowser, recordExternal, screenshot } from '../test/helpers/browser.js';

/** The metrics listener, on the rendezvous namespace's loopback. */
const METRICS = '127.0.0.1:9100';
const BASE = `http://${METRICS}`;

/** Resolves once the chart's `series` line (relay or direct) has risen above its baseline. */
function seriesRises(page: Page, series: 'relay' | 'direct', timeoutMs: number) {
  return page.waitForFunction(
    (cls) => {
      const line = document.querySelector(`#chart polyline.${cls}`);
      const ys = (line?.getAttribute('points') ?? '')
        .trim()
        .split(/\s+/)
        .filter(Boolean)
        .map((q) => Number(q.split(',')[1]));
      return ys.length >= 2 && Math.min(...ys) < Math.max(...ys);
    },
    series,
    { timeout: timeoutMs, polling: 500 },
  );
}

test(
  'the dashboard shows one session move from relay to direct, live, with its endpoints, bytes and rate',
  { skip: browserMissing, timeout: 240_000 },
  async (t) => {
    const tl = await startTunnelLab(
      t,
      { a: 'cone', b: 'cone' },
      {
        prefix: uniquePrefix('dash'),
        noVisit: true,
        debug: false,
        rdvArgs: [
          ...['--listen', `${RDV.host}:${RDV.port}`, '--alt-udp', `${RDV_ALT.host}:${RDV_ALT.port}`],
          ...['--metrics', METRICS],
        ],
      },
    );
    if (!tl) return;
    await waitForEvent(tl.rdv, 'metrics', 10_000);
    const browser = await launchBrowser({ netns: tl.lab.ns('rdv') });
    t.after(() => browser.close());
    const page = await browser.context.newPage();
    const external = recordExternal(page, BASE);
    assert.equal((await page.goto(`${BASE}/?every=1000`))?.status(), 200);
    // Before any session: the served name already shows the NAT its peer measured on registering (nat_report).
    await page.waitForFunction(
      () => document.querySelector('#names tr[data-name="svc"] td.nat')?.textContent === 'cone',
      undefined,
      { timeout: 15_000, polling: 500 },
    );
    // Hold the hole shut: UDP between the sites dropped at A's router (STUN to the rendezvous still passes).
    await tl.lab.nft('ra', peerBlockRuleset(tl.lab.addr('rb')));
    await tl.startVisit();
    const relayEvent = await tl.waitPath('relay', 15_000);
    const sid = String(relayEvent.sid);
    // A paced stream for the whole test (~320 KB/s; the lab goes down with it still running).
    const { child: transfer } = tl.startTransfer(200 * 1024 * 1024, {
      chunk: 16 * 1024,
      delayMs: 50,
      timeoutMs: 200_000,
    });
    t.after(() => stopProcess(transfer, 500));

    const row = `#sessions tr[data-sid="${sid}"]`;

    // On the relay: the row says so, its bytes grow, and the chart's relay line rises.
    await page.waitForSelector(`${row}[data-path="relay"]`, { timeout: 20_000 });
    await page.waitForFunction(
      (sel) => /[KM]iB$/.test(document.querySelector(`${sel} td.bytes`)?.textContent ?? ''),
      row,
      { timeout: 30_000, polling: 500 },
    );
    await seriesRises(page, 'relay', 30_000);
    assert.equal(tl.pathSequence().includes('direct'), false, `went direct while blocked: ${tl.dump()}`);
    assert.equal(await page.getAttribute(row, 'data-path'), 'relay');
    await screenshot(page, 'dashboard-move-relay.png');

    // Lift the block: the next punch round opens the hole, and the same row turns direct.
    await tl.lab.exec('ra', ['nft', 'delete', 'table', 'inet', PEER_BLOCK_TABLE], { check: true });
    const direct = await tl.waitPath('direct', 60_000);
    assert.equal(String(direct.sid), sid, 'the visitor moved the same session');
    await page.waitForSelector(`${row}[data-path="direct"]`, { timeout: 20_000 });
    assert.equal(await page.locator('#sessions tr[data-sid]').count(), 1, 'one session, not a second one');
    assert.match(
      (await page.textContent(`${row} .path-cell`)) ?? '',
      /direct\s+relay → direct \(direct after [\d.]+ (s|ms)\)/,
    );
    // Its endpoints are now the two NATs' public addresses (each side's direct remote), not the relay.
    await page.waitForFunction(
      ([sel, ra, rb]) => {
        const cells = [...document.querySelectorAll(`${sel} td.addr`)].map((c) => c.textContent ?? '');
        return cells[0]?.startsWith(`${ra}:`) && cells[1]?.startsWith(`${rb}:`);
      },
      [row, tl.lab.addr('ra'), tl.lab.addr('rb')] as const,
      { timeout: 20_000, polling: 500 },
    );
    // Traffic keeps flowing on the new path: a current rate, and on the chart the direct line overtakes the relay's.
    await page.waitForFunction(
      () => {
        const last = (cls: string) => {
          const pts = (document.querySelector(`#chart polyline.${cls}`)?.getAttribute('points') ?? '').trim();
          return Number(pts.split(/\s+/).at(-1)?.split(',')[1] ?? NaN);
        };
        // SVG y grows downwards: a smaller y is more traffic.
        return last('direct') < last('relay');
      },
      undefined,
      { timeout: 40_000, polling: 500 },
    );
    assert.match((await page.textContent(`${row} td.rate`)) ?? '', /[KM]iB\/s$/);
    // Both names and the session carry the NAT type the peers measured (mapping only: `cone`).
    assert.equal(await page.textContent(`${row} td.nat`), 'cone / cone');
    assert.equal(await page.textContent('#names tr[data-name="svc"] td.nat'), 'cone');
    await screenshot(page, 'dashboard-move-direct.png');
    assert.deepEqual(external, []);
    const html = await page.content();
    assert.ok(!html.includes(SECRET), 'the page shows the secret');
  },
);
