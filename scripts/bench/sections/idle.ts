/**
 * Scale: 100 idle tunnels. One process on host a runs 100 VisitPeers (the class
 * behind `peer visit`: own control connection, UDP socket and session each) to
 * the one `peer serve` on host b. Once every tunnel has carried an echo and
 * settled (direct path, then 15 s), the CPU time of both processes is sampled
 * from /proc/PID/stat in five 10 s windows; the figure is the median window.
 */
import { stopProcess } from '../../netns-lab.js';
import type { Ctx, SectionResult } from '../context.js';
import { RDV, TOOL } from '../env.js';
import { cpuPercent, rssMb } from '../procstat.js';
import { jsonNum, median } from '../stats.js';
import { sleep } from '../../../src/util/backoff.js';

export async function benchIdle(ctx: Ctx, count = 100, sampleMs = 50_000, settleMs = 15_000): Promise<SectionResult> {
  const { env, args, say } = ctx;
  const serve = env.serves.get('svc')!;
  const rssServeBefore = rssMb(serve.pid!);
  const t0 = Date.now();
  const mv = await env.spawnTool(
    'a',
    TOOL.multiVisit,
    ['--server', `${RDV.host}:${RDV.port}`, '--name', 'svc', '--count', String(count), '--parallel', '5'],
    'ready',
    240_000,
  );
  try {
    // Settle first: once set-up stops allocating, V8's memory reducer runs a
    // few full GCs (0.1-0.3 s of CPU, once); that is start-up work, not idling.
    say(
      `  ${mv.first.sessions} tunnels open in ${Date.now() - t0} ms, ${mv.first.direct} on the direct path; settling ${settleMs / 1000} s`,
    );
    await sleep(settleMs);
    const pids = [serve.pid!, mv.child.pid!, env.rdv.pid!];
    // Several windows, each one "run": the figure is their median, as for every
    // other figure, so one noisy moment on the shared machine does not decide it.
    const windows = args.runs === 1 ? 1 : 5;
    const windowMs = args.runs === 1 ? Math.min(sampleMs, 15_000) : sampleMs / windows;
    const per: number[][] = [];
    for (let i = 0; i < windows; i++) per.push(await cpuPercent(pids, windowMs));
    const mid = (k: number) => median(per.map((w) => w[k]));
    const serveCpu = mid(0);
    const visitCpu = mid(1);
    const totalCpu = median(per.map((w) => w[0] + w[1]));
    const r = {
      tunnels: mv.first.sessions,
      direct: mv.first.direct,
      settle_s: settleMs / 1000,
      sample_s: Math.round((per.length * windowMs) / 1000),
      window_s: windowMs / 1000,
      serve_cpu_pct: jsonNum(serveCpu, 3),
      visitors_cpu_pct: jsonNum(visitCpu, 3),
      total_cpu_pct: jsonNum(totalCpu, 3),
      total_cpu_pct_mean: jsonNum(per.reduce((a, w) => a + w[0] + w[1], 0) / per.length, 3),
      rendezvous_cpu_pct: jsonNum(mid(2), 3),
      windows_cpu_pct: per.map((w) => w.map((x) => jsonNum(x, 3))),
      serve_rss_mb: jsonNum(rssMb(serve.pid!), 1),
      serve_rss_before_mb: jsonNum(rssServeBefore, 1),
      visitors_rss_mb: jsonNum(rssMb(mv.child.pid!), 1),
      setup_ms: Date.now() - t0,
    };
    say(
      `  CPU over ${r.sample_s} s: serve ${r.serve_cpu_pct}%, visitors ${r.visitors_cpu_pct}% of one core; RSS serve ${r.serve_rss_mb} MB, visitors ${r.visitors_rss_mb} MB`,
    );
    return r;
  } finally {
    await stopProcess(mv.child, 5000);
  }
}
