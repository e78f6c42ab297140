#!/usr/bin/env node
// Linux network-namespace NAT lab: builds small "internet + NAT routers + hosts"
// topologies out of namespaces, veth pairs, bridges and nftables, so the project
// can prove hole punching against real kernel NATs. Library (imported by
// test-netns/) and CLI (`node dist/scripts/netns-lab.js up cone-symmetric`).
//
// Everything the lab creates lives inside namespaces named `<prefix>-<node>`;
// nothing is created in the root namespace, so deleting the namespaces removes
// every interface, rule and route, and parallel labs never collide.

import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLI, captureOutput, run, stopProcess, type ExecOptions, type ExecResult } from './proc.js';

// Process helpers live in proc.ts; re-exported so lab users need one import.
export * from './proc.js';
export * from './lab-miniupnpd.js';
import { startMiniupnpd, type MiniupnpdOptions } from './lab-miniupnpd.js';

// ---------------------------------------------------------------------------
// Topology description

export type RouterType = 'cone' | 'symmetric' | 'fullcone' | 'public' | 'sequential';
/** The four textbook types (the punch matrix). */
export const ROUTER_TYPES: readonly RouterType[] = ['public', 'fullcone', 'cone', 'symmetric'];
/**
 * Every type the lab builds. `sequential`: a symmetric NAT that allocates UDP
 * ports in sequence from one counter for all its mappings (carrier and
 * enterprise NATs; issue 21), port-restricted filtering like `cone`.
 */
export const ALL_ROUTER_TYPES: readonly RouterType[] = [...ROUTER_TYPES, 'sequential'];
/** A sequential router's UDP ports: BASE + (counter mod PORTS); the counter goes up by one per new mapping. */
export const SEQUENTIAL_BASE_PORT = 20000;
export const SEQUENTIAL_PORTS = 4096;

/** Impairments of one edge device's WAN link. */
export interface LinkOptions {
  /** percent of datagrams dropped on the WAN side, each direction independently */
  loss?: number;
  /** token-bucket rate limit of the WAN link in Mbit/s, both directions */
  rateMbit?: number;
  /** nf_conntrack_udp_timeout (s): mapping lifetime of a one-way/unreplied UDP flow */
  udpTimeout?: number;
  /** nf_conntrack_udp_timeout_stream (s): lifetime of a UDP flow that saw replies */
  udpStreamTimeout?: number;
  /** a small MTU on the WAN link (see Lab.setMtu); 0 or absent: 1500 */
  mtu?: number;
  /** how the small MTU behaves: 'blackhole' (default: silent drops) or 'icmp' (a router sends frag-needed) */
  mtuMode?: MtuMode;
}

/**
 * How a link with a small MTU treats bigger packets:
 * - 'blackhole': dropped silently in both directions, no ICMP (the receiving
 *   end of a veth drops frames above its MTU; the sender's MTU stays 1500,
 *   so nothing on the sending side ever learns).
 * - 'icmp': the link's interfaces carry the MTU, so the router forwarding onto
 *   it answers "fragmentation needed" (classic PMTUD) and a host on it
 *   fragments locally.
 */
export type MtuMode = 'blackhole' | 'icmp';
/** Ethernet: the MTU of every lab link unless set otherwise. */
export const DEFAULT_MTU = 1500;
/** Accepted by setMtu: IPv4's 576-byte floor up to jumbo frames. */
export const MIN_LAB_MTU = 576;
export const MAX_LAB_MTU = 9000;

export interface RouterSpec extends LinkOptions {
  type: RouterType;
  /** Run miniupnpd (UPnP IGD, NAT-PMP, PCP) on this router; it gets a non-reserved WAN address (lab-miniupnpd.ts). */
  miniupnpd?: boolean | MiniupnpdOptions;
}

export interface Topology {
  /** site A: router "ra" with host "a" behind it (or "a" directly on the internet if public) */
  a: RouterType | RouterSpec;
  /** site B: router "rb" with host "b" */
  b: RouterType | RouterSpec;
  /** a second host "a2" on site A's LAN (same router as "a") */
  sameLan?: boolean;
  /** an "attacker" host on the internet (203.0.113.66) */
  attacker?: boolean;
  /**
   * Carrier-grade NAT in front of a site: site A's router "ra" then sits on the
   * carrier's inside network (100.64.1.0/24) behind carrier router "ca" (or "cb").
   */
  cgnat?: { a?: RouterType | RouterSpec; b?: RouterType | RouterSpec };
  /** both LANs use 10.0.1.0/24, as two home networks often do (host candidates collide) */
  overlappingLans?: boolean;
  /**
   * Routed IPv6 (issue 19): the internet gets 2001:db8::/64, each site's LAN
   * 2001:db8:a::/64 or 2001:db8:b::/64 behind its router, which forwards
   * IPv6 through the same stateful firewall as IPv4 (new inbound flows
   * dropped) and translates nothing (no NAT66). Per node: `dual` (default),
   * `v4` (no IPv6: the lab as before) or `v6` (no IPv4 address at all).
   * Not with cgnat (a carrier's IPv6 would be routed, not a second NAT).
   */
  ipv6?: { a?: Stack; b?: Stack; rdv?: Stack };
}

/** The address families of a node in a lab with IPv6. */
export type Stack = 'dual' | 'v4' | 'v6';

/** Fixed addresses: documentation ranges for the internet, private ones inside sites. */
export const ADDR = {
  internet: '203.0.113.0/24',
  edgeA: '203.0.113.1',
  edgeB: '203.0.113.2',
  publicA2: '203.0.113.3',
  rdv: '203.0.113.10',
  rdv2: '203.0.113.11',
  attacker: '203.0.113.66',
} as const;

/** IPv6 addresses (2001:db8::/32, documentation space), used when the topology has `ipv6`. */
export const ADDR6 = {
  internet: '2001:db8::/64',
  edgeA: '2001:db8::1',
  edgeB: '2001:db8::2',
  publicA2: '2001:db8::3',
  /**
   * One IPv6 address only: a socket bound to [::] answers from the kernel's
   * preferred source address, not the one a datagram was sent to, and with two
   * addresses on one prefix that is the wrong one, which the peers' stateful
   * firewalls drop (docs/TROUBLESHOOTING.md).
   */
  rdv: '2001:db8::10',
  attacker: '2001:db8::66',
  /** A site's LAN prefix (/64): its router is ::1, its hosts ::10, ::11. */
  lan: (site: 'a' | 'b') => `2001:db8:${site}::`,
} as const;

type Role = 'internet' | 'router' | 'host';

/** One namespace of the lab, as planned from the topology (pure data). */
export interface NodePlan {
  name: string;
  role: Role;
  /** router type for routers; 'public' for hosts on the internet */
  type?: RouterType;
  /** addresses with prefix length, first one is the primary */
  addrs: string[];
  /** default gateway, for hosts and inner routers */
  gateway?: string;
  /** for routers: name of the upstream node and the LAN subnet/hosts */
  upstream?: string;
  lanHosts?: string[];
  lanCidr?: string;
  /** for routers: initial link options */
  link?: LinkOptions;
  /** IPv6 addresses with prefix length (none: IPv6 off in this node); a router's WAN first, then LAN */
  addrs6?: string[];
  /** IPv6 default gateway, for hosts behind a router */
  gateway6?: string;
}

export interface LabPlan {
  prefix: string;
  topology: Topology;
  nodes: NodePlan[];
}

function spec(r: RouterType | RouterSpec): RouterSpec {
  return typeof r === 'string' ? { type: r } : r;
}

function checkType(t: string): RouterType {
  if (!(ALL_ROUTER_TYPES as readonly string[]).includes(t)) {
    throw new Error(`unknown router type "${t}" (expected one of ${ALL_ROUTER_TYPES.join(', ')})`);
  }
  return t as RouterType;
}

/**
 * Pure: turn a topology into the list of namespaces with their addresses.
 * Site X (a or b) gets edge address edgeX on the internet. Behind a public
 * "router" the host itself holds that address; behind a NAT the router does.
 */
export function planTopology(prefix: string, topology: Topology): LabPlan {
  const v6 = topology.ipv6;
  if (v6 && topology.cgnat) throw new Error('ipv6 is not supported with cgnat');
  const stack = (who: 'a' | 'b' | 'rdv'): Stack => (v6 ? (v6[who] ?? 'dual') : 'v4');
  /** IPv4 addresses unless the node is IPv6-only; IPv6 ones unless it is IPv4-only. */
  const fam = (st: Stack, four: string[], six: string[]) => ({
    addrs: st === 'v6' ? [] : four,
    ...(st !== 'v4' ? { addrs6: six } : {}),
  });
  const nodes: NodePlan[] = [
    { name: 'inet', role: 'internet', addrs: [] },
    {
      name: 'rdv',
      role: 'host',
      type: 'public',
      ...fam(stack('rdv'), [`${ADDR.rdv}/24`, `${ADDR.rdv2}/24`], [`${ADDR6.rdv}/64`]),
    },
  ];
  if (topology.attacker)
    nodes.push({
      name: 'attacker',
      role: 'host',
      type: 'public',
      addrs: [`${ADDR.attacker}/24`],
      ...(v6 ? { addrs6: [`${ADDR6.attacker}/64`] } : {}),
    });

  for (const site of ['a', 'b'] as const) {
    const r = spec(topology[site]);
    checkType(r.type);
    const edge = site === 'a' ? ADDR.edgeA : ADDR.edgeB;
    const hosts = site === 'a' && topology.sameLan ? ['a', 'a2'] : [site];
    const carrier = topology.cgnat?.[site] ? spec(topology.cgnat[site]) : undefined;
    if (carrier) checkType(carrier.type);

    if (r.type === 'public') {
      if (carrier) throw new Error(`site ${site}: a public host cannot sit behind a carrier NAT`);
      // No router: the host is on the internet. a2 (sameLan) gets its own public address.
      const edge6 = site === 'a' ? ADDR6.edgeA : ADDR6.edgeB;
      const st = stack(site);
      nodes.push({
        name: site,
        role: 'host',
        type: 'public',
        ...fam(st, [`${edge}/24`], [`${edge6}/64`]),
        link: linkOf(r),
      });
      if (hosts.length > 1)
        nodes.push({
          name: 'a2',
          role: 'host',
          type: 'public',
          ...fam(st, [`${ADDR.publicA2}/24`], [`${ADDR6.publicA2}/64`]),
        });
      continue;
    }
    if (carrier?.type === 'public') throw new Error(`site ${site}: carrier NAT type must be a NAT type`);

    const router = `r${site}`;
    const net = site === 'a' || topology.overlappingLans ? 1 : 2;
    let routerWan = `${edge}/24`;
    let routerGw: string | undefined;
    let upstream = 'inet';
    if (carrier) {
      const cname = `c${site}`;
      const cnet = site === 'a' ? 1 : 2;
      nodes.push({
        name: cname,
        role: 'router',
        type: carrier.type,
        addrs: [`${edge}/24`, `100.64.${cnet}.1/24`],
        upstream: 'inet',
        lanHosts: [router],
        lanCidr: `100.64.${cnet}.0/24`,
        link: linkOf(carrier),
      });
      routerWan = `100.64.${cnet}.2/24`;
      routerGw = `100.64.${cnet}.1`;
      upstream = cname;
    }
    const st = stack(site);
    const lan6 = ADDR6.lan(site);
    nodes.push({
      name: router,
      role: 'router',
      type: r.type,
      addrs: [routerWan, `10.0.${net}.1/24`],
      ...(st !== 'v4' ? { addrs6: [`${site === 'a' ? ADDR6.edgeA : ADDR6.edgeB}/64`, `${lan6}1/64`] } : {}),
      gateway: routerGw,
      upstream,
      lanHosts: hosts,
      lanCidr: `10.0.${net}.0/24`,
      link: linkOf(r),
    });
    hosts.forEach((h, i) => {
      nodes.push({
        name: h,
        role: 'host',
        ...fam(st, [`10.0.${net}.${10 + i}/24`], [`${lan6}${(0x10 + i).toString(16)}/64`]),
        ...(st !== 'v6' ? { gateway: `10.0.${net}.1` } : {}),
        ...(st !== 'v4' ? { gateway6: `${lan6}1` } : {}),
        upstream: router,
      });
    });
  }
  return { prefix, topology, nodes };
}

function linkOf(r: RouterSpec): LinkOptions {
  const { type: _t, miniupnpd: _m, ...rest } = r;
  return rest;
}

// ---------------------------------------------------------------------------
// Names

// Longest interface suffix is 5 chars ("-eth0", "-l-a2"): 10 + 5 = 15 = IFNAMSIZ-1.
const PREFIX_RE = /^[a-z][a-z0-9]{0,9}$/;

export function checkPrefix(prefix: string): string {
  if (!PREFIX_RE.test(prefix)) {
    throw new Error(`bad prefix "${prefix}": lowercase letter then up to 9 letters/digits, no "-"`);
  }
  return prefix;
}

export function randomPrefix(): string {
  return 'hp' + randomBytes(2).toString('hex');
}

const IF = {
  bridge: (p: string) => `${p}-br`,
  // Port on the internet bridge (or on a carrier's LAN bridge) towards a node.
  port: (p: string, node: string) => `${p}-${node === 'attacker' ? 'atk' : node}`,
  wan: (p: string) => `${p}-wan`,
  lan: (p: string) => `${p}-lan`,
  lanPort: (p: string, host: string) => `${p}-l-${host}`,
  eth: (p: string) => `${p}-eth0`,
};

/** Where a node's uplink ends: the interface in the node and its peer port upstream. */
function uplink(prefix: string, node: NodePlan): { inner: string; upstreamNs: string; port: string } {
  const inner = node.role === 'router' ? IF.wan(prefix) : IF.eth(prefix);
  const up = node.upstream ?? 'inet';
  const port = up === 'inet' ? IF.port(prefix, node.name) : IF.lanPort(prefix, node.name);
  return { inner, upstreamNs: up, port };
}

const ip = (args: string[]) => run('ip', args, { check: true });
const nsExec = (ns: string, args: string[], opts: ExecOptions = {}) => run('ip', ['netns', 'exec', ns, ...args], opts);
const sysctl = (ns: string, key: string, value: string | number) =>
  nsExec(ns, ['sysctl', '-q', '-w', `${key}=${value}`], { check: true });

/** Why the lab cannot run here, or null when it can (root, ip netns, nft, conntrack). */
export async function missingPrerequisites(): Promise<string | null> {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (typeof process.getuid === 'function' && process.getuid() !== 0)
    return 'the netns lab needs root (run the suite with sudo)';
  const ipr = await run('ip', ['netns', 'list'], { timeoutMs: 5000 });
  if (ipr.code !== 0) return `"ip netns" is unavailable (install iproute2): ${ipr.stderr.trim()}`;
  const nft = await run('nft', ['--version'], { timeoutMs: 5000 });
  if (nft.code !== 0) return 'nft is missing (apt-get install nftables)';
  const ct = await run('conntrack', ['--version'], { timeoutMs: 5000 });
  if (ct.code !== 0) return 'conntrack is missing (apt-get install conntrack)';
  const et = await run('ethtool', ['--version'], { timeoutMs: 5000 });
  if (et.code !== 0) return 'ethtool is missing (apt-get install ethtool)';
  return null;
}

// ---------------------------------------------------------------------------
// Router rules (pure: return nft scripts)

/**
 * The NAT and home-router firewall of a router namespace. `wanAddr` (the
 * router's WAN address) is needed by the `sequential` type, which SNATs to it.
 */
export function routerRuleset(prefix: string, type: RouterType, lanHost: string | undefined, wanAddr?: string): string {
  const wan = IF.wan(prefix);
  const lan = IF.lan(prefix);
  // Why the drop policy: without it, a peer's early punch packet that reaches the
  // router creates a conntrack entry which later clashes with our own outbound
  // mapping, and the NAT silently turns symmetric (see DESIGN.md).
  const filter = `
table inet labfw {
  chain input {
    type filter hook input priority filter; policy drop;
    ct state established,related accept
    iifname "lo" accept
    iifname "${lan}" accept
    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "${lan}" accept
${type === 'fullcone' ? '    ct status dnat accept\n' : ''}  }
}`;
  const masq = type === 'symmetric' ? 'masquerade random,fully-random' : 'masquerade';
  if (type === 'sequential' && !wanAddr) throw new Error('a sequential router needs its WAN address');
  const seq = type === 'sequential' ? `    oifname "${wan}" meta l4proto udp ${sequentialSnat(wanAddr!)}\n` : '';
  const dnat =
    type === 'fullcone' && lanHost
      ? `  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "${wan}" meta l4proto udp dnat ip to ${lanHost}
  }\n`
      : '';
  const nat = `
table ip labnat {
${dnat}  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
${seq}    oifname "${wan}" ${masq}
  }
}`;
  return filter + '\n' + nat + '\n';
}

/**
 * The SNAT of a sequential router: the NAT chain sees only a flow's first
 * packet, so `numgen inc` counts new mappings, for the whole box. numgen's
 * value is in host byte order, and a port in a NAT statement is in network
 * order, so the counter goes through a map to the port (DESIGN.md).
 */
export function sequentialSnat(wanAddr: string, base = SEQUENTIAL_BASE_PORT, n = SEQUENTIAL_PORTS): string {
  const entries = Array.from({ length: n }, (_, i) => `${i} : ${base + i}`).join(', ');
  return `snat ip to ${wanAddr} : numgen inc mod ${n} map { ${entries} }`;
}

/** Loss on an interface, both directions, with nft numgen (no netem on this kernel). */
export function lossRuleset(iface: string, pct: number): string {
  const n = Math.round(pct);
  // Before conntrack on the way in, after NAT on the way out: a dropped datagram
  // behaves like one lost on the wire.
  return `
table inet labloss {
  chain ingress {
    type filter hook prerouting priority -400; policy accept;
    iifname "${iface}" numgen random mod 100 < ${n} drop
  }
  chain egress {
    type filter hook postrouting priority 400; policy accept;
    oifname "${iface}" numgen random mod 100 < ${n} drop
  }
}
`;
}

/** Drop UDP on the WAN in both directions (e.g. "UDP blocked" scenarios). */
export function blockUdpRuleset(iface: string): string {
  return `
table inet labblock {
  chain ingress {
    type filter hook prerouting priority -390; policy accept;
    iifname "${iface}" meta l4proto udp drop
  }
  chain egress {
    type filter hook postrouting priority 390; policy accept;
    oifname "${iface}" meta l4proto udp drop
  }
}
`;
}

/** Drop IPv6 UDP on the WAN in both directions (an ISP or firewall that blocks it), IPv4 untouched. */
export function blockUdp6Ruleset(iface: string): string {
  return `
table inet labblock6 {
  chain ingress {
    type filter hook prerouting priority -390; policy accept;
    iifname "${iface}" meta nfproto ipv6 meta l4proto udp drop
  }
  chain egress {
    type filter hook postrouting priority 390; policy accept;
    oifname "${iface}" meta nfproto ipv6 meta l4proto udp drop
  }
}
`;
}

/**
 * TCP MSS clamping, as real routers do, in its own table so setMtu can
 * replace it. `rt mtu` clamps to the route's MTU (what an 'icmp' link
 * announces); a black-hole link is invisible to routing, so its router also
 * clamps to a fixed `mss` (the link MTU - 40), as a PPPoE router configured
 * for its line does. `hook` is 'forward' on a router, 'output' on a public
 * host (its own link).
 */
export function mssClampRuleset(hook: 'forward' | 'output', mss?: number): string {
  const fixed =
    mss !== undefined ? `    tcp flags syn tcp option maxseg size > ${mss} tcp option maxseg size set ${mss}\n` : '';
  return `
table inet labmss {
  chain clamp {
    type filter hook ${hook} priority mangle; policy accept;
    tcp flags syn tcp option maxseg size set rt mtu
${fixed}  }
}
`;
}

/** Drop everything on an interface, both ways, silently (a network that is gone without the link noticing). */
export function blackholeRuleset(iface: string): string {
  return `
table inet labhole {
  chain ingress {
    type filter hook prerouting priority -395; policy accept;
    iifname "${iface}" drop
  }
  chain egress {
    type filter hook postrouting priority 395; policy accept;
    oifname "${iface}" drop
  }
}
`;
}

// ---------------------------------------------------------------------------
// The lab

export interface SpawnOpts {
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** 'pipe' (default: output captured, see waitForEvent/outputOf) or 'inherit' */
  stdio?: 'pipe' | 'inherit';
}

export interface UpOptions {
  /** namespace/interface prefix; default 'hp' + 4 random hex digits */
  prefix?: string;
  topology: Topology;
  /**
   * The lab outlives this process on purpose (the CLI). Otherwise `prune`
   * may delete it once this process has died without calling down().
   */
  persistent?: boolean;
}

interface LabState {
  prefix: string;
  topology: Topology;
  pid: number;
  persistent: boolean;
  createdAt: string;
}

const STATE_DIR = '/run/netns-lab';
/** Per-namespace files `ip netns exec` bind-mounts over /etc (setHosts). */
const NETNS_ETC = '/etc/netns';

export class Lab {
  readonly prefix: string;
  readonly plan: LabPlan;
  private readonly children = new Set<ChildProcess>();
  /** MTUs set with setMtu, by node (for mtuOf). */
  private readonly mtus = new Map<string, { mtu: number; mode: MtuMode }>();
  private downPromise: Promise<void> | null = null;
  /**
   * Addresses handed out by freeAddress(), taken at once: two changes run
   * concurrently (both routers renumbered together) would otherwise both pick
   * the first free address, since a node's address list is updated only after
   * `ip addr` returns, and share it on the internet bridge.
   */
  private readonly handedOut = new Set<string>();

  private constructor(plan: LabPlan) {
    this.prefix = plan.prefix;
    this.plan = plan;
  }

  /** Build the topology. An existing lab with the same prefix is torn down first. */
  static async up(opts: UpOptions): Promise<Lab> {
    const prefix = checkPrefix(opts.prefix ?? randomPrefix());
    const plan = planTopology(prefix, opts.topology);
    await Lab.cleanupStale(prefix);
    const lab = new Lab(plan);
    try {
      // State first, so that a crash mid-build still leaves something `prune` can judge.
      await writeState({
        prefix,
        topology: opts.topology,
        pid: process.pid,
        persistent: !!opts.persistent,
        createdAt: new Date().toISOString(),
      });
      await lab.build();
      for (const site of ['a', 'b'] as const) {
        const r = opts.topology[site];
        if (typeof r === 'object' && r.miniupnpd)
          await startMiniupnpd(lab, `r${site}`, r.miniupnpd === true ? {} : r.miniupnpd);
      }
    } catch (e) {
      await Lab.cleanupStale(prefix);
      throw e;
    }
    return lab;
  }

  /** A handle on a lab already built (by the CLI or another process). */
  static async attach(prefix: string): Promise<Lab> {
    checkPrefix(prefix);
    const state = await readState(prefix);
    if (!state) throw new Error(`no lab with prefix "${prefix}" (state file ${STATE_DIR}/${prefix}.json missing)`);
    return new Lab(planTopology(prefix, state.topology));
  }

  /**
   * Kill every process inside, and delete every namespace named `<prefix>-*`.
   * Works after a half-failed `up` and when nothing exists.
   */
  static async cleanupStale(prefix: string): Promise<void> {
    checkPrefix(prefix);
    const names = (await listNamespaces()).filter((n) => n.startsWith(prefix + '-'));
    // Kill first: a namespace with live processes lingers after `ip netns del`.
    for (const ns of names) await killNamespacePids(ns);
    for (const ns of names) await run('ip', ['netns', 'del', ns], { timeoutMs: 10_000 });
    // Hosts files of setHosts (only this lab's: the directory is named after the namespace).
    const etc = (await readdir(NETNS_ETC).catch(() => [] as string[])).filter((n) => n.startsWith(prefix + '-'));
    for (const d of etc) await rm(join(NETNS_ETC, d), { recursive: true, force: true });
    await rm(join(STATE_DIR, `${prefix}.json`), { force: true });
    // Per-lab files of the lab's daemons (miniupnpd config and pid: lab-miniupnpd.ts).
    const own = (await readdir(STATE_DIR).catch(() => [] as string[])).filter((f) => f.startsWith(`${prefix}-`));
    for (const f of own) await rm(join(STATE_DIR, f), { force: true });
  }

  /**
   * Delete labs left behind by processes that died without calling down()
   * (a killed test run). Labs of live processes, CLI labs and labs without a
   * state file are left alone, so parallel runs are safe. Returns the prefixes removed.
   */
  static async prune(): Promise<string[]> {
    const removed: string[] = [];
    for (const p of (await Lab.list()).keys()) {
      const st = await readState(p);
      if (!st || st.persistent || pidAlive(st.pid)) continue;
      await Lab.cleanupStale(p);
      removed.push(p);
    }
    return removed;
  }

  /** Prefixes of labs that exist on this machine (from namespace names). */
  static async list(): Promise<Map<string, string[]>> {
    const by = new Map<string, string[]>();
    for (const n of await listNamespaces()) {
      const i = n.indexOf('-');
      if (i <= 0) continue;
      const p = n.slice(0, i);
      if (!PREFIX_RE.test(p)) continue;
      by.set(p, [...(by.get(p) ?? []), n.slice(i + 1)]);
    }
    return by;
  }

  get topology(): Topology {
    return this.plan.topology;
  }

  /** Names of every node (namespaces without the prefix): inet, rdv, ra, a, ... */
  get nodes(): string[] {
    return this.plan.nodes.map((n) => n.name);
  }

  /** Namespace name of a node. */
  ns(node: string): string {
    this.node(node);
    return `${this.prefix}-${node}`;
  }

  /** Primary IPv4 address of a node (a router's WAN address). */
  addr(node: string): string {
    const a = this.addrs(node)[0];
    if (!a) throw new Error(`node "${node}" has no address`);
    return a;
  }

  /** All IPv4 addresses of a node (rdv has two; routers: WAN then LAN). */
  addrs(node: string): string[] {
    return this.node(node).addrs.map((c) => c.split('/')[0]);
  }

  /** IPv6 addresses of a node (none without IPv6): a router's WAN then LAN. */
  addrs6(node: string): string[] {
    return (this.node(node).addrs6 ?? []).map((c) => c.split('/')[0]);
  }

  /** Primary IPv6 address of a node. */
  addr6(node: string): string {
    const a = this.addrs6(node)[0];
    if (!a) throw new Error(`node "${node}" has no IPv6 address`);
    return a;
  }

  /**
   * Name resolution inside one node: `ip netns exec` (which every command of
   * the lab goes through) bind-mounts /etc/netns/<namespace>/hosts over
   * /etc/hosts in a private mount namespace, so the lines given here are what
   * getaddrinfo reads there, and the machine's own /etc/hosts is untouched
   * for every other process. Removed with the lab.
   */
  async setHosts(node: string, entries: { name: string; addresses: string[] }[]): Promise<void> {
    const dir = join(NETNS_ETC, this.ns(node));
    await mkdir(dir, { recursive: true });
    const lines = ['127.0.0.1 localhost', '::1 localhost ip6-localhost'];
    for (const e of entries) for (const a of e.addresses) lines.push(`${a} ${e.name}`);
    await writeFile(join(dir, 'hosts'), lines.join('\n') + '\n');
  }

  /** The public (internet) address through which a host's traffic leaves its site. */
  publicAddr(host: string): string {
    let n = this.node(host);
    while (n.upstream && n.upstream !== 'inet') n = this.node(n.upstream);
    return n.addrs[0].split('/')[0];
  }

  /** Router type of a router node, or 'public' for a host on the internet. */
  typeOf(node: string): RouterType | undefined {
    return this.node(node).type;
  }

  private node(name: string): NodePlan {
    const n = this.plan.nodes.find((x) => x.name === name);
    if (!n) throw new Error(`no node "${name}" in lab ${this.prefix} (nodes: ${this.nodes.join(', ')})`);
    return n;
  }

  /**
   * The node whose WAN link carries impairments for `node`: a router itself;
   * for a public site's "ra"/"rb" (which does not exist), the host.
   */
  private edge(node: string): NodePlan {
    const direct = this.plan.nodes.find((x) => x.name === node);
    if (
      direct &&
      (direct.role === 'router' || (direct.role === 'host' && direct.type === 'public' && direct.name !== 'rdv'))
    )
      return direct;
    if (!direct && /^r[ab]$/.test(node)) return this.node(node.slice(1));
    if (direct) throw new Error(`"${node}" is not a router or public host`);
    return this.node(node);
  }

  /** Run a command inside a node's namespace, to completion (bounded, default 30 s). */
  exec(node: string, cmd: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return nsExec(this.ns(node), cmd, opts);
  }

  /**
   * Start a long-running command inside a node's namespace, in its own process
   * group; tracked, and killed by down(). Output is captured (waitForEvent, outputOf).
   */
  spawn(node: string, cmd: string[], opts: SpawnOpts = {}): ChildProcess {
    if (this.downPromise) throw new Error(`lab ${this.prefix} is down`);
    const so: SpawnOptions = {
      detached: true,
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: opts.stdio === 'inherit' ? ['ignore', 'inherit', 'inherit'] : ['pipe', 'pipe', 'pipe'],
    };
    // `ip netns exec` execs the command in place (no fork), so the pid is the command's.
    const child = spawn('ip', ['netns', 'exec', this.ns(node), ...cmd], so);
    captureOutput(child);
    child.on('error', () => {
      /* reported through exit/waitForEvent */
    });
    child.stdin?.on('error', () => {
      /* the child may not read its input */
    });
    this.children.add(child);
    child.on('exit', () => this.children.delete(child));
    return child;
  }

  /** Start a Node program inside a namespace with the node binary running this process. */
  spawnNode(node: string, script: string, args: string[], opts: SpawnOpts = {}): ChildProcess {
    return this.spawn(node, [process.execPath, script, ...args], opts);
  }

  /** Start one of the project's built CLIs: lab.spawnCli('a', 'peer', ['serve', ...]). */
  spawnCli(node: string, cli: keyof typeof CLI, args: string[], opts: SpawnOpts = {}): ChildProcess {
    return this.spawnNode(node, CLI[cli], args, opts);
  }

  /** Run one of the project's built CLIs to completion: lab.execCli('a', 'peer', ['nat', ...]). */
  execCli(node: string, cli: keyof typeof CLI, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return this.exec(node, [process.execPath, CLI[cli], ...args], opts);
  }

  /** Processes started with spawn() that are still running. */
  get running(): ChildProcess[] {
    return [...this.children];
  }

  /** Drop `pct` percent of datagrams on a router's WAN link, each direction (0 = none). */
  async setLoss(router: string, pct: number): Promise<void> {
    if (!(pct >= 0 && pct <= 100)) throw new Error(`loss must be 0..100, got ${pct}`);
    const e = this.edge(router);
    const ns = this.ns(e.name);
    await nsExec(ns, ['nft', 'delete', 'table', 'inet', 'labloss']);
    if (pct > 0)
      await nsExec(ns, ['nft', '-f', '-'], { input: lossRuleset(uplink(this.prefix, e).inner, pct), check: true });
  }

  /** Rate-limit a router's WAN link to `mbit` Mbit/s in both directions (0 = unlimited). */
  async setRate(router: string, mbit: number): Promise<void> {
    if (!(mbit >= 0)) throw new Error(`rate must be >= 0, got ${mbit}`);
    const e = this.edge(router);
    const up = uplink(this.prefix, e);
    // Shaping the egress of both ends of the WAN veth limits both directions
    // without an ifb device.
    const ends: [string, string][] = [
      [this.ns(e.name), up.inner],
      [this.ns(up.upstreamNs), up.port],
    ];
    for (const [ns, dev] of ends) {
      if (mbit === 0) {
        await nsExec(ns, ['tc', 'qdisc', 'del', 'dev', dev, 'root']);
      } else {
        const bytesPerSec = (mbit * 1e6) / 8;
        // At least 10 ms of traffic (and a few full packets) per burst, queue up to 100 ms.
        const burst = Math.max(16_000, Math.round(bytesPerSec / 100));
        await nsExec(
          ns,
          [
            'tc',
            'qdisc',
            'replace',
            'dev',
            dev,
            'root',
            'tbf',
            'rate',
            `${mbit}mbit`,
            'burst',
            String(burst),
            'latency',
            '100ms',
          ],
          { check: true },
        );
      }
    }
  }

  /**
   * UDP mapping lifetime of a NAT router: `seconds` for unreplied flows, and for
   * flows that saw replies too unless `streamSeconds` is given.
   */
  async setUdpTimeout(router: string, seconds: number, streamSeconds = seconds): Promise<void> {
    const ns = this.ns(this.natRouter(router).name);
    await sysctl(ns, 'net.netfilter.nf_conntrack_udp_timeout', Math.round(seconds));
    await sysctl(ns, 'net.netfilter.nf_conntrack_udp_timeout_stream', Math.round(streamSeconds));
  }

  /** Forget every NAT mapping of a router (conntrack -F): the next packet gets a fresh one. */
  async flushConntrack(router: string): Promise<void> {
    await this.exec(this.natRouter(router).name, ['conntrack', '-F'], { check: true });
  }

  /** The router's conntrack table as text (conntrack -L), for assertions and debugging. */
  async conntrack(router: string, proto: 'udp' | 'tcp' | 'all' = 'udp'): Promise<string> {
    const args = ['conntrack', '-L', ...(proto === 'all' ? [] : ['-p', proto])];
    return (await this.exec(this.natRouter(router).name, args, { check: true })).stdout;
  }

  /** Drop (or stop dropping) all UDP on a router's WAN link. */
  async blockUdp(router: string, blocked: boolean): Promise<void> {
    const e = this.edge(router);
    const ns = this.ns(e.name);
    await nsExec(ns, ['nft', 'delete', 'table', 'inet', 'labblock']);
    if (blocked)
      await nsExec(ns, ['nft', '-f', '-'], { input: blockUdpRuleset(uplink(this.prefix, e).inner), check: true });
  }

  /** Drop (or stop dropping) IPv6 UDP on a router's WAN link; IPv4 and IPv6 TCP pass. */
  async blockUdp6(router: string, blocked: boolean): Promise<void> {
    const e = this.edge(router);
    const ns = this.ns(e.name);
    await nsExec(ns, ['nft', 'delete', 'table', 'inet', 'labblock6']);
    if (blocked)
      await nsExec(ns, ['nft', '-f', '-'], { input: blockUdp6Ruleset(uplink(this.prefix, e).inner), check: true });
  }

  /**
   * Put an MTU on a node's uplink: a router's WAN (`ra`, `rb`, `ca`, `cb`;
   * for a public site `ra`/`rb` name the host's own link), or a host's link to
   * its router's LAN (`a`, `a2`, `b`). `mtu` 0 (or 1500) restores 1500.
   * Can be called at any time, e.g. mid-transfer.
   *
   * - 'blackhole': only the upstream end of the veth (the port on the bridge
   *   above) gets `mtu`, so bigger frames die silently both ways: the bridge
   *   drops them on the way down, the veth on the way up, and the node's own
   *   interface stays at 1500 so nothing sends ICMP. A router LAN bridge is
   *   pinned at 1500 so its IP layer does not learn the small MTU either.
   * - 'icmp': both ends get `mtu` (and, for a host, its router's LAN bridge,
   *   i.e. the router's whole LAN side): a router forwarding a bigger DF packet
   *   onto the link answers ICMP "fragmentation needed" (the home-router
   *   firewall passes it: ct related); a host on the link fragments locally.
   *   On a router's WAN, ICMP covers traffic leaving the site; traffic
   *   entering above the MTU is dropped silently (the lab's internet is a
   *   switch, with no router in front of the WAN to send ICMP): put the
   *   'icmp' MTU on the host instead for ICMP towards the site.
   *
   * Either way the router in front of the link (or a public host itself)
   * clamps TCP MSS to `mtu - 40`, so TCP (the relay) survives.
   */
  async setMtu(node: string, mtu: number, mode: MtuMode = 'blackhole'): Promise<void> {
    if (!Number.isInteger(mtu) || (mtu !== 0 && (mtu < MIN_LAB_MTU || mtu > MAX_LAB_MTU)))
      throw new Error(`mtu must be 0 or ${MIN_LAB_MTU}..${MAX_LAB_MTU}, got ${mtu}`);
    if (mode !== 'blackhole' && mode !== 'icmp')
      throw new Error(`mtu mode must be blackhole or icmp, got ${String(mode)}`);
    const target = this.mtuTarget(node);
    const up = uplink(this.prefix, target);
    const innerNs = this.ns(target.name);
    const upNs = this.ns(up.upstreamNs);
    const upRouter = up.upstreamNs !== 'inet' ? this.node(up.upstreamNs) : null;
    const v = mtu === 0 ? DEFAULT_MTU : mtu;
    const setDev = (ns: string, dev: string, m: number) => ip(['-n', ns, 'link', 'set', 'dev', dev, 'mtu', String(m)]);
    const icmp = mode === 'icmp' && v !== DEFAULT_MTU;
    // Order matters for the LAN bridge: it follows its smallest port unless
    // its MTU was set explicitly, which it always is here.
    await setDev(innerNs, up.inner, icmp ? v : DEFAULT_MTU);
    await setDev(upNs, up.port, v);
    if (upRouter) await setDev(upNs, IF.lan(this.prefix), icmp ? v : DEFAULT_MTU);
    // MSS clamping on the router that forwards onto the link, or the public host itself.
    const clampAt = target.role === 'router' ? target : (upRouter ?? target);
    const hook = clampAt.role === 'router' ? 'forward' : 'output';
    await nsExec(this.ns(clampAt.name), ['nft', 'delete', 'table', 'inet', 'labmss']);
    await this.nft(clampAt.name, mssClampRuleset(hook, v < DEFAULT_MTU ? v - 40 : undefined));
    if (v === DEFAULT_MTU) this.mtus.delete(target.name);
    else this.mtus.set(target.name, { mtu: v, mode });
  }

  /** The MTU set on a node's uplink with setMtu (1500 and 'blackhole' when none). */
  mtuOf(node: string): { mtu: number; mode: MtuMode } {
    return this.mtus.get(this.mtuTarget(node).name) ?? { mtu: DEFAULT_MTU, mode: 'blackhole' };
  }

  private mtuTarget(node: string): NodePlan {
    const direct = this.plan.nodes.find((x) => x.name === node);
    if (direct && direct.role === 'host' && direct.name !== 'rdv' && direct.name !== 'attacker') return direct;
    return this.edge(node);
  }

  // -- roaming: addresses and networks that change under a running test ----

  /**
   * A NAT router (or a public host) gets a new public address, as an ISP
   * renumbering a line or a laptop on another network: the new address is
   * added, the old one removed, and the router's conntrack flushed, which is
   * what the kernel does to masquerade mappings when their address goes away.
   * Returns the new address (default: the next free one of 203.0.113.20-59).
   */
  async changeWanAddress(node: string, to?: string): Promise<string> {
    const e = this.edge(node);
    if (e.upstream && e.upstream !== 'inet')
      throw new Error(`"${node}" is behind a carrier NAT: change "${e.upstream}"`);
    const ns = this.ns(e.name);
    const dev = uplink(this.prefix, e).inner;
    const addr = to ?? this.freeAddress('203.0.113.', 20, 59);
    await this.replacePrimary(ns, dev, e, `${addr}/24`);
    if (e.role === 'router') await this.flushConntrack(e.name);
    return addr;
  }

  /**
   * A host behind a NAT gets a new LAN address (a new DHCP lease): new address
   * in, old one out, default route back. A full-cone router's DNAT follows it.
   * Returns the new address (default: the next free one of the LAN, from .50).
   */
  async changeLanAddress(host: string, to?: string): Promise<string> {
    const h = this.node(host);
    if (h.role !== 'host' || !h.upstream || h.upstream === 'inet' || !h.gateway)
      throw new Error(`"${host}" is not a host behind a NAT router`);
    const ns = this.ns(host);
    const net3 = h.gateway.slice(0, h.gateway.lastIndexOf('.') + 1);
    const addr = to ?? this.freeAddress(net3, 50, 99);
    await this.replacePrimary(ns, IF.eth(this.prefix), h, `${addr}/24`);
    await ip(['-n', ns, 'route', 'replace', 'default', 'via', h.gateway]);
    await this.reloadRouterRules(h.upstream);
    return addr;
  }

  /**
   * Takes a node's uplink down (`ip link set down`: local sends fail, routes
   * through it go) or back up (routes restored). A router's WAN, or a host's eth0.
   */
  async setLinkDown(node: string, down: boolean): Promise<void> {
    const n = this.node(node);
    if (n.role === 'internet') throw new Error('the internet has no uplink');
    const ns = this.ns(node);
    const dev = uplink(this.prefix, n).inner;
    await ip(['-n', ns, 'link', 'set', dev, down ? 'down' : 'up']);
    if (!down && n.gateway) await ip(['-n', ns, 'route', 'replace', 'default', 'via', n.gateway]);
  }

  /**
   * Silently drops everything on a node's uplink, both ways (or stops):
   * the link stays up, so nothing local notices; only the silence tells.
   */
  async setBlackhole(node: string, on: boolean): Promise<void> {
    const n = this.node(node);
    if (n.role === 'internet') throw new Error('the internet has no uplink');
    const ns = this.ns(node);
    const dev = uplink(this.prefix, n).inner;
    await nsExec(ns, ['nft', 'delete', 'table', 'inet', 'labhole']);
    if (on) await nsExec(ns, ['nft', '-f', '-'], { input: blackholeRuleset(dev), check: true });
  }

  /** The network of `node` is gone for `ms`, then back: 'link' (interface down) or 'blackhole' (silent drop). */
  async outage(node: string, ms: number, how: 'link' | 'blackhole' = 'link'): Promise<void> {
    if (how === 'link') await this.setLinkDown(node, true);
    else await this.setBlackhole(node, true);
    try {
      await new Promise((r) => setTimeout(r, ms));
    } finally {
      if (how === 'link') await this.setLinkDown(node, false);
      else await this.setBlackhole(node, false);
    }
  }

  /**
   * Makes a NAT router behave as another type from now on (e.g. the visitor's
   * network turns symmetric), with its mappings flushed: what a move to a
   * network with another NAT looks like to the peers.
   */
  async setRouterType(router: string, type: RouterType): Promise<void> {
    const r = this.natRouter(router);
    if (type === 'public') throw new Error('a router cannot become public; move the host instead');
    r.type = checkType(type);
    await this.reloadRouterRules(router);
    await this.flushConntrack(router);
  }

  /**
   * Moves a host behind another NAT router (a laptop joining another network):
   * its uplink is re-plugged into that router's LAN, with a new address and
   * gateway there. Returns the new LAN address.
   */
  async moveHost(host: string, router: string): Promise<string> {
    const h = this.node(host);
    const r = this.natRouter(router);
    if (h.role !== 'host' || !h.upstream || h.upstream === 'inet' || !r.lanCidr)
      throw new Error(`"${host}" is not a host behind a NAT router`);
    if (h.upstream === router) throw new Error(`"${host}" is already behind "${router}"`);
    const old = this.node(h.upstream);
    const ns = this.ns(host);
    const gw = r.addrs[1].split('/')[0];
    const net3 = gw.slice(0, gw.lastIndexOf('.') + 1);
    const addr = this.freeAddress(net3, 100, 149);
    // Deleting one end of a veth pair deletes both: the old router's port goes too.
    await ip(['-n', ns, 'link', 'del', IF.eth(this.prefix)]);
    const port = IF.lanPort(this.prefix, host);
    await ip([
      '-n',
      this.ns(router),
      'link',
      'add',
      port,
      'type',
      'veth',
      'peer',
      'name',
      IF.eth(this.prefix),
      'netns',
      ns,
    ]);
    await ip(['-n', this.ns(router), 'link', 'set', port, 'master', IF.lan(this.prefix), 'up']);
    await ip(['-n', ns, 'link', 'set', IF.eth(this.prefix), 'up']);
    await ip(['-n', ns, 'addr', 'add', `${addr}/24`, 'dev', IF.eth(this.prefix)]);
    await ip(['-n', ns, 'route', 'replace', 'default', 'via', gw]);
    old.lanHosts = (old.lanHosts ?? []).filter((x) => x !== host);
    r.lanHosts = [...(r.lanHosts ?? []), host];
    h.upstream = router;
    h.gateway = gw;
    h.addrs = [`${addr}/24`];
    return addr;
  }

  /** An address `base` + n (n in from..to) that no node of the lab holds and none was handed before. */
  private freeAddress(base: string, from: number, to: number): string {
    const taken = new Set(this.plan.nodes.flatMap((n) => n.addrs.map((a) => a.split('/')[0])));
    for (let i = from; i <= to; i++) {
      const addr = base + i;
      if (taken.has(addr) || this.handedOut.has(addr)) continue;
      this.handedOut.add(addr);
      return addr;
    }
    throw new Error(`no free address left in ${base}${from}-${to}`);
  }

  /**
   * Replaces the primary address of `dev`: with promote_secondaries the new
   * (secondary) address survives the removal of the old primary, which would
   * otherwise take every secondary with it (DESIGN.md).
   */
  private async replacePrimary(ns: string, dev: string, n: NodePlan, cidr: string): Promise<void> {
    const old = n.addrs[0];
    await sysctl(ns, `net.ipv4.conf.${dev}.promote_secondaries`, 1);
    await ip(['-n', ns, 'addr', 'add', cidr, 'dev', dev]);
    await ip(['-n', ns, 'addr', 'del', old, 'dev', dev]);
    n.addrs = [cidr, ...n.addrs.slice(1)];
    if (n.gateway) await ip(['-n', ns, 'route', 'replace', 'default', 'via', n.gateway]);
  }

  /** Loads a router's NAT and firewall again (after its type or its full-cone host changed). */
  private async reloadRouterRules(router: string): Promise<void> {
    const r = this.natRouter(router);
    const ns = this.ns(router);
    await nsExec(ns, ['nft', 'delete', 'table', 'inet', 'labfw']);
    await nsExec(ns, ['nft', 'delete', 'table', 'ip', 'labnat']);
    const lanHost = r.lanHosts && r.lanHosts.length > 0 ? this.addrs(r.lanHosts[0])[0] : undefined;
    await this.nft(router, routerRuleset(this.prefix, r.type!, lanHost));
  }

  /** Load an nft script into a node's namespace (escape hatch for special scenarios). */
  async nft(node: string, script: string): Promise<void> {
    await this.exec(node, ['nft', '-f', '-'], { input: script, check: true });
  }

  private natRouter(router: string): NodePlan {
    const n = this.node(router);
    if (n.role !== 'router') throw new Error(`"${router}" is not a NAT router (public sites have none)`);
    return n;
  }

  /** Kill spawned processes and everything else inside, delete the namespaces. Idempotent. */
  down(): Promise<void> {
    this.downPromise ??= (async () => {
      await Promise.all([...this.children].map((c) => stopProcess(c, 1500)));
      await Lab.cleanupStale(this.prefix);
    })();
    return this.downPromise;
  }

  // -- building ------------------------------------------------------------

  private async build(): Promise<void> {
    const p = this.prefix;
    for (const n of this.plan.nodes) {
      const ns = this.ns(n.name);
      await ip(['netns', 'add', ns]);
      // Without IPv6 in the topology (or in this node), IPv4 only: link-local IPv6 addresses
      // would only add noise to host candidates. With it: no DAD delay, no autoconfiguration.
      const six = n.addrs6 !== undefined && n.addrs6.length > 0;
      await nsExec(ns, [
        'sysctl',
        '-q',
        '-w',
        `net.ipv6.conf.all.disable_ipv6=${six ? 0 : 1}`,
        `net.ipv6.conf.default.disable_ipv6=${six ? 0 : 1}`,
        ...(six
          ? ['net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0', 'net.ipv6.conf.all.accept_ra=0']
          : []),
        ...(six ? ['net.ipv6.conf.default.accept_ra=0'] : []),
      ]);
      if (six && n.role === 'router') await sysctl(ns, 'net.ipv6.conf.all.forwarding', 1);
      await ip(['-n', ns, 'link', 'set', 'lo', 'up']);
    }
    // The internet: one bridge, no addresses, no routing; it only switches frames.
    const inet = this.ns('inet');
    await ip(['-n', inet, 'link', 'add', IF.bridge(p), 'type', 'bridge']);
    await ip(['-n', inet, 'link', 'set', IF.bridge(p), 'up']);

    for (const n of this.plan.nodes) {
      if (n.role === 'router') {
        // The router's LAN is a bridge so that several hosts can share it.
        const ns = this.ns(n.name);
        await ip(['-n', ns, 'link', 'add', IF.lan(p), 'type', 'bridge']);
        await ip(['-n', ns, 'link', 'set', IF.lan(p), 'up']);
        await sysctl(ns, 'net.ipv4.ip_forward', 1);
      }
    }
    // Uplinks: a veth from each node (but the internet) to its upstream bridge.
    for (const n of this.plan.nodes) {
      if (n.role === 'internet') continue;
      const up = uplink(p, n);
      const upNs = this.ns(up.upstreamNs);
      const bridge = up.upstreamNs === 'inet' ? IF.bridge(p) : IF.lan(p);
      await ip([
        '-n',
        upNs,
        'link',
        'add',
        up.port,
        'type',
        'veth',
        'peer',
        'name',
        up.inner,
        'netns',
        this.ns(n.name),
      ]);
      await ip(['-n', upNs, 'link', 'set', up.port, 'master', bridge, 'up']);
      await ip(['-n', this.ns(n.name), 'link', 'set', up.inner, 'up']);
      // No UDP GSO super-packet crosses the internet: veths would carry one whole
      // to the far host, where a real uplink carries datagrams. Without UDP
      // segmentation offload on the interface, the kernel cuts it where it leaves
      // for the internet. TCP keeps its offloads (the relay path is unchanged).
      if (up.upstreamNs === 'inet')
        await nsExec(this.ns(n.name), ['ethtool', '-K', up.inner, 'tx-udp-segmentation', 'off'], { check: true });
    }
    for (const n of this.plan.nodes) {
      if (n.role === 'internet') continue;
      const ns = this.ns(n.name);
      const up = uplink(p, n);
      if (n.role === 'router') {
        await ip(['-n', ns, 'addr', 'add', n.addrs[0], 'dev', up.inner]);
        await ip(['-n', ns, 'addr', 'add', n.addrs[1], 'dev', IF.lan(p)]);
        if (n.addrs6) {
          await ip(['-n', ns, '-6', 'addr', 'add', n.addrs6[0], 'dev', up.inner, 'nodad']);
          await ip(['-n', ns, '-6', 'addr', 'add', n.addrs6[1], 'dev', IF.lan(p), 'nodad']);
        }
      } else {
        for (const a of n.addrs) await ip(['-n', ns, 'addr', 'add', a, 'dev', up.inner]);
        for (const a of n.addrs6 ?? []) await ip(['-n', ns, '-6', 'addr', 'add', a, 'dev', up.inner, 'nodad']);
      }
      if (n.gateway) await ip(['-n', ns, 'route', 'add', 'default', 'via', n.gateway]);
      if (n.gateway6) await ip(['-n', ns, '-6', 'route', 'add', 'default', 'via', n.gateway6]);
    }
    // IPv6 is routed, not translated: every node on the internet reaches a site's LAN through its router.
    for (const r of this.plan.nodes) {
      if (r.role !== 'router' || !r.addrs6 || r.upstream !== 'inet') continue;
      const lan = r.addrs6[1].replace(/1\/64$/, '/64');
      const via = r.addrs6[0].split('/')[0];
      for (const n of this.plan.nodes) {
        if (n === r || n.role === 'internet' || !n.addrs6?.length || (n.upstream ?? 'inet') !== 'inet') continue;
        await ip(['-n', this.ns(n.name), '-6', 'route', 'add', lan, 'via', via]);
      }
    }
    for (const n of this.plan.nodes) {
      if (n.role !== 'router') continue;
      const lanHost = n.lanHosts && n.lanHosts.length > 0 ? this.addrs(n.lanHosts[0])[0] : undefined;
      await this.nft(n.name, routerRuleset(p, n.type!, lanHost, n.addrs[0].split('/')[0]));
      await this.nft(n.name, mssClampRuleset('forward'));
    }
    for (const n of this.plan.nodes) {
      const l = n.link;
      if (!l) continue;
      if (l.loss) await this.setLoss(n.name, l.loss);
      if (l.rateMbit) await this.setRate(n.name, l.rateMbit);
      if (l.mtu) await this.setMtu(n.name, l.mtu, l.mtuMode);
      if (n.role === 'router' && (l.udpTimeout !== undefined || l.udpStreamTimeout !== undefined)) {
        await this.setUdpTimeout(n.name, l.udpTimeout ?? 30, l.udpStreamTimeout ?? l.udpTimeout ?? 120);
      }
    }
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function listNamespaces(): Promise<string[]> {
  const r = await run('ip', ['netns', 'list'], { timeoutMs: 10_000 });
  if (r.code !== 0) return [];
  // Lines look like "name" or "name (id: 3)".
  return r.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter(Boolean);
}

async function killNamespacePids(ns: string): Promise<void> {
  for (let round = 0; round < 5; round++) {
    const r = await run('ip', ['netns', 'pids', ns], { timeoutMs: 5000 });
    const pids = r.stdout
      .split(/\s+/)
      .map(Number)
      .filter((n) => Number.isInteger(n) && n > 1 && n !== process.pid);
    if (pids.length === 0) return;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    await new Promise((r2) => setTimeout(r2, 50));
  }
}

async function writeState(state: LabState): Promise<void> {
  try {
    await mkdir(STATE_DIR, { recursive: true });
    await writeFile(join(STATE_DIR, `${state.prefix}.json`), JSON.stringify(state, null, 2));
  } catch {
    /* only used by status/attach/prune: the lab works without it */
  }
}

async function readState(prefix: string): Promise<LabState | null> {
  try {
    return JSON.parse(await readFile(join(STATE_DIR, `${prefix}.json`), 'utf8')) as LabState;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------
// CLI

/**
 * Pure: parse "cone-symmetric" (site A type, site B type) plus flags into a
 * topology. Flags: --same-lan, --attacker, --overlapping-lans,
 * --cgnat a=TYPE, --ipv6 [a|b|rdv=dual|v4|v6], --loss ra=PCT, --rate ra=MBIT, --udp-timeout ra=SECONDS,
 * --mtu ra=MTU (black hole), --mtu-icmp ra=MTU (with ICMP frag-needed).
 */
export function parseTopologyArgs(spec0: string, flags: string[]): Topology {
  const [ta, tb, ...rest] = spec0.split('-');
  if (!ta || !tb || rest.length) throw new Error(`topology must look like A-B, e.g. cone-symmetric (got "${spec0}")`);
  const topo: Topology = { a: { type: checkType(ta) }, b: { type: checkType(tb) } };
  const site = (k: string): 'a' | 'b' => {
    const s = k.replace(/^r/, '');
    if (s !== 'a' && s !== 'b') throw new Error(`expected ra/rb (or a/b), got "${k}"`);
    return s;
  };
  for (let i = 0; i < flags.length; i++) {
    const f = flags[i];
    const kv = () => {
      const v = flags[++i];
      const m = v?.match(/^([a-z]+)=([a-z0-9.]+)$/);
      if (!m) throw new Error(`${f} expects KEY=VALUE, got "${v ?? ''}"`);
      return [m[1], m[2]] as const;
    };
    if (f === '--same-lan') topo.sameLan = true;
    else if (f === '--miniupnpd') {
      // --miniupnpd ra (all protocols) or ra=pcp / ra=upnp / ra=natpmp (one alone)
      const v = flags[++i] ?? '';
      const m = v.match(/^(r?[ab])(?:=(pcp|natpmp|upnp))?$/);
      if (!m) throw new Error(`--miniupnpd expects ra, rb or ra=pcp|natpmp|upnp, got "${v}"`);
      const proto = m[2] === 'natpmp' ? 'nat-pmp' : (m[2] as 'pcp' | 'upnp' | undefined);
      (topo[site(m[1])] as RouterSpec).miniupnpd = proto ? { protocols: [proto] } : true;
    } else if (f === '--attacker') topo.attacker = true;
    else if (f === '--ipv6') {
      // --ipv6 (every node dual-stack) or --ipv6 a=v6 (one node's stack; repeatable)
      topo.ipv6 ??= {};
      const v = flags[i + 1];
      const m = v?.match(/^(a|b|rdv)=(dual|v4|v6)$/);
      if (m) {
        i++;
        topo.ipv6 = { ...topo.ipv6, [m[1]]: m[2] as Stack };
      }
    } else if (f === '--overlapping-lans') topo.overlappingLans = true;
    else if (f === '--cgnat') {
      const [k, v] = kv();
      topo.cgnat = { ...topo.cgnat, [site(k)]: checkType(v) };
    } else if (f === '--mtu' || f === '--mtu-icmp') {
      const [k, v] = kv();
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0) throw new Error(`${f}: bad MTU "${v}"`);
      const s = topo[site(k)] as RouterSpec;
      s.mtu = n;
      s.mtuMode = f === '--mtu' ? 'blackhole' : 'icmp';
    } else if (f === '--loss' || f === '--rate' || f === '--udp-timeout') {
      const [k, v] = kv();
      const n = Number(v);
      if (!Number.isFinite(n) || n < 0) throw new Error(`${f}: bad number "${v}"`);
      const s = topo[site(k)] as RouterSpec;
      if (f === '--loss') s.loss = n;
      else if (f === '--rate') s.rateMbit = n;
      else s.udpTimeout = n;
    } else throw new Error(`unknown flag ${f}`);
  }
  return topo;
}

const USAGE = `usage: netns-lab <command> [--prefix P]
  up TOPOLOGY [flags]   build a lab (tears down an existing one with the same prefix)
                        TOPOLOGY = A-B with types public|fullcone|cone|symmetric|sequential, e.g. cone-sequential
                        flags: --same-lan --attacker --overlapping-lans --cgnat a=cone
                               --ipv6 (routed 2001:db8::/32, stateful firewalls; a=v6|v4|dual, rdv=...)
                               --loss ra=10 --rate rb=50 --udp-timeout ra=5
                               --mtu ra=1280 (black hole) --mtu-icmp rb=1492 (ICMP frag-needed)
                               --miniupnpd ra (UPnP IGD + NAT-PMP + PCP; ra=pcp|natpmp|upnp: one alone)
  down                  delete the lab (all namespaces <prefix>-*), kill its processes
  exec HOST CMD...      run CMD inside HOST's namespace (HOST: inet rdv ra rb a a2 b attacker ca cb)
  status                list labs, their nodes and addresses
  prune                 delete labs whose creating process died without tearing them down
  check                 say whether this machine can run the lab
default prefix: "hplab" (or $NETNS_LAB_PREFIX)`;

async function cli(argv: string[]): Promise<number> {
  let prefix = process.env.NETNS_LAB_PREFIX || 'hplab';
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    // Options after `exec HOST` belong to the command, not to us.
    if (args[0] === 'exec' && args.length >= 2) {
      args.push(...argv.slice(i));
      break;
    }
    if (argv[i] === '--prefix') prefix = argv[++i] ?? '';
    else if (argv[i].startsWith('--prefix=')) prefix = argv[i].slice(9);
    else args.push(argv[i]);
  }
  const [cmd, ...rest] = args;
  switch (cmd) {
    case 'up': {
      const [topoSpec, ...flags] = rest;
      if (!topoSpec) {
        console.error(USAGE);
        return 2;
      }
      const why = await missingPrerequisites();
      if (why) {
        console.error(`netns-lab: ${why}`);
        return 1;
      }
      const lab = await Lab.up({
        prefix: checkPrefix(prefix),
        topology: parseTopologyArgs(topoSpec, flags),
        persistent: true,
      });
      printLab(lab);
      return 0;
    }
    case 'down':
      await Lab.cleanupStale(checkPrefix(prefix));
      console.log(`lab ${prefix}: down`);
      return 0;
    case 'exec': {
      const [host, ...command] = rest;
      const cmdArgs = command[0] === '--' ? command.slice(1) : command;
      if (!host || cmdArgs.length === 0) {
        console.error(USAGE);
        return 2;
      }
      const ns = `${checkPrefix(prefix)}-${host}`;
      if (!(await listNamespaces()).includes(ns)) {
        console.error(`netns-lab: no namespace ${ns} (is the lab up?)`);
        return 1;
      }
      const child = spawn('ip', ['netns', 'exec', ns, ...cmdArgs], { stdio: 'inherit' });
      return await new Promise<number>((r) => {
        child.on('error', (e) => {
          console.error(String(e));
          r(127);
        });
        child.on('exit', (code, sig) => r(code ?? (sig ? 128 : 1)));
      });
    }
    case 'status': {
      const labs = await Lab.list();
      if (labs.size === 0) console.log('no labs');
      for (const [p, nodes] of labs) {
        try {
          printLab(await Lab.attach(p));
        } catch {
          console.log(`lab ${p}: namespaces ${nodes.join(', ')} (no state file; remove with: down --prefix ${p})`);
        }
      }
      const stateFiles = await readdir(STATE_DIR).catch(() => [] as string[]);
      for (const f of stateFiles) {
        const p = f.replace(/\.json$/, '');
        if (!labs.has(p)) console.log(`stale state file for lab ${p} (no namespaces)`);
      }
      return 0;
    }
    case 'prune': {
      const removed = await Lab.prune();
      console.log(removed.length ? `removed labs: ${removed.join(' ')}` : 'nothing to prune');
      return 0;
    }
    case 'check': {
      const why = await missingPrerequisites();
      console.log(why ?? 'ok: root, ip netns, nft and conntrack are available');
      return why ? 1 : 0;
    }
    default:
      console.error(USAGE);
      return cmd ? 2 : 0;
  }
}

function printLab(lab: Lab): void {
  const t = lab.topology;
  const ty = (r: RouterType | RouterSpec) => JSON.stringify(r);
  console.log(
    `lab ${lab.prefix}: a=${ty(t.a)} b=${ty(t.b)}${t.sameLan ? ' sameLan' : ''}` +
      `${t.attacker ? ' attacker' : ''}${t.cgnat ? ' cgnat=' + JSON.stringify(t.cgnat) : ''}`,
  );
  for (const n of lab.plan.nodes) {
    const kind =
      n.role === 'router'
        ? `router ${n.type}`
        : n.role === 'internet'
          ? 'internet bridge'
          : n.type === 'public'
            ? 'public host'
            : 'host';
    console.log(
      `  ${lab.ns(n.name).padEnd(16)} ${kind.padEnd(18)} ${n.addrs.join(' ')}${n.gateway ? ` via ${n.gateway}` : ''}`,
    );
  }
}

const isMain = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  cli(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      console.error(`netns-lab: ${e instanceof Error ? e.message : String(e)}`);
      process.exitCode = 1;
    },
  );
}
