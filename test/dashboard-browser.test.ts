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
import { Procs, SECRET, echoTransfer, stopProcess, waitForEvent } from './helpers/tunnel.js';
import { browserMissing, launchBrowser as launch, recordExternal, screenshot } from './helpers/browser.js';
import { sleep } from '../src/util/backoff.js';
import { RedisProc, redisMissing, until } from './cluster-helpers.js';

const skip = browserMissing;

/** A local IPv4 address that is not loopback, to test the token rule off loopback (none: that part is skipped). */
function nonLoopbackIPv4(): string | null {
  for (const list of Object.values(os.networkInterfaces()))
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  return null;
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

/** The cluster test's registry TTL (s): short, so a stopped node leaves the list soon. */
const TTL_S = 3;
const RDV_TOKEN = 'rdv-token-must-not-show';
const METRICS_TOKEN = 'metrics-token-must-not-show';

test(
  'the dashboard lists names (NAT type, time online), a relayed and a direct session side by side ' +
    '(path, endpoints, bytes, rate), the relay load and the traffic chart',
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
    const external = recordExternal(page, base);
    const res = await page.goto(`${base}/?every=1000`);
    assert.equal(res?.status(), 200);

    // The name, with its NAT type column, and the relayed session.
    await page.waitForSelector('#names tr[data-name="web-echo"]', { timeout: 20_000 });
    await page.waitForSelector('#sessions tr[data-name="web-echo"][data-path="relay"]', { timeout: 20_000 });
    const relayRow = await page.textContent('#sessions tr[data-path="relay"] .path-cell');
    assert.match(relayRow ?? '', /relay/);
    // A NAT type column (on loopback there is no NAT to name: test-netns/dashboard.test.ts shows `cone`).
    assert.match((await page.textContent('#names tr[data-name="web-echo"] td.nat')) ?? '', /^[a-z-]+$/);
    assert.match((await page.textContent('#names tr[data-name="web-echo"] td.online')) ?? '', /^\d+(s|m\d+s)$/);
    // The embedded relay's load: one paired session, bytes forwarded.
    await page.waitForFunction(
      () => /paired sessions\s*1(?!\d)/.test(document.getElementById('relay')?.textContent ?? ''),
      undefined,
      { timeout: 20_000, polling: 500 },
    );
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
    await screenshot(page, 'dashboard-relay.png');

    // Run 2: a default visitor punches through on loopback; the page shows its session direct.
    const directVisit = await p.visit('web-echo', rdv.addr, SECRET, auth);
    const direct = await waitForEvent(directVisit.child, (o) => o.event === 'path' && o.path === 'direct', 20_000);
    const sid = String(direct.sid);
    const busyDirect = keepBusy(directVisit.port);
    t.after(() => busyDirect.stop());
    await page.waitForSelector(`#sessions tr[data-sid="${sid}"][data-path="direct"]`, { timeout: 20_000 });
    // Both sessions side by side: the first still relayed.
    assert.equal(await page.locator('#sessions tr[data-path="relay"]').count(), 1);
    // The direct session's endpoint is the UDP address its visitor reached, not the control connection:
    // loopback, or on a dual-stack host the host's own IPv6 address (it shares the /64 and wins the tie).
    const endpoints = await page.locator(`#sessions tr[data-sid="${sid}"] td.addr`).allTextContents();
    assert.ok(
      endpoints.some((e) => /^(127\.0\.0\.1|\[[0-9a-f:]+\]):\d+$/.test(e)),
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
    await screenshot(page, 'dashboard-direct.png');

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
    await screenshot(page, 'dashboard-token.png');
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

test(
  "with --registry, each node's dashboard lists the cluster's nodes (two rendezvous on one real redis-server)",
  { skip: skip || (redisMissing() ?? false), timeout: 120_000 },
  async (t) => {
    const redis = await RedisProc.start();
    t.after(() => redis.stop());
    const p = new Procs();
    t.after(() => p.cleanup());
    const node = async (id: string) => {
      const rdv = await p.rendezvous([
        ...['--registry', redis.url, '--registry-ttl', String(TTL_S), '--node-id', id],
        ...['--metrics', '127.0.0.1:0'],
      ]);
      const m = await waitForEvent(rdv.child, 'metrics', 10_000);
      return { id, child: rdv.child, base: `http://${String(m.listen)}` };
    };
    const [a, b] = await Promise.all([node('dash-node-a'), node('dash-node-b')]);

    // The JSON behind the page, on both nodes: both nodes, each marking itself.
    for (const me of [a, b]) {
      const ok = await until(async () => {
        const s = (await (await fetch(`${me.base}/status`)).json()) as { clusterNodes?: { node: string }[] };
        return (s.clusterNodes ?? []).length === 2;
      }, 15_000);
      assert.ok(ok, `${me.id}'s /status lists both nodes`);
      const s = (await (await fetch(`${me.base}/status`)).json()) as {
        cluster: { node: string; registry: string };
        clusterNodes: { node: string; self: boolean; relay: string; upS: number | null }[];
      };
      assert.equal(s.cluster.node, me.id);
      assert.equal(s.cluster.registry, 'up');
      assert.deepEqual(
        s.clusterNodes.map((n) => [n.node, n.self]),
        [
          ['dash-node-a', me === a],
          ['dash-node-b', me === b],
        ],
      );
      for (const n of s.clusterNodes) {
        assert.match(n.relay, /:\d+$/);
        assert.equal(typeof n.upS, 'number');
      }
    }

    // The page of node B shows the cluster box with both nodes, B marked as this node.
    const browser = await launch();
    t.after(() => browser.close());
    const page = await browser.context.newPage();
    const external = recordExternal(page, b.base);
    assert.equal((await page.goto(`${b.base}/?every=1000`))?.status(), 200);
    await page.waitForSelector('#cluster-box:not([hidden]) #cluster-nodes tr[data-node="dash-node-b"][data-self]', {
      timeout: 20_000,
    });
    await page.waitForSelector('#cluster-nodes tr[data-node="dash-node-a"]:not([data-self])', { timeout: 20_000 });
    assert.equal(await page.locator('#cluster-nodes tr[data-node]').count(), 2);
    assert.equal(await page.textContent('#cluster-count'), '2');
    assert.match((await page.textContent('#cluster')) ?? '', /registry\s*up/);
    await screenshot(page, 'dashboard-cluster.png');
    assert.deepEqual(external, []);
    // The registry's address (it may carry a password) is on neither the page nor the JSON.
    const json = await (await fetch(`${b.base}/status`)).text();
    for (const text of [await page.content(), json]) assert.ok(!text.includes('redis://'));

    // A node that goes away leaves the list once its heartbeat record expires (the TTL).
    await stopProcess(a.child, 2000);
    await page.waitForFunction(
      () => document.querySelectorAll('#cluster-nodes tr[data-node]').length === 1,
      undefined,
      { timeout: (TTL_S + 10) * 1000, polling: 500 },
    );
    assert.equal(await page.locator('#cluster-nodes tr[data-node="dash-node-b"]').count(), 1);
  },
);
