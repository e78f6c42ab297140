/**
 * The rendezvous dashboard in a real browser: Debian's chromium, driven by
 * playwright-core, against a real rendezvous, serve and visits on loopback
 * (.ci/run installs chromium). Screenshots go to test-results/ (gitignored).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Procs, SECRET, echoTransfer, waitForEvent } from './helpers/tunnel.js';
import { sleep } from '../src/util/backoff.js';

const CHROMIUM = '/usr/bin/chromium';
const RESULTS = path.resolve('test-results');
const skip = fs.existsSync(CHROMIUM)
  ? false
  : `chromium not installed at ${CHROMIUM}: apt-get install chromium (.ci/run installs it in CI)`;

/** A local IPv4 address that is not loopback, to test the token rule off loopback (none: that part is skipped). */
function nonLoopbackIPv4(): string | null {
  for (const list of Object.values(os.networkInterfaces()))
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  return null;
}

async function launch() {
  const { chromium } = await import('playwright-core');
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-chromium-'));
  // A fresh profile, and no network the machine does not have: nothing but our listener is reached.
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
  return {
    context,
    close: async () => {
      await context.close();
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Keeps a modest stream of traffic through a visit's port until stopped (at most `rounds` transfers). */
function keepBusy(port: number, rounds = 2000): { stop: () => Promise<void> } {
  let stopped = false;
  const done = (async () => {
    for (let i = 0; i < rounds && !stopped; i++) {
      await echoTransfer(port, 64 * 1024, 30_000).catch(() => {});
      await sleep(50);
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await done;
    },
  };
}

const RDV_TOKEN = 'rdv-token-must-not-show';
const METRICS_TOKEN = 'metrics-token-must-not-show';

test(
  'the dashboard lists names and sessions with their path, draws the traffic chart, and follows relay → direct',
  { skip, timeout: 180_000 },
  async (t) => {
    const p = new Procs();
    t.after(() => p.cleanup());
    const runtime = fs.mkdtempSync(path.join(os.tmpdir(), 'hp-dash-'));
    t.after(() => fs.rmSync(runtime, { recursive: true, force: true }));
    const env = { XDG_RUNTIME_DIR: runtime };
    const rdv = await p.rendezvous(['--metrics', '127.0.0.1:0', '--token', RDV_TOKEN]);
    const m = await waitForEvent(rdv.child, 'metrics', 10_000);
    const base = `http://${String(m.listen)}`;
    const echo = await p.echoServer();
    const auth = ['--token', RDV_TOKEN];
    const serve = p.spawnCli(
      'peer',
      [
        'serve',
        '--name',
        'web-echo',
        '--local',
        `127.0.0.1:${echo.port}`,
        '--server',
        rdv.addr,
        '--secret',
        SECRET,
        '--log-format',
        'json',
        ...auth,
      ],
      env,
    );
    await waitForEvent(serve, 'ready', 15_000);
    // Run 1: a visitor that never punches, so its session stays on the relay.
    const relayVisit = await p.visit('web-echo', rdv.addr, SECRET, ['--mode', 'relay', ...auth]);
    const busyRelay = keepBusy(relayVisit.port);
    t.after(() => busyRelay.stop());

    const browser = await launch();
    t.after(() => browser.close());
    const page = await browser.context.newPage();
    const external: string[] = [];
    page.on('request', (r) => {
      if (!r.url().startsWith(base)) external.push(r.url());
    });
    const res = await page.goto(`${base}/?every=1000`);
    assert.equal(res?.status(), 200);

    // The name, with its NAT type column, and the relayed session.
    await page.waitForSelector('#names tr[data-name="web-echo"]', { timeout: 20_000 });
    await page.waitForSelector('#sessions tr[data-name="web-echo"][data-path="relay"]', { timeout: 20_000 });
    const relayRow = await page.textContent('#sessions tr[data-path="relay"] .path-cell');
    assert.match(relayRow ?? '', /relay/);
    // The relay traffic shows in the chart: at least two samples, and a point above the baseline.
    await page.waitForFunction(
      () => {
        const line = document.querySelector('#chart polyline.relay');
        const pts = (line?.getAttribute('points') ?? '').trim().split(/\s+/).filter(Boolean);
        if (pts.length < 2) return false;
        const ys = pts.map((q) => Number(q.split(',')[1]));
        return Math.min(...ys) < Math.max(...ys);
      },
      undefined,
      { timeout: 40_000, polling: 500 },
    );
    fs.mkdirSync(RESULTS, { recursive: true });
    await page.screenshot({ path: path.join(RESULTS, 'dashboard-relay.png'), fullPage: true });

    // Run 2: a default visitor punches through on loopback; the page shows its session direct.
    const directVisit = await p.visit('web-echo', rdv.addr, SECRET, auth);
    const direct = await waitForEvent(directVisit.child, (o) => o.event === 'path' && o.path === 'direct', 20_000);
    const sid = String(direct.sid);
    const busyDirect = keepBusy(directVisit.port);
    t.after(() => busyDirect.stop());
    await page.waitForSelector(`#sessions tr[data-sid="${sid}"][data-path="direct"]`, { timeout: 20_000 });
    // Both sessions side by side: the first still relayed.
    assert.equal(await page.locator('#sessions tr[data-path="relay"]').count(), 1);
    // The direct session's endpoint is the UDP address its visitor reached, not the control connection.
    const endpoints = await page.locator(`#sessions tr[data-sid="${sid}"] td.addr`).allTextContents();
    assert.ok(
      endpoints.some((e) => /^127\.0\.0\.1:\d+$/.test(e)),
      endpoints.join(' '),
    );
    // The direct series is drawn above its baseline once the visitor reports its traffic.
    await page.waitForFunction(
      () => {
        const line = document.querySelector('#chart polyline.direct');
        const ys = (line?.getAttribute('points') ?? '')
          .trim()
          .split(/\s+/)
          .filter(Boolean)
          .map((q) => Number(q.split(',')[1]));
        return ys.length >= 2 && Math.min(...ys) < Math.max(...ys);
      },
      undefined,
      { timeout: 40_000, polling: 500 },
    );
    const rate = await page.textContent(`#sessions tr[data-sid="${sid}"] td.rate`);
    assert.match(rate ?? '', /\/s$/);
    await page.screenshot({ path: path.join(RESULTS, 'dashboard-direct.png'), fullPage: true });

    // Nothing came from anywhere else, and nothing secret is on the page or in the JSON behind it.
    assert.deepEqual(external, []);
    const html = await page.content();
    const json = await (await fetch(`${base}/status`)).text();
    for (const secret of [SECRET, RDV_TOKEN]) {
      assert.ok(!html.includes(secret), 'the page shows a secret');
      assert.ok(!json.includes(secret), '/status shows a secret');
    }
    assert.doesNotMatch(json, /ticket/i);
  },
);

test(
  'off loopback the dashboard needs --metrics-token: 401 without it, the page with it',
  { skip, timeout: 120_000 },
  async (t) => {
    const ip = nonLoopbackIPv4();
    if (!ip) return t.skip('this host has no non-loopback IPv4 address to bind the metrics listener to');
    const p = new Procs();
    t.after(() => p.cleanup());
    const rdv = await p.rendezvous(['--metrics', `${ip}:0`, '--metrics-token', METRICS_TOKEN]);
    const m = await waitForEvent(rdv.child, 'metrics', 10_000);
    const base = `http://${String(m.listen)}`;
    assert.ok(!String(m.listen).startsWith('127.'), String(m.listen));

    const browser = await launch();
    t.after(() => browser.close());
    const page = await browser.context.newPage();
    for (const where of ['/', '/status', '/metrics', '/dashboard.js']) {
      const r = await page.goto(base + where);
      assert.equal(r?.status(), 401, `${where} without the token`);
    }
    assert.equal((await page.goto(`${base}/?token=wrong`))?.status(), 401);
    // The token once in the address: a cookie, and the page without the token in its address.
    const ok = await page.goto(`${base}/?token=${METRICS_TOKEN}&every=1000`);
    assert.equal(ok?.status(), 200);
    assert.ok(!page.url().includes(METRICS_TOKEN), page.url());
    await page.waitForFunction(() => Number(document.body.dataset.updates ?? 0) >= 1, undefined, { timeout: 20_000 });
    assert.match((await page.textContent('#state')) ?? '', /updated/);
    const cookies = await browser.context.cookies();
    assert.ok(cookies.length > 0 && cookies.every((c) => !c.value.includes(METRICS_TOKEN) && c.httpOnly));
    assert.ok(!(await page.content()).includes(METRICS_TOKEN));
    fs.mkdirSync(RESULTS, { recursive: true });
    await page.screenshot({ path: path.join(RESULTS, 'dashboard-token.png'), fullPage: true });
    // Prometheus' way: a bearer token.
    const scrape = await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
    assert.equal(scrape.status, 200);

    // Off loopback without any token: /metrics and /status stay as they were, the dashboard is refused, with a warning.
    const open = await p.rendezvous(['--metrics', `${ip}:0`]);
    const om = await waitForEvent(open.child, 'metrics', 10_000);
    await waitForEvent(open.child, 'metrics_open', 10_000);
    const r = await page.goto(`http://${String(om.listen)}/`);
    assert.equal(r?.status(), 401);
    assert.match((await page.textContent('body')) ?? '', /--metrics-token/);
    assert.equal((await fetch(`http://${String(om.listen)}/status`)).status, 200);
  },
);
