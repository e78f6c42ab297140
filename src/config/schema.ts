import { z } from 'zod';
import { parseHostPort } from '../util/addr.js';
import { NAME_RE } from '../wire/control.js';

/**
 * Config file schemas. Every key is the long command-line option without its
 * `--` (`log-level`, `relay-key`, ...), so a user who knows the flags knows
 * the file. Objects are strict: a misspelt key is an error, not a silent default.
 */

const hostPort = z.string().refine(
  (v) => {
    try {
      parseHostPort(v);
      return true;
    } catch {
      return false;
    }
  },
  { message: 'expected HOST:PORT (e.g. 127.0.0.1:22)' },
);
/** `--server` may list several rendezvous nodes of a cluster: `a:7000,b:7000`. */
const hostPortList = z.string().refine(
  (v) => {
    try {
      for (const part of v.split(',')) parseHostPort(part);
      return v.trim().length > 0;
    } catch {
      return false;
    }
  },
  { message: 'expected HOST:PORT, or several comma-separated (a:7000,b:7000)' },
);
/** `udp` and `alt-udp` of the rendezvous: one address, or one per family (`203.0.113.10:7000,[2001:db8::10]:7000`). */
const hostPortPerFamily = z.string().refine(
  (v) => {
    try {
      const parts = v.split(',').map((p) => parseHostPort(p).host);
      return parts.length <= 2 && (parts.length < 2 || parts.filter((h) => h.includes(':')).length === 1);
    } catch {
      return false;
    }
  },
  { message: 'expected HOST:PORT, or one IPv4 and one IPv6 HOST:PORT comma-separated' },
);
const name = z.string().regex(NAME_RE, 'must be 1-63 of A-Z a-z 0-9 . _ - starting with a letter or digit');
const nonEmpty = z.string().min(1, 'must not be empty');
const mode = z.enum(['auto', 'direct', 'relay']);
const proto = z.enum(['tcp', 'udp']);
/** Seconds a UDP flow may be idle before it is closed (`--udp-idle-timeout`). */
const udpIdleTimeout = z.number().min(1).max(86_400);
const publicKey = z
  .string()
  .regex(/^[A-Za-z0-9+/]{43}=?$/, 'expected a public key as printed by `peer keygen` (base64, 32 bytes)');

const logKeys = {
  'log-level': z.enum(['debug', 'info', 'warn', 'error']).optional(),
  'log-format': z.enum(['text', 'json']).optional(),
  quiet: z.boolean().optional(),
};

/** Keys a [[serve]] or [[visit]] entry may set for itself; unset ones come from the top level. */
const peerShared = {
  server: hostPortList.optional(),
  secret: nonEmpty.optional(),
  token: nonEmpty.optional(),
  mode: mode.optional(),
};

export const ServeEntry = z.strictObject({
  name,
  local: hostPort,
  ...peerShared,
  allow: z.array(publicKey).optional(),
  proto: proto.optional(),
  'udp-idle-timeout': udpIdleTimeout.optional(),
});
export type ServeEntry = z.infer<typeof ServeEntry>;

export const VisitEntry = z.strictObject({
  name,
  bind: hostPort,
  ...peerShared,
  'server-key': publicKey.optional(),
  proto: proto.optional(),
  'udp-idle-timeout': udpIdleTimeout.optional(),
});
export type VisitEntry = z.infer<typeof VisitEntry>;

export const PeerConfig = z.strictObject({
  ...peerShared,
  ...logKeys,
  admin: z.union([nonEmpty, z.literal(false)]).optional(),
  metrics: hostPort.optional(),
  identity: nonEmpty.optional(),
  'drain-timeout': z.number().min(0).max(3600).optional(),
  'resume-timeout': z.number().min(1).max(86_400).optional(),
  'udp-idle-timeout': udpIdleTimeout.optional(),
  /** Upper bound of the direct path's datagrams (the UDP payload), see docs/PMTU.md. */
  'max-datagram': z.number().int().min(548).max(1472).optional(),
  /** Seconds after a path MTU search ended below the bound before it searches again. */
  'pmtu-raise-interval': z.number().min(1).max(3600).optional(),
  // false: never ask the gateway for a port mapping (PCP, NAT-PMP, UPnP IGD); docs/PORTMAP.md.
  portmap: z.boolean().optional(),
  ipv6: z.boolean().optional(),
  serve: z.array(ServeEntry).default([]),
  visit: z.array(VisitEntry).default([]),
});
export type PeerConfig = z.infer<typeof PeerConfig>;

export const RendezvousConfig = z.strictObject({
  listen: hostPort.optional(),
  udp: hostPortPerFamily.optional(),
  'alt-udp': hostPortPerFamily.optional(),
  // A second STUN port on the UDP address (default: that port + 1); 0 or "off": none.
  'alt-port': z.union([z.number().int().min(0).max(65535), z.literal('off')]).optional(),
  token: nonEmpty.optional(),
  relay: hostPort.optional(),
  'relay-key': nonEmpty.optional(),
  metrics: hostPort.optional(),
  'metrics-token': nonEmpty.optional(),
  status: hostPort.optional(),
  registry: nonEmpty.optional(),
  'node-id': nonEmpty.optional(),
  advertise: hostPort.optional(),
  'registry-ttl': z.number().int().min(1).max(3600).optional(),
  'max-conns-per-ip': z.number().int().min(1).optional(),
  'max-connections': z.number().int().min(1).optional(),
  'max-names-per-conn': z.number().int().min(1).optional(),
  'max-sessions-per-conn': z.number().int().min(1).optional(),
  'max-sessions': z.number().int().min(1).optional(),
  'max-memory': z.number().int().min(64).optional(),
  'relay-rate': z.number().min(0).optional(),
  'handshake-timeout': z.number().min(1).optional(),
  'idle-timeout': z.number().min(5).optional(),
  ...logKeys,
});
export type RendezvousConfig = z.infer<typeof RendezvousConfig>;

export const RelayConfig = z.strictObject({
  listen: hostPort.optional(),
  key: nonEmpty.optional(),
  ...logKeys,
});
export type RelayConfig = z.infer<typeof RelayConfig>;
