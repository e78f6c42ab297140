/**
 * Direct-path throughput on a small path MTU (issue 17): iperf3 (one TCP
 * stream) through the tunnel with the server's uplink at 1500, then at 1280
 * as a black hole (no ICMP: the path MTU search must find it), interleaved
 * run by run in the same lab. The figure is the ratio 1280 / 1500 (goal
 * >= 0.8: segments shrink from 1443 to 1223 payload bytes, ~15% more
 * per-datagram work). A fresh visitor and server per measurement, so each
 * starts its search from scratch and no session of an earlier one lingers;
 * the first seconds (the search) are not measured.
 *
 * Each run also samples, inside the transfer, the CPU the tunnel's two
 * programs (visit + serve) use and what crossed host b's interfaces in the
 * data direction (datagrams and bytes, /proc/net/dev): per datagram and per
 * byte. On the shared two-core machine the throughput ratio swings with what
 * else runs; these say what the small datagrams cost. The ratio of the least CPU per
 * byte (1500 over 1280) is the throughput ratio of a CPU-bound tunnel given
 * the same CPU: about 1189 / 1409 (mux payload per datagram) when the cost
 * is per datagram, 1 when it is per byte. docs/BENCHMARKS.md has the figures.
 */
import type { ChildProcess } from 'node:child_process';
import { stopProcess } from '../../netns-lab.js';
import { eventsOf } from '../../proc.js';
import type { Ctx, SectionResult } from '../context.js';
import { measureCpu, type CpuBreakdown } from '../cpu-account.js';
import { IPERF_PORT } from '../env.js';
import { iperf } from '../iperf.js';
import { jsonNum, median, ratio } from '../stats.js';
import type { Lab } from '../../netns-lab.js';

/** The small MTU measured against Ethernet's 1500. */
const SMALL_MTU = 1280;
/** Let the search settle (1372 fails three times: 3 s) before measuring. */
const SETTLE_MS = 4000;
/** CPU and datagram sampling starts this long into an iperf3 run (after its omitted first second)... */
const SAMPLE_FROM_MS = 1200;
/** ...and ends this long before the run does. */
const SAMPLE_END_BEFORE_MS = 300;

type Dir = 'up' | 'down';
/** What one run's sample window saw. */
interface Sample {
  mbps: number;
  /** mean UDP payload of the data direction's datagrams (what host b received (up) or sent (down)) */
  datagram: number;
  /** those datagrams per second, thousands */
  dataKpps: number;
  /** visit + serve CPU per byte of those datagrams, nanoseconds */
  tunnelNsPerByte: number;
  /** the same per datagram, microseconds */
  tunnelUsPerDatagram: number;
  /** the sender's part of it (visit up, serve down), microseconds */
  senderUsPerDatagram: number;
}

export async function benchPmtu(ctx: Ctx): Promise<SectionResult> {
  const { env, args, say } = ctx;
  const lab = env.lab;
  const runs = {
    1500: { up: [] as number[], down: [] as number[] },
    [SMALL_MTU]: { up: [] as number[], down: [] as number[] },
  };
  const sizes: Record<number, number[]> = { 1500: [], [SMALL_MTU]: [] };
  const blackHoleDrops: Record<number, number[]> = { 1500: [], [SMALL_MTU]: [] };
  const samples: Record<number, Record<Dir, Sample[]>> = {
    1500: { up: [], down: [] },
    [SMALL_MTU]: { up: [], down: [] },
  };
  let stayedDirect = true;
  try {
    for (let i = 0; i < args.runs; i++) {
      // Odd runs go the other way round (ABBA): a machine that gets busier or quieter
      // during the section then tilts the runs of both sizes alike.
      const order = i % 2 === 0 ? ([1500, SMALL_MTU] as const) : ([SMALL_MTU, 1500] as const);
      for (const mtu of order) {
        await lab.setMtu('rb', mtu === 1500 ? 0 : mtu, 'blackhole');
        // A fresh server too: the session of the previous visitor would outlive it
        // (30 s of retransmissions and re-punching probes) and load the next phase only.
        await env.startServe('iperf', `127.0.0.1:${IPERF_PORT}`);
        const visit = await env.startVisit('iperf');
        try {
          await env.waitDirect(visit);
          await new Promise((r) => setTimeout(r, SETTLE_MS));
          for (const dir of ['up', 'down'] as const) {
            const windowMs = args.seconds * 1000 - SAMPLE_FROM_MS - SAMPLE_END_BEFORE_MS;
            const sampled = sampleWindow(lab, windowMs).catch(() => null);
            const o = await iperf(lab, 'a', '127.0.0.1', visit.port, {
              reverse: dir === 'down',
              seconds: args.seconds,
              ensureServer: () => env.ensureIperf(),
            });
            runs[mtu][dir].push(o.mbps);
            const s = sampleOf(o.mbps, dir, await sampled);
            samples[mtu][dir].push(s);
            if (env.pathOf(visit) !== 'direct') stayedDirect = false;
            say(
              `  run ${i + 1} MTU ${mtu} ${dir.padEnd(4)} ${o.mbps.toFixed(0)} Mbit/s (path ${env.pathOf(visit)}); ` +
                `${s.dataKpps.toFixed(1)} k datagrams/s of ${s.datagram.toFixed(0)} B; tunnel CPU ` +
                `${s.tunnelUsPerDatagram.toFixed(1)} us/datagram (sender ${s.senderUsPerDatagram.toFixed(1)}), ` +
                `${s.tunnelNsPerByte.toFixed(1)} ns/B`,
            );
          }
          sizes[mtu].push(lastPmtu(visit.child));
          const drops = blackHoles(visit.child);
          blackHoleDrops[mtu].push(drops);
          if (drops > 0)
            say(`  run ${i + 1} MTU ${mtu}: the visitor's search dropped to base ${drops} time(s) (black-hole)`);
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
  // The least CPU per byte / per datagram any run of a size needed: the sample least
  // inflated by the other programs on the machine (their load only ever adds).
  const floor = (m: number, d: Dir, f: (x: Sample) => number) =>
    Math.min(...samples[m][d].map(f).filter((x) => Number.isFinite(x)));
  const nsPerByte = (x: Sample) => x.tunnelNsPerByte;
  const usPerDatagram = (x: Sample) => x.tunnelUsPerDatagram;
  // CPU per byte at 1500 over that at the small MTU: the throughput ratio at equal CPU.
  const cpuRatio = {
    up: jsonNum(ratio(floor(1500, 'up', nsPerByte), floor(SMALL_MTU, 'up', nsPerByte)), 3),
    down: jsonNum(ratio(floor(1500, 'down', nsPerByte), floor(SMALL_MTU, 'down', nsPerByte)), 3),
  };
  const perDatagram = (m: number) => ({
    up: jsonNum(floor(m, 'up', usPerDatagram), 1),
    down: jsonNum(floor(m, 'down', usPerDatagram), 1),
  });
  say(`  MTU ${SMALL_MTU} / 1500: up ${r.up}x, down ${r.down}x (goal >= 0.8x)`);
  const pd = (m: number) => `${m} up ${perDatagram(m).up} / down ${perDatagram(m).down} us`;
  say(`  tunnel CPU per datagram (least of the runs): ${pd(1500)}, ${pd(SMALL_MTU)}`);
  say(`  at equal tunnel CPU (least ns/B at 1500 / at ${SMALL_MTU}): up ${cpuRatio.up}x, down ${cpuRatio.down}x`);
  return {
    mtu_1500_mbps: { up: jsonNum(median(runs[1500].up)), down: jsonNum(median(runs[1500].down)), runs: runs[1500] },
    [`mtu_${SMALL_MTU}_mbps`]: {
      up: jsonNum(median(runs[SMALL_MTU].up)),
      down: jsonNum(median(runs[SMALL_MTU].down)),
      runs: runs[SMALL_MTU],
    },
    ratio: r,
    ratio_at_equal_cpu: cpuRatio,
    tunnel_us_per_datagram_least: { 1500: perDatagram(1500), [SMALL_MTU]: perDatagram(SMALL_MTU) },
    samples,
    // the visitor's datagram size at the end of each measurement (its sending direction)
    visitor_datagram: sizes,
    // black-hole verdicts of the visitor's search per run: each costs a drop to base and a new search
    visitor_black_hole_drops: blackHoleDrops,
    path_stayed_direct: stayedDirect,
    iperf_seconds: args.seconds,
  };
}

/** How often the visitor's search declared a black hole (its sending direction). */
function blackHoles(child: ChildProcess): number {
  return eventsOf(child, 'pmtu').filter((e) => e.reason === 'black-hole').length;
}

/** The size in the visitor's latest `pmtu` event (its sending direction). */
function lastPmtu(child: ChildProcess): number {
  const ev = eventsOf(child, 'pmtu');
  return ev.length ? Number(ev[ev.length - 1].new) : NaN;
}

/** Packets and bytes through a namespace's interfaces other than loopback (/proc/net/dev). */
interface NetCounters {
  rxPackets: number;
  rxBytes: number;
  txPackets: number;
  txBytes: number;
}

async function netCounters(lab: Lab, node: string): Promise<NetCounters> {
  const r = await lab.exec(node, ['cat', '/proc/net/dev']);
  const c: NetCounters = { rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0 };
  for (const line of r.stdout.split('\n')) {
    const m = /^\s*([^:\s]+):\s*(.*)$/.exec(line);
    if (!m || m[1] === 'lo') continue;
    const f = m[2].trim().split(/\s+/).map(Number);
    c.rxBytes += f[0];
    c.rxPackets += f[1];
    c.txBytes += f[8];
    c.txPackets += f[9];
  }
  return c;
}

/** What moved through host b and what the tunnel's programs used, over one window. */
interface Window {
  cpu: CpuBreakdown;
  net: NetCounters;
}

/** CPU and host b's traffic over `windowMs`, starting SAMPLE_FROM_MS from now. */
async function sampleWindow(lab: Lab, windowMs: number): Promise<Window> {
  await new Promise((r) => setTimeout(r, SAMPLE_FROM_MS));
  const before = await netCounters(lab, 'b');
  const cpu = await measureCpu(0, Math.max(500, windowMs));
  const after = await netCounters(lab, 'b');
  const net: NetCounters = {
    rxPackets: after.rxPackets - before.rxPackets,
    rxBytes: after.rxBytes - before.rxBytes,
    txPackets: after.txPackets - before.txPackets,
    txBytes: after.txBytes - before.txBytes,
  };
  return { cpu, net };
}

/** Ethernet + IPv4 + UDP headers around each datagram in /proc/net/dev's byte counts. */
const FRAME_OVERHEAD = 14 + 20 + 8;

/**
 * Pure: one run's figures from its goodput and its sample window (NaN where
 * nothing was sampled). The data direction is what b receives (up) or sends
 * (down); CPU is divided by what crossed in that window, so the per-byte and
 * per-datagram costs do not depend on how the window lines up with iperf3's.
 */
function sampleOf(mbps: number, dir: Dir, w: Window | null): Sample {
  if (!w) {
    return {
      mbps,
      datagram: NaN,
      dataKpps: NaN,
      tunnelNsPerByte: NaN,
      tunnelUsPerDatagram: NaN,
      senderUsPerDatagram: NaN,
    };
  }
  const seconds = w.cpu.seconds;
  const tunnelCores = (w.cpu.by_role.visit ?? 0) + (w.cpu.by_role.serve ?? 0);
  const packets = dir === 'up' ? w.net.rxPackets : w.net.txPackets;
  const bytes = (dir === 'up' ? w.net.rxBytes : w.net.txBytes) - packets * FRAME_OVERHEAD;
  const cpuNs = tunnelCores * seconds * 1e9;
  return {
    mbps,
    datagram: bytes / packets,
    dataKpps: packets / seconds / 1000,
    tunnelNsPerByte: cpuNs / bytes,
    tunnelUsPerDatagram: cpuNs / packets / 1000,
    senderUsPerDatagram: ((w.cpu.by_role[dir === 'up' ? 'visit' : 'serve'] ?? 0) * seconds * 1e6) / packets,
  };
}
