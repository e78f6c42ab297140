#!/usr/bin/env node
/**
 * `npm run bench`: the tunnel against what people would use instead, in one
 * netns lab (two cone NATs, the rendezvous on the "internet"), in one run.
 * Prints a table of the goals of issue #6 and writes bench/results.json
 * (read-modify-write: the "kcp" key of bench-kcp and sections not run stay).
 *
 *   npm run bench                      all sections, 3 runs each (about 8-10 minutes)
 *   npm run bench -- --quick           1 run each, shorter transfers
 *   npm run bench -- --only direct     one section (direct, relay, connect, latency, streams, idle,
 *                                      rendezvous, loss, profile, punch)
 *   npm run bench -- --only punch      punching success per NAT pair, 20 trials each (--trials N)
 *
 * Needs root (network namespaces). See docs/BENCHMARKS.md.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { missingPrerequisites, DIST_DIR, run } from './netns-lab.js';
import { parseBenchArgs, USAGE, type Section } from './bench/args.js';
import { ensureReferences } from './bench/deps.js';
import { BenchEnv } from './bench/env.js';
import { describeMachine } from './bench/machine.js';
import { loadAverage } from './bench/procstat.js';
import { formatTable, goalRows, mergeResults, readResults, writeResults } from './bench/report.js';
import type { Ctx, SectionResult } from './bench/context.js';
import { benchDirect } from './bench/sections/direct.js';
import { benchRelay } from './bench/sections/relay.js';
import { benchConnect } from './bench/sections/connect.js';
import { benchLatency } from './bench/sections/latency.js';
import { benchStreams } from './bench/sections/streams.js';
import { benchIdle } from './bench/sections/idle.js';
import { benchRendezvous } from './bench/sections/rendezvous.js';
import { benchLoss } from './bench/sections/loss.js';
import { benchPmtu } from './bench/sections/pmtu.js';
import { benchProfile } from './bench/sections/profile.js';
import { benchPunch } from './bench/sections/punch.js';
import { benchUdp } from './bench/sections/udp.js';

const RESULTS = resolve(DIST_DIR, '..', 'bench', 'results.json');

const RUNNERS: Record<Section, (ctx: Ctx) => Promise<SectionResult>> = {
  direct: benchDirect,
  relay: benchRelay,
  connect: benchConnect,
  latency: benchLatency,
  streams: (ctx) => benchStreams(ctx),
  idle: (ctx) => benchIdle(ctx),
  rendezvous: (ctx) => benchRendezvous(ctx),
  loss: benchLoss,
  pmtu: benchPmtu,
  udp: benchUdp,
  profile: benchProfile,
  punch: benchPunch,
};

async function main(): Promise<number> {
  if (process.argv.includes('--help') || process.argv.includes('-h')) {
    console.log(USAGE);
    return 0;
  }
  let args;
  try {
    args = parseBenchArgs(process.argv.slice(2));
  } catch (e) {
    console.error((e as Error).message);
    return 2;
  }
  const why = await missingPrerequisites();
  if (why) {
    console.error(`bench: ${why}`);
    return 1;
  }
  const say = (s: string) => console.log(s);
  const started = Date.now();
  const machine = describeMachine();
  say(
    `bench: ${machine.cpus} x ${machine.cpu_model}, node ${machine.node}, load average ` +
      `${machine.load_average_start.join(' ')} (shared machine: figures are noisy)`,
  );
  const missing = await ensureReferences(args.install, say);
  const tmp = await mkdtemp(join(tmpdir(), 'hp-bench-'));
  let env: BenchEnv;
  try {
    env = await BenchEnv.up(say);
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
  const ctx: Ctx = { env, args, missing, tmp, say };
  const sections: Record<string, SectionResult> = {};
  const failed: Record<string, string> = {};
  const onSignal = () => {
    void env
      .down()
      .finally(() => rm(tmp, { recursive: true, force: true }))
      .finally(() => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    for (const s of args.only) {
      const t0 = Date.now();
      say(`\n== ${s} ==`);
      try {
        sections[s] = {
          ...(await RUNNERS[s](ctx)),
          seconds_taken: Math.round((Date.now() - t0) / 1000),
          load_average: loadAverage(),
        };
      } catch (e) {
        failed[s] = (e as Error).message;
        say(`  ${s} FAILED: ${(e as Error).message}`);
      }
    }
  } finally {
    await env.down();
    await rm(tmp, { recursive: true, force: true });
  }
  machine.load_average_end = loadAverage();
  const git = async (a: string[]) =>
    (await run('git', ['-C', resolve(DIST_DIR, '..'), ...a], { timeoutMs: 5000 })).stdout.trim();
  const meta = {
    // BENCH_COMMIT: set when benchmarking an exported tree (git archive) that has no .git.
    commit: process.env.BENCH_COMMIT || (await git(['rev-parse', '--short', 'HEAD'])),
    uncommitted_changes_in: (await git(['status', '--porcelain', '--', 'src', 'peer', 'rendezvous', 'relay']))
      .split('\n')
      .filter(Boolean)
      .map((l) => l.slice(3)),
    command: `npm run bench${process.argv.length > 2 ? ' -- ' + process.argv.slice(2).join(' ') : ''}`,
    runs: args.runs,
    iperf_seconds: args.seconds,
    sections_attempted: args.only,
    sections_run: Object.keys(sections),
    sections_failed: failed,
    duration_s: Math.round((Date.now() - started) / 1000),
    machine,
    topology: 'a cone NAT (ra) <-> internet with rendezvous 203.0.113.10/.11 <-> b cone NAT (rb)',
  };
  const merged = mergeResults(readResults(RESULTS), sections, meta);
  say('\n' + formatTable(goalRows(merged)));
  say(
    `\n(${meta.duration_s} s; load average ${machine.load_average_start.join(' ')} at ` +
      `start, ${machine.load_average_end.join(' ')} at end)`,
  );
  if (args.write) {
    writeResults(RESULTS, merged);
    say(`wrote ${RESULTS}`);
  }
  return Object.keys(failed).length ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    console.error(`bench: ${e instanceof Error ? e.stack : String(e)}`);
    process.exitCode = 1;
  },
);
