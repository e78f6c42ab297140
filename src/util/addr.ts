import net from 'node:net';

/**
 * '::ffff:1.2.3.4' -> '1.2.3.4': an IPv4 peer as a dual-stack socket shows it,
 * back in IPv4 form. Any other address is returned unchanged.
 */
export function unmapIPv4(address: string): string {
  const m = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  return m !== null && net.isIPv4(m[1]) ? m[1] : address;
}

export interface HostPort {
  host: string;
  port: number;
}

/**
 * Parses `HOST:PORT`, `[v6]:PORT` or `:PORT` (host defaults to `defaultHost`).
 * Throws an Error whose message names the offending value, for CLI errors.
 */
export function parseHostPort(value: string, defaultHost = '0.0.0.0', what = 'address'): HostPort {
  const v = value.trim();
  let host: string;
  let portStr: string;
  const m6 = /^\[([^\]]+)\]:(\d+)$/.exec(v);
  if (m6) {
    host = m6[1];
    portStr = m6[2];
  } else {
    const i = v.lastIndexOf(':');
    if (i < 0) {
      if (/^\d+$/.test(v)) {
        host = defaultHost;
        portStr = v;
      } else {
        throw new Error(`invalid ${what} "${value}": expected HOST:PORT`);
      }
    } else {
      host = v.slice(0, i) || defaultHost;
      portStr = v.slice(i + 1);
    }
  }
  const port = Number(portStr);
  if (!/^\d+$/.test(portStr) || port < 0 || port > 65535) {
    throw new Error(`invalid ${what} "${value}": port must be 0-65535`);
  }
  if (host.includes(':') && !net.isIPv6(host)) throw new Error(`invalid ${what} "${value}": bad IPv6 host`);
  return { host, port };
}

export function formatHostPort(h: { host?: string; address?: string; port: number }): string {
  const host = h.host ?? h.address ?? '';
  return host.includes(':') ? `[${host}]:${h.port}` : `${host}:${h.port}`;
}

export type IpFamily = 'IPv4' | 'IPv6';

/** The family of an IP literal ('::ffff:a.b.c.d' counts as IPv4, as it is on the wire), or null. */
export function ipFamily(address: string): IpFamily | null {
  const a = unmapIPv4(address);
  if (net.isIPv4(a)) return 'IPv4';
  if (net.isIPv6(a.replace(/%.*$/, ''))) return 'IPv6';
  return null;
}

/**
 * IPv6 address classes that matter to candidates (RFC 4291, RFC 4193).
 * `global`: 2000::/3, routed on the internet (the lab's 2001:db8::/32 too:
 * documentation space is filtered by real routers, not by us). `ula`:
 * fc00::/7, unique local, reachable only within its site. `link-local`:
 * fe80::/10, useless without a zone. `other`: loopback, multicast, mapped.
 */
export type V6Class = 'global' | 'ula' | 'link-local' | 'other';

const V6_CLASSES: [V6Class, net.BlockList][] = (
  [
    ['global', '2000::', 3],
    ['ula', 'fc00::', 7],
    ['link-local', 'fe80::', 10],
  ] as const
).map(([cls, prefix, len]) => {
  const b = new net.BlockList();
  b.addSubnet(prefix, len, 'ipv6');
  return [cls, b];
});

export function v6Class(address: string): V6Class {
  const a = address.replace(/%.*$/, '');
  if (!net.isIPv6(a) || ipFamily(a) !== 'IPv6') return 'other';
  for (const [cls, b] of V6_CLASSES) if (b.check(a, 'ipv6')) return cls;
  return 'other';
}

/** Are two IPv6 addresses in the same /`bits` (default 64: one LAN segment)? False for anything else. */
export function sameV6Prefix(a: string, b: string, bits = 64): boolean {
  if (ipFamily(a) !== 'IPv6' || ipFamily(b) !== 'IPv6') return false;
  const list = new net.BlockList();
  try {
    list.addSubnet(a.replace(/%.*$/, ''), bits, 'ipv6');
    return list.check(b.replace(/%.*$/, ''), 'ipv6');
  } catch {
    return false;
  }
}

/** The first address of each family in `addresses` (pure; mapped IPv4 counts as IPv4, non-literals are skipped). */
export function firstPerFamily(addresses: readonly string[]): { IPv4?: string; IPv6?: string } {
  const out: { IPv4?: string; IPv6?: string } = {};
  for (const raw of addresses) {
    const a = unmapIPv4(raw);
    const f = ipFamily(a);
    if (f && out[f] === undefined) out[f] = a;
  }
  return out;
}
