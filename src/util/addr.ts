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
