/**
 * Relay-path bulk throughput: the same iperf3 measurement with `--mode relay`
 * (visitor -> TCP -> relay inside the rendezvous -> TCP -> serve), interleaved
 * run by run with an OpenSSH remote forward through an sshd on the same host,
 * and with the relay design's floor (tools/relay-floor.ts: the same sealing,
 * framing and splicing code with nothing else) through the same hosts.
 */
import type { ChildProcess } from 'node:child_process';
import { stopProcess } from '../../netns-lab.js';
import type { Ctx, SectionResult } from '../context.js';
import { BenchEnv, IPERF_PORT, RDV, TOOL } from '../env.js';
import { iperf } from '../iperf.js';
import { startSshR, type SshForward } from '../ssh.js';
import { jsonNum, median, ratio } from '../stats.js';
import { measureCpu, perGbps, type CpuBreakdown } from '../cpu-account.js';

type Dir = 'up' | 'down';
interface Measured { mbps: number; cpu: CpuBreakdown | null }

/**
 * One iperf3 run with the machine's CPU sampled inside it (from 1.5 s in to
 * 1 s before the end), when the run is long enough for that window.
 */
async function measured(run: () => Promise<{ mbps: number }>, seconds: number): Promise<Measured & { busyRetries?: number }> {
  const window = (seconds - 2.5) * 1000;
  const cpu = window >= 1000 ? measureCpu(1500, window).catch(() => null) : Promise.resolve(null);
  const r = await run();
  return { ...r, cpu: await cpu };
}

/** One line: how busy the machine was and what each program cost per Gbit/s. */
function cpuLine(m: Measured): string {
  if (!m.cpu) return '';
  const g = perGbps(m.cpu, m.mbps);
  const roles = Object.entries(g.by_role).filter(([r, v]) => r !== 'bench' && v! >= 0.005).map(([r, v]) => `${r} ${v!.toFixed(2)}`).join(', ');
  return ` | cpu ${m.cpu.machine.busy.toFixed(2)}/${m.cpu.cores} cores busy (softirq ${m.cpu.machine.softirq.toFixed(2)}); per Gbit/s ${g.busy.toFixed(2)} cores: ${roles}`;
}

interface CpuFigures {
  busy_cores_per_gbps: number | null;
  idle_cores: number | null;
  runs: unknown[];
}

/** Medians over runs of the figures that explain a throughput: cores busy per Gbit/s and cores left idle. */
function cpuSummary(runs: Record<Dir, Measured[]>): Record<Dir, CpuFigures> {
  const figures = (dir: Dir): CpuFigures => {
    const sampled = runs[dir].filter((m): m is Measured & { cpu: CpuBreakdown } => m.cpu !== null);
    const of = (f: (m: Measured & { cpu: CpuBreakdown }) => number) => jsonNum(median(sampled.map(f)), 3);
    return {
      busy_cores_per_gbps: of((m) => perGbps(m.cpu, m.mbps).busy),
      idle_cores: of((m) => m.cpu.machine.idle),
      runs: runs[dir].map((m) => m.cpu && { ...m.cpu, per_gbps: perGbps(m.cpu, m.mbps) }),
    };
  };
  return { up: figures('up'), down: figures('down') };
}

interface Floor {
  port: number;
  stop(): Promise<void>;
}

const FLOOR_PORT = 5302;

/** The floor's three programs: the middle on the rendezvous host, the ends on a and b (both dialling out to it). */
async function startFloor(env: BenchEnv): Promise<Floor> {
  const a = `${RDV.host}:${RDV.port + 101}`;
  const b = `${RDV.host}:${RDV.port + 102}`;
  const started: ChildProcess[] = [];
  const stop = async () => {
    await Promise.all(started.map((c) => stopProcess(c, 1000)));
  };
  try {
    for (const [node, args] of [
      ['rdv', ['relay', '--a', a, '--b', b]],
      ['b', ['serve', '--relay', b, '--local', `127.0.0.1:${IPERF_PORT}`]],
      ['a', ['visit', '--listen', `127.0.0.1:${FLOOR_PORT}`, '--relay', a]],
    ] as const) {
      started.push((await env.spawnTool(node, TOOL.relayFloor, [...args], 'ready', 10_000)).child);
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return { port: FLOOR_PORT, stop };
}

export async function benchRelay(ctx: Ctx): Promise<SectionResult> {
  const { env, args, say } = ctx;
  const lab = env.lab;
  const visit = await env.startVisit('iperf', { mode: 'relay' });
  const res: SectionResult = {};
  let ssh: SshForward | null = null;
  let floor: Floor | null = null;
  try {
    try {
      floor = await startFloor(env);
    } catch (e) {
      res.floor_error = (e as Error).message;
      say(`  relay floor unavailable: ${(e as Error).message}`);
    }
    if (!['sshd', 'ssh', 'ssh-keygen'].some((b) => ctx.missing.has(b))) {
      try {
        ssh = await startSshR(lab, ctx.tmp, IPERF_PORT);
      } catch (e) {
        res.ssh_error = (e as Error).message;
        say(`  ssh -R reference unavailable: ${(e as Error).message}`);
      }
    }
    const ours: Record<Dir, Measured[]> = { up: [], down: [] };
    const ref: Record<Dir, Measured[]> = { up: [], down: [] };
    const floorRuns: Record<Dir, Measured[]> = { up: [], down: [] };
    let busy = 0;
    for (let i = 0; i < args.runs; i++) {
      for (const dir of ['up', 'down'] as const) {
        const iperfOpts = { reverse: dir === 'down', seconds: args.seconds, ensureServer: () => env.ensureIperf() };
        const o = await measured(() => iperf(lab, 'a', '127.0.0.1', visit.port, iperfOpts), args.seconds);
        ours[dir].push(o);
        busy += o.busyRetries ?? 0;
        say(`  run ${i + 1} ${dir.padEnd(4)} ours (relay) ${o.mbps.toFixed(0)} Mbit/s${cpuLine(o)}`);
        if (ssh) {
          const s = await measured(() => iperf(lab, 'a', ssh!.host, ssh!.port, iperfOpts), args.seconds);
          ref[dir].push(s);
          say(`  run ${i + 1} ${dir.padEnd(4)} ssh -R ${s.mbps.toFixed(0)} Mbit/s${cpuLine(s)}`);
        }
        if (floor) {
          const b = await measured(() => iperf(lab, 'a', '127.0.0.1', floor!.port, iperfOpts), args.seconds);
          floorRuns[dir].push(b);
          say(`  run ${i + 1} ${dir.padEnd(4)} floor ${b.mbps.toFixed(0)} Mbit/s${cpuLine(b)}`);
        }
      }
    }
    const mbps = (runs: Record<Dir, Measured[]>) => ({ up: runs.up.map((m) => m.mbps), down: runs.down.map((m) => m.mbps) });
    const o = mbps(ours);
    const r = mbps(ref);
    const fl = mbps(floorRuns);
    const cpu = { ours: cpuSummary(ours), ssh_r: cpuSummary(ref), floor: cpuSummary(floorRuns) };
    const why = (d: CpuFigures) => `${d.busy_cores_per_gbps ?? 'n/a'} cores per Gbit/s, ${d.idle_cores ?? 'n/a'} cores idle`;
    for (const dir of ['up', 'down'] as const) {
      say(`  cpu ${dir.padEnd(4)} ours ${why(cpu.ours[dir])}${ssh ? `; ssh -R ${why(cpu.ssh_r[dir])}` : ''}${floor ? `; floor ${why(cpu.floor[dir])}` : ''}`);
    }
    Object.assign(res, {
      ours_mbps: { up: jsonNum(median(o.up)), down: jsonNum(median(o.down)), runs: o },
      ssh_r_mbps: { up: jsonNum(median(r.up)), down: jsonNum(median(r.down)), runs: r },
      ratio: { up: jsonNum(ratio(median(o.up), median(r.up)), 3), down: jsonNum(ratio(median(o.down), median(r.down)), 3) },
      // The design's floor on this machine: end-to-end sealed 64 KiB records
      // through a byte relay, with our code and nothing else (no KCP, mux or
      // session). What it reaches against ssh -R bounds what the design can.
      floor_mbps: { up: jsonNum(median(fl.up)), down: jsonNum(median(fl.down)), runs: fl },
      floor_vs_ssh_r: { up: jsonNum(ratio(median(fl.up), median(r.up)), 3), down: jsonNum(ratio(median(fl.down), median(r.down)), 3) },
      ours_vs_floor: { up: jsonNum(ratio(median(o.up), median(fl.up)), 3), down: jsonNum(ratio(median(o.down), median(fl.down)), 3) },
      // Why the ratio is what it is: CPU per Gbit/s moved and cores left idle, per contender and direction.
      cpu,
      path: env.pathOf(visit) ?? null,
      iperf_server_restarts: [...env.iperfRestarts],
      iperf_seconds: args.seconds,
      // iperf3 said "busy" (previous test's connections not yet closed through the tunnel), retried after 250 ms each
      iperf_busy_retries_ours: busy,
    });
  } finally {
    await ssh?.stop();
    await floor?.stop();
    await stopProcess(visit.child, 3000);
  }
  return res;
}
