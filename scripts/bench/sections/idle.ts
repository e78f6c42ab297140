/**
 * Scale: 100 idle tunnels. One process on host a runs 100 VisitPeers (the class
 * behind `peer visit`: own control connection, UDP socket and session each) to
 * the one `peer serve` on host b. Once every tunnel has carried an echo and
 * settled (direct path), the CPU time of both processes is sampled from
 * /proc/PID/stat over 30 s, with their RSS.
 */
import { stopProcess } from '../../netns-lab.js';
import type { Ctx, SectionResult } from '../context.js';
import { RDV, TOOL } from '../env.js';
import { cpuPercent, rssMb } from '../procstat.js';
import { jsonNum } from '../stats.js';

export async function benchIdle(ctx: Ctx, count = 100, sampleMs = 30_000): Promise<SectionResult> {
  const { env, args, say } = ctx;
  const serve = env.serves.get('svc')!;
  const rssServeBefore = rssMb(serve.pid!);
  const t0 = Date.now();
  const mv = await env.spawnTool('a', TOOL.multiVisit, ['--server', `${RDV.host}:${RDV.port}`, '--name', 'svc', '--count', String(count), '--parallel', '5'], 'ready', 240_000);
  try {
    say(`  ${mv.first.sessions} tunnels open in ${Date.now() - t0} ms, ${mv.first.direct} on the direct path; settling 5 s`);
    await new Promise((r) => setTimeout(r, 5000));
    const pids = [serve.pid!, mv.child.pid!, env.rdv.pid!];
    // Several windows, so one noisy moment on the shared machine shows as an outlier.
    const windows = Math.max(1, args.runs);
    const per: number[][] = [];
    for (let i = 0; i < windows; i++) per.push(await cpuPercent(pids, args.runs === 1 ? Math.min(sampleMs, 15_000) : sampleMs / windows));
    const mean = (k: number) => per.reduce((a, w) => a + w[k]!, 0) / per.length;
    const serveCpu = mean(0);
    const visitCpu = mean(1);
    const r = {
      tunnels: mv.first.sessions,
      direct: mv.first.direct,
      sample_s: Math.round((per.length * (args.runs === 1 ? Math.min(sampleMs, 15_000) : sampleMs / windows)) / 1000),
      serve_cpu_pct: jsonNum(serveCpu, 3),
      visitors_cpu_pct: jsonNum(visitCpu, 3),
      total_cpu_pct: jsonNum(serveCpu + visitCpu, 3),
      rendezvous_cpu_pct: jsonNum(mean(2), 3),
      windows_cpu_pct: per.map((w) => w.map((x) => jsonNum(x, 3))),
      serve_rss_mb: jsonNum(rssMb(serve.pid!), 1),
      serve_rss_before_mb: jsonNum(rssServeBefore, 1),
      visitors_rss_mb: jsonNum(rssMb(mv.child.pid!), 1),
      setup_ms: Date.now() - t0,
    };
    say(`  CPU over ${r.sample_s} s: serve ${r.serve_cpu_pct}%, visitors ${r.visitors_cpu_pct}% of one core; RSS serve ${r.serve_rss_mb} MB, visitors ${r.visitors_rss_mb} MB`);
    return r;
  } finally {
    await stopProcess(mv.child, 5000);
  }
}
