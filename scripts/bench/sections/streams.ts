/** Scale: 500 concurrent streams in one session, 64 KiB echoed on each, every byte checked. */
import { stopProcess } from '../../netns-lab.js';
import type { Ctx, SectionResult } from '../context.js';
import { TOOL } from '../env.js';
import { jsonNum, median } from '../stats.js';

export async function benchStreams(ctx: Ctx, count = 500, bytes = 65536): Promise<SectionResult> {
  const { env, args, say } = ctx;
  const visit = await env.startVisit('svc');
  const ms: number[] = [];
  let allExact = true;
  const errors: string[] = [];
  try {
    await env.waitDirect(visit);
    for (let i = 0; i < args.runs; i++) {
      const r = await env.tool(
        'a',
        TOOL.streams,
        ['--to', `127.0.0.1:${visit.port}`, '--count', String(count), '--bytes', String(bytes)],
        200_000,
      );
      ms.push(Number(r.ms));
      if (!r.ok) {
        allExact = false;
        errors.push(...(r.errors as string[]));
      }
      say(
        `  run ${i + 1}: ${String(r.exact)}/${count} streams exact in ${String(r.ms)} ms (path ${env.pathOf(visit)})`,
      );
    }
  } finally {
    await stopProcess(visit.child, 3000);
  }
  const t = median(ms);
  return {
    streams: count,
    bytes_per_stream: bytes,
    all_exact: allExact,
    ms: jsonNum(t, 0),
    echo_mbytes_per_s: jsonNum((count * bytes) / 1e6 / (t / 1000)),
    runs: ms,
    errors: errors.slice(0, 5),
  };
}
