/**
 * Throughput under loss: iperf3 upload on the direct path with 0%, 1% and 10%
 * of datagrams dropped on both routers' WAN links (each direction
 * independently), as ratios to the lossless figure; the three are run in turn, run by run.
 */
import { eventsOf, stopProcess } from '../../netns-lab.js';
import type { Ctx, SectionResult } from '../context.js';
import { iperf } from '../iperf.js';
import { jsonNum, median, ratio } from '../stats.js';

export async function benchLoss(ctx: Ctx): Promise<SectionResult> {
  const { env, args, say } = ctx;
  const lab = env.lab;
  const visit = await env.startVisit('iperf');
  const runs: Record<string, number[]> = { '0': [], '1': [], '10': [] };
  const pathChanges: Record<string, number> = {};
  try {
    await env.waitDirect(visit);
    // Interleaved (0, 1, 10, 0, 1, 10, ...): the machine's load drifts, and the
    // ratio should compare figures taken under the same conditions.
    const before = eventsOf(visit.child, 'path').length;
    for (let i = 0; i < args.runs; i++) {
      for (const pct of [0, 1, 10]) {
        await lab.setLoss('ra', pct);
        await lab.setLoss('rb', pct);
        const r = await iperf(lab, 'a', '127.0.0.1', visit.port, {
          seconds: args.seconds,
          ensureServer: () => env.ensureIperf(),
        });
        runs[String(pct)].push(r.mbps);
        say(`  run ${i + 1} loss ${String(pct).padStart(2)}%: ${r.mbps.toFixed(1)} Mbit/s (path ${env.pathOf(visit)})`);
      }
    }
    pathChanges.all = eventsOf(visit.child, 'path').length - before;
  } finally {
    await lab.setLoss('ra', 0);
    await lab.setLoss('rb', 0);
    await stopProcess(visit.child, 3000);
  }
  const m = (k: string) => median(runs[k]);
  return {
    mbps: { loss0: jsonNum(m('0')), loss1: jsonNum(m('1')), loss10: jsonNum(m('10')) },
    ratio: { loss1: jsonNum(ratio(m('1'), m('0')), 3), loss10: jsonNum(ratio(m('10'), m('0')), 3) },
    // The same from each run's own triple, less sensitive to drift between runs.
    ratio_median_of_runs: {
      loss1: jsonNum(median(runs['1'].map((x, i) => x / runs['0'][i])), 3),
      loss10: jsonNum(median(runs['10'].map((x, i) => x / runs['0'][i])), 3),
    },
    runs,
    path_changes: pathChanges,
    direction: 'up (visitor -> server)',
    iperf_seconds: args.seconds,
  };
}
