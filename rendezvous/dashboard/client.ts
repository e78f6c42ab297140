/**
 * The rendezvous dashboard's script, run by the browser (served as
 * /dashboard.js; see rendezvous/dashboard/index.ts). It polls the JSON at
 * /status and redraws the page: no framework, no library, nothing fetched
 * from anywhere but this listener. Every value from the server is put in the
 * page as text (textContent), never as HTML.
 */

/** How often the page asks /status (a `?every=MS` in the address overrides it, from MIN_POLL_MS). */
const POLL_MS = 3000;
const MIN_POLL_MS = 500;
/** The chart's size in SVG units (it scales with the page). */
const CHART_W = 720;
const CHART_H = 200;
const CHART_PAD = { left: 84, right: 12, top: 10, bottom: 24 };

interface Nat {
  mapping: string;
  filtering: string;
}
interface NameRow {
  name: string;
  address: string;
  natType?: string;
  nat: Nat | null;
  since: number | null;
  onlineS?: number | null;
}
interface SessionRow {
  sid: string;
  name: string;
  path: 'pending' | 'relay' | 'direct';
  visitor: { address: string; natType?: string };
  server: { address: string; natType?: string };
  uptimeS: number;
  traffic?: {
    bytes: { relay: number; direct: number; total: number };
    rateBps: number;
    endpoints: { visitor: string | null; server: string | null };
    paths: string[];
    directAfterS: number | null;
  } | null;
}
interface Status {
  uptimeS: number;
  peers: number;
  names: NameRow[];
  sessions: SessionRow[];
  relay: { embedded: boolean; sessions?: number; pending?: number; bytes?: number };
  traffic?: { sampleMs: number; lastAt: number; relayBps: number[]; directBps: number[] };
  cluster?: Record<string, unknown>;
  clusterNodes?: { node: string; relay: string; self: boolean; upS: number | null }[] | null;
}

const $ = (id: string) => document.getElementById(id)!;

function el(tag: string, text?: string, cls?: string): HTMLElement {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function svg(tag: string, attrs: Record<string, string | number>): SVGElement {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  return e;
}

export function bytes(n: number): string {
  if (n < 1024) return `${Math.round(n)} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

function rate(bps: number): string {
  return `${bytes(bps)}/s`;
}

function duration(s: number): string {
  const t = Math.floor(s);
  if (t < 60) return `${t}s`;
  if (t < 3600) return `${Math.floor(t / 60)}m${t % 60}s`;
  if (t < 86400) return `${Math.floor(t / 3600)}h${Math.floor((t % 3600) / 60)}m`;
  return `${Math.floor(t / 86400)}d${Math.floor((t % 86400) / 3600)}h`;
}

/** Replaces a table body's rows; `empty` fills one row when there is nothing. */
function fillTable(id: string, rows: HTMLElement[][], empty: string, attrs: Record<string, string>[] = []): void {
  const body = $(id);
  body.replaceChildren();
  if (!rows.length) {
    const tr = el('tr');
    const td = el('td', empty, 'empty');
    td.setAttribute('colspan', '9');
    tr.append(td);
    body.append(tr);
    return;
  }
  rows.forEach((cells, i) => {
    const tr = el('tr');
    for (const [k, v] of Object.entries(attrs[i] ?? {})) tr.setAttribute(k, v);
    tr.append(...cells);
    body.append(tr);
  });
}

function td(text: string, cls?: string): HTMLElement {
  return el('td', text, cls);
}

/** How long a name has been online; the time it came, in the browser's clock and zone, on hover. */
function online(n: NameRow): HTMLElement {
  if (n.onlineS === null || n.onlineS === undefined) return td('-', 'online');
  const cell = td(duration(n.onlineS), 'online');
  cell.title = `online since ${new Date(Date.now() - n.onlineS * 1000).toLocaleString()}`;
  return cell;
}

function renderNames(s: Status): void {
  $('names-count').textContent = String(s.names.length);
  fillTable(
    'names',
    s.names.map((n) => [td(n.name, 'name'), td(n.natType ?? 'unknown', 'nat'), online(n), td(n.address, 'addr')]),
    'no names registered',
    s.names.map((n) => ({ 'data-name': n.name })),
  );
}

function renderSessions(s: Status): void {
  $('sessions-count').textContent = String(s.sessions.length);
  fillTable(
    'sessions',
    s.sessions.map((x) => {
      const t = x.traffic;
      const history = t && t.paths.length > 1 ? t.paths.join(' → ') : '';
      const after = t?.directAfterS;
      const note =
        history +
        (after === null || after === undefined
          ? ''
          : ` (direct after ${after < 1 ? `${Math.round(after * 1000)} ms` : `${after} s`})`);
      const pathCell = el('td');
      pathCell.className = 'path-cell';
      pathCell.append(el('span', x.path, `badge path-${x.path}`));
      if (note) pathCell.append(el('small', ' ' + note.trim(), 'path-history'));
      return [
        td(x.name, 'name'),
        pathCell,
        td(t?.endpoints.visitor ?? x.visitor.address, 'addr'),
        td(t?.endpoints.server ?? x.server.address, 'addr'),
        td(`${x.visitor.natType ?? '?'} / ${x.server.natType ?? '?'}`, 'nat'),
        td(t ? bytes(t.bytes.total) : '-', 'num bytes'),
        td(t ? rate(t.rateBps) : '-', 'num rate'),
        td(duration(x.uptimeS), 'num'),
      ];
    }),
    'no sessions',
    s.sessions.map((x) => ({ 'data-sid': x.sid, 'data-path': x.path, 'data-name': x.name })),
  );
}

function renderRelay(s: Status): void {
  const r = s.relay;
  const last = (a: number[] | undefined) => (a && a.length ? a[a.length - 1] : 0);
  const items: [string, string][] = r.embedded
    ? [
        ['relay', 'embedded'],
        ['paired sessions', String(r.sessions ?? 0)],
        ['waiting for their other side', String(r.pending ?? 0)],
        ['forwarded', bytes(r.bytes ?? 0)],
        ['now', rate(last(s.traffic?.relayBps))],
      ]
    : [
        ['relay', 'standalone (see its own logs)'],
        ['now, as peers report', rate(last(s.traffic?.relayBps))],
      ];
  const dl = $('relay');
  dl.replaceChildren();
  for (const [k, v] of items) dl.append(el('dt', k), el('dd', v));
}

/** Readable names for the fields of /status's `cluster` (ClusterStatus); an unknown field shows as its key. */
const CLUSTER_LABELS: Record<string, string> = {
  node: 'this node',
  advertise: 'its relay, as advertised',
  registry: 'registry',
  names: 'names held here',
  remoteVisitors: 'visitors on other nodes',
  forwardedSessions: 'visits brokered elsewhere',
  registryRttMs: 'registry round trip (ms)',
};

function renderCluster(s: Status): void {
  const box = $('cluster-box');
  if (!s.cluster) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  const dl = $('cluster');
  dl.replaceChildren();
  for (const [k, v] of Object.entries(s.cluster))
    dl.append(
      el('dt', CLUSTER_LABELS[k] ?? k),
      el('dd', v === null ? '-' : typeof v === 'object' ? JSON.stringify(v) : `${v as string | number | boolean}`),
    );
  const nodes = s.clusterNodes ?? [];
  $('cluster-count').textContent = String(nodes.length);
  fillTable(
    'cluster-nodes',
    nodes.map((n) => [
      td(n.node + (n.self ? ' (this node)' : ''), 'name'),
      td(n.relay, 'addr'),
      td(n.upS === null ? '-' : duration(n.upS), 'num'),
    ]),
    'no node seen (the registry is down)',
    nodes.map((n) => ({ 'data-node': n.node, ...(n.self ? { 'data-self': '' } : {}) })),
  );
}

/** Two lines (relay, direct) over the sampled window; the y axis scales to the largest value. */
function renderChart(s: Status): void {
  const chart = $('chart');
  chart.replaceChildren();
  const tr = s.traffic;
  const relay = tr?.relayBps ?? [];
  const direct = tr?.directBps ?? [];
  const n = Math.max(relay.length, direct.length);
  const w = CHART_W - CHART_PAD.left - CHART_PAD.right;
  const h = CHART_H - CHART_PAD.top - CHART_PAD.bottom;
  const max = Math.max(1024, ...relay, ...direct);
  const windowMs = 15 * 60 * 1000;
  const step = tr?.sampleMs ?? 5000;
  const x = (i: number, len: number) => CHART_PAD.left + w - ((len - 1 - i) * step * w) / windowMs;
  const y = (v: number) => CHART_PAD.top + h - (v / max) * h;
  chart.append(svg('rect', { x: CHART_PAD.left, y: CHART_PAD.top, width: w, height: h, class: 'plot' }));
  for (const f of [0, 0.5, 1]) {
    chart.append(
      svg('line', { x1: CHART_PAD.left, x2: CHART_PAD.left + w, y1: y(max * f), y2: y(max * f), class: 'grid' }),
    );
    const label = svg('text', { x: CHART_PAD.left - 6, y: y(max * f) + 4, class: 'axis', 'text-anchor': 'end' });
    label.textContent = rate(max * f);
    chart.append(label);
  }
  for (const [text, at, anchor] of [
    ['−15 min', CHART_PAD.left, 'start'],
    ['now', CHART_PAD.left + w, 'end'],
  ] as const) {
    const t = svg('text', { x: at, y: CHART_H - 6, class: 'axis', 'text-anchor': anchor });
    t.textContent = text;
    chart.append(t);
  }
  for (const [cls, series] of [
    ['relay', relay],
    ['direct', direct],
  ] as const) {
    const pts = series.map((v, i) => `${x(i, series.length).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    chart.append(svg('polyline', { points: pts, class: `series ${cls}`, 'data-points': series.length }));
  }
  chart.setAttribute('data-samples', String(n));
}

let failures = 0;

async function refresh(): Promise<void> {
  const state = $('state');
  try {
    const res = await fetch('/status', { credentials: 'same-origin', cache: 'no-store' });
    if (res.status === 401) {
      state.textContent = 'unauthorized: open this page as /?token=TOKEN (the rendezvous --metrics-token)';
      state.className = 'state bad';
      return;
    }
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const s = (await res.json()) as Status;
    $('uptime').textContent = duration(s.uptimeS);
    $('peers').textContent = String(s.peers);
    renderNames(s);
    renderSessions(s);
    renderRelay(s);
    renderCluster(s);
    renderChart(s);
    failures = 0;
    state.textContent = `updated ${new Date().toLocaleTimeString()}`;
    state.className = 'state ok';
    document.body.dataset.updates = String(Number(document.body.dataset.updates ?? '0') + 1);
  } catch (e) {
    failures++;
    state.textContent = `cannot reach the rendezvous (${(e as Error).message}); retrying`;
    state.className = 'state bad';
  }
}

function pollEvery(): number {
  const asked = Number(new URLSearchParams(location.search).get('every'));
  return Number.isFinite(asked) && asked >= MIN_POLL_MS ? asked : POLL_MS;
}

function loop(): void {
  void refresh().finally(() => setTimeout(loop, failures > 3 ? pollEvery() * 2 : pollEvery()));
}

loop();
