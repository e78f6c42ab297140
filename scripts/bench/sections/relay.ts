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
interface Measured {
  mbps: number;
  cpu: CpuBreakdown | null;
}

/**
 * One iperf3 run with the machine's CPU sampled inside it (from 1.5 s in to
 * 1 s before the end), when the run is long enough for that window.
 */
async function measured(
  run: () => Promise<{ mbps: number }>,
  seconds: number,
): Promise<Measured & { busyRetries?: number }> {
  const window = (seconds - 2.5) * 1000;
  const cpu = window >= 1000 ? measureCpu(1500, window).catch(() => null) : Promise.resolve(null);
  const r = await run();
  return { ...r, cpu: await cpu };
}

/** One line: how busy the machine was and what each program cost per Gbit/s. */
function cpuLine(m: Measured): string {
  if (!m.cpu) return '';
  const g = perGbps(m.cpu, m.mbps);
  const roles = Object.entries(g.by_role)
    .filter(([r, v]) => r !== 'bench' && v >= 0.005)
    .map(([r, v]) => `${r} ${v.toFixed(2)}`)
    .join(', ');
  return (
    ` | cpu ${m.cpu.machine.busy.toFixed(2)}/${m.cpu.cores} cores busy (softirq ` +
    `${m.cpu.machine.softirq.toFixed(2)}); per Gbit/s ${g.busy.toFixed(2)} cores: ${roles}`
  );
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

/** One thing measured with iperf3: its runs per direction, and how the output names it. */
interface Contender {
  name: string;
  label: string;
  host: string;
  port: number;
  runs: Record<Dir, Measured[]>;
}

function contender(name: string, label: string, host: string, port: number): Contender {
  return { name, label, host, port, runs: { up: [], down: [] } };
}

type Mbps = Record<Dir, number[]>;
const mbpsOf = (runs: Record<Dir, Measured[]>): Mbps => ({
  up: runs.up.map((m) => m.mbps),
  down: runs.down.map((m) => m.mbps),
});
const medians = (x: Mbps) => ({ up: jsonNum(median(x.up)), down: jsonNum(median(x.down)), runs: x });
const ratios = (a: Mbps, b: Mbps) => ({
  up: jsonNum(ratio(median(a.up), median(b.up)), 3),
  down: jsonNum(ratio(median(a.down), median(b.down)), 3),
});

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
    // Interleaved run by run, in this order; the references only if they started.
    const ours = contender('ours', 'ours (relay)', '127.0.0.1', visit.port);
    const ref = contender('ssh -R', 'ssh -R', ssh?.host ?? '', ssh?.port ?? 0);
    const flr = contender('floor', 'floor', '127.0.0.1', floor?.port ?? 0);
    const contenders = [ours, ...(ssh ? [ref] : []), ...(floor ? [flr] : [])];
    let busy = 0;
    for (let i = 0; i < args.runs; i++) {
      for (const dir of ['up', 'down'] as const) {
        const iperfOpts = { reverse: dir === 'down', seconds: args.seconds, ensureServer: () => env.ensureIperf() };
        for (const c of contenders) {
          const m = await measured(() => iperf(lab, 'a', c.host, c.port, iperfOpts), args.seconds);
          c.runs[dir].push(m);
          if (c === ours) busy += m.busyRetries ?? 0;
          say(`  run ${i + 1} ${dir.padEnd(4)} ${c.label} ${m.mbps.toFixed(0)} Mbit/s${cpuLine(m)}`);
        }
      }
    }
    const cpu = { ours: cpuSummary(ours.runs), ssh_r: cpuSummary(ref.runs), floor: cpuSummary(flr.runs) };
    const cpuOf = new Map([
      [ours, cpu.ours],
      [ref, cpu.ssh_r],
      [flr, cpu.floor],
    ]);
    const why = (d: CpuFigures) =>
      `${d.busy_cores_per_gbps ?? 'n/a'} cores per Gbit/s, ${d.idle_cores ?? 'n/a'} cores idle`;
    for (const dir of ['up', 'down'] as const) {
      say(`  cpu ${dir.padEnd(4)} ${contenders.map((c) => `${c.name} ${why(cpuOf.get(c)![dir])}`).join('; ')}`);
    }
    const o = mbpsOf(ours.runs);
    const r = mbpsOf(ref.runs);
    const fl = mbpsOf(flr.runs);
    Object.assign(res, {
      ours_mbps: medians(o),
      ssh_r_mbps: medians(r),
      ratio: ratios(o, r),
      // The design's floor on this machine: end-to-end sealed 64 KiB records
      // through a byte relay, with our code and nothing else (no KCP, mux or
      // session). What it reaches against ssh -R bounds what the design can.
      floor_mbps: medians(fl),
      floor_vs_ssh_r: ratios(fl, r),
      ours_vs_floor: ratios(o, fl),
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
