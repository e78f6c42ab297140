/**
 * Direct-path bulk throughput: iperf3 (one TCP stream) from host a through
 * `peer visit --bind` to an iperf3 server on host b served by `peer serve`,
 * both directions, on the punched path. Interleaved run by run with the same
 * through a wireguard-go tunnel, and the plain UDP ceiling of Node dgram.
 */
import { stopProcess, waitForEvent } from '../../netns-lab.js';
import type { Ctx, SectionResult } from '../context.js';
import { IPERF_PORT, TOOL } from '../env.js';
import { iperf } from '../iperf.js';
import { jsonNum, median, ratio } from '../stats.js';
import { startWireguard, type WgTunnel } from '../wireguard.js';

export async function benchDirect(ctx: Ctx): Promise<SectionResult> {
  const { env, args, say } = ctx;
  const lab = env.lab;
  const visit = await env.startVisit('iperf');
  const res: SectionResult = {};
  let wg: WgTunnel | null = null;
  try {
    await env.waitDirect(visit);
    if (!ctx.missing.has('wireguard-go') && !ctx.missing.has('wg')) {
      try {
        wg = await startWireguard(lab, ctx.tmp);
      } catch (e) {
        res.wireguard_error = (e as Error).message;
        say(`  wireguard-go reference unavailable: ${(e as Error).message}`);
      }
    }
    const ours = { up: [] as number[], down: [] as number[] };
    let busy = 0;
    const ref = { up: [] as number[], down: [] as number[] };
    let stayedDirect = true;
    for (let i = 0; i < args.runs; i++) {
      for (const dir of ['up', 'down'] as const) {
        const o = await iperf(lab, 'a', '127.0.0.1', visit.port, {
          reverse: dir === 'down',
          seconds: args.seconds,
          ensureServer: () => env.ensureIperf(),
        });
        ours[dir].push(o.mbps);
        busy += o.busyRetries ?? 0;
        if (env.pathOf(visit) !== 'direct') stayedDirect = false;
        say(`  run ${i + 1} ${dir.padEnd(4)} ours ${o.mbps.toFixed(0)} Mbit/s (path ${env.pathOf(visit)})`);
        if (wg) {
          const w = await iperf(lab, 'a', wg.addrB, IPERF_PORT, {
            reverse: dir === 'down',
            seconds: args.seconds,
            ensureServer: () => env.ensureIperf(),
          });
          ref[dir].push(w.mbps);
          say(`  run ${i + 1} ${dir.padEnd(4)} wireguard-go ${w.mbps.toFixed(0)} Mbit/s`);
        }
      }
    }
    const udp: number[] = [];
    const udpSent: number[] = [];
    for (let i = 0; i < args.runs; i++) {
      const u = await udpCeiling(ctx, args.seconds);
      udp.push(u.recvMbps);
      udpSent.push(u.sentMbps);
      say(
        `  run ${i + 1} node dgram 1400-byte datagrams: ` +
          `${u.recvMbps.toFixed(0)} Mbit/s received (${u.sentMbps.toFixed(0)} sent)`,
      );
    }
    Object.assign(res, {
      ours_mbps: { up: jsonNum(median(ours.up)), down: jsonNum(median(ours.down)), runs: ours },
      wireguard_go_mbps: { up: jsonNum(median(ref.up)), down: jsonNum(median(ref.down)), runs: ref },
      ratio: {
        up: jsonNum(ratio(median(ours.up), median(ref.up)), 3),
        down: jsonNum(ratio(median(ours.down), median(ref.down)), 3),
      },
      node_dgram_ceiling_mbps: { received: jsonNum(median(udp)), sent: jsonNum(median(udpSent)), runs: udp },
      path_stayed_direct: stayedDirect,
      iperf_server_restarts: [...env.iperfRestarts],
      iperf_seconds: args.seconds,
      // iperf3 said "busy" (previous test's connections not yet closed through the tunnel), retried after 250 ms each
      iperf_busy_retries_ours: busy,
    });
  } finally {
    await wg?.stop();
    await stopProcess(visit.child, 3000);
  }
  return res;
}

/** Node dgram from a to b across both NATs, 1400-byte datagrams, as fast as dgram sends. */
async function udpCeiling(ctx: Ctx, seconds: number): Promise<{ recvMbps: number; sentMbps: number }> {
  const { env } = ctx;
  const lab = env.lab;
  const sendMs = Math.max(2000, Math.min(seconds, 4) * 1000);
  const recv = await env.spawnTool(
    'b',
    TOOL.udp,
    ['recv', '--bind', '0.0.0.0:40000', '--peer', `${lab.publicAddr('a')}:40001`, '--ms', String(sendMs + 2500)],
    'ready',
    10_000,
  );
  try {
    const s = await env.tool(
      'a',
      TOOL.udp,
      ['send', '--bind', '0.0.0.0:40001', '--to', `${lab.publicAddr('b')}:40000`, '--ms', String(sendMs)],
      sendMs + 20_000,
    );
    const r = await waitForEvent(recv.child, 'result', sendMs + 10_000);
    const spanS = Math.max(0.001, (Number(r.lastMs) - Number(r.firstMs)) / 1000);
    return {
      recvMbps: (Number(r.bytes) * 8) / 1e6 / spanS,
      sentMbps: (Number(s.sent) * 1400 * 8) / 1e6 / (Number(s.ms) / 1000),
    };
  } finally {
    await stopProcess(recv.child, 1000);
  }
}
