import os from 'node:os';
import { stunBinding } from '../stun/client.js';
import { performance } from 'node:perf_hooks';
import { classifyMapping, otherAddressFor, type MappingProbe } from '../stun/nat.js';
import { classifyAllocation, type AllocationResult, type AllocationSample } from '../stun/allocation.js';
import { isMappedCandidate, type Candidate, type NatInfo } from '../wire/control.js';
import type { PeerSocket } from './peer-socket.js';
import { ipFamily, sameV6Prefix, v6Class } from '../util/addr.js';
import { sleep } from '../util/backoff.js';

/**
 * Once the IPv4 part of a gather is done, the IPv6 STUN answer is waited for
 * this much longer at most; later, the gather goes without it (nat 'unknown').
 */
export const V6_STUN_GRACE_MS = 250;
const V6_LATE: V6Gathered = { mapped: null, nat: 'unknown' };

/** At most this many host candidates per family: a host with many addresses leaves room for the rest (16 in all). */
const MAX_HOST_CANDIDATES_V4 = 8;
const MAX_HOST_CANDIDATES_V6 = 4;

/**
 * Host candidates: this machine's own interface addresses, with the data
 * socket's port of that family (pure but for os). IPv4 first, as before, so a
 * peer that predates IPv6 candidates finds its candidates where they were.
 * IPv6 (when there is an IPv6 data socket, `port6`): global unicast and
 * unique local addresses; link-local never (they need a zone, which means
 * nothing on the other host); ::1 only with `includeLoopback6` (a rendezvous
 * reached over ::1: peers on one host). ULA goes on the wire, and the receiver probes
 * it only when it shares the /64 (probeable()): on another site the same
 * fd00::/8 address may be someone else.
 */
export function hostCandidates(
  port: number,
  includeLoopback: boolean,
  ifaces = os.networkInterfaces(),
  port6: number | null = null,
  includeLoopback6 = includeLoopback,
): Candidate[] {
  const v4: Candidate[] = [];
  const v6: Candidate[] = [];
  for (const list of Object.values(ifaces)) {
    for (const a of list ?? []) {
      if (a.family === 'IPv4') {
        if (a.internal && !includeLoopback) continue;
        v4.push({ address: a.address, port, family: 'IPv4', kind: 'host' });
      } else if (a.family === 'IPv6' && port6 !== null) {
        const loop = a.internal && a.address === '::1';
        const cls = v6Class(a.address);
        if (loop ? !includeLoopback6 : cls !== 'global' && cls !== 'ula') continue;
        if (v6.some((c) => c.address === a.address)) continue;
        v6.push({ address: a.address, port: port6, family: 'IPv6', kind: 'host' });
      }
    }
  }
  // Global before ULA: the cap keeps the addresses that work from anywhere.
  v6.sort((x, y) => Number(v6Class(x.address) !== 'global') - Number(v6Class(y.address) !== 'global'));
  return [...v4.slice(0, MAX_HOST_CANDIDATES_V4), ...v6.slice(0, MAX_HOST_CANDIDATES_V6)];
}

/** What this side can send to: its data sockets' families, and its own IPv6 addresses (for ULA). */
export interface LocalReach {
  ipv4: boolean;
  ipv6: boolean;
  /** This host's IPv6 interface addresses. */
  v6Addresses: readonly string[];
}

/** This host's reach, given which data sockets are open (pure but for os). */
export function localReach(ipv4: boolean, ipv6: boolean, ifaces = os.networkInterfaces()): LocalReach {
  const v6Addresses = Object.values(ifaces)
    .flatMap((l) => l ?? [])
    .filter((a) => a.family === 'IPv6')
    .map((a) => a.address);
  return { ipv4, ipv6, v6Addresses };
}

/**
 * May this side probe the peer's candidate `c` (pure)? Its family needs a
 * data socket here; an IPv6 candidate must be global unicast, or a unique
 * local address in one of our own /64s (the same LAN), or loopback when we
 * have it too (tests on one host). Link-local and anything else: never.
 */
export function probeable(c: Pick<Candidate, 'address' | 'family'>, reach: LocalReach): boolean {
  const fam = ipFamily(c.address);
  if (fam === 'IPv4') return reach.ipv4;
  if (fam !== 'IPv6' || !reach.ipv6) return false;
  const cls = v6Class(c.address);
  if (cls === 'global') return true;
  if (cls === 'ula') return reach.v6Addresses.some((a) => v6Class(a) === 'ula' && sameV6Prefix(a, c.address));
  return c.address === '::1' && reach.v6Addresses.includes('::1');
}

export interface Gathered {
  candidates: Candidate[];
  /** The IPv4 NAT (what goes on the wire as `nat`: punch plans are about IPv4). */
  nat: NatInfo;
  mapped?: { address: string; port: number };
  /** What STUN over the IPv6 socket saw; absent without an IPv6 socket or an IPv6 STUN server. */
  ipv6?: V6Gathered;
}

/**
 * IPv6 as STUN on the IPv6 data socket sees it. `nat` 'none': the mapped
 * address is one of our own with the socket's port (the usual case: a global
 * address behind a stateful firewall); 'translated': NAT66 or NPTv6 on the way.
 */
export interface V6Gathered {
  mapped: { address: string; port: number } | null;
  nat: 'none' | 'translated' | 'unknown';
}

/** Is `mapped` one of our own addresses with our port, i.e. no translation (pure)? */
export function untranslated(
  mapped: { address: string; port: number },
  own: readonly Pick<Candidate, 'address' | 'port'>[],
): boolean {
  return own.some((c) => c.address === mapped.address && c.port === mapped.port);
}

/**
 * Learns the data socket's public mapping with STUN on that very socket, and
 * the NAT's mapping behaviour by asking the server's second address too
 * (RFC 5780 OTHER-ADDRESS), when it has one. A rendezvous on one address
 * answers on a second port of that address (OTHER-ADDRESS with the same IP, or
 * the unspecified IP when it is bound to a wildcard): that tells an
 * endpoint-independent mapping from a port-dependent (symmetric) one.
 * `opts.altPort` (the welcome's `altUdpPort`) is used when the server names
 * no OTHER-ADDRESS.
 *
 * IPv6 (issue 19), in parallel, when the socket has an IPv6 half: host
 * candidates of global (and ULA) addresses on its port, and with `opts.stun6`
 * (the rendezvous's IPv6 address) one Binding that tells whether anything
 * translates; a translated address becomes an IPv6 srflx candidate. `stun`
 * null (no IPv4 rendezvous address, e.g. an IPv6-only host) skips IPv4 STUN.
 */
export async function gatherCandidates(
  ps: PeerSocket,
  stun: { address: string; port: number } | null,
  opts: {
    includeLoopback: boolean;
    /** ::1 as a candidate (default: includeLoopback). */
    includeLoopback6?: boolean;
    timeoutMs?: number;
    altPort?: number;
    stun6?: { address: string; port: number } | null;
  },
): Promise<Gathered> {
  const all = hostCandidates(ps.port, opts.includeLoopback, undefined, ps.port6, opts.includeLoopback6);
  const host4 = all.filter((c) => c.family === 'IPv4');
  const host6 = all.filter((c) => c.family === 'IPv6');
  const timeoutMs = opts.timeoutMs ?? 1500;
  const six = ps.socket6 && opts.stun6 ? gatherV6(ps.socket6, opts.stun6, host6, timeoutMs) : undefined;
  const v4 = await gatherV4(ps, stun, host4, timeoutMs, opts.altPort);
  // IPv6 STUN only tells whether something translates (the host candidates go out regardless):
  // a network that drops IPv6 UDP must not hold the session back once IPv4 is done.
  const ipv6 = six && stun ? await Promise.race([six, sleep(V6_STUN_GRACE_MS).then(() => V6_LATE)]) : await six;
  const srflx6: Candidate[] =
    ipv6?.mapped && ipv6.nat === 'translated'
      ? [{ address: ipv6.mapped.address, port: ipv6.mapped.port, family: 'IPv6', kind: 'srflx' }]
      : [];
  return {
    ...v4,
    candidates: [...v4.candidates, ...host6, ...srflx6].slice(0, 16),
    ...(ipv6 ? { ipv6 } : {}),
  };
}

async function gatherV6(
  socket: PeerSocket['socket'],
  stun6: { address: string; port: number },
  host6: readonly Candidate[],
  timeoutMs: number,
): Promise<V6Gathered> {
  try {
    const r = await stunBinding(socket, stun6, { timeoutMs, rtoMs: 250 });
    const mapped = { address: r.mapped.address, port: r.mapped.port };
    return { mapped, nat: untranslated(mapped, host6) ? 'none' : 'translated' };
  } catch {
    return { mapped: null, nat: 'unknown' };
  }
}

/** The IPv4 half of gatherCandidates: exactly what the single-family gatherer did. */
async function gatherV4(
  ps: PeerSocket,
  stun: { address: string; port: number } | null,
  candidates: Candidate[],
  timeoutMs: number,
  altPort: number | undefined,
): Promise<Omit<Gathered, 'ipv6'>> {
  const nat: NatInfo = { mapping: 'unknown', filtering: 'unknown' };
  if (!stun) return { candidates, nat };
  try {
    const first = await stunBinding(ps.socket, stun, { timeoutMs, rtoMs: 250 });
    const mapped = { address: first.mapped.address, port: first.mapped.port };
    if (!candidates.some((c) => c.address === mapped.address && c.port === mapped.port)) {
      candidates.unshift({ address: mapped.address, port: mapped.port, family: 'IPv4', kind: 'srflx' });
    }
    const server = { ...stun, family: first.source.family };
    const other = first.otherAddress
      ? otherAddressFor(server, first.otherAddress)
      : altPort && altPort !== stun.port
        ? { ...server, port: altPort }
        : null;
    if (other) {
      // Every destination of the server's grid, one after the other from the data socket: the
      // mapping behaviour, and from the order of the public ports the NAT's port allocation.
      const dests = allocationTargets(server, other);
      const probes: MappingProbe[] = [{ server: stun, mapped }];
      const samples: AllocationSample[] = [{ server: stun, mappedPort: mapped.port, at: performance.now() }];
      for (const d of dests) {
        const r = await stunBinding(ps.socket, d, { timeoutMs, rtoMs: 250 }).catch(() => null);
        probes.push({ server: d, mapped: r ? r.mapped : null });
        samples.push({ server: d, mappedPort: r ? r.mapped.port : null, at: performance.now() });
      }
      nat.mapping = classifyMapping(probes);
      Object.assign(nat, natAllocation(classifyAllocation(samples, ps.port)));
    }
    return { candidates, nat, mapped };
  } catch {
    return { candidates, nat };
  }
}

/** The part of a port mapping (src/portmap/mapper.ts) a candidate needs. */
export interface MappedEndpoint {
  protocol: 'pcp' | 'nat-pmp' | 'upnp';
  externalIp: string;
  externalPort: number;
}

/**
 * `candidates` with the port mapping as the first candidate (pure): any
 * earlier mapped candidate is replaced (a lease re-made on another port), none
 * is added when `mapping` is null (the lease was lost). On the wire it is
 * kind 'srflx' with `portmap` set, which peers that predate mapped candidates
 * read as a plain server-reflexive candidate (docs/PROTOCOL.md). A STUN
 * candidate with the same address and port gives way to it.
 */
export function withMappedCandidate(candidates: readonly Candidate[], mapping: MappedEndpoint | null): Candidate[] {
  const rest = candidates.filter((c) => !isMappedCandidate(c));
  if (!mapping) return rest;
  const same = (c: Candidate) => c.address === mapping.externalIp && c.port === mapping.externalPort;
  const mapped: Candidate = {
    address: mapping.externalIp,
    port: mapping.externalPort,
    family: 'IPv4',
    kind: 'srflx',
    portmap: mapping.protocol,
  };
  return [mapped, ...rest.filter((c) => !same(c))].slice(0, 16);
}

/** The port-mapped candidate among `candidates`, if any. */
export function mappedCandidate(candidates: readonly Candidate[]): Candidate | undefined {
  return candidates.find(isMappedCandidate);
}

/**
 * The other destinations of a server's STUN grid, in the order they are asked
 * (pure): its second port on the main address, then the alternate address on
 * its alternate port and on the main port. A one-address rendezvous has only
 * the first.
 */
export function allocationTargets(
  server: { address: string; port: number },
  other: { address: string; port: number },
): { address: string; port: number }[] {
  const out: { address: string; port: number }[] = [];
  const push = (d: { address: string; port: number }) => {
    if (d.address === server.address && d.port === server.port) return;
    if (!out.some((x) => x.address === d.address && x.port === d.port)) out.push(d);
  };
  if (other.port !== server.port) push({ address: server.address, port: other.port });
  push({ address: other.address, port: other.port });
  push({ address: other.address, port: server.port });
  return out;
}

/** The NatInfo fields of an allocation result (pure): a prediction's base only for a sequential NAT. */
export function natAllocation(r: AllocationResult): Pick<NatInfo, 'allocation' | 'step' | 'lastPort' | 'rate'> {
  if (r.allocation !== 'sequential') return { allocation: r.allocation };
  return {
    allocation: r.allocation,
    step: r.step,
    lastPort: r.lastPort,
    ...(r.rate !== undefined ? { rate: r.rate } : {}),
  };
}
