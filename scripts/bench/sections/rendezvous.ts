/**
 * Scale: a rendezvous with 10,000 registered serve peers. A fresh rendezvous
 * on rdv's loopback (127.0.0.1:7100) and one load-generator process
 * (tools/rdv-load.ts) with 10,000 control connections doing hello + signed
 * register; then simulated visitors ask for sessions to random names and the
 * simulated servers accept, several rounds of a few seconds. RSS is read from
 * /proc every 250 ms.
 */
import { stopProcess, waitForEvent } from '../../netns-lab.js';
import type { Ctx, SectionResult } from '../context.js';
import { TOOL } from '../env.js';
import { cpuSeconds, rssMb } from '../procstat.js';
import { jsonNum, median } from '../stats.js';
import { CLI } from '../../netns-lab.js';
import { sleep } from '../../../src/util/backoff.js';

export async function benchRendezvous(ctx: Ctx, peers = 10_000): Promise<SectionResult> {
  const { env, args, say } = ctx;
  const lab = env.lab;
  const rdv = lab.spawn('rdv', [
    process.execPath,
    CLI.rendezvous,
    '--listen',
    '127.0.0.1:7100',
    '--log-format',
    'json',
    '--log-level',
    'info',
  ]);
  let gen: Awaited<ReturnType<typeof env.spawnTool>> | null = null;
  let maxRss = 0;
  const sampler = setInterval(() => {
    try {
      maxRss = Math.max(maxRss, rssMb(rdv.pid!));
    } catch {
      /* exited */
    }
  }, 250);
  try {
    await waitForEvent(rdv, 'ready', 20_000);
    await sleep(500);
    const rssIdle = rssMb(rdv.pid!);
    const t0 = Date.now();
    const rounds = Math.max(1, args.runs);
    gen = await env.spawnTool(
      'rdv',
      TOOL.rdvLoad,
      [
        '--server',
        '127.0.0.1:7100',
        '--peers',
        String(peers),
        '--rounds',
        String(rounds),
        '--intro-ms',
        args.runs === 1 ? '3000' : '4000',
        '--hold-ms',
        '3000',
        '--visitors',
        '40',
      ],
      'registered',
      300_000,
    );
    say(`  ${peers} serve peers registered in ${gen.first.ms} ms`);
    await sleep(2500);
    const rssRegistered = rssMb(rdv.pid!);
    const cpu0 = cpuSeconds(rdv.pid!);
    const c0 = Date.now();
    const res = await waitForEvent(gen.child, 'result', 120_000);
    const cpuIntro = cpuSeconds(rdv.pid!) - cpu0;
    const introWall = (Date.now() - c0) / 1000;
    const rssAfter = rssMb(rdv.pid!);
    const rr = res.rounds as {
      perSecond: number;
      introductions: number;
      errors: Record<string, number>;
      latencyMs: { p50: number; p99: number };
    }[];
    for (const [i, r] of rr.entries())
      say(
        `  round ${i + 1}: ${r.perSecond} introductions/s (p50 ${r.latencyMs.p50?.toFixed(1)} ms, errors ${JSON.stringify(r.errors)})`,
      );
    say(
      `  rendezvous RSS: ${rssIdle.toFixed(0)} MB idle, ${rssRegistered.toFixed(0)} MB with ${peers} peers, ${maxRss.toFixed(0)} MB max`,
    );
    return {
      peers,
      registered_alive: res.alive,
      register_ms: gen.first.ms,
      rss_mb: {
        idle: jsonNum(rssIdle, 1),
        registered: jsonNum(rssRegistered, 1),
        after_introductions: jsonNum(rssAfter, 1),
        max: jsonNum(maxRss, 1),
      },
      introductions_per_s: jsonNum(median(rr.map((r) => r.perSecond)), 0),
      introduction_latency_p50_ms: jsonNum(median(rr.map((r) => r.latencyMs.p50)), 2),
      rendezvous_cpu_pct_during_introductions: jsonNum((cpuIntro / introWall) * 100, 1),
      rounds: rr,
      setup_ms: Date.now() - t0,
    };
  } finally {
    clearInterval(sampler);
    if (gen) await stopProcess(gen.child, 3000);
    await stopProcess(rdv, 3000);
  }
}
