/**
 * Connect time.
 *   cold first byte  = the issue's definition: a running visitor accepts a TCP
 *                      connection while no tunnel is open (tools/cold.ts closes
 *                      it first) -> first byte back from the service. The key
 *                      from --secret is already derived, as in any running visitor.
 *   process start    = VisitPeer start (no control connection, no session, scrypt
 *                      of the secret still to do) ->
 *                      first byte back from the service on a TCP connection made
 *                      as soon as the visitor listens (tools/cold.ts, in-process,
 *                      so node's own boot is not counted; relay-first: the first
 *                      byte normally goes over the relay)
 *   warm stream open = on that open tunnel: TCP connect -> first byte back
 *   time to direct   = VisitPeer start -> the `path` event with path=direct
 * and, for the whole CLI process (node boot included), spawn -> `ready` and
 * spawn -> `path` direct, from the log lines' timestamps.
 */
import { stopProcess, waitForEvent } from '../../netns-lab.js';
import type { Ctx, SectionResult } from '../context.js';
import { RDV, TOOL } from '../env.js';
import { jsonNum, median } from '../stats.js';

export async function benchConnect(ctx: Ctx): Promise<SectionResult> {
  const { env, args, say } = ctx;
  const cold: number[] = [];
  const processStart: number[] = [];
  const ready: number[] = [];
  const direct: number[] = [];
  const warm: number[] = [];
  let directMissing = 0;
  const phases: Record<string, number>[] = [];
  for (let i = 0; i < args.runs; i++) {
    const r = await env.tool(
      'a',
      TOOL.cold,
      ['--server', `${RDV.host}:${RDV.port}`, '--name', 'svc', '--warm', '20'],
      60_000,
    );
    cold.push(...(r.tunnelColdMs as number[]));
    processStart.push(Number(r.firstByteMs));
    ready.push(Number(r.readyMs));
    if (r.directMs === null) directMissing++;
    else direct.push(Number(r.directMs));
    warm.push(...(r.warmMs as number[]));
    phases.push(r.phases as Record<string, number>);
    say(
      `  run ${i + 1}: cold first byte (accept, no tunnel) ` +
        `${median(r.tunnelColdMs as number[]).toFixed(0)} ms, from process start ` +
        `${Number(r.firstByteMs).toFixed(0)} ms (ready ${Number(r.readyMs).toFixed(0)} ms), ` +
        `direct ${r.directMs === null ? 'never' : Number(r.directMs).toFixed(0) + ' ms'}, warm ` +
        `stream open ${median(r.warmMs as number[]).toFixed(2)} ms`,
    );
  }
  const procReady: number[] = [];
  const procDirect: number[] = [];
  for (let i = 0; i < args.runs; i++) {
    const t0 = Date.now();
    const v = await env.startVisit('svc');
    try {
      const rd = await waitForEvent(v.child, 'ready', 1);
      procReady.push(Date.parse(String(rd.time)) - t0);
      const pd = await waitForEvent(v.child, (o) => o.event === 'path' && o.path === 'direct', 10_000).catch(
        () => null,
      );
      if (pd) procDirect.push(Date.parse(String(pd.time)) - t0);
    } finally {
      await stopProcess(v.child, 3000);
    }
  }
  const phaseMedians = Object.keys(phases[0] ?? {}).map((k): [string, number] => [
    k,
    Math.round(median(phases.map((p) => p[k]))),
  ]);
  say(`  cold phases (median ms): ${JSON.stringify(Object.fromEntries(phaseMedians))}`);
  say(
    `  CLI process (node boot included): spawn -> ready ${median(procReady).toFixed(0)} ms, ` +
      `spawn -> direct ${median(procDirect).toFixed(0)} ms`,
  );
  return {
    cold_first_byte_ms: jsonNum(median(cold)),
    // From a fresh visitor's start (scrypt of the secret included, node boot not).
    process_start_first_byte_ms: jsonNum(median(processStart)),
    session_ready_ms: jsonNum(median(ready)),
    time_to_direct_ms: jsonNum(median(direct)),
    direct_missing_runs: directMissing,
    warm_stream_first_byte_ms: { median: jsonNum(median(warm), 3), samples: warm.length },
    process: {
      spawn_to_ready_ms: jsonNum(median(procReady)),
      spawn_to_direct_ms: jsonNum(median(procDirect)),
      runs: { ready: procReady, direct: procDirect },
    },
    // Where the cold time goes (medians, ms); see tools/cold.ts for the phase boundaries.
    cold_phases_ms: Object.fromEntries(
      Object.keys(phases[0] ?? {}).map((k) => [k, jsonNum(median(phases.map((p) => p[k])))]),
    ),
    runs: { cold, processStart, ready, direct },
  };
}
