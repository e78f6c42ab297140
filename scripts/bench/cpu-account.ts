/**
 * Where the machine's CPU goes while one transfer runs: per program (from
 * /proc/<pid>/stat) and machine-wide (/proc/stat). The throughput figures say
 * how fast; these say why: how many cores each program of a contender burns
 * per Gbit/s, and how much of the machine sat idle. On a shared two-core lab
 * machine a contender is either CPU-bound (idle near zero) or waiting on
 * itself (idle left over), and the two need different fixes.
 *
 * Sampled over a window inside the transfer, so that short-lived programs
 * (the iperf3 client) are alive at both ends and start-up does not count.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { clockTicks, parsePidStat } from './procstat.js';
import { round as roundTo } from './stats.js';
import { sleep } from '../../src/util/backoff.js';

/** The programs the lab runs while a throughput figure is measured. */
export type Role = 'visit' | 'serve' | 'rendezvous' | 'floor' | 'sshd' | 'ssh' | 'iperf3' | 'bench';

/** Machine-wide jiffies from the first line of /proc/stat. */
export interface MachineTicks {
  user: number;
  system: number;
  softirq: number;
  /** idle + iowait */
  idle: number;
  total: number;
}

export interface CpuSnapshot {
  machine: MachineTicks;
  /** pid -> role and utime + stime in jiffies */
  procs: Map<number, { role: Role; ticks: number }>;
  cores: number;
}

/** Cores (1 = one core fully busy) over the window; what the programs used and what the machine did. */
export interface CpuBreakdown {
  seconds: number;
  cores: number;
  /** per role, in cores */
  by_role: Partial<Record<Role, number>>;
  /** machine-wide, in cores: softirq is mostly the lab's packet forwarding and NAT */
  machine: { busy: number; user: number; system: number; softirq: number; idle: number };
}

/** Pure: the aggregate `cpu` line of /proc/stat. */
export function parseMachineTicks(procStat: string): MachineTicks {
  const line = procStat.split('\n', 1)[0];
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal
  const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = f;
  return {
    user: user + nice,
    system: system + irq,
    softirq,
    idle: idle + iowait,
    total: user + nice + system + idle + iowait + irq + softirq + steal,
  };
}

/** Pure: which program a process is, from its comm and command line; null for everything else. */
export function classify(comm: string, cmdline: string): Role | null {
  if (comm === 'iperf3') return 'iperf3';
  if (comm === 'sshd') return 'sshd';
  if (comm === 'ssh') return 'ssh';
  if (/\/rendezvous\/cli\.js\b/.test(cmdline)) return 'rendezvous';
  const peer = /\/peer\/cli\.js\s+(serve|visit)\b/.exec(cmdline);
  if (peer) return peer[1] as 'serve' | 'visit';
  // The relay floor's three programs (tools/relay-floor.ts): one role, they stand in for visit + rendezvous + serve.
  if (/\/tools\/relay-floor\.js\b/.test(cmdline)) return 'floor';
  if (/\/scripts\/bench\.js\b/.test(cmdline)) return 'bench';
  return null;
}

export function snapshot(): CpuSnapshot {
  const procs = new Map<number, { role: Role; ticks: number }>();
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    try {
      const { comm, ticks } = parsePidStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
      const role = classify(comm, readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' '));
      if (role) procs.set(pid, { role, ticks });
    } catch {
      // exited between readdir and read
    }
  }
  const stat = readFileSync('/proc/stat', 'utf8');
  return { machine: parseMachineTicks(stat), procs, cores: (stat.match(/^cpu\d+ /gm) ?? []).length || 1 };
}

/**
 * Pure: the breakdown between two snapshots taken `seconds` apart. Only
 * processes alive at both ends count (one that started in between has no
 * baseline), which is why the window sits inside the transfer.
 */
export function breakdown(a: CpuSnapshot, b: CpuSnapshot, seconds: number, hz: number): CpuBreakdown {
  const cores = (ticks: number) => round(ticks / hz / seconds);
  const byRole: Partial<Record<Role, number>> = {};
  for (const [pid, end] of b.procs) {
    const start = a.procs.get(pid);
    if (!start || start.role !== end.role) continue;
    byRole[end.role] = (byRole[end.role] ?? 0) + (end.ticks - start.ticks);
  }
  const total = b.machine.total - a.machine.total || 1;
  // /proc/stat counts jiffies of all cores: shares of it times the core count are cores.
  const share = (k: keyof MachineTicks) => round(((b.machine[k] - a.machine[k]) / total) * b.cores);
  const idle = share('idle');
  return {
    seconds: round(seconds),
    cores: b.cores,
    by_role: Object.fromEntries(Object.entries(byRole).map(([r, t]) => [r, cores(t)])),
    machine: {
      busy: round(b.cores - idle),
      user: share('user'),
      system: share('system'),
      softirq: share('softirq'),
      idle,
    },
  };
}

/** Samples at `startMs` from now and again `durationMs` later (run it beside the transfer). */
export async function measureCpu(startMs: number, durationMs: number): Promise<CpuBreakdown> {
  await sleep(startMs);
  const a = snapshot();
  const t0 = performance.now();
  await sleep(durationMs);
  const b = snapshot();
  return breakdown(a, b, (performance.now() - t0) / 1000, clockTicks());
}

/** Pure: a breakdown per Gbit/s moved, the figure that compares contenders at different speeds. */
export function perGbps(c: CpuBreakdown, mbps: number): { busy: number; by_role: Partial<Record<Role, number>> } {
  const g = mbps / 1000;
  if (!(g > 0)) return { busy: NaN, by_role: {} };
  return {
    busy: round(c.machine.busy / g),
    by_role: Object.fromEntries(Object.entries(c.by_role).map(([r, v]) => [r, round((v ?? 0) / g)])),
  };
}

const round = (x: number) => roundTo(x, 3);
