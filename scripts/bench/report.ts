/**
 * Goals of issue #6, computed from the sections' raw figures, the printed table,
 * and the read-modify-write of bench/results.json (other keys, e.g. "kcp"
 * from bench-kcp, and sections not run this time, are kept).
 */
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export const GOAL_KEYS = [
  'direct_vs_wireguard_go',
  'relay_vs_ssh_r',
  'cold_first_byte_ms',
  'time_to_direct_ms',
  'echo_rtt_under_load_extra_ms',
  'loss10_ratio',
  'idle100_cpu_pct',
  'rendezvous_10k_rss_mb',
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
const f = (x: unknown, d = 0, unit = '') => (num(x) === null ? 'n/a' : `${(x as number).toFixed(d)}${unit}`);

/** Pure: the goal rows from the sections of a results object. */
export function goalRows(r: Json): GoalRow[] {
  const d = r.direct ?? {},
    rl = r.relay ?? {},
    c = r.connect ?? {},
    l = r.latency ?? {},
    lo = r.loss ?? {},
    i = r.idle ?? {},
    z = r.rendezvous ?? {};
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
      minOf(d.ratio?.up, d.ratio?.down),
      `${f(d.ours_mbps?.up)} / ${f(d.ours_mbps?.down)} Mbit/s`,
      `wireguard-go ${f(d.wireguard_go_mbps?.up)} / ${f(d.wireguard_go_mbps?.down)} Mbit/s`,
      '>= 1.0x',
      (v) => v >= 1,
    ),
    row(
      'relay_vs_ssh_r',
      'relay-path throughput (up / down)',
      minOf(rl.ratio?.up, rl.ratio?.down),
      `${f(rl.ours_mbps?.up)} / ${f(rl.ours_mbps?.down)} Mbit/s`,
      `ssh -R ${f(rl.ssh_r_mbps?.up)} / ${f(rl.ssh_r_mbps?.down)} ` +
        `Mbit/s${rl.floor_mbps ? `; design floor ${f(rl.floor_mbps.up)} / ${f(rl.floor_mbps.down)}` : ''}`,
      '>= 1.0x',
      (v) => v >= 1,
    ),
    row(
      'cold_first_byte_ms',
      'cold first byte (accept, no tunnel)',
      num(c.cold_first_byte_ms),
      `${f(c.cold_first_byte_ms, 0, ' ms')}`,
      `warm ${f(c.warm_stream_first_byte_ms?.median, 2, ' ms')}; process start ` +
        `${f(c.process_start_first_byte_ms, 0, ' ms')}`,
      '<= 150 ms',
      (v) => v <= 150,
    ),
    row(
      'time_to_direct_ms',
      'time to `direct` (cone/cone)',
      num(c.time_to_direct_ms),
      `${f(c.time_to_direct_ms, 0, ' ms')}`,
      `CLI incl. node boot ${f(c.process?.spawn_to_direct_ms, 0, ' ms')}`,
      '< 1000 ms',
      (v) => v < 1000,
    ),
    row(
      'echo_rtt_under_load_extra_ms',
      'echo RTT under bulk load (p50, worse dir.)',
      maxOf(l.extra_p50_ms?.up, l.extra_p50_ms?.down),
      `up ${f(l.load_up?.p50_ms, 2)} / down ${f(l.load_down?.p50_ms, 2)} ms`,
      `idle ${f(l.idle?.p50_ms, 2)} ms`,
      '<= idle + 20 ms',
      (v) => v <= 20,
    ),
    row(
      'loss10_ratio',
      'throughput at 10% loss',
      num(lo.ratio?.loss10),
      `${f(lo.mbps?.loss10, 1)} Mbit/s (1%: ${f(lo.mbps?.loss1, 1)})`,
      `lossless ${f(lo.mbps?.loss0, 1)} Mbit/s`,
      '>= 0.30x',
      (v) => v >= 0.3,
    ),
    row(
      'idle100_cpu_pct',
      '100 idle tunnels, CPU (serve + visitors)',
      num(i.total_cpu_pct),
      `${f(i.serve_cpu_pct, 2)}% + ${f(i.visitors_cpu_pct, 2)}%`,
      `RSS ${f(i.serve_rss_mb)} + ${f(i.visitors_rss_mb)} MB`,
      '< 2% of a core',
      (v) => v < 2,
    ),
    row(
      'rendezvous_10k_rss_mb',
      'rendezvous RSS, 10,000 peers',
      num(z.rss_mb?.max),
      `${f(z.rss_mb?.max, 0, ' MB')}`,
      `${f(z.introductions_per_s)} introductions/s`,
      '< 300 MB',
      (v) => v < 300,
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
  const full = ['direct', 'relay', 'connect', 'latency', 'streams', 'idle', 'rendezvous', 'loss'].every((k) =>
    (meta.sections_attempted ?? meta.sections_run ?? []).includes(k),
  );
  if (full || !prev.bench) merged.bench = meta;
  else merged.bench = { ...prev.bench, partial_runs: [...(prev.bench.partial_runs ?? []), meta].slice(-5) };
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
