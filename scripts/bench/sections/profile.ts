/**
 * Where the CPU goes under bulk load (node --cpu-prof): serve and visit on the
 * direct path during an iperf3 upload and download, then serve, visit and the
 * rendezvous (embedded relay) on the relay path. The processes are restarted
 * with profiling on and stopped with SIGTERM, which makes V8 write the profile.
 */
import { readdirSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { stopProcess, waitForEvent, lineCount } from '../../netns-lab.js';
import type { Ctx, SectionResult } from '../context.js';
import { IPERF_PORT, RDV, TOOL } from '../env.js';
import { iperf } from '../iperf.js';
import { summarizeProfile, type ProfileSummary } from '../cpuprofile.js';
import { sleep } from '../../../src/util/backoff.js';

function summarizeDir(dir: string): ProfileSummary | { error: string } {
  const f = readdirSync(dir).filter((x) => x.endsWith('.cpuprofile'));
  if (f.length === 0) return { error: `no profile written in ${dir}` };
  return summarizeProfile(join(dir, f[0]));
}

function show(say: (s: string) => void, label: string, p: ProfileSummary | { error: string }): void {
  if ('error' in p) return say(`  ${label}: ${p.error}`);
  const areas = Object.entries(p.areas)
    .slice(0, 8)
    .map(([k, v]) => `${k} ${v}%`)
    .join(', ');
  say(`  ${label}: ${p.busy_ms} ms busy: ${areas}`);
  for (const t of p.top.slice(0, 8)) say(`      ${t}`);
}

export async function benchProfile(ctx: Ctx): Promise<SectionResult> {
  const { env, args, say } = ctx;
  const lab = env.lab;
  const out: SectionResult = {};
  const dirs = (tag: string) => ['serve', 'visit', 'rdv'].map((w) => join(ctx.tmp, `prof-${tag}-${w}`));

  // Direct path.
  {
    const [ds, dv] = dirs('direct');
    await mkdir(ds, { recursive: true });
    await mkdir(dv, { recursive: true });
    await env.startServe('iperf', `127.0.0.1:${IPERF_PORT}`, { cpuProfDir: ds });
    const v = await env.startVisit('iperf', { cpuProfDir: dv });
    await env.waitDirect(v);
    const up = await iperf(lab, 'a', '127.0.0.1', v.port, {
      seconds: args.seconds,
      ensureServer: () => env.ensureIperf(),
    });
    const down = await iperf(lab, 'a', '127.0.0.1', v.port, {
      seconds: args.seconds,
      reverse: true,
      ensureServer: () => env.ensureIperf(),
    });
    say(`  profiled direct: up ${up.mbps.toFixed(0)} Mbit/s, down ${down.mbps.toFixed(0)} Mbit/s`);
    await stopProcess(v.child, 5000);
    await env.startServe('iperf', `127.0.0.1:${IPERF_PORT}`); // stops (and so flushes) the profiled one
    out.direct = {
      up_mbps: Math.round(up.mbps),
      down_mbps: Math.round(down.mbps),
      serve: summarizeDir(ds),
      visit: summarizeDir(dv),
    };
    show(say, 'direct serve', (out.direct as Record<string, ProfileSummary>).serve);
    show(say, 'direct visit', (out.direct as Record<string, ProfileSummary>).visit);
  }

  // Relay path, with the rendezvous (embedded relay) profiled as well.
  {
    const [ds, dv, dr] = dirs('relay');
    for (const d of [ds, dv, dr]) await mkdir(d, { recursive: true });
    const restartRdv = async (profDir?: string) => {
      await stopProcess(env.rdv, 5000);
      const marks = [...env.serves.values()].map((s) => [s, lineCount(s)] as const);
      env.rdv = env.startRendezvous({ cpuProfDir: profDir });
      await waitForEvent(env.rdv, 'ready', 20_000);
      // Serves reconnect on their own (backoff from 0.5 s) and say `ready` again.
      await Promise.all(marks.map(([s, after]) => waitForEvent(s, 'ready', 30_000, { after })));
    };
    await restartRdv(dr);
    await env.startServe('iperf', `127.0.0.1:${IPERF_PORT}`, { cpuProfDir: ds });
    const v = await env.startVisit('iperf', { mode: 'relay', cpuProfDir: dv });
    const up = await iperf(lab, 'a', '127.0.0.1', v.port, {
      seconds: args.seconds,
      ensureServer: () => env.ensureIperf(),
    });
    const down = await iperf(lab, 'a', '127.0.0.1', v.port, {
      seconds: args.seconds,
      reverse: true,
      ensureServer: () => env.ensureIperf(),
    });
    say(`  profiled relay: up ${up.mbps.toFixed(0)} Mbit/s, down ${down.mbps.toFixed(0)} Mbit/s`);
    await stopProcess(v.child, 5000);
    await env.startServe('iperf', `127.0.0.1:${IPERF_PORT}`);
    await restartRdv();
    out.relay = {
      up_mbps: Math.round(up.mbps),
      down_mbps: Math.round(down.mbps),
      serve: summarizeDir(ds),
      visit: summarizeDir(dv),
      rendezvous: summarizeDir(dr),
    };
    for (const w of ['serve', 'visit', 'rendezvous'])
      show(say, `relay ${w}`, (out.relay as Record<string, ProfileSummary>)[w]);
  }

  // 500 concurrent streams: where the time goes when many small streams share one session.
  {
    const [ds, dv] = dirs('streams');
    for (const d of [ds, dv]) await mkdir(d, { recursive: true });
    await env.startServe('svc', `127.0.0.1:${env.svcPort}`, { cpuProfDir: ds });
    const v = await env.startVisit('svc', { cpuProfDir: dv });
    await env.waitDirect(v);
    const r = await env.tool(
      'a',
      TOOL.streams,
      ['--to', `127.0.0.1:${v.port}`, '--count', '500', '--bytes', '65536'],
      200_000,
    );
    say(`  profiled streams: ${r.exact}/500 exact in ${r.ms} ms`);
    await stopProcess(v.child, 5000);
    await env.startServe('svc', `127.0.0.1:${env.svcPort}`);
    out.streams = { ms: r.ms, serve: summarizeDir(ds), visit: summarizeDir(dv) };
    for (const w of ['serve', 'visit']) show(say, `streams ${w}`, (out.streams as Record<string, ProfileSummary>)[w]);
  }

  // 100 idle tunnels: what the serve process does when nothing is sent.
  {
    const [ds] = dirs('idle');
    await mkdir(ds, { recursive: true });
    const svc = await env.startServe('svc', `127.0.0.1:${env.svcPort}`, { cpuProfDir: ds });
    const mv = await env.spawnTool(
      'a',
      TOOL.multiVisit,
      ['--server', `${RDV.host}:${RDV.port}`, '--name', 'svc', '--count', '100', '--parallel', '5'],
      'ready',
      240_000,
    );
    await sleep(15_000);
    await stopProcess(mv.child, 5000);
    void svc;
    await env.startServe('svc', `127.0.0.1:${env.svcPort}`);
    out.idle = { tunnels: mv.first.sessions, serve: summarizeDir(ds) };
    show(say, 'idle serve (100 tunnels, 15 s)', (out.idle as Record<string, ProfileSummary>).serve);
  }
  return out;
}
