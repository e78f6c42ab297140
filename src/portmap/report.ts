/**
 * What `peer nat` shows of port mapping: which protocols the default gateway
 * offers and the mapping it grants for a UDP socket of ours, made for the
 * occasion and deleted again before returning.
 */
import dgram from 'node:dgram';
import type { Logger } from '../util/log.js';
import { PortMapper, clearOffersCache, describeOffers, type Mapping, type PortmapProtocol } from './mapper.js';

export interface PortmapReport {
  /** The default gateway asked, or null (none: a host on the internet, or not Linux). */
  gateway: string | null;
  offers: PortmapProtocol[];
  mapping: Omit<Mapping, 'grantedAt' | 'gateway'> | null;
  /** Why there is no mapping, per protocol tried. */
  failures: string[];
}

export async function portmapReport(log: Logger): Promise<PortmapReport> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => sock.bind(0, () => resolve()));
  clearOffersCache();
  const mapper = new PortMapper({ port: sock.address().port, log, announcements: false });
  try {
    const m = await mapper.start();
    const o = mapper.offers;
    const offers: PortmapProtocol[] = o
      ? (['pcp', 'nat-pmp', 'upnp'] as const).filter((p) => (p === 'pcp' ? o.pcp : p === 'nat-pmp' ? o.natpmp : o.upnp))
      : [];
    return {
      gateway: o?.gateway ?? null,
      offers,
      mapping: m
        ? {
            protocol: m.protocol,
            externalIp: m.externalIp,
            externalPort: m.externalPort,
            internalPort: m.internalPort,
            lifetimeS: m.lifetimeS,
          }
        : null,
      failures: mapper.failures,
    };
  } finally {
    await mapper.close();
    sock.close();
  }
}

/** One line for the text output of `peer nat`. */
export function describePortmap(r: PortmapReport): string {
  if (!r.gateway) return 'no default gateway';
  const offers = r.offers.length
    ? describeOffers({
        gateway: r.gateway,
        localIp: '',
        pcp: r.offers.includes('pcp'),
        natpmp: r.offers.includes('nat-pmp'),
        upnp: r.offers.includes('upnp'),
        externalIp: null,
        probedAt: 0,
      })
    : 'nothing';
  const got = r.mapping
    ? `mapped ${r.mapping.externalIp}:${r.mapping.externalPort} -> UDP ${r.mapping.internalPort} ` +
      `(${r.mapping.protocol}, ${r.mapping.lifetimeS || 'unlimited'} s; deleted again)`
    : `no mapping${r.failures.length ? ` (${r.failures.join('; ')})` : ''}`;
  return `gateway ${r.gateway} offers ${offers}; ${got}`;
}
