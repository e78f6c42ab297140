/**
 * PCP (RFC 6887) MAP and ANNOUNCE, IPv4 only: the codec (pure) and the
 * request/response exchange with the gateway (udp.ts). A PCP server listens
 * on UDP 5351, the same port as NAT-PMP; a NAT-PMP-only server answers a PCP
 * request with a version-0 UNSUPP_VERSION reply, which parsePcpResponse
 * reports as such so the mapper falls back to NAT-PMP at once.
 */
import { randomBytes } from 'node:crypto';

export const PCP_PORT = 5351;
export const PCP_VERSION = 2;
const OP_ANNOUNCE = 0;
const OP_MAP = 1;
const HEADER_BYTES = 24;
const MAP_BYTES = 36;
/** RFC 6887 section 7: PCP messages are at most 1100 bytes. */
export const PCP_MAX_BYTES = 1100;
const UDP = 17;

/** Result codes (RFC 6887 section 7.4), by number, for logs. */
export const PCP_RESULTS: Record<number, string> = {
  0: 'SUCCESS',
  1: 'UNSUPP_VERSION',
  2: 'NOT_AUTHORIZED',
  3: 'MALFORMED_REQUEST',
  4: 'UNSUPP_OPCODE',
  5: 'UNSUPP_OPTION',
  6: 'MALFORMED_OPTION',
  7: 'NETWORK_FAILURE',
  8: 'NO_RESOURCES',
  9: 'UNSUPP_PROTOCOL',
  10: 'USER_EX_QUOTA',
  11: 'CANNOT_PROVIDE_EXTERNAL',
  12: 'ADDRESS_MISMATCH',
  13: 'EXCESSIVE_REMOTE_PEERS',
};

export function pcpResultName(code: number): string {
  return PCP_RESULTS[code] ?? `result ${code}`;
}

/** ::ffff:a.b.c.d as 16 bytes (PCP carries IPv4 addresses IPv4-mapped). */
function mappedV4(ip: string, into: Buffer, at: number): void {
  into.fill(0, at, at + 16);
  into[at + 10] = 0xff;
  into[at + 11] = 0xff;
  const parts = ip.split('.').map(Number);
  for (let i = 0; i < 4; i++) into[at + 12 + i] = parts[i] & 0xff;
}

function readV4(buf: Buffer, at: number): string | null {
  for (let i = 0; i < 10; i++) if (buf[at + i] !== 0) return null;
  if (buf[at + 10] !== 0xff || buf[at + 11] !== 0xff) return null;
  return `${buf[at + 12]}.${buf[at + 13]}.${buf[at + 14]}.${buf[at + 15]}`;
}

export function newNonce(): Buffer {
  return randomBytes(12);
}

export interface PcpMapRequest {
  /** Our address as the gateway sees it (the PCP client IP). */
  clientIp: string;
  internalPort: number;
  /** A hint; 0: any. */
  suggestedPort: number;
  /** Seconds; 0 deletes the mapping. */
  lifetime: number;
  /** 12 bytes, the same for a mapping's whole life (renewals and the delete). */
  nonce: Buffer;
}

/** A MAP request for UDP (pure): 24-byte header + 36-byte MAP opcode, suggested external IP "any IPv4". */
export function encodePcpMap(r: PcpMapRequest): Buffer {
  const b = Buffer.alloc(HEADER_BYTES + MAP_BYTES);
  b[0] = PCP_VERSION;
  b[1] = OP_MAP;
  b.writeUInt32BE(r.lifetime >>> 0, 4);
  mappedV4(r.clientIp, b, 8);
  r.nonce.copy(b, 24, 0, 12);
  b[36] = UDP;
  b.writeUInt16BE(r.internalPort, 40);
  b.writeUInt16BE(r.suggestedPort, 42);
  mappedV4('0.0.0.0', b, 44);
  return b;
}

/** An ANNOUNCE request (pure): asks only for the server's epoch, creates nothing. */
export function encodePcpAnnounce(clientIp: string): Buffer {
  const b = Buffer.alloc(HEADER_BYTES);
  b[0] = PCP_VERSION;
  b[1] = OP_ANNOUNCE;
  mappedV4(clientIp, b, 8);
  return b;
}

export type PcpResponse =
  | { kind: 'unsupported-version'; version: number }
  | {
      kind: 'announce';
      result: number;
      epoch: number;
    }
  | {
      kind: 'map';
      result: number;
      lifetime: number;
      epoch: number;
      nonce: Buffer;
      protocol: number;
      internalPort: number;
      externalPort: number;
      /** null when the server put something other than an IPv4-mapped address there. */
      externalIp: string | null;
    };

/**
 * Parses a datagram from port 5351 (pure, never throws): a PCP response, or
 * a NAT-PMP server's "unsupported version" answer to our PCP request.
 * Returns an error string for anything else.
 */
export function parsePcpResponse(buf: Buffer): PcpResponse | { kind: 'error'; error: string } {
  if (buf.length < 2) return { kind: 'error', error: `too short (${buf.length} bytes)` };
  if (buf[0] === 0 && buf.length >= 4 && buf[1] >= 128) {
    // NAT-PMP server: [0, 128+op, result u16, ...]; result 1 = unsupported version.
    return buf.readUInt16BE(2) === 1
      ? { kind: 'unsupported-version', version: 0 }
      : { kind: 'error', error: `NAT-PMP answer with result ${buf.readUInt16BE(2)} to a PCP request` };
  }
  if (buf[0] !== PCP_VERSION) return { kind: 'error', error: `version ${buf[0]}, expected 2` };
  if (buf.length < HEADER_BYTES) return { kind: 'error', error: `too short (${buf.length} bytes)` };
  if (buf.length > PCP_MAX_BYTES || buf.length % 4 !== 0)
    return { kind: 'error', error: `bad length ${buf.length} (at most 1100, a multiple of 4)` };
  if ((buf[1] & 0x80) === 0) return { kind: 'error', error: 'a request, not a response' };
  const op = buf[1] & 0x7f;
  const result = buf[3];
  const lifetime = buf.readUInt32BE(4);
  const epoch = buf.readUInt32BE(8);
  if (op === OP_ANNOUNCE) return { kind: 'announce', result, epoch };
  if (op !== OP_MAP) return { kind: 'error', error: `unexpected opcode ${op}` };
  if (result === 1) return { kind: 'unsupported-version', version: PCP_VERSION };
  if (buf.length < HEADER_BYTES + MAP_BYTES) {
    // Error responses may omit nothing per the RFC, but be lenient: no mapping data.
    return { kind: 'error', error: `MAP response too short (${buf.length} bytes), ${pcpResultName(result)}` };
  }
  return {
    kind: 'map',
    result,
    lifetime,
    epoch,
    nonce: Buffer.from(buf.subarray(24, 36)),
    protocol: buf[36],
    internalPort: buf.readUInt16BE(40),
    externalPort: buf.readUInt16BE(42),
    externalIp: readV4(buf, 44),
  };
}
