// miniupnpd (Debian's miniupnpd-nftables) on a lab router: UPnP IGD, NAT-PMP
// and PCP in front of the router's own NAT. Used through RouterSpec.miniupnpd
// (scripts/netns-lab.ts) or directly by tests (restart, one protocol only,
// refusals, the router's list of mappings).
//
// miniupnpd 2.3 refuses an external interface whose address is reserved, and
// the lab's internet is TEST-NET-3 (203.0.113.0/24, reserved). So a router
// running it gets a WAN address from 100.128.0.0/24 instead (just above the
// CGNAT block 100.64.0.0/10; not reserved), lab-only: every node on the lab's
// internet gets an on-link route to that /24, and the router one back to
// 203.0.113.0/24, on the same bridge. Nothing leaves the lab.

import type { ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { outputOf, stopProcess, type ExecOptions, type ExecResult } from './proc.js';

/**
 * What this file needs of a lab: netns-lab.ts's `Lab`, which starts
 * miniupnpd on its routers, fits it. Declared here so that the two files do
 * not import each other.
 */
export interface RouterLab {
  readonly prefix: string;
  readonly plan: {
    nodes: Array<{ name: string; role: string; upstream?: string; addrs: string[]; lanCidr?: string }>;
  };
  exec(node: string, cmd: string[], opts?: ExecOptions): Promise<ExecResult>;
  spawn(node: string, cmd: string[]): ChildProcess;
  nft(node: string, script: string): Promise<void>;
}

/** The WAN address of a router running miniupnpd, per site. */
export const UPNP_WAN = { a: '100.128.0.1', b: '100.128.0.2' } as const;
export const UPNP_WAN_NET = '100.128.0.0/24';
const INTERNET = '203.0.113.0/24';
/** How long miniupnpd gets to start listening. */
const MINIUPNPD_START_MS = 10_000;
const POLL_MS = 50;

export type MiniupnpdProtocol = 'pcp' | 'nat-pmp' | 'upnp';

export interface MiniupnpdOptions {
  /**
   * Which protocols answer (default all three). PCP and NAT-PMP share UDP 5351: one alone is
   * chosen by dropping the other's version byte.
   */
  protocols?: MiniupnpdProtocol[];
  /**
   * Keep (or put back) the router's reserved TEST-NET WAN address: miniupnpd then refuses every
   * mapping at once ("private/reserved address is not suitable for external IP": PCP NO_RESOURCES,
   * NAT-PMP NETWORK_FAILURE, no UPnP external address), as on a router that is itself behind a NAT.
   * (A deny-all permission rule is no quick refusal: miniupnpd walks all 65535 ports first.)
   */
  reservedWan?: boolean;
  /** miniupnpd's secure_mode (clients may only map to their own address). Default yes. */
  secureMode?: boolean;
  /** min_lifetime (s) of PCP/NAT-PMP leases (default 120, miniupnpd's own). */
  minLifetime?: number;
}

interface Running {
  child: ChildProcess;
  opts: MiniupnpdOptions;
}

const running = new WeakMap<RouterLab, Map<string, Running>>();

function ifs(lab: RouterLab) {
  return { wan: `${lab.prefix}-wan`, lan: `${lab.prefix}-lan`, eth: `${lab.prefix}-eth0` };
}

/**
 * nft for a miniupnpd router: its chains in the router's filter table (jumped to from forward)
 * and a NAT table of its own.
 */
export function miniupnpdRuleset(lab: RouterLab, opts: MiniupnpdOptions): string {
  const protos = new Set(opts.protocols ?? ['pcp', 'nat-pmp', 'upnp']);
  // UDP 5351 carries both: byte 0 of the payload is the version (0 NAT-PMP, 2 PCP).
  const only =
    protos.has('pcp') && !protos.has('nat-pmp')
      ? '    udp dport 5351 @th,64,8 != 2 drop\n'
      : protos.has('nat-pmp') && !protos.has('pcp')
        ? '    udp dport 5351 @th,64,8 != 0 drop\n'
        : '';
  return `
table inet labfw {
  chain miniupnpd {
  }
  chain forward {
    jump miniupnpd
  }
}
table inet labupnp {
  chain prerouting {
    type nat hook prerouting priority dstnat - 1; policy accept;
    jump prerouting_miniupnpd
  }
  chain postrouting {
    type nat hook postrouting priority srcnat - 1; policy accept;
    jump postrouting_miniupnpd
  }
  chain prerouting_miniupnpd {
  }
  chain postrouting_miniupnpd {
  }
  chain input {
    type filter hook input priority filter - 1; policy accept;
${only}  }
}
`;
}

export function miniupnpdConfig(lab: RouterLab, router: string, opts: MiniupnpdOptions): string {
  const { wan, lan } = ifs(lab);
  const protos = new Set(opts.protocols ?? ['pcp', 'nat-pmp', 'upnp']);
  const lanCidr = lab.plan.nodes.find((n) => n.name === router)?.lanCidr ?? '10.0.0.0/8';
  return [
    `ext_ifname=${wan}`,
    `listening_ip=${lan}`,
    `enable_upnp=${protos.has('upnp') ? 'yes' : 'no'}`,
    `enable_natpmp=${protos.has('pcp') || protos.has('nat-pmp') ? 'yes' : 'no'}`,
    `secure_mode=${opts.secureMode === false ? 'no' : 'yes'}`,
    'system_uptime=no',
    'notify_interval=60',
    'clean_ruleset_interval=600',
    `min_lifetime=${opts.minLifetime ?? 120}`,
    'max_lifetime=86400',
    'uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b',
    'upnp_table_name=labfw',
    'upnp_nat_table_name=labupnp',
    'upnp_forward_chain=miniupnpd',
    'upnp_nat_chain=prerouting_miniupnpd',
    'upnp_nat_postrouting_chain=postrouting_miniupnpd',
    `allow 1024-65535 ${lanCidr} 1024-65535`,
    'deny 0-65535 0.0.0.0/0 0-65535',
    '',
  ].join('\n');
}

/**
 * Give `router` (ra or rb) a non-reserved WAN address (UPNP_WAN) reachable
 * from the whole lab internet. Idempotent. Call once after the lab is up.
 */
export async function readdressForMiniupnpd(lab: RouterLab, router: string): Promise<string> {
  const site = router.slice(1) as 'a' | 'b';
  const addr = UPNP_WAN[site];
  if (!addr || !/^r[ab]$/.test(router)) throw new Error(`miniupnpd runs on ra or rb, not "${router}"`);
  const node = lab.plan.nodes.find((n) => n.name === router);
  if (!node || node.role !== 'router' || node.upstream !== 'inet')
    throw new Error(`"${router}" must be a NAT router on the lab internet (no carrier NAT)`);
  const { wan, eth } = ifs(lab);
  const old = node.addrs[0];
  if (old.split('/')[0] !== addr) {
    await lab.exec(router, ['ip', 'addr', 'del', old, 'dev', wan]);
    await lab.exec(router, ['ip', 'addr', 'add', `${addr}/24`, 'dev', wan], { check: true });
    await lab.exec(router, ['ip', 'route', 'replace', INTERNET, 'dev', wan], { check: true });
    node.addrs[0] = `${addr}/24`;
  }
  // Every other node on the internet reaches 100.128.0.0/24 on-link.
  for (const n of lab.plan.nodes) {
    if (n.role === 'internet' || (n.upstream ?? 'inet') !== 'inet') continue;
    if (n.addrs.some((a) => a.startsWith('100.128.0.'))) {
      await lab.exec(n.name, ['ip', 'route', 'replace', INTERNET, 'dev', n.role === 'router' ? wan : eth]);
      continue;
    }
    await lab.exec(n.name, ['ip', 'route', 'replace', UPNP_WAN_NET, 'dev', n.role === 'router' ? wan : eth], {
      check: true,
    });
  }
  return addr;
}

/** Undo readdressForMiniupnpd: the router gets its TEST-NET edge address back (203.0.113.1 / .2). */
export async function restoreReservedWan(lab: RouterLab, router: string): Promise<void> {
  const node = lab.plan.nodes.find((n) => n.name === router);
  const edge = router === 'ra' ? '203.0.113.1/24' : router === 'rb' ? '203.0.113.2/24' : null;
  if (!node || !edge) throw new Error(`no router "${router}"`);
  if (node.addrs[0] === edge) return;
  const { wan } = ifs(lab);
  await lab.exec(router, ['ip', 'addr', 'del', node.addrs[0], 'dev', wan]);
  await lab.exec(router, ['ip', 'route', 'del', INTERNET, 'dev', wan]);
  await lab.exec(router, ['ip', 'addr', 'add', edge, 'dev', wan], { check: true });
  node.addrs[0] = edge;
}

/** Start miniupnpd on `router` (readdressing it first); resolves once it listens. */
export async function startMiniupnpd(
  lab: RouterLab,
  router: string,
  opts: MiniupnpdOptions = {},
): Promise<ChildProcess> {
  if (opts.reservedWan) await restoreReservedWan(lab, router);
  else await readdressForMiniupnpd(lab, router);
  let byLab = running.get(lab);
  if (!byLab) running.set(lab, (byLab = new Map<string, Running>()));
  const prev = byLab.get(router);
  if (prev) await stopProcess(prev.child, 2000);
  await lab.exec(router, ['nft', 'delete', 'table', 'inet', 'labupnp']);
  await lab.exec(router, ['nft', 'flush', 'chain', 'inet', 'labfw', 'miniupnpd']);
  await lab.nft(router, miniupnpdRuleset(lab, opts));
  const dir = '/run/netns-lab';
  await mkdir(dir, { recursive: true });
  const conf = `${dir}/${lab.prefix}-${router}-miniupnpd.conf`;
  await writeFile(conf, miniupnpdConfig(lab, router, opts));
  const child = lab.spawn(router, [
    'miniupnpd',
    '-d',
    '-f',
    conf,
    '-P',
    `${dir}/${lab.prefix}-${router}-miniupnpd.pid`,
  ]);
  byLab.set(router, { child, opts });
  const protos = new Set(opts.protocols ?? ['pcp', 'nat-pmp', 'upnp']);
  const want = protos.has('pcp') || protos.has('nat-pmp') ? 'NAT-PMP/PCP' : 'HTTP listening';
  for (let waited = 0; ; waited += POLL_MS) {
    const out = outputOf(child);
    if ((out.stdout + out.stderr).includes(want)) break;
    if (child.exitCode !== null || waited > MINIUPNPD_START_MS)
      throw new Error(`miniupnpd on ${router} did not start: ${(out.stderr + out.stdout).slice(-2000)}`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  return child;
}

/** Stop miniupnpd on `router`; its rules go with it (flushed, as a crashed or restarted router loses them). */
export async function stopMiniupnpd(lab: RouterLab, router: string): Promise<void> {
  const r = running.get(lab)?.get(router);
  if (r) await stopProcess(r.child, 2000);
  running.get(lab)?.delete(router);
  for (const chain of ['prerouting_miniupnpd', 'postrouting_miniupnpd'])
    await lab.exec(router, ['nft', 'flush', 'chain', 'inet', 'labupnp', chain]);
  await lab.exec(router, ['nft', 'flush', 'chain', 'inet', 'labfw', 'miniupnpd']);
}

/** Restart miniupnpd (same options unless given): every mapping is lost, as when a home router reboots its daemon. */
export async function restartMiniupnpd(lab: RouterLab, router: string, opts?: MiniupnpdOptions): Promise<ChildProcess> {
  const prev = running.get(lab)?.get(router)?.opts ?? {};
  await stopMiniupnpd(lab, router);
  return startMiniupnpd(lab, router, opts ?? prev);
}

/** The router's port-forwarding rules (miniupnpd's DNAT chain) as text: one `dnat` line per mapping. */
export async function miniupnpdRules(lab: RouterLab, router: string): Promise<string> {
  const r = await lab.exec(router, ['nft', 'list', 'chain', 'inet', 'labupnp', 'prerouting_miniupnpd']);
  return r.stdout;
}

/** miniupnpd's output so far (its log, with -d). */
export function miniupnpdLog(lab: RouterLab, router: string): string {
  const r = running.get(lab)?.get(router);
  if (!r) return '';
  const o = outputOf(r.child);
  return o.stderr + o.stdout;
}
