/**
 * Interactive latency: echo round trips of 32-byte messages through the tunnel,
 * idle and while a bulk stream of the same session saturates it upwards
 * (visitor -> server) or downwards (server -> visitor); on the direct path
 * (the goal's figure) and then on the relay (`relay`).
 */
import { stopProcess } from '../../netns-lab.js';
import type { Ctx, SectionResult } from '../context.js';
import { TOOL } from '../env.js';
import { jsonNum, median, percentile } from '../stats.js';

type Load = 'none' | 'up' | 'down';

/** Round trips idle and under load through one visitor, run by run. */
type Runs = Record<Load, { p50: number[]; p99: number[]; mbps: number[] }>;

export async function benchLatency(ctx: Ctx): Promise<SectionResult> {
  const direct = await measure(ctx, 'direct');
  // The same through the relay (issue 24): its windows are sized for the
  // relay's queues, and this is what an interactive stream pays for that.
  const relay = await measure(ctx, 'relay');
  return { ...summarise(direct), relay: summarise(relay) };
}

async function measure(ctx: Ctx, path: 'direct' | 'relay'): Promise<Runs> {
  const { env, args, say } = ctx;
  const visit = await env.startVisit('svc', path === 'relay' ? { mode: 'relay' } : {});
  const per: Runs = {
    none: { p50: [], p99: [], mbps: [] },
    up: { p50: [], p99: [], mbps: [] },
    down: { p50: [], p99: [], mbps: [] },
  };
  try {
    if (path === 'direct') await env.waitDirect(visit);
    for (let i = 0; i < args.runs; i++) {
      for (const load of ['none', 'up', 'down'] as Load[]) {
        const samples = load === 'none' ? 300 : 150;
        const r = await env.tool(
          'a',
          TOOL.rtt,
          [
            '--to',
            `127.0.0.1:${visit.port}`,
            '--samples',
            String(samples),
            '--load',
            load,
            '--gap-ms',
            load === 'none' ? '2' : '5',
            '--warm-ms',
            '1500',
          ],
          120_000,
        );
        const s = r.samples as number[];
        const mbps = Object.values(r.loadMbps as Record<string, number>)[0] ?? 0;
        per[load].p50.push(percentile(s, 50));
        per[load].p99.push(percentile(s, 99));
        per[load].mbps.push(mbps);
        say(
          `  run ${i + 1} ${path.padEnd(6)} load ${load.padEnd(4)}: ` +
            `rtt p50 ${percentile(s, 50).toFixed(2)} ms, p99 ${percentile(s, 99).toFixed(2)} ms` +
            `${load === 'none' ? '' : `, bulk ${mbps.toFixed(0)} Mbit/s`} (path ${env.pathOf(visit)})`,
        );
      }
    }
  } finally {
    await stopProcess(visit.child, 3000);
  }
  return per;
}

/** Pure: medians of the runs, and the extra round-trip time under load. */
function summarise(per: Runs): SectionResult {
  const fig = (l: Load) => ({
    p50_ms: jsonNum(median(per[l].p50), 3),
    p99_ms: jsonNum(median(per[l].p99), 3),
    ...(l === 'none' ? {} : { bulk_mbps: jsonNum(median(per[l].mbps)) }),
  });
  const extra = (l: Load) => median(per[l].p50) - median(per.none.p50);
  return {
    idle: fig('none'),
    load_up: fig('up'),
    load_down: fig('down'),
    extra_p50_ms: { up: jsonNum(extra('up'), 3), down: jsonNum(extra('down'), 3) },
    extra_p99_ms: {
      up: jsonNum(median(per.up.p99) - median(per.none.p99), 3),
      down: jsonNum(median(per.down.p99) - median(per.none.p99), 3),
    },
    runs: per,
  };
}
