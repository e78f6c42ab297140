/**
 * Relay-path bulk throughput: the same iperf3 measurement with `--mode relay`
 * (visitor -> TCP -> relay inside the rendezvous -> TCP -> serve), interleaved
 * run by run with an OpenSSH remote forward through an sshd on the same host.
 */
import { stopProcess } from '../../netns-lab.js';
import type { Ctx, SectionResult } from '../context.js';
import { IPERF_PORT } from '../env.js';
import { iperf } from '../iperf.js';
import { startSshR, type SshForward } from '../ssh.js';
import { jsonNum, median, ratio } from '../stats.js';

export async function benchRelay(ctx: Ctx): Promise<SectionResult> {
  const { env, args, say } = ctx;
  const lab = env.lab;
  const visit = await env.startVisit('iperf', { mode: 'relay' });
  const res: SectionResult = {};
  let ssh: SshForward | null = null;
  try {
    if (!['sshd', 'ssh', 'ssh-keygen'].some((b) => ctx.missing.has(b))) {
      try {
        ssh = await startSshR(lab, ctx.tmp, IPERF_PORT);
      } catch (e) {
        res.ssh_error = (e as Error).message;
        say(`  ssh -R reference unavailable: ${(e as Error).message}`);
      }
    }
    const ours = { up: [] as number[], down: [] as number[] };
    let busy = 0;
    const ref = { up: [] as number[], down: [] as number[] };
    for (let i = 0; i < args.runs; i++) {
      for (const dir of ['up', 'down'] as const) {
        const o = await iperf(lab, 'a', '127.0.0.1', visit.port, { reverse: dir === 'down', seconds: args.seconds, ensureServer: () => env.ensureIperf() });
        ours[dir].push(o.mbps);
        busy += o.busyRetries ?? 0;
        say(`  run ${i + 1} ${dir.padEnd(4)} ours (relay) ${o.mbps.toFixed(0)} Mbit/s`);
        if (ssh) {
          const s = await iperf(lab, 'a', ssh.host, ssh.port, { reverse: dir === 'down', seconds: args.seconds, ensureServer: () => env.ensureIperf() });
          ref[dir].push(s.mbps);
          say(`  run ${i + 1} ${dir.padEnd(4)} ssh -R ${s.mbps.toFixed(0)} Mbit/s`);
        }
      }
    }
    Object.assign(res, {
      ours_mbps: { up: jsonNum(median(ours.up)), down: jsonNum(median(ours.down)), runs: ours },
      ssh_r_mbps: { up: jsonNum(median(ref.up)), down: jsonNum(median(ref.down)), runs: ref },
      ratio: { up: jsonNum(ratio(median(ours.up), median(ref.up)), 3), down: jsonNum(ratio(median(ours.down), median(ref.down)), 3) },
      path: env.pathOf(visit) ?? null,
      iperf_server_restarts: [...env.iperfRestarts],
      iperf_seconds: args.seconds,
      // iperf3 said "busy" (previous test's connections not yet closed through the tunnel), retried after 250 ms each
      iperf_busy_retries_ours: busy,
    });
  } finally {
    await ssh?.stop();
    await stopProcess(visit.child, 3000);
  }
  return res;
}
