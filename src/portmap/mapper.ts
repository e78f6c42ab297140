/**
 * Port mapping for the data socket: asks the default gateway for a UDP
 * mapping of our own socket's port with PCP, NAT-PMP or UPnP IGD (first that
 * works, in that order), keeps the lease (renews before expiry, re-creates it
 * when the router forgot it: epoch reset, unsolicited announce, missing UPnP
 * entry), and deletes it on close. Never maps any other port. Everything runs
 * in the background: callers read `mapping` when they gather candidates and
 * listen for 'change'. docs/PORTMAP.md.
 */
import dgram from 'node:dgram';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import type { Logger } from '../util/log.js';
import { defaultRoute, localAddressFor, type DefaultRoute } from './gateway.js';
import {
  PCP_PORT,
  encodePcpAnnounce,
  encodePcpMap,
  newNonce,
  parsePcpResponse,
  pcpResultName,
  type PcpResponse,
} from './pcp.js';
import {
  NATPMP_PORT,
  encodeNatPmpExternalAddress,
  encodeNatPmpMap,
  natpmpResultName,
  parseNatPmpResponse,
  type NatPmpResponse,
} from './natpmp.js';
import { fetchIgd, soapCall, ssdpSearch, UPNP_ERRORS, type IgdService } from './upnp.js';
import { udpExchange } from './udp.js';

// ---------------------------------------------------------------- timings (all in one place)
/** Discovery of what the gateway offers (PCP, NAT-PMP, SSDP + description), the three in parallel: at most this. */
export const DISCOVERY_TIMEOUT_MS = 1000;
/** One mapping request (PCP/NAT-PMP exchange, or a SOAP call): at most this long. */
export const MAP_TIMEOUT_MS = 1000;
/** PCP/NAT-PMP requests are resent this often within their timeout (RFC 6887 asks 3 s; we keep to the 1 s budget). */
export const REQUEST_RTO_MS = 250;
/** Deleting the mapping on exit: at most this long per protocol, so a dead router never holds up a shutdown. */
export const DELETE_TIMEOUT_MS = 500;
/** On exit, an operation still talking to the router is waited for at most this long before the delete. */
export const CLOSE_WAIT_MS = 2_000;
/** The lease we ask for (seconds); routers may grant less (miniupnpd: min_lifetime..max_lifetime). */
export const REQUESTED_LIFETIME_S = 7200;
/** Renew when this fraction of the granted lifetime has passed (RFC 6887 section 11.2.1: about half). */
export const RENEW_FRACTION = 0.5;
/** A failed renewal is retried after this long, until the lease runs out. */
export const RENEW_RETRY_MS = 5_000;
/** How often the router is asked whether it still holds our mapping (epoch, or the UPnP entry). */
export const CHECK_INTERVAL_MS = 60_000;
/** What a gateway offers is remembered this long per gateway (process-wide). */
export const OFFERS_CACHE_MS = 10 * 60_000;
/** Announcements (PCP ANNOUNCE / NAT-PMP address change) closer than this to the last re-creation are ignored. */
export const ANNOUNCE_MIN_GAP_MS = 1000;
/** PCP and NAT-PMP servers multicast their announcements here (RFC 6887 8.5, RFC 6886 3.2.1), from their own port. */
const ANNOUNCE_GROUP = '224.0.0.1';
const ANNOUNCE_PORT = 5350;
const SERVER_PORT = 5351;
/** Description of UPnP mappings, so an operator can tell ours in the router's list. */
const UPNP_DESCRIPTION = 'holepunch';
/** UPnP AddPortMapping retries on another external port when the one we asked for is taken. */
const UPNP_CONFLICT_RETRIES = 3;

export type PortmapProtocol = 'pcp' | 'nat-pmp' | 'upnp';
export const PORTMAP_PROTOCOLS: readonly PortmapProtocol[] = ['pcp', 'nat-pmp', 'upnp'];

/** What the gateway answered during discovery. */
export interface GatewayOffers {
  gateway: string;
  /** Our address on the gateway's network (the internal client of the mapping). */
  localIp: string;
  pcp: boolean;
  natpmp: boolean;
  upnp: boolean;
  /** The external address the gateway reported (NAT-PMP or UPnP), if any. */
  externalIp: string | null;
  probedAt: number;
}

export interface Mapping {
  protocol: PortmapProtocol;
  gateway: string;
  externalIp: string;
  externalPort: number;
  internalPort: number;
  /** Granted lease in seconds (0: permanent, UPnP only). */
  lifetimeS: number;
  /** Date.now() when the lease was last granted. */
  grantedAt: number;
}

export interface PortMapperOptions {
  /** The data socket's port: the only port ever mapped. */
  port: number;
  log: Logger;
  /** Protocols to try (default: all, in PORTMAP_PROTOCOLS order). */
  protocols?: readonly PortmapProtocol[];
  /** Where the gateway is (default: the default route, /proc/net/route). */
  route?: () => Promise<DefaultRoute | null>;
  /** Listen for PCP/NAT-PMP announcements on 224.0.0.1:5350 (default true). */
  announcements?: boolean;
}

/** Did the server lose its state between two epoch readings (RFC 6887 8.5, pure)? */
export function epochLost(prev: { epoch: number; atMs: number }, epoch: number, nowMs: number): boolean {
  if (epoch < prev.epoch - 1) return true;
  const client = Math.max(0, (nowMs - prev.atMs) / 1000);
  const server = epoch - prev.epoch;
  return client + 2 < server - server / 16 || server + 2 < client - client / 16;
}

const offersCache = new Map<string, GatewayOffers>();

/** Counters for metrics: mappings made and failed, per protocol, process-wide. */
export const portmapCounters = {
  made: { pcp: 0, 'nat-pmp': 0, upnp: 0 } as Record<PortmapProtocol, number>,
  failed: { pcp: 0, 'nat-pmp': 0, upnp: 0 } as Record<PortmapProtocol, number>,
};

interface Lease {
  mapping: Mapping;
  nonce?: Buffer;
  upnp?: IgdService;
  epoch?: { epoch: number; atMs: number };
}

/** Emits 'change' (Mapping | null) whenever the mapping appears, changes its external endpoint, or is lost. */
export class PortMapper extends EventEmitter {
  offers: GatewayOffers | null = null;
  /** Why there is no mapping (per protocol tried), for `peer nat` and logs. */
  failures: string[] = [];
  private lease: Lease | null = null;
  private renewTimer: NodeJS.Timeout | null = null;
  private checkTimer: NodeJS.Timeout | null = null;
  private announce: dgram.Socket | null = null;
  private closed = false;
  private busy: Promise<void> | null = null;
  private lastCreate = 0;
  /** A re-creation for a router announcement waits in the queue (serialise). */
  private resetQueued = false;
  private first: Promise<Mapping | null> | null = null;

  constructor(readonly opts: PortMapperOptions) {
    super();
  }

  get mapping(): Mapping | null {
    return this.lease?.mapping ?? null;
  }

  /** Starts discovery and mapping in the background; resolves when the first attempt settled (never rejects). */
  start(): Promise<Mapping | null> {
    if (this.first) return this.first;
    this.first = this.serialise(() => this.establish('start')).then(() => this.mapping);
    this.checkTimer = setInterval(() => void this.serialise(() => this.check()), CHECK_INTERVAL_MS);
    this.checkTimer.unref();
    return this.first;
  }

  /** Deletes the mapping from the router (bounded by DELETE_TIMEOUT_MS) and stops every timer. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.checkTimer) clearInterval(this.checkTimer);
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.announce?.close();
    this.announce = null;
    // Every step is bounded by its own timeout; this bounds a queue of them.
    let wait: NodeJS.Timeout | undefined;
    await Promise.race([
      this.busy?.catch(() => {}),
      new Promise<void>((r) => {
        wait = setTimeout(r, CLOSE_WAIT_MS);
      }),
    ]);
    clearTimeout(wait);
    const lease = this.lease;
    this.lease = null;
    if (lease) await this.remove(lease);
  }

  /** One operation on the lease at a time (discovery, renewal, check, re-creation). */
  private serialise(fn: () => Promise<void>): Promise<void> {
    const run = (this.busy ?? Promise.resolve())
      .then(() => (this.closed ? undefined : fn()))
      .catch((e: Error) => {
        this.opts.log.debug('portmap_error', `port mapping: ${e.message}`, {});
      });
    this.busy = run;
    return run;
  }

  private get log(): Logger {
    return this.opts.log;
  }

  private protocols(): readonly PortmapProtocol[] {
    return this.opts.protocols ?? PORTMAP_PROTOCOLS;
  }

  private async discover(route: DefaultRoute, force: boolean): Promise<GatewayOffers | null> {
    const cached = offersCache.get(route.gateway);
    if (!force && cached && Date.now() - cached.probedAt < OFFERS_CACHE_MS) return cached;
    const localIp = localAddressFor(route);
    if (!localIp) return null;
    const gw = route.gateway;
    const want = new Set(this.protocols());
    const timing = { timeoutMs: DISCOVERY_TIMEOUT_MS, rtoMs: REQUEST_RTO_MS };
    const [pcp, pmp, upnp] = await Promise.all([
      want.has('pcp')
        ? udpExchange(gw, PCP_PORT, encodePcpAnnounce(localIp), (m) => this.acceptPcp(m, null), timing)
        : null,
      want.has('nat-pmp')
        ? udpExchange(gw, NATPMP_PORT, encodeNatPmpExternalAddress(), (m) => this.acceptPmp(m, 'external'), timing)
        : null,
      want.has('upnp') ? this.discoverUpnp(gw) : null,
    ]);
    const pmpExt = pmp?.value?.kind === 'external' && pmp.value.result === 0 ? pmp.value.externalIp : null;
    const offers: GatewayOffers = {
      gateway: gw,
      localIp,
      pcp: pcp?.value?.kind === 'announce' && pcp.value.result === 0,
      natpmp: pmp?.value?.kind === 'external' && pmp.value.result === 0,
      upnp: !!upnp,
      externalIp: pmpExt ?? upnp?.externalIp ?? null,
      probedAt: Date.now(),
    };
    if (upnp) this.igd.set(gw, upnp.svc);
    offersCache.set(gw, offers);
    this.log.debug('portmap_discovered', `gateway ${gw} offers ${describeOffers(offers)}`, { ...offers });
    return offers;
  }

  private igd = new Map<string, IgdService>();

  private async discoverUpnp(gw: string): Promise<{ svc: IgdService; externalIp: string | null } | null> {
    const debug = (msg: string) => this.log.debug('portmap_dropped', msg, { protocol: 'upnp' });
    const deadline = Date.now() + DISCOVERY_TIMEOUT_MS;
    const found = await ssdpSearch(gw, DISCOVERY_TIMEOUT_MS, debug);
    if (!found) return null;
    try {
      const left = () => Math.max(50, deadline - Date.now());
      const svc = await fetchIgd(found.location, gw, left());
      if ('error' in svc) {
        debug(`UPnP description dropped: ${svc.error}`);
        return null;
      }
      const ext = await soapCall(svc, 'GetExternalIPAddress', [], ['NewExternalIPAddress'], left()).catch(() => null);
      // Only an IPv4 address is an external address; anything else is the router's garbage.
      const ip = ext?.ok ? (ext.fields.NewExternalIPAddress ?? '').trim() : '';
      if (ip && !net.isIPv4(ip)) debug(`UPnP external address dropped: not an IPv4 address (${ip.slice(0, 64)})`);
      return { svc, externalIp: net.isIPv4(ip) ? ip : null };
    } catch (e) {
      debug(`UPnP description: ${(e as Error).message}`);
      return null;
    }
  }

  /** Discovery (cached per gateway) then a mapping with the first protocol that grants one. */
  private async establish(why: string, forceDiscovery = false): Promise<void> {
    const route = await (this.opts.route ?? defaultRoute)();
    if (!route) {
      this.failures = ['no default gateway'];
      this.log.debug('portmap_none', 'no port mapping: no default gateway', {});
      return;
    }
    const offers = await this.discover(route, forceDiscovery);
    this.offers = offers;
    if (!offers) {
      this.failures = [`no local address on ${route.iface}`];
      return;
    }
    const failures: string[] = [];
    for (const p of this.protocols()) {
      if (p === 'pcp' && !offers.pcp) continue;
      if (p === 'nat-pmp' && !offers.natpmp) continue;
      if (p === 'upnp' && !offers.upnp) continue;
      const r = await this.create(p, offers).catch((e: Error) => e.message);
      if (typeof r !== 'string') {
        this.adopt(r, why);
        this.failures = [];
        return;
      }
      portmapCounters.failed[p]++;
      failures.push(`${p}: ${r}`);
      this.log.warn('portmap_failed', `the gateway refused a ${p} mapping of UDP ${this.opts.port}: ${r}`, {
        protocol: p,
        gateway: offers.gateway,
        port: this.opts.port,
        reason: r,
      });
    }
    if (!failures.length) failures.push(`gateway ${offers.gateway} offers no PCP, NAT-PMP or UPnP IGD`);
    this.failures = failures;
    this.log.info('portmap_none', `no port mapping: ${failures.join('; ')}`, {
      gateway: offers.gateway,
      reasons: failures,
    });
    if (this.lease) this.drop('the router no longer grants it');
  }

  private adopt(lease: Lease, why: string): void {
    const prev = this.lease?.mapping;
    this.lease = lease;
    this.lastCreate = Date.now();
    portmapCounters.made[lease.mapping.protocol]++;
    const m = lease.mapping;
    this.log.info(
      'portmap_mapped',
      `${m.protocol} mapping ${m.externalIp}:${m.externalPort} -> UDP ${m.internalPort} ` +
        `for ${m.lifetimeS || 'unlimited'} s (${why})`,
      { ...m, why },
    );
    this.scheduleRenew();
    this.listenAnnouncements();
    if (!prev || prev.externalIp !== m.externalIp || prev.externalPort !== m.externalPort) this.emit('change', m);
  }

  private drop(why: string): void {
    const had = this.lease;
    this.lease = null;
    if (this.renewTimer) clearTimeout(this.renewTimer);
    if (had) {
      this.log.warn('portmap_lost', `port mapping ${had.mapping.externalIp}:${had.mapping.externalPort} lost: ${why}`, {
        protocol: had.mapping.protocol,
        why,
      });
      this.emit('change', null);
    }
  }

  private scheduleRenew(): void {
    if (this.renewTimer) clearTimeout(this.renewTimer);
    const m = this.lease?.mapping;
    if (!m || m.lifetimeS === 0) return;
    // A grant longer than we asked for is renewed on our own schedule (and a
    // huge one would overflow setTimeout, which then fires at once).
    const ms = Math.max(1000, Math.min(m.lifetimeS, REQUESTED_LIFETIME_S) * 1000 * RENEW_FRACTION);
    this.renewTimer = setTimeout(() => void this.serialise(() => this.renew()), ms);
    this.renewTimer.unref();
  }

  private async renew(): Promise<void> {
    const lease = this.lease;
    if (!lease || !this.offers) return;
    const r = await this.create(lease.mapping.protocol, this.offers, lease).catch((e: Error) => e.message);
    if (typeof r !== 'string') {
      const same =
        r.mapping.externalPort === lease.mapping.externalPort && r.mapping.externalIp === lease.mapping.externalIp;
      if (same) {
        this.lease = r;
        this.log.debug('portmap_renewed', `${r.mapping.protocol} mapping renewed for ${r.mapping.lifetimeS} s`, {});
        this.scheduleRenew();
      } else {
        this.adopt(r, 'renewed on another port');
      }
      return;
    }
    const expires = lease.mapping.grantedAt + lease.mapping.lifetimeS * 1000;
    this.log.warn('portmap_renew_failed', `renewing the ${lease.mapping.protocol} mapping failed: ${r}`, { reason: r });
    if (Date.now() + RENEW_RETRY_MS >= expires) {
      this.drop(`renewal failed: ${r}`);
      return;
    }
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.renewTimer = setTimeout(() => void this.serialise(() => this.renew()), RENEW_RETRY_MS);
    this.renewTimer.unref();
  }

  /** The periodic check: is the mapping still there (epoch, UPnP entry)? Re-discovers when there is none. */
  private async check(): Promise<void> {
    const lease = this.lease;
    if (!lease) return this.establish('periodic retry');
    if (await this.routerForgot(lease)) {
      this.log.info('portmap_reset', `the router lost our ${lease.mapping.protocol} mapping; re-creating it`, {});
      await this.establish('re-created after the router lost it', true);
    }
  }

  private async routerForgot(lease: Lease): Promise<boolean> {
    const gw = lease.mapping.gateway;
    const timing = { timeoutMs: MAP_TIMEOUT_MS, rtoMs: REQUEST_RTO_MS };
    if (lease.mapping.protocol === 'upnp') {
      if (!lease.upnp) return false;
      const r = await soapCall(
        lease.upnp,
        'GetSpecificPortMappingEntry',
        [
          ['NewRemoteHost', ''],
          ['NewExternalPort', lease.mapping.externalPort],
          ['NewProtocol', 'UDP'],
        ],
        ['NewInternalPort', 'NewInternalClient'],
        MAP_TIMEOUT_MS,
      ).catch(() => null);
      return !!r && !r.ok && r.code === UPNP_ERRORS.noSuchEntry;
    }
    const epoch =
      lease.mapping.protocol === 'pcp'
        ? await udpExchange(
            gw,
            PCP_PORT,
            encodePcpAnnounce(this.offers?.localIp ?? '0.0.0.0'),
            (m) => this.acceptPcp(m, null),
            timing,
          )
        : await udpExchange(
            gw,
            NATPMP_PORT,
            encodeNatPmpExternalAddress(),
            (m) => this.acceptPmp(m, 'external'),
            timing,
          );
    const v = epoch.value;
    if (!v || !('epoch' in v) || !lease.epoch) return false;
    const lost = epochLost(lease.epoch, v.epoch, Date.now());
    if (!lost) lease.epoch = { epoch: v.epoch, atMs: Date.now() };
    return lost;
  }

  /** PCP/NAT-PMP servers multicast an announcement when they restart: re-create at once, not at the next check. */
  private listenAnnouncements(): void {
    if (this.announce || this.opts.announcements === false || this.closed) return;
    const m = this.lease?.mapping;
    if (!m || m.protocol === 'upnp') return;
    const s = dgram.createSocket({ type: 'udp4', reuseAddr: true });
    this.announce = s;
    s.on('error', (e) => {
      this.log.debug('portmap_announce', `not listening for router announcements: ${e.message}`, {});
      s.close();
      if (this.announce === s) this.announce = null;
    });
    s.on('message', (msg, rinfo) => {
      const lease = this.lease;
      if (!lease || rinfo.address !== lease.mapping.gateway || rinfo.port !== SERVER_PORT) return;
      // One re-creation queued at a time: a flood of announcements must not queue one per datagram.
      if (this.resetQueued) return;
      const pcp = msg[0] === 2 ? parsePcpResponse(msg) : null;
      const pmp = msg[0] === 0 ? parseNatPmpResponse(msg) : null;
      const v = pcp ?? pmp;
      if (!v || v.kind === 'error' || !('epoch' in v)) {
        this.log.debug('portmap_dropped', `malformed announcement from the gateway dropped`, { bytes: msg.length });
        return;
      }
      if (Date.now() - this.lastCreate < ANNOUNCE_MIN_GAP_MS) return;
      this.log.info('portmap_reset', `the gateway announced a restart (epoch ${v.epoch}); re-creating our mapping`, {});
      this.resetQueued = true;
      void this.serialise(() => {
        this.resetQueued = false;
        return this.establish('re-created after the router announced a restart', true);
      });
    });
    s.bind(ANNOUNCE_PORT, () => {
      try {
        s.addMembership(ANNOUNCE_GROUP);
      } catch {
        /* no multicast on this interface: the periodic check still runs */
      }
    });
  }

  private acceptPcp(msg: Buffer, nonce: Buffer | null): PcpResponse | null {
    const r = parsePcpResponse(msg);
    if (r.kind === 'error') {
      this.log.debug('portmap_dropped', `malformed PCP response dropped: ${r.error}`, { bytes: msg.length });
      return null;
    }
    if (r.kind === 'map' && nonce && !r.nonce.equals(nonce)) {
      this.log.debug('portmap_dropped', 'PCP response with another nonce dropped', {});
      return null;
    }
    if (nonce === null && r.kind === 'map') return null;
    return r;
  }

  private acceptPmp(msg: Buffer, want: 'external' | 'map'): NatPmpResponse | null {
    const r = parseNatPmpResponse(msg);
    if (r.kind === 'error') {
      this.log.debug('portmap_dropped', `malformed NAT-PMP response dropped: ${r.error}`, { bytes: msg.length });
      return null;
    }
    return r.kind === want ? r : null;
  }

  /** One mapping request (or a renewal of `prev`); resolves with the lease or rejects with the router's reason. */
  private async create(p: PortmapProtocol, offers: GatewayOffers, prev?: Lease): Promise<Lease> {
    const port = this.opts.port;
    const gw = offers.gateway;
    const timing = { timeoutMs: MAP_TIMEOUT_MS, rtoMs: REQUEST_RTO_MS };
    const suggested = prev?.mapping.externalPort ?? port;
    if (p === 'pcp') {
      const nonce = prev?.nonce ?? newNonce();
      const req = encodePcpMap({
        clientIp: offers.localIp,
        internalPort: port,
        suggestedPort: suggested,
        lifetime: REQUESTED_LIFETIME_S,
        nonce,
      });
      const r = await udpExchange(gw, PCP_PORT, req, (m) => this.acceptPcp(m, nonce), timing);
      if (!r.value) throw new Error(r.why);
      const v = r.value;
      if (v.kind !== 'map') throw new Error(v.kind === 'unsupported-version' ? 'UNSUPP_VERSION' : 'unexpected answer');
      if (v.result !== 0) throw new Error(pcpResultName(v.result));
      if (v.internalPort !== port || v.protocol !== 17) throw new Error('the answer is for another mapping');
      if (!v.externalIp || v.externalPort === 0 || v.lifetime === 0)
        throw new Error('the answer has no external address');
      return {
        mapping: {
          protocol: p,
          gateway: gw,
          externalIp: v.externalIp,
          externalPort: v.externalPort,
          internalPort: port,
          lifetimeS: v.lifetime,
          grantedAt: Date.now(),
        },
        nonce,
        epoch: { epoch: v.epoch, atMs: Date.now() },
      };
    }
    if (p === 'nat-pmp') {
      const r = await udpExchange(
        gw,
        NATPMP_PORT,
        encodeNatPmpMap(port, suggested, REQUESTED_LIFETIME_S),
        (m) => this.acceptPmp(m, 'map'),
        timing,
      );
      if (!r.value) throw new Error(r.why);
      const v = r.value;
      if (v.kind !== 'map') throw new Error('unexpected answer');
      if (v.result !== 0) throw new Error(natpmpResultName(v.result));
      if (v.internalPort !== port || v.externalPort === 0 || v.lifetime === 0)
        throw new Error('the answer is for another mapping');
      const ext = offers.externalIp;
      if (!ext) throw new Error('no external address from the gateway');
      return {
        mapping: {
          protocol: p,
          gateway: gw,
          externalIp: ext,
          externalPort: v.externalPort,
          internalPort: port,
          lifetimeS: v.lifetime,
          grantedAt: Date.now(),
        },
        epoch: { epoch: v.epoch, atMs: Date.now() },
      };
    }
    const svc = this.igd.get(gw) ?? (await this.discoverUpnp(gw))?.svc;
    if (!svc) throw new Error('no UPnP IGD answered');
    this.igd.set(gw, svc);
    const ext = offers.externalIp;
    if (!ext) throw new Error('no external address from the gateway');
    const add = async (extPort: number, lease: number) => {
      const args: [string, string | number][] = [
        ['NewRemoteHost', ''],
        ['NewExternalPort', extPort],
        ['NewProtocol', 'UDP'],
        ['NewInternalPort', port],
        ['NewInternalClient', offers.localIp],
        ['NewEnabled', 1],
        ['NewPortMappingDescription', UPNP_DESCRIPTION],
        ['NewLeaseDuration', lease],
      ];
      if (svc.serviceType.endsWith(':2')) {
        const r = await soapCall(svc, 'AddAnyPortMapping', args, ['NewReservedPort'], MAP_TIMEOUT_MS);
        return r.ok ? { ok: true as const, port: Number(r.fields.NewReservedPort) || extPort } : r;
      }
      const r = await soapCall(svc, 'AddPortMapping', args, [], MAP_TIMEOUT_MS);
      return r.ok ? { ok: true as const, port: extPort } : r;
    };
    let lease = REQUESTED_LIFETIME_S;
    let extPort = suggested;
    for (let i = 0; i <= UPNP_CONFLICT_RETRIES; i++) {
      const r = await add(extPort, lease);
      if (r.ok) {
        if (!(r.port > 0 && r.port < 65536)) throw new Error('the answer has no external port');
        return {
          mapping: {
            protocol: p,
            gateway: gw,
            externalIp: ext,
            externalPort: r.port,
            internalPort: port,
            lifetimeS: lease,
            grantedAt: Date.now(),
          },
          upnp: svc,
        };
      }
      if (r.code === UPNP_ERRORS.onlyPermanentLeases && lease !== 0) lease = 0;
      else if (r.code === UPNP_ERRORS.conflict) extPort = 1024 + Math.floor(Math.random() * (65536 - 1024));
      else throw new Error(`UPnP error ${r.code}: ${r.description}`);
    }
    throw new Error('UPnP: every external port we tried is taken');
  }

  private async remove(lease: Lease): Promise<void> {
    const m = lease.mapping;
    const timing = { timeoutMs: DELETE_TIMEOUT_MS, rtoMs: REQUEST_RTO_MS };
    let ok = false;
    try {
      if (m.protocol === 'pcp' && lease.nonce && this.offers) {
        const req = encodePcpMap({
          clientIp: this.offers.localIp,
          internalPort: m.internalPort,
          suggestedPort: 0,
          lifetime: 0,
          nonce: lease.nonce,
        });
        ok = !!(await udpExchange(m.gateway, PCP_PORT, req, (b) => this.acceptPcp(b, lease.nonce!), timing)).value;
      } else if (m.protocol === 'nat-pmp') {
        ok = !!(
          await udpExchange(
            m.gateway,
            NATPMP_PORT,
            encodeNatPmpMap(m.internalPort, 0, 0),
            (b) => this.acceptPmp(b, 'map'),
            timing,
          )
        ).value;
      } else if (m.protocol === 'upnp' && lease.upnp) {
        const r = await soapCall(
          lease.upnp,
          'DeletePortMapping',
          [
            ['NewRemoteHost', ''],
            ['NewExternalPort', m.externalPort],
            ['NewProtocol', 'UDP'],
          ],
          [],
          DELETE_TIMEOUT_MS,
        );
        ok = r.ok;
      }
    } catch {
      ok = false;
    }
    this.log.info(
      'portmap_deleted',
      `${ok ? 'deleted' : 'could not delete'} the ${m.protocol} mapping ${m.externalIp}:${m.externalPort}`,
      {
        protocol: m.protocol,
        ok,
      },
    );
  }
}

export function describeOffers(o: GatewayOffers): string {
  const list = [o.pcp && 'PCP', o.natpmp && 'NAT-PMP', o.upnp && 'UPnP IGD'].filter(Boolean);
  return list.length ? list.join(', ') : 'nothing';
}

/** Forget cached gateway offers (tests, and `peer nat`, which always asks afresh). */
export function clearOffersCache(): void {
  offersCache.clear();
}
