/**
 * What lives in Redis, as pure functions: key names, the JSON records stored
 * under them, and parsing that never throws (Redis is shared state; a record
 * we cannot read is treated as absent or foreign, never trusted).
 */
import crypto from 'node:crypto';
import os from 'node:os';

export const PREFIX = 'holepunch:';

/** The registration of one name: who holds it (node + Ed25519 key) and which registration (reg) it is. */
export interface NameRecord {
  node: string;
  key: string;
  /** Random per registration: compare-and-refresh / compare-and-delete match this exact record. */
  reg: string;
  since: number;
}

/** A node's heartbeat: where other nodes reach its relay. */
export interface NodeRecord {
  node: string;
  advertise: string;
  /** Random per process, so two live processes with one --node-id notice each other. */
  instance: string;
  started: number;
}

export const NODE_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function nameKey(name: string): string {
  return `${PREFIX}name:${name.toLowerCase()}`;
}

export function nodeKey(node: string): string {
  return `${PREFIX}node:${node}`;
}

export function busChannel(node: string): string {
  return `${PREFIX}bus:${node}`;
}

export function newNameRecord(node: string, key: string, now = Date.now()): NameRecord {
  return { node, key, reg: crypto.randomBytes(9).toString('base64url'), since: now };
}

/** Serialised once and kept: refresh and release compare this exact string. */
export function encodeRecord(r: NameRecord | NodeRecord): string {
  return JSON.stringify(r);
}

export function parseNameRecord(text: string | null | undefined): NameRecord | null {
  const o = parseObject(text);
  if (!o || typeof o.node !== 'string' || typeof o.key !== 'string' || typeof o.reg !== 'string') return null;
  return { node: o.node, key: o.key, reg: o.reg, since: typeof o.since === 'number' ? o.since : 0 };
}

export function parseNodeRecord(text: string | null | undefined): NodeRecord | null {
  const o = parseObject(text);
  if (!o || typeof o.node !== 'string' || typeof o.advertise !== 'string' || typeof o.instance !== 'string')
    return null;
  return {
    node: o.node,
    advertise: o.advertise,
    instance: o.instance,
    started: typeof o.started === 'number' ? o.started : 0,
  };
}

function parseObject(text: string | null | undefined): Record<string, unknown> | null {
  if (!text) return null;
  try {
    const o: unknown = JSON.parse(text);
    return o && typeof o === 'object' && !Array.isArray(o) ? (o as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

export function defaultNodeId(): string {
  const host =
    os
      .hostname()
      .replace(/[^A-Za-z0-9._-]/g, '-')
      .replace(/^[^A-Za-z0-9]+/, '')
      .slice(0, 40) || 'node';
  return `${host}-${crypto.randomBytes(3).toString('hex')}`;
}

/**
 * The session id inside a relay ticket (src/wire/ticket.ts layout), read
 * without the MAC check: that is the owning node's job, we only route on it.
 */
export function ticketRoute(ticket: string): { sid: string; role: 'visitor' | 'server' } | null {
  const b = Buffer.from(ticket, 'base64url');
  if (b.length !== 29 || (b[8] !== 1 && b[8] !== 2)) return null;
  return { sid: b.subarray(0, 8).toString('hex'), role: b[8] === 1 ? 'visitor' : 'server' };
}

/** A Redis URL as it may appear in logs: no password. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(invalid URL)';
  }
}

/** Checks `redis://HOST:PORT/DB` (or rediss://) before handing it to the client; returns why not, or null. */
export function checkRegistryUrl(url: string): string | null {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return `invalid --registry "${url}": expected redis://HOST:PORT/DB`;
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:')
    return `invalid --registry "${redactUrl(url)}": only redis:// and rediss:// are supported`;
  if (!u.hostname) return `invalid --registry "${redactUrl(url)}": no host`;
  const db = u.pathname.replace(/^\//, '');
  if (db && !/^\d+$/.test(db)) return `invalid --registry "${redactUrl(url)}": the path must be a database number`;
  return null;
}
