/**
 * Transport addresses as the STUN code sees them. Family-independent on
 * purpose: every candidate, mapped address and server address is an Endpoint,
 * so IPv6 follows without new types.
 */
import { isIPv4, isIPv6 } from 'node:net';
import { unmapIPv4 } from '../util/addr.js';

export { unmapIPv4 };

export type Family = 'IPv4' | 'IPv6';

export interface Endpoint {
  address: string;
  port: number;
  family: Family;
}

/** Family of an IP literal, or null when the string is not one. */
export function familyOf(address: string): Family | null {
  if (isIPv4(address)) return 'IPv4';
  if (isIPv6(stripZone(address))) return 'IPv6';
  return null;
}

function stripZone(address: string): string {
  const pct = address.indexOf('%');
  return pct < 0 ? address : address.slice(0, pct);
}

/**
 * Builds an Endpoint from what dgram gives us (rinfo, socket.address()).
 * An IPv4-mapped IPv6 address (a dual-stack socket receiving IPv4) is turned
 * back into plain IPv4: the client behind it speaks IPv4 and must be told an
 * IPv4 mapped address.
 */
export function toEndpoint(addr: { address: string; port: number; family?: string | number }): Endpoint {
  const unmapped = unmapIPv4(addr.address);
  if (unmapped !== addr.address) return { address: unmapped, port: addr.port, family: 'IPv4' };
  const family = familyOf(addr.address) ?? (addr.family === 'IPv6' || addr.family === 6 ? 'IPv6' : 'IPv4');
  return { address: addr.address, port: addr.port, family };
}

export function isWildcard(address: string): boolean {
  return address === '0.0.0.0' || address === '::' || address === '0:0:0:0:0:0:0:0';
}

/** Equality on address bytes and port, so '::1' equals '0:0::1'. */
export function sameEndpoint(a: { address: string; port: number }, b: { address: string; port: number }): boolean {
  return a.port === b.port && sameAddress(a.address, b.address);
}

export function sameAddress(a: string, b: string): boolean {
  if (a === b) return true;
  const ba = ipToBytes(unmapIPv4(a));
  const bb = ipToBytes(unmapIPv4(b));
  return ba !== null && bb !== null && Buffer.compare(ba, bb) === 0;
}

export function endpointToString(e: { address: string; port: number }): string {
  return e.address.includes(':') ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
}

/** 4 or 16 network-order bytes of an IP literal, or null when it is not one. */
export function ipToBytes(address: string): Buffer | null {
  if (isIPv4(address)) return Buffer.from(address.split('.').map(Number));
  const bare = stripZone(address);
  if (!isIPv6(bare)) return null;
  let text = bare;
  const out = Buffer.alloc(16);
  // A dotted-quad tail ('::ffff:1.2.3.4') counts as two groups.
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  let tailBytes: number[] = [];
  if (tail.includes('.')) {
    tailBytes = tail.split('.').map(Number);
    text = text.slice(0, lastColon + 1) + '0:0';
  }
  const halves = text.split('::');
  const head = halves[0] === '' ? [] : halves[0].split(':');
  const rest = halves.length > 1 && halves[1] !== '' ? halves[1].split(':') : [];
  const groups =
    halves.length > 1 ? [...head, ...new Array<string>(8 - head.length - rest.length).fill('0'), ...rest] : head;
  if (groups.length !== 8) return null;
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  if (tailBytes.length === 4) out.set(tailBytes, 12);
  return out;
}

/** Text form of 4 or 16 address bytes; IPv6 in RFC 5952 form, v4-mapped as '::ffff:a.b.c.d' like Node prints it. */
export function bytesToIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i] << 8) | bytes[i + 1]);
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `::ffff:${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
  }
  // Compress the longest run of two or more zero groups (first one on a tie).
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}
