/**
 * Direct-path throughput on a small path MTU (issue 17): iperf3 (one TCP
 * stream) through the tunnel with the server's uplink at 1500, then at 1280
 * as a black hole (no ICMP: the path MTU search must find it), interleaved
 * run by run in the same lab. The figure is the ratio 1280 / 1500 (goal
 * >= 0.8: segments shrink from 1443 to 1223 payload bytes, ~15% more
 * per-datagram work). A fresh visitor session per measurement, so each starts
 * its search from scratch; the first seconds (the search) are not measured.
 */
import type { ChildProcess } from 'node:child_process';
import { stopProcess } from '../../netns-lab.js';
import { eventsOf } from '../../proc.js';
import type { Ctx, SectionResult } from '../context.js';
import { iperf } from '../iperf.js';
import { jsonNum, median, ratio } from '../stats.js';

/** The small MTU measured against Ethernet's 1500. */
const SMALL_MTU = 1280;
/** Let the search settle (1372 fails three times: 3 s) before measuring. */
const SETTLE_MS = 4000;

export async function benchPmtu(ctx: Ctx): Promise<SectionResult> {
  const { env, args, say } = ctx;
  const lab = env.lab;
  const runs = {
    1500: { up: [] as number[], down: [] as number[] },
    [SMALL_MTU]: { up: [] as number[], down: [] as number[] },
  };
  const sizes: Record<number, number[]> = { 1500: [], [SMALL_MTU]: [] };
  let stayedDirect = true;
  try {
    for (let i = 0; i < args.runs; i++) {
      for (const mtu of [1500, SMALL_MTU] as const) {
        await lab.setMtu('rb', mtu === 1500 ? 0 : mtu, 'blackhole');
        const visit = await env.startVisit('iperf');
        try {
          await env.waitDirect(visit);
          await new Promise((r) => setTimeout(r, SETTLE_MS));
          for (const dir of ['up', 'down'] as const) {
            const o = await iperf(lab, 'a', '127.0.0.1', visit.port, {
              reverse: dir === 'down',
              seconds: args.seconds,
              ensureServer: () => env.ensureIperf(),
            });
            runs[mtu][dir].push(o.mbps);
            if (env.pathOf(visit) !== 'direct') stayedDirect = false;
            say(`  run ${i + 1} MTU ${mtu} ${dir.padEnd(4)} ${o.mbps.toFixed(0)} Mbit/s (path ${env.pathOf(visit)})`);
          }
          sizes[mtu].push(lastPmtu(visit.child));
        } finally {
          await stopProcess(visit.child, 3000);
        }
      }
    }
  } finally {
    await lab.setMtu('rb', 0);
  }
  const med = (m: number, d: 'up' | 'down') => median(runs[m as 1500][d]);
  const r = {
    up: jsonNum(ratio(med(SMALL_MTU, 'up'), med(1500, 'up')), 3),
    down: jsonNum(ratio(med(SMALL_MTU, 'down'), med(1500, 'down')), 3),
  };
  say(`  MTU ${SMALL_MTU} / 1500: up ${r.up}x, down ${r.down}x (goal >= 0.8x)`);
  return {
    mtu_1500_mbps: { up: jsonNum(median(runs[1500].up)), down: jsonNum(median(runs[1500].down)), runs: runs[1500] },
    [`mtu_${SMALL_MTU}_mbps`]: {
      up: jsonNum(median(runs[SMALL_MTU].up)),
      down: jsonNum(median(runs[SMALL_MTU].down)),
      runs: runs[SMALL_MTU],
    },
    ratio: r,
    // the visitor's datagram size at the end of each measurement (its sending direction)
    visitor_datagram: sizes,
    path_stayed_direct: stayedDirect,
    iperf_seconds: args.seconds,
  };
}

/** The size in the visitor's latest `pmtu` event (its sending direction). */
function lastPmtu(child: ChildProcess): number {
  const ev = eventsOf(child, 'pmtu');
  return ev.length ? Number(ev[ev.length - 1].new) : NaN;
}
