import fs from 'node:fs';
import type { StaticPage } from '../../src/metrics/http.js';

/**
 * The rendezvous dashboard: one HTML page, one stylesheet and one script
 * (client.ts, compiled with the rest and read from beside this module), served
 * by the metrics listener at /, /dashboard.css and /dashboard.js. Plain DOM
 * and SVG, no chart library: docs/ARCHITECTURE.md "Dashboard" says why.
 */

const HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>holepunch rendezvous</title>
<link rel="stylesheet" href="/dashboard.css">
<script type="module" src="/dashboard.js"></script>
</head>
<body>
<header>
  <h1>holepunch rendezvous</h1>
  <span>up <b id="uptime">-</b></span>
  <span><b id="peers">-</b> peers connected</span>
  <span id="state" class="state">loading…</span>
</header>
<main>
  <section class="wide">
    <h2>Traffic, last 15 minutes</h2>
    <p class="legend"><span class="key relay"></span>relay <span class="key direct"></span>direct</p>
    <svg id="chart" viewBox="0 0 720 200" role="img"
      aria-label="relay and direct traffic over the last 15 minutes"></svg>
  </section>
  <section class="wide">
    <h2>Sessions <span class="count" id="sessions-count">0</span></h2>
    <table>
      <thead><tr><th>name</th><th>path</th><th>visitor</th><th>server</th><th>NAT (visitor / server)</th>
        <th class="num">bytes</th><th class="num">rate</th><th class="num">uptime</th></tr></thead>
      <tbody id="sessions"></tbody>
    </table>
  </section>
  <section>
    <h2>Names online <span class="count" id="names-count">0</span></h2>
    <table>
      <thead><tr><th>name</th><th>NAT type</th><th>online</th><th>from</th></tr></thead>
      <tbody id="names"></tbody>
    </table>
  </section>
  <section>
    <h2>Relay load</h2>
    <dl id="relay"></dl>
  </section>
  <section id="cluster-box" hidden>
    <h2>Cluster <span class="count" id="cluster-count">0</span> nodes</h2>
    <dl id="cluster"></dl>
    <table>
      <thead><tr><th>node</th><th>relay at</th><th class="num">up</th></tr></thead>
      <tbody id="cluster-nodes"></tbody>
    </table>
  </section>
</main>
<footer>Read-only. Data from <a href="/status">/status</a> (JSON)
  and <a href="/metrics">/metrics</a> (Prometheus).</footer>
</body>
</html>
`;

const CSS = `
:root { --relay: #d9822b; --direct: #2b8a3e; --fg: #1d2330; --muted: #6b7280; --line: #e3e6ea; --bg: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; gap: 1.5em; align-items: baseline; flex-wrap: wrap; padding: 0.8em 1.2em;
  background: #fff; border-bottom: 1px solid var(--line); }
h1 { font-size: 1.2em; margin: 0; }
h2 { font-size: 1em; margin: 0 0 0.6em; }
main { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 1em;
  padding: 1em 1.2em; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 0.8em 1em; overflow-x: auto; }
section.wide { grid-column: 1 / -1; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 0.3em 0.6em; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { color: var(--muted); font-weight: 500; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
td.addr { font-family: ui-monospace, monospace; font-size: 0.92em; }
td.empty { color: var(--muted); font-style: italic; }
.count { color: var(--muted); font-weight: normal; }
.badge { display: inline-block; padding: 0 0.5em; border-radius: 3px; color: #fff; background: var(--muted); }
.badge.path-relay { background: var(--relay); }
.badge.path-direct { background: var(--direct); }
.path-history { color: var(--muted); }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.2em 1em; margin: 0; }
dt { color: var(--muted); }
dd { margin: 0; font-variant-numeric: tabular-nums; }
.state { margin-left: auto; color: var(--muted); }
.state.bad { color: #b42318; }
#chart { width: 100%; height: auto; }
#chart .plot { fill: #fbfbfc; stroke: var(--line); }
#chart .grid { stroke: var(--line); }
#chart .axis { fill: var(--muted); font-size: 11px; }
#chart .series { fill: none; stroke-width: 2; }
#chart .series.relay { stroke: var(--relay); }
#chart .series.direct { stroke: var(--direct); }
.legend { margin: 0 0 0.4em; color: var(--muted); }
.key { display: inline-block; width: 1.2em; height: 0.25em; margin: 0 0.3em 0.2em 0.8em; vertical-align: middle; }
.key.relay { background: var(--relay); }
.key.direct { background: var(--direct); }
footer { padding: 0 1.2em 1.2em; color: var(--muted); }
`;

let script: string | null = null;

/** The compiled client, read once (without its source-map comment: the map is not served). */
function clientScript(): string {
  if (script === null) {
    const text = fs.readFileSync(new URL('./client.js', import.meta.url), 'utf8');
    script = text.replace(/^\/\/# sourceMappingURL=.*$/m, '');
  }
  return script;
}

/** The dashboard's pages, for startObserveServer's `pages`. */
export function dashboardPages(): Record<string, StaticPage> {
  clientScript(); // fail at start, not on the first visit, if the build is incomplete
  return {
    '/': { type: 'text/html; charset=utf-8', body: HTML },
    '/dashboard.css': { type: 'text/css; charset=utf-8', body: CSS },
    '/dashboard.js': { type: 'text/javascript; charset=utf-8', body: clientScript },
  };
}
