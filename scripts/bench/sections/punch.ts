/**
 * Punching success (issue 21): for each pair of lab NAT types, `trials` new
 * serve + visit processes in one lab per pair; each trial ends direct (time to
 * direct: the visitor's first `punch_start` -> its first `path` direct), or on
 * the relay (both peers logged `punch_skipped`, or no direct path within
 * TRIAL_MS). Records the success rate and p50/p95 time to direct per pair.
 *
 * Goal (issue 21): 100% for every pair that can be punched; p95 under 1 s for
 * the easy pairs and under 3 s for the hard ones (a side symmetric or sequential).
 */
import type { ChildProcess } from 'node:child_process';
import { Lab, eventsOf, run, stopProcess, waitForEvent, type RouterSpec, type RouterType } from '../../netns-lab.js';
import type { Ctx, SectionResult } from '../context.js';
import { jsonNum, percentile } from '../stats.js';

/**
 * A benched site: a lab router type, or `upnp`, a symmetric NAT that runs
 * miniupnpd (UPnP IGD, NAT-PMP, PCP), so the peer behind it maps its port.
 */
export type PunchType = RouterType | 'upnp';
/** NAT types benched, visitor x server over unordered pairs. */
export const PUNCH_TYPES: readonly PunchType[] = ['public', 'fullcone', 'cone', 'symmetric', 'sequential'];
/** Benched only where miniupnpd is installed (apt-get install miniupnpd-nftables). */
export const PUNCH_EXTRA_TYPES: readonly PunchType[] = ['upnp'];
/** One trial waits at most this long for a direct path (punching gives up within 15 s). */
const TRIAL_MS = 20_000;
/** Trials per pair unless --trials says otherwise. */
export const PUNCH_TRIALS = 20;

const RDV = { host: '203.0.113.10', port: 7000 };
const RDV_ALT = '203.0.113.11:7001';
const SECRET = 'bench punch secret';
/** A side symmetric or sequential makes a pair hard; a UPnP router maps a port, so it is easy. */
const hard = (t: PunchType) => t === 'symmetric' || t === 'sequential';
/** Pairs no punch can open: both random, or random against sequential (the relay is the plan). */
const unpunchable = (a: PunchType, b: PunchType) => hard(a) && hard(b) && (a === 'symmetric' || b === 'symmetric');
const siteSpec = (t: PunchType): RouterType | RouterSpec => (t === 'upnp' ? { type: 'symmetric', miniupnpd: true } : t);

export async function benchPunch(ctx: Ctx): Promise<SectionResult> {
  const { say } = ctx;
  const trials = ctx.args.trials ?? PUNCH_TRIALS;
  const haveMiniupnpd = (await run('miniupnpd', ['--version'], { timeoutMs: 5000 })).code === 0;
  if (!haveMiniupnpd) say('  (miniupnpd is not installed: the upnp pairs are left out)');
  const types = [...PUNCH_TYPES, ...(haveMiniupnpd ? PUNCH_EXTRA_TYPES : [])];
  const pairs: Record<string, unknown> = {};
  for (let i = 0; i < types.length; i++) {
    for (let j = i; j < types.length; j++) {
      const [a, b] = [types[i], types[j]];
      const r = await benchPair(a, b, trials);
      const name = `${a}-${b}`;
      const goalMs = hard(a) || hard(b) ? 3000 : 1000;
      pairs[name] = {
        trials,
        direct: r.times.length,
        success_rate: jsonNum(r.times.length / trials, 3),
        punchable: !unpunchable(a, b),
        p50_ms: r.times.length ? jsonNum(percentile(r.times, 50), 0) : null,
        p95_ms: r.times.length ? jsonNum(percentile(r.times, 95), 0) : null,
        goal_p95_ms: unpunchable(a, b) ? null : goalMs,
        visitor_plan: r.plan,
      };
      say(
        `  ${name.padEnd(22)} direct ${r.times.length}/${trials}` +
          (r.times.length
            ? `, to direct p50 ${percentile(r.times, 50).toFixed(0)} ms p95 ${percentile(r.times, 95).toFixed(0)} ms`
            : '') +
          ` (visitor plan ${r.plan ?? '-'})`,
      );
    }
  }
  return { trials_per_pair: trials, pairs };
}

async function benchPair(a: PunchType, b: PunchType, trials: number): Promise<{ times: number[]; plan?: string }> {
  const lab = await Lab.up({ topology: { a: siteSpec(a), b: siteSpec(b) } });
  const times: number[] = [];
  let plan: string | undefined;
  try {
    const rdv = lab.spawnCli('rdv', 'rendezvous', [
      '--listen',
      `${RDV.host}:${RDV.port}`,
      '--alt-udp',
      RDV_ALT,
      '--log-format',
      'json',
    ]);
    await waitForEvent(rdv, 'ready', 15_000);
    const common = ['--server', `${RDV.host}:${RDV.port}`, '--secret', SECRET, '--no-admin'];
    const log = ['--log-format', 'json', '--log-level', 'debug'];
    for (let i = 0; i < trials; i++) {
      let serve: ChildProcess | null = null;
      let visit: ChildProcess | null = null;
      try {
        serve = lab.spawnCli('b', 'peer', ['serve', '--name', 'svc', '--local', '127.0.0.1:9', ...common, ...log]);
        await waitForEvent(serve, 'ready', 20_000);
        visit = lab.spawnCli('a', 'peer', ['visit', 'svc', '--bind', '127.0.0.1:0', ...common, ...log]);
        const v = visit;
        const s = serve;
        const outcome = await Promise.race([
          waitForEvent(v, (o) => o.event === 'path' && o.path === 'direct', TRIAL_MS).then((e) => ({ direct: e })),
          Promise.all([waitForEvent(v, 'punch_skipped', TRIAL_MS), waitForEvent(s, 'punch_skipped', TRIAL_MS)]).then(
            () => ({ direct: null }),
          ),
        ]).catch(() => ({ direct: null }));
        plan ??=
          (eventsOf(v, 'punch_start')[0]?.plan as string | undefined) ??
          (eventsOf(v, 'punch_skipped').length ? 'none' : undefined);
        const start = eventsOf(v, 'punch_start')[0];
        if (outcome.direct && start)
          times.push(Date.parse(String(outcome.direct.time)) - Date.parse(String(start.time)));
      } finally {
        await Promise.all([visit && stopProcess(visit, 3000), serve && stopProcess(serve, 3000)]);
      }
    }
  } finally {
    await lab.down();
  }
  return { times, plan };
}
