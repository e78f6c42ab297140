/**
 * NAT behaviour discovery (RFC 5780 §4.3 mapping, §4.4 filtering, §4.5
 * hairpinning). The decisions are pure functions over test results
 * (classifyMapping, classifyFiltering, natTypeFrom, isHardNat); detectNat()
 * only runs the tests and feeds them in.
 */
import dgram from 'node:dgram';
import { networkInterfaces } from 'node:os';
import { performance } from 'node:perf_hooks';
import { lookup } from 'node:dns/promises';
import {
  endpointToString,
  familyOf,
  isWildcard,
  sameAddress,
  sameEndpoint,
  toEndpoint,
  type Endpoint,
  type Family,
} from './address.js';
import { stunBinding, StunError, type StunBindingResult } from './client.js';
import { classifyAllocation, type Allocation, type AllocationSample } from './allocation.js';
import { decodeStun, encodeStun, isStunPacket, newTransactionId, StunClass, StunMethod } from './message.js';

export type Behavior = 'endpoint-independent' | 'address-dependent' | 'address-and-port-dependent' | 'unknown';
export type MappingBehavior = Behavior;
export type FilteringBehavior = Behavior;
export type NatType = 'open' | 'full-cone' | 'restricted-cone' | 'port-restricted-cone' | 'symmetric' | 'unknown';

export interface NatReport {
  /** The STUN server tested against (resolved IP). */
  server: Endpoint;
  /** The server's OTHER-ADDRESS, when it has one. */
  otherAddress?: Endpoint;
  /** Server-reflexive address of the first test socket. */
  publicAddress: Endpoint;
  /** That socket's own address (source IP the OS picks toward the server). */
  localAddress: Endpoint;
  mapping: MappingBehavior;
  filtering: FilteringBehavior;
  /** No translation: the mapped address is one of our interface addresses with the same port. */
  isPublic: boolean;
  /** RFC 5780 §4.5; undefined when not tested (on a public address, or disabled). */
  hairpinning?: boolean;
  natType: NatType;
  /**
   * Which destination changes the mapping test could make: `port` (same
   * server IP, another port: a rendezvous's default second port) and
   * `address` (another server IP: `--alt-udp`). With `port` only, an
   * address-dependent NAT reads as endpoint-independent; `notes` says so.
   */
  mappingTested: { port: boolean; address: boolean };
  /**
   * How the NAT picks the public port of a new mapping (allocation.ts), from the
   * mapping test's Bindings in order; `step` for a sequential one.
   */
  allocation: Allocation;
  step?: number;
  /** Why something is 'unknown' or only partly tested. */
  notes: string[];
}

// ---------------------------------------------------------------- pure classification

export interface MappingProbe {
  /** Where the Binding request was sent. */
  server: { address: string; port: number };
  /** What that server saw; null when the test got no answer. */
  mapped: { address: string; port: number } | null;
}

/**
 * Mapping behaviour from Binding results of ONE socket toward different
 * server transport addresses (RFC 5780 §4.3 tests I, II, III and any subset):
 * - the same mapping toward every destination: endpoint-independent;
 * - a different mapping for the same IP on another port: address-and-port-dependent;
 * - the same mapping across ports of one IP but different across IPs: address-dependent;
 * - different across IPs and no same-IP pair to compare: address-dependent
 *   (at least; port dependence cannot be seen without an alternate port);
 * - fewer than two distinct destinations answered: unknown.
 */
export function classifyMapping(probes: readonly MappingProbe[]): MappingBehavior {
  const answered = probes.filter(
    (p): p is MappingProbe & { mapped: NonNullable<MappingProbe['mapped']> } => p.mapped !== null,
  );
  const distinct = answered.filter((p, i) => answered.findIndex((q) => sameEndpoint(q.server, p.server)) === i);
  if (distinct.length < 2) return 'unknown';
  if (distinct.every((p) => sameEndpoint(p.mapped, distinct[0].mapped))) return 'endpoint-independent';
  for (let i = 0; i < distinct.length; i++) {
    for (let j = i + 1; j < distinct.length; j++) {
      const a = distinct[i];
      const b = distinct[j];
      if (!sameAddress(a.server.address, b.server.address)) continue;
      if (!sameEndpoint(a.mapped, b.mapped)) return 'address-and-port-dependent';
    }
  }
  // Not the same everywhere, yet no port change alone altered it: the destination IP did.
  return 'address-dependent';
}

/**
 * RFC 5780 §4.4 filtering tests after a Binding to the primary address opened
 * the mapping. Each field: true = the response arrived, false = it did not,
 * undefined = not run (the server cannot change that, or no alternate).
 */
export interface FilteringResults {
  /** Test II: CHANGE-REQUEST change IP and port. */
  changeIpAndPort?: boolean;
  /** Change IP only (servers with an alternate IP but one port). */
  changeIp?: boolean;
  /** Test III: change port only. */
  changePort?: boolean;
}

export function classifyFiltering(r: FilteringResults): FilteringBehavior {
  // A response from a different IP got through: nothing about the source is checked.
  if (r.changeIpAndPort === true || r.changeIp === true) return 'endpoint-independent';
  if (r.changePort === false) return 'address-and-port-dependent';
  // Same IP, other port gets through, other IP does not.
  if (r.changePort === true && (r.changeIpAndPort === false || r.changeIp === false)) return 'address-dependent';
  return 'unknown';
}

/** The classic (RFC 3489) name for a mapping/filtering combination. */
export function natTypeFrom(mapping: MappingBehavior, filtering: FilteringBehavior, isPublic: boolean): NatType {
  if (isPublic) {
    // No translation. A stateful firewall still filters like a cone NAT would.
    if (filtering === 'address-dependent') return 'restricted-cone';
    if (filtering === 'address-and-port-dependent') return 'port-restricted-cone';
    return 'open';
  }
  if (mapping === 'address-dependent' || mapping === 'address-and-port-dependent') return 'symmetric';
  if (mapping !== 'endpoint-independent') return 'unknown';
  switch (filtering) {
    case 'endpoint-independent':
      return 'full-cone';
    case 'address-dependent':
      return 'restricted-cone';
    case 'address-and-port-dependent':
      return 'port-restricted-cone';
    default:
      return 'unknown';
  }
}

/**
 * IPv6 in the words of issue 19 (pure): most IPv6 hosts have a global
 * address and no NAT, behind a stateful firewall that admits replies only.
 * `nat` 'none' when the mapped address is our own (isPublic), else
 * 'translated' (NAT66 or NPTv6). `firewall` from the filtering test:
 * 'stateful' when a reply from another server port was dropped (address- or
 * address-and-port-dependent filtering), 'open' when unsolicited packets get
 * in (endpoint-independent), else 'unknown' (the server could not change its
 * address: a reply from another port that arrived proves nothing of other hosts).
 */
export function describeIPv6(r: Pick<NatReport, 'isPublic' | 'filtering'>): {
  nat: 'none' | 'translated';
  firewall: 'stateful' | 'open' | 'unknown';
  summary: string;
} {
  const nat = r.isPublic ? 'none' : 'translated';
  const firewall =
    r.filtering === 'address-dependent' || r.filtering === 'address-and-port-dependent'
      ? 'stateful'
      : r.filtering === 'endpoint-independent'
        ? 'open'
        : 'unknown';
  return { nat, firewall, summary: `${nat === 'none' ? 'no NAT' : 'NAT66'}, firewall: ${firewall}` };
}

/**
 * True when the mapping is known to depend on the destination, so the address
 * learned from STUN is not the one a peer will see: the punch strategy must
 * use the birthday approach (or the relay when both sides are hard).
 * 'unknown' counts as not hard: with a single-address server every NAT is
 * 'unknown', and assuming hard would send every session to the relay.
 */
export function isHardNat(report: Pick<NatReport, 'mapping' | 'isPublic'>): boolean {
  if (report.isPublic) return false;
  return report.mapping === 'address-dependent' || report.mapping === 'address-and-port-dependent';
}

/**
 * Which destination changes the answered probes cover (pure): `port` when two
 * answered probes went to one IP on different ports, `address` when two went
 * to different IPs.
 */
export function mappingCoverage(probes: readonly MappingProbe[]): { port: boolean; address: boolean } {
  const answered = probes.filter((p) => p.mapped !== null);
  let port = false;
  let address = false;
  for (let i = 0; i < answered.length; i++) {
    for (let j = i + 1; j < answered.length; j++) {
      const a = answered[i].server;
      const b = answered[j].server;
      if (!sameAddress(a.address, b.address)) address = true;
      else if (a.port !== b.port) port = true;
    }
  }
  return { port, address };
}

/**
 * The server's alternate address as a client must use it: OTHER-ADDRESS with
 * an unspecified IP (0.0.0.0 or ::, sent by a wildcard-bound rendezvous whose
 * second socket is only another port) means "the IP you reached me on, this
 * port". A concrete OTHER-ADDRESS is returned as is (pure).
 */
export function otherAddressFor(server: Endpoint, other: Endpoint): Endpoint {
  return isWildcard(other.address) ? { ...other, address: server.address, family: server.family } : other;
}

// ---------------------------------------------------------------- I/O

export interface DetectNatOptions {
  /** Local IP to bind the test sockets to (default: the wildcard of the server's family). */
  localAddress?: string;
  /**
   * Run the mapping tests on this already-bound socket (e.g. the one that
   * will carry data) instead of a fresh one. It is not closed. Filtering and
   * hairpin tests always use fresh sockets, because the mapping tests open
   * the NAT toward the alternate address and would spoil them.
   */
  socket?: dgram.Socket;
  /** Per-Binding timeout for tests that must succeed (default 4000 ms). */
  timeoutMs?: number;
  /** Per-test wait for filtering and hairpin tests, where silence is an answer (default 1500 ms). */
  probeTimeoutMs?: number;
  /** Run the hairpin test when behind NAT (default true). */
  hairpin?: boolean;
  /**
   * A second STUN port on the server's IP, used for the mapping test when the
   * server names no OTHER-ADDRESS (e.g. from the rendezvous's welcome
   * `altUdpPort`). Ignored when the server sends OTHER-ADDRESS.
   */
  altPort?: number;
  signal?: AbortSignal;
}

/**
 * Runs the RFC 5780 tests against `server` and classifies the NAT. Needs a
 * server with OTHER-ADDRESS for mapping and filtering; against a
 * single-address server only the public address and isPublic are learned and
 * mapping/filtering are 'unknown'. Rejects (StunError) only when the server
 * does not answer the first Binding.
 */
export async function detectNat(
  server: { address: string; port: number },
  opts: DetectNatOptions = {},
): Promise<NatReport> {
  const serverEp = await resolveEndpoint(server);
  const timeoutMs = opts.timeoutMs ?? 4000;
  const probeTimeoutMs = opts.probeTimeoutMs ?? 1500;
  const common = { signal: opts.signal };
  const notes: string[] = [];
  const owned: dgram.Socket[] = [];
  const fresh = async (): Promise<dgram.Socket> => {
    const s = await bindSocket(serverEp.family, opts.localAddress);
    owned.push(s);
    return s;
  };

  try {
    const a = opts.socket ?? (await fresh());
    const first = await stunBinding(a, serverEp, { ...common, timeoutMs });
    const localAddress = await localEndpointToward(a, serverEp);
    const isPublic =
      sameEndpoint(first.mapped, localAddress) ||
      (isInterfaceAddress(first.mapped.address) && first.mapped.port === localAddress.port);
    const named = first.otherAddress ? otherAddressFor(serverEp, first.otherAddress) : undefined;
    const hinted =
      !named && opts.altPort && opts.altPort !== serverEp.port ? { ...serverEp, port: opts.altPort } : undefined;
    // A hinted port serves the mapping test only: CHANGE-REQUEST needs the server to know its alternate.
    const other = named ?? hinted;
    let mappingTested = { port: false, address: false };

    // ---- mapping (§4.3): same socket toward primary, alt-IP:primary-port, alt-IP:alt-port
    const probes: MappingProbe[] = [{ server: serverEp, mapped: first.mapped }];
    const samples: AllocationSample[] = [{ server: serverEp, mappedPort: first.mapped.port, at: performance.now() }];
    if (!other) {
      notes.push(
        'server has no second address or port (no RFC 5780 OTHER-ADDRESS): mapping and filtering cannot be tested',
      );
    } else {
      const targets: Endpoint[] = [];
      const altIp = !sameAddress(other.address, serverEp.address);
      const altPort = other.port !== serverEp.port;
      if (altIp) targets.push({ ...serverEp, address: other.address });
      if (altPort) targets.push({ ...other, address: altIp ? other.address : serverEp.address });
      // With two addresses, the main address's second port too: one more sample of the port allocation.
      if (altIp && altPort) targets.push({ ...serverEp, port: other.port });
      for (const t of targets) {
        const r = await tryBinding(a, t, { ...common, timeoutMs });
        if (r === null) notes.push(`no answer from ${endpointToString(t)} for the mapping test`);
        probes.push({ server: t, mapped: r?.mapped ?? null });
        samples.push({ server: t, mappedPort: r?.mapped.port ?? null, at: performance.now() });
      }
      mappingTested = mappingCoverage(probes);
      if (mappingTested.port && !altIp)
        notes.push(
          'mapping tested against a second port of the same server address; address dependence could not be ' +
            'tested (the server has one address): an address-dependent NAT would read as endpoint-independent',
        );
      if (mappingTested.address && !altPort)
        notes.push('server alternate has the same port: port dependence of the mapping is not tested');
    }
    const mapping = classifyMapping(probes);
    const alloc = classifyAllocation(samples, toEndpoint(a.address()).port);

    // ---- filtering (§4.4): a fresh socket that has only talked to the primary
    let filtering: FilteringBehavior = 'unknown';
    if (named) {
      const b = await fresh();
      await stunBinding(b, serverEp, { ...common, timeoutMs });
      const altIp = !sameAddress(named.address, serverEp.address);
      const altPort = named.port !== serverEp.port;
      const results: FilteringResults = {};
      const expectFrom = (ip: string, port: number) => ({ address: ip, port });
      if (altIp && altPort) {
        results.changeIpAndPort = await changeTest(
          b,
          serverEp,
          { changeIp: true, changePort: true },
          expectFrom(named.address, named.port),
          probeTimeoutMs,
          notes,
          common,
        );
      } else if (altIp) {
        results.changeIp = await changeTest(
          b,
          serverEp,
          { changeIp: true },
          expectFrom(named.address, serverEp.port),
          probeTimeoutMs,
          notes,
          common,
        );
      }
      if (altPort && results.changeIpAndPort !== true && results.changeIp !== true) {
        results.changePort = await changeTest(
          b,
          serverEp,
          { changePort: true },
          expectFrom(serverEp.address, named.port),
          probeTimeoutMs,
          notes,
          common,
        );
      }
      filtering = classifyFiltering(results);
    }

    // ---- hairpinning (§4.5): does a packet to our own public address come back to us?
    let hairpinning: boolean | undefined;
    if (!isPublic && opts.hairpin !== false) {
      hairpinning = await hairpinTest(a, await fresh(), first.mapped, probeTimeoutMs);
    }

    return {
      server: serverEp,
      otherAddress: named,
      publicAddress: first.mapped,
      localAddress,
      mapping,
      filtering,
      isPublic,
      hairpinning,
      natType: natTypeFrom(mapping, filtering, isPublic),
      mappingTested,
      allocation: alloc.allocation,
      ...(alloc.step !== undefined ? { step: alloc.step } : {}),
      notes,
    };
  } finally {
    await Promise.all(owned.map((s) => closeSocket(s)));
  }
}

async function tryBinding(
  socket: dgram.Socket,
  to: Endpoint,
  opts: Parameters<typeof stunBinding>[2],
): Promise<StunBindingResult | null> {
  try {
    return await stunBinding(socket, to, opts);
  } catch (err) {
    if (err instanceof StunError && err.code === 'ESTUNTIMEOUT') return null;
    throw err;
  }
}

/**
 * One CHANGE-REQUEST filtering test. true/false as the NAT let the response
 * through or not; undefined when the server refused the change (420) or
 * answered from an unexpected address (a broken server would fake 'open').
 */
async function changeTest(
  socket: dgram.Socket,
  server: Endpoint,
  change: { changeIp?: boolean; changePort?: boolean },
  expectFrom: { address: string; port: number },
  timeoutMs: number,
  notes: string[],
  common: { signal?: AbortSignal },
): Promise<boolean | undefined> {
  const what =
    change.changeIp && change.changePort ? 'change IP and port' : change.changeIp ? 'change IP' : 'change port';
  try {
    const r = await stunBinding(socket, server, {
      ...common,
      ...change,
      timeoutMs,
      rtoMs: Math.max(50, Math.floor(timeoutMs / 6)),
    });
    if (!sameEndpoint(r.source, expectFrom)) {
      notes.push(
        `filtering test (${what}): response came from ${endpointToString(r.source)}, ` +
          `expected ${endpointToString(expectFrom)}; ignored`,
      );
      return undefined;
    }
    return true;
  } catch (err) {
    if (err instanceof StunError && err.code === 'ESTUNTIMEOUT') return false;
    if (err instanceof StunError && err.code === 'ESTUNERROR') {
      notes.push(`filtering test (${what}): server refused (${err.message})`);
      return undefined;
    }
    throw err;
  }
}

/**
 * Sends a Binding request from `from` to `target` (the public address of
 * `to`) and reports whether `to` received it within the time.
 */
async function hairpinTest(
  to: dgram.Socket,
  from: dgram.Socket,
  target: Endpoint,
  timeoutMs: number,
): Promise<boolean> {
  const transactionId = newTransactionId();
  const packet = encodeStun({ cls: StunClass.Request, method: StunMethod.Binding, transactionId, fingerprint: true });
  return new Promise<boolean>((resolve) => {
    const timers: NodeJS.Timeout[] = [];
    const done = (ok: boolean): void => {
      timers.forEach(clearTimeout);
      to.off('message', onMessage);
      resolve(ok);
    };
    const onMessage = (msg: Buffer): void => {
      if (!isStunPacket(msg)) return;
      const m = decodeStun(msg);
      if (m && m.cls === StunClass.Request && m.transactionId.equals(transactionId)) done(true);
    };
    to.on('message', onMessage);
    // Three sends spread over the window: a lost datagram should not read as "no hairpinning".
    for (const at of [0, timeoutMs / 4, timeoutMs / 2]) {
      timers.push(setTimeout(() => from.send(packet, target.port, target.address, () => {}), at));
    }
    timers.push(setTimeout(() => done(false), timeoutMs));
  });
}

// ---------------------------------------------------------------- socket helpers

async function resolveEndpoint(server: { address: string; port: number }): Promise<Endpoint> {
  const family = familyOf(server.address);
  if (family !== null) return { address: server.address, port: server.port, family };
  const r = await lookup(server.address);
  return { address: r.address, port: server.port, family: r.family === 6 ? 'IPv6' : 'IPv4' };
}

function bindSocket(family: Family, address?: string): Promise<dgram.Socket> {
  const s = dgram.createSocket(family === 'IPv6' ? 'udp6' : 'udp4');
  return new Promise((resolve, reject) => {
    s.once('error', reject);
    s.bind(0, address, () => {
      s.off('error', reject);
      s.on('error', () => {}); // late errors (e.g. ICMP on some platforms) must not crash the process
      resolve(s);
    });
  });
}

function closeSocket(s: dgram.Socket): Promise<void> {
  return new Promise((resolve) => {
    try {
      s.close(() => resolve());
    } catch {
      resolve();
    }
  });
}

/**
 * The socket's local transport address. For a wildcard-bound socket the IP is
 * the source the OS routes toward the server, found by connect() on a
 * throwaway socket (connect on UDP sends nothing).
 */
async function localEndpointToward(socket: dgram.Socket, server: Endpoint): Promise<Endpoint> {
  const bound = toEndpoint(socket.address());
  if (bound.address !== '0.0.0.0' && bound.address !== '::') return bound;
  const probe = dgram.createSocket(server.family === 'IPv6' ? 'udp6' : 'udp4');
  probe.on('error', () => {});
  try {
    await new Promise<void>((resolve, reject) => {
      probe.once('error', reject);
      probe.connect(server.port, server.address, () => resolve());
    });
    return { ...toEndpoint(probe.address()), port: bound.port };
  } catch {
    return bound;
  } finally {
    await closeSocket(probe);
  }
}

function isInterfaceAddress(address: string): boolean {
  for (const list of Object.values(networkInterfaces())) {
    for (const ifa of list ?? []) if (sameAddress(ifa.address, address)) return true;
  }
  return false;
}
