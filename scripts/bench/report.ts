/**
 * Goals of issue #6, computed from the sections' raw figures, the printed table,
 * and the read-modify-write of bench/results.json (other keys, e.g. "kcp"
 * from bench-kcp, and sections not run this time, are kept).
 */
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { median } from './stats.js';

/** A parsed JSON object, of no known shape: fields are read through `at`. */
type Json = Record<string, unknown>;

/** The value at `path` inside `x`, or undefined where any step is missing or not an object. */
const at = (x: unknown, ...path: string[]): unknown => {
  for (const k of path) {
    if (x === null || typeof x !== 'object') return undefined;
    x = (x as Json)[k];
  }
  return x;
};

export const GOAL_KEYS = [
  'direct_vs_wireguard_go',
  'relay_vs_ssh_r',
  'cold_first_byte_ms',
  'time_to_direct_ms',
  'echo_rtt_under_load_extra_ms',
  'loss10_ratio',
  'idle100_cpu_pct',
  'rendezvous_10k_rss_mb',
  'direct_vs_dgram_ceiling',
  'relay_server_cpu_vs_sshd',
] as const;
export type GoalKey = (typeof GOAL_KEYS)[number];

export interface GoalRow {
  key: GoalKey;
  figure: string;
  value: number | null;
  ours: string;
  reference: string;
  goal: string;
  holds: boolean | null;
}

const num = (x: unknown): number | null => (typeof x === 'number' && Number.isFinite(x) ? x : null);
const minOf = (...xs: unknown[]) => {
  const v = xs.map(num).filter((x): x is number => x !== null);
  return v.length ? Math.min(...v) : null;
};
const maxOf = (...xs: unknown[]) => {
  const v = xs.map(num).filter((x): x is number => x !== null);
  return v.length ? Math.max(...v) : null;
};
const ratioOf = (a: number | null, b: number | null) => (a === null || b === null || b === 0 ? null : a / b);

/**
 * CPU per Gbit/s of one process role while the relay section moved data in
 * one direction with one contender (`ours`, `ssh_r`): the median over runs.
 */
export function cpuPerGbps(relay: unknown, contender: string, dir: string, role: string): number | null {
  const runs = at(relay, 'cpu', contender, dir, 'runs');
  if (!Array.isArray(runs)) return null;
  const values = runs.map((run) => num(at(run, 'per_gbps', 'by_role', role))).filter((x): x is number => x !== null);
  return num(median(values)); // NaN (no runs) -> null
}

const f = (x: unknown, d = 0, unit = '') => (num(x) === null ? 'n/a' : `${(x as number).toFixed(d)}${unit}`);

/** Pure: the goal rows from the sections of a results object. */
export function goalRows(r: Json): GoalRow[] {
  const d = r.direct,
    rl = r.relay,
    c = r.connect,
    l = r.latency,
    lo = r.loss,
    i = r.idle,
    z = r.rendezvous;
  const floor = at(rl, 'floor_mbps');
  const ceiling = num(at(d, 'node_dgram_ceiling_mbps', 'received'));
  // The operator's cost: the rendezvous relaying against sshd serving ssh -R, per Gbit/s, worse direction.
  const serverCpu = (dir: string) => ({
    ours: cpuPerGbps(rl, 'ours', dir, 'rendezvous'),
    sshd: cpuPerGbps(rl, 'ssh_r', dir, 'sshd'),
  });
  const cpuUp = serverCpu('up'),
    cpuDown = serverCpu('down');
  const row = (
    key: GoalKey,
    figure: string,
    value: number | null,
    ours: string,
    reference: string,
    goal: string,
    ok: (v: number) => boolean,
  ): GoalRow => ({ key, figure, value, ours, reference, goal, holds: value === null ? null : ok(value) });
  return [
    row(
      'direct_vs_wireguard_go',
      'direct-path throughput (up / down)',
      minOf(at(d, 'ratio', 'up'), at(d, 'ratio', 'down')),
      `${f(at(d, 'ours_mbps', 'up'))} / ${f(at(d, 'ours_mbps', 'down'))} Mbit/s`,
      `wireguard-go ${f(at(d, 'wireguard_go_mbps', 'up'))} / ${f(at(d, 'wireguard_go_mbps', 'down'))} Mbit/s`,
      '>= 1.0x',
      (v) => v >= 1,
    ),
    row(
      'relay_vs_ssh_r',
      'relay-path throughput (up / down)',
      minOf(at(rl, 'ratio', 'up'), at(rl, 'ratio', 'down')),
      `${f(at(rl, 'ours_mbps', 'up'))} / ${f(at(rl, 'ours_mbps', 'down'))} Mbit/s`,
      `ssh -R ${f(at(rl, 'ssh_r_mbps', 'up'))} / ${f(at(rl, 'ssh_r_mbps', 'down'))} Mbit/s` +
        (floor ? `; design floor ${f(at(floor, 'up'))} / ${f(at(floor, 'down'))}` : ''),
      '>= 1.0x',
      (v) => v >= 1,
    ),
    row(
      'cold_first_byte_ms',
      'cold first byte (accept, no tunnel)',
      num(at(c, 'cold_first_byte_ms')),
      `${f(at(c, 'cold_first_byte_ms'), 0, ' ms')}`,
      `warm ${f(at(c, 'warm_stream_first_byte_ms', 'median'), 2, ' ms')}; process start ` +
        `${f(at(c, 'process_start_first_byte_ms'), 0, ' ms')}`,
      '<= 150 ms',
      (v) => v <= 150,
    ),
    row(
      'time_to_direct_ms',
      'time to `direct` (cone/cone)',
      num(at(c, 'time_to_direct_ms')),
      `${f(at(c, 'time_to_direct_ms'), 0, ' ms')}`,
      `CLI incl. node boot ${f(at(c, 'process', 'spawn_to_direct_ms'), 0, ' ms')}`,
      '< 1000 ms',
      (v) => v < 1000,
    ),
    row(
      'echo_rtt_under_load_extra_ms',
      'echo RTT under bulk load (p50, worse dir.)',
      maxOf(at(l, 'extra_p50_ms', 'up'), at(l, 'extra_p50_ms', 'down')),
      `up ${f(at(l, 'load_up', 'p50_ms'), 2)} / down ${f(at(l, 'load_down', 'p50_ms'), 2)} ms`,
      `idle ${f(at(l, 'idle', 'p50_ms'), 2)} ms`,
      '<= idle + 20 ms',
      (v) => v <= 20,
    ),
    row(
      'loss10_ratio',
      'throughput at 10% loss',
      num(at(lo, 'ratio', 'loss10')),
      `${f(at(lo, 'mbps', 'loss10'), 1)} Mbit/s (1%: ${f(at(lo, 'mbps', 'loss1'), 1)})`,
      `lossless ${f(at(lo, 'mbps', 'loss0'), 1)} Mbit/s`,
      '>= 0.30x',
      (v) => v >= 0.3,
    ),
    row(
      'idle100_cpu_pct',
      '100 idle tunnels, CPU (serve + visitors)',
      num(at(i, 'total_cpu_pct')),
      `${f(at(i, 'serve_cpu_pct'), 2)}% + ${f(at(i, 'visitors_cpu_pct'), 2)}%`,
      `RSS ${f(at(i, 'serve_rss_mb'))} + ${f(at(i, 'visitors_rss_mb'))} MB`,
      '< 2% of a core',
      (v) => v < 2,
    ),
    row(
      'rendezvous_10k_rss_mb',
      'rendezvous RSS, 10,000 peers',
      num(at(z, 'rss_mb', 'max')),
      `${f(at(z, 'rss_mb', 'max'), 0, ' MB')}`,
      `${f(at(z, 'introductions_per_s'))} introductions/s`,
      '< 300 MB',
      (v) => v < 300,
    ),
    row(
      'direct_vs_dgram_ceiling',
      'direct path vs bare Node dgram (worse dir.)',
      ratioOf(minOf(at(d, 'ours_mbps', 'up'), at(d, 'ours_mbps', 'down')), ceiling),
      `${f(at(d, 'ours_mbps', 'up'))} / ${f(at(d, 'ours_mbps', 'down'))} Mbit/s`,
      `node dgram ${f(ceiling)} Mbit/s`,
      '>= 0.8x',
      (v) => v >= 0.8,
    ),
    row(
      'relay_server_cpu_vs_sshd',
      'rendezvous CPU relaying, per Gbit/s',
      maxOf(ratioOf(cpuUp.ours, cpuUp.sshd), ratioOf(cpuDown.ours, cpuDown.sshd)),
      `up ${f(cpuUp.ours, 3)} / down ${f(cpuDown.ours, 3)} cores`,
      `sshd (ssh -R) ${f(cpuUp.sshd, 3)} / ${f(cpuDown.sshd, 3)} cores`,
      '<= 1.0x',
      (v) => v <= 1,
    ),
  ];
}

const HEAD = ['figure', 'ours', 'reference / context', 'value', 'goal', 'holds'];

function cellsOf(rows: GoalRow[]): string[][] {
  const shown = (r: GoalRow) => {
    if (r.value === null) return 'n/a';
    if (r.key.endsWith('_pct')) return r.value.toFixed(2);
    if (r.key.endsWith('_ms') || r.key.endsWith('_mb')) return r.value.toFixed(0);
    return `${r.value.toFixed(2)}x`;
  };
  return rows.map((r) => [
    r.figure,
    r.ours,
    r.reference,
    shown(r),
    r.goal,
    r.holds === null ? 'not run' : r.holds ? 'yes' : 'NO',
  ]);
}

/** Pure: a fixed-width text table of the goal rows. */
export function formatTable(rows: GoalRow[]): string {
  const cells = cellsOf(rows);
  const w = HEAD.map((h, k) => Math.max(h.length, ...cells.map((c) => c[k].length)));
  const line = (c: string[]) => c.map((x, k) => x.padEnd(w[k])).join(' | ');
  return [line(HEAD), w.map((n) => '-'.repeat(n)).join('-|-'), ...cells.map(line)].join('\n');
}

/** Markdown version of the same table, for docs/BENCHMARKS.md. */
export function formatMarkdown(rows: GoalRow[]): string {
  const line = (c: string[]) => `| ${c.join(' | ')} |`;
  return [line(HEAD), `|${HEAD.map(() => '---').join('|')}|`, ...cellsOf(rows).map(line)].join('\n');
}

export function readResults(file: string): Json {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Json;
  } catch {
    return {};
  }
}

/**
 * Merges this run's sections into the file, recomputes the goal keys from the
 * merged sections, and writes it back. Keys this bench does not own stay as they were.
 */
export function mergeResults(prev: Json, sections: Json, meta: Json): Json {
  const merged: Json = { ...prev };
  for (const [k, v] of Object.entries(sections)) merged[k] = v;
  const rows = goalRows(merged);
  for (const r of rows) merged[r.key] = r.value;
  merged.goals = Object.fromEntries(rows.map((r) => [r.key, { value: r.value, goal: r.goal, holds: r.holds }]));
  // A full run describes the file; a partial one (--only) is noted beside it, so the
  // machine and load of the run most figures come from stay readable.
  const attempted = meta.sections_attempted ?? meta.sections_run;
  const full = ['direct', 'relay', 'connect', 'latency', 'streams', 'idle', 'rendezvous', 'loss'].every(
    (k) => Array.isArray(attempted) && attempted.includes(k),
  );
  if (full || !prev.bench) merged.bench = meta;
  else {
    const partial = at(prev.bench, 'partial_runs');
    const earlier: unknown[] = Array.isArray(partial) ? partial : [];
    merged.bench = { ...(prev.bench as Json), partial_runs: [...earlier, meta].slice(-5) };
  }
  // Goal keys first, for people reading the file; then everything else in its old order.
  const ordered: Json = {};
  for (const k of GOAL_KEYS) ordered[k] = merged[k];
  for (const [k, v] of Object.entries(merged)) if (!(k in ordered)) ordered[k] = v;
  return ordered;
}

export function writeResults(file: string, data: Json): void {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, JSON.stringify(data, null, 2) + '\n');
}
