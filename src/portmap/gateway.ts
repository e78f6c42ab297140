import { readFile } from 'node:fs/promises';
import os from 'node:os';

/**
 * The default gateway: the only host the port mapper ever talks to (plus SSDP
 * multicast on the LAN). Linux: /proc/net/route, parsed by a pure function.
 */

/** RTF_UP | RTF_GATEWAY (linux/route.h). */
const RTF_UP = 0x1;
const RTF_GATEWAY = 0x2;
/** /proc/net/route is small; anything longer than this is not read further. */
const MAX_ROUTE_LINES = 4096;

export interface DefaultRoute {
  /** The gateway's IPv4 address, dotted quad. */
  gateway: string;
  /** The interface the route leaves by. */
  iface: string;
  metric: number;
}

/** "010200C0" (little-endian hex, as /proc/net/route prints it) -> "192.0.2.1"; null if malformed. */
export function hexToIPv4(hex: string): string | null {
  if (!/^[0-9A-Fa-f]{8}$/.test(hex)) return null;
  const n = parseInt(hex, 16);
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff].join('.');
}

/**
 * The default IPv4 route from the text of /proc/net/route (pure): the up,
 * gateway-flagged route with destination and mask 0, lowest metric first.
 * Null when there is none (a host on the internet, a router, a lab's rdv).
 */
export function parseRouteTable(text: string): DefaultRoute | null {
  let best: DefaultRoute | null = null;
  const lines = text.split('\n', MAX_ROUTE_LINES);
  for (let i = 1; i < lines.length; i++) {
    const f = lines[i].trim().split(/\s+/);
    if (f.length < 8) continue;
    const [iface, dest, gw, flagsHex, , , metricS, mask] = f;
    const flags = parseInt(flagsHex, 16);
    if (!Number.isFinite(flags) || (flags & (RTF_UP | RTF_GATEWAY)) !== (RTF_UP | RTF_GATEWAY)) continue;
    if (dest !== '00000000' || mask !== '00000000') continue;
    const gateway = hexToIPv4(gw);
    const metric = Number(metricS);
    if (!gateway || gateway === '0.0.0.0' || !Number.isInteger(metric)) continue;
    if (!best || metric < best.metric) best = { gateway, iface, metric };
  }
  return best;
}

/** The default route of this host (Linux), or null (other systems, no default route, unreadable). */
export async function defaultRoute(path = '/proc/net/route'): Promise<DefaultRoute | null> {
  if (process.platform !== 'linux') return null;
  try {
    return parseRouteTable(await readFile(path, 'utf8'));
  } catch {
    return null;
  }
}

/** Our IPv4 address on `iface` in the gateway's subnet (the internal client of a mapping), or null. */
export function localAddressFor(route: DefaultRoute, ifaces = os.networkInterfaces()): string | null {
  const list = (ifaces[route.iface] ?? []).filter((a) => a.family === 'IPv4' && !a.internal);
  const gw = ipv4ToInt(route.gateway);
  const same = list.find((a) => {
    const mask = ipv4ToInt(a.netmask);
    return gw !== null && mask !== null && ((ipv4ToInt(a.address) ?? 0) & mask) === (gw & mask);
  });
  return (same ?? list[0])?.address ?? null;
}

export function ipv4ToInt(ip: string): number | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  if (!m) return null;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return null;
  return ((parts[0] << 24) | (parts[1] << 16) | (parts[2] << 8) | parts[3]) >>> 0;
}
