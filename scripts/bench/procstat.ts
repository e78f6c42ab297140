/** CPU and memory of processes from /proc (what pidstat reads), for the idle and scale figures. */
import { readFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { sleep } from '../../src/util/backoff.js';

let hz = 0;
export function clockTicks(): number {
  if (!hz) {
    try {
      hz = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
    } catch {
      hz = 100;
    }
  }
  return hz;
}

/** Pure: comm and utime + stime (clock ticks) from the text of /proc/<pid>/stat. */
export function parsePidStat(stat: string): { comm: string; ticks: number } {
  // Field 2 (comm) may contain spaces and parentheses: it ends at the last ')'.
  const close = stat.lastIndexOf(')');
  const comm = stat.slice(stat.indexOf('(') + 1, close);
  const rest = stat.slice(close + 2).split(' ');
  return { comm, ticks: Number(rest[11]) + Number(rest[12]) };
}

/** utime + stime of a process, in seconds. */
export function cpuSeconds(pid: number): number {
  return parsePidStat(readFileSync(`/proc/${pid}/stat`, 'utf8')).ticks / clockTicks();
}

/** Resident set size in MB (VmRSS). */
export function rssMb(pid: number): number {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+)\s+kB/m);
  return m ? Number(m[1]) / 1024 : NaN;
}

/** CPU percent of one core used by each pid over `ms` (sampled at both ends). */
export async function cpuPercent(pids: number[], ms: number): Promise<number[]> {
  const t0 = process.hrtime.bigint();
  const c0 = pids.map(cpuSeconds);
  await sleep(ms);
  const c1 = pids.map(cpuSeconds);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  return pids.map((_, i) => ((c1[i] - c0[i]) / secs) * 100);
}

/** The 1-minute load average and CPU count, for noting how busy the shared machine was. */
export function loadAverage(): number[] {
  return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).map(Number);
}
