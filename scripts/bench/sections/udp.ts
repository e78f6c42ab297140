/**
 * UDP services (`--proto udp`, issue 22): WireGuard across the tunnel. A
 * wireguard-go pair whose endpoint on host a is `peer visit --proto udp`, and
 * on host b `peer serve --proto udp` in front of b's wireguard-go port; iperf3
 * (one TCP stream, both directions) through that WireGuard interface.
 * Interleaved run by run with the reference: wireguard-go straight through
 * the same two cone NATs (the direct section's pair). The figure is the ratio
 * `wireguard_through_tunnel_ratio` (ours / reference, the worse direction).
 */
import { stopProcess } from '../../netns-lab.js';
import { adminRequest } from '../../../peer/admin.js';
import type { PeerStatus } from '../../../peer/app.js';
import type { Ctx, SectionResult } from '../context.js';
import { IPERF_PORT } from '../env.js';
import { iperf } from '../iperf.js';
import { cpuSeconds } from '../procstat.js';
import { jsonNum, median, ratio } from '../stats.js';
import { startWireguard, type WgTunnel } from '../wireguard.js';

/** wireguard-go's port on b that `peer serve --proto udp` forwards to, and a's own port. */
const WG_SERVE_PORT = 51830;
const WG_VISIT_PORT = 51831;
/**
 * Inner MTU of the WireGuard pair through the tunnel: its datagrams (MTU + 32)
 * must fit the largest user datagram of a direct path before its PMTU search
 * (1419, docs/PROTOCOL.md "User datagrams"); larger ones would be dropped.
 */
const WG_THROUGH_MTU = 1380;

export async function benchUdp(ctx: Ctx): Promise<SectionResult> {
  const { env, args, say } = ctx;
  const lab = env.lab;
  if (ctx.missing.has('wireguard-go') || ctx.missing.has('wg'))
    return { skipped: 'wireguard-go or wg is not installed' };
  const res: SectionResult = {};
  // Own admin sockets (the namespaces share /tmp): the datagram and drop counters go in the results.
  const admin = { serve: `${ctx.tmp}/udp-serve.sock`, visit: `${ctx.tmp}/udp-visit.sock` };
  await env.startServe('wg', `127.0.0.1:${WG_SERVE_PORT}`, { extra: ['--proto', 'udp', '--admin', admin.serve] });
  const visit = await env.startVisit('wg', { extra: ['--proto', 'udp', '--admin', admin.visit] });
  let ours: WgTunnel | null = null;
  let ref: WgTunnel | null = null;
  try {
    await env.waitDirect(visit);
    ours = await startWireguard(lab, ctx.tmp, [
      {
        node: 'a',
        dev: 'wua',
        addr: '10.98.0.1',
        listenPort: WG_VISIT_PORT,
        endpoint: `127.0.0.1:${visit.port}`,
        mtu: WG_THROUGH_MTU,
      },
      { node: 'b', dev: 'wub', addr: '10.98.0.2', listenPort: WG_SERVE_PORT, endpoint: null, mtu: WG_THROUGH_MTU },
    ]);
    ref = await startWireguard(lab, ctx.tmp);
    const mbps = { up: [] as number[], down: [] as number[] };
    const refMbps = { up: [] as number[], down: [] as number[] };
    let stayedDirect = true;
    // iperf3's TCP retransmits inside each WireGuard tunnel: loss, versus round-trip time, as the limit.
    const retransmits = { ours: [] as (number | null)[], ref: [] as (number | null)[] };
    const rtt = { ours: [] as (number | null)[], ref: [] as (number | null)[] };
    // CPU of both peers while they forward (the reference's runs cost them only keepalives).
    const pids = { visit: visit.child.pid ?? 0, serve: env.serves.get('wg')?.pid ?? 0 };
    const cpu = { visit: 0, serve: 0, wallS: 0 };
    for (let i = 0; i < args.runs; i++) {
      for (const dir of ['up', 'down'] as const) {
        const c0 = { visit: cpuSeconds(pids.visit), serve: cpuSeconds(pids.serve), at: Date.now() };
        const o = await iperf(lab, 'a', ours.addrB, IPERF_PORT, {
          reverse: dir === 'down',
          seconds: args.seconds,
          ensureServer: () => env.ensureIperf(),
        });
        cpu.visit += cpuSeconds(pids.visit) - c0.visit;
        cpu.serve += cpuSeconds(pids.serve) - c0.serve;
        cpu.wallS += (Date.now() - c0.at) / 1000;
        mbps[dir].push(o.mbps);
        if (env.pathOf(visit) !== 'direct') stayedDirect = false;
        say(
          `  run ${i + 1} ${dir.padEnd(4)} wireguard-go through the tunnel ${o.mbps.toFixed(0)} Mbit/s ` +
            `(${o.retransmits ?? '?'} TCP retransmits, mean RTT ${o.rttMs?.toFixed(2) ?? '?'} ms)`,
        );
        const w = await iperf(lab, 'a', ref.addrB, IPERF_PORT, {
          reverse: dir === 'down',
          seconds: args.seconds,
          ensureServer: () => env.ensureIperf(),
        });
        refMbps[dir].push(w.mbps);
        say(
          `  run ${i + 1} ${dir.padEnd(4)} wireguard-go direct ${w.mbps.toFixed(0)} Mbit/s ` +
            `(${w.retransmits ?? '?'} TCP retransmits, mean RTT ${w.rttMs?.toFixed(2) ?? '?'} ms)`,
        );
        retransmits.ours.push(o.retransmits);
        retransmits.ref.push(w.retransmits);
        rtt.ours.push(o.rttMs ?? null);
        rtt.ref.push(w.rttMs ?? null);
      }
    }
    const up = ratio(median(mbps.up), median(refMbps.up));
    const down = ratio(median(mbps.down), median(refMbps.down));
    Object.assign(res, {
      wireguard_through_tunnel_ratio: jsonNum(Math.min(up, down), 3),
      wireguard_through_tunnel_mbps: { up: jsonNum(median(mbps.up)), down: jsonNum(median(mbps.down)), runs: mbps },
      wireguard_go_direct_mbps: {
        up: jsonNum(median(refMbps.up)),
        down: jsonNum(median(refMbps.down)),
        runs: refMbps,
      },
      ratio: { up: jsonNum(up, 3), down: jsonNum(down, 3) },
      wireguard_through_mtu: WG_THROUGH_MTU,
      tcp_retransmits: retransmits,
      tcp_mean_rtt_ms: rtt,
      path_stayed_direct: stayedDirect,
      iperf_seconds: args.seconds,
      counters: {
        visit: await udpCounters(admin.visit),
        serve: await udpCounters(admin.serve),
      },
    });
    say(`  counters ${JSON.stringify(res.counters)}`);
    // Per datagram forwarded either way, and in percent of one core over the runs through the tunnel.
    const perDatagram = (s: number, c: unknown) => {
      const u = c as { datagramsSent?: number; datagramsReceived?: number } | null;
      const n = (u?.datagramsSent ?? 0) + (u?.datagramsReceived ?? 0);
      return n ? jsonNum((s * 1e6) / n, 1) : null;
    };
    const counters = res.counters as { visit: unknown; serve: unknown };
    res.peer_cpu = {
      visit_us_per_datagram: perDatagram(cpu.visit, counters.visit),
      serve_us_per_datagram: perDatagram(cpu.serve, counters.serve),
      visit_pct_of_core: jsonNum((100 * cpu.visit) / Math.max(0.001, cpu.wallS), 1),
      serve_pct_of_core: jsonNum((100 * cpu.serve) / Math.max(0.001, cpu.wallS), 1),
    };
    say(`  peer CPU ${JSON.stringify(res.peer_cpu)}`);
  } finally {
    await ours?.stop();
    await ref?.stop();
    await stopProcess(visit.child, 3000);
  }
  return res;
}

/** The udp counters (datagrams, bytes, drops by reason) of the peer at `sock`; null if it does not answer. */
async function udpCounters(sock: string): Promise<unknown> {
  try {
    const s = (await adminRequest(sock, 'status')) as unknown as PeerStatus;
    return s.entries[0]?.udp ?? null;
  } catch {
    return null;
  }
}
