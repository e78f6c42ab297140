/**
 * NAT-PMP (RFC 6886), UDP mappings only: the codec (pure). Requests go to the
 * gateway's UDP 5351 (udp.ts does the exchange).
 */

export const NATPMP_PORT = 5351;
const OP_EXTERNAL_ADDRESS = 0;
const OP_MAP_UDP = 1;
/** Responses are 12 (external address) or 16 (mapping) bytes; anything above this is not NAT-PMP. */
export const NATPMP_MAX_BYTES = 64;

export const NATPMP_RESULTS: Record<number, string> = {
  0: 'SUCCESS',
  1: 'UNSUPPORTED_VERSION',
  2: 'NOT_AUTHORIZED',
  3: 'NETWORK_FAILURE',
  4: 'OUT_OF_RESOURCES',
  5: 'UNSUPPORTED_OPCODE',
};

export function natpmpResultName(code: number): string {
  return NATPMP_RESULTS[code] ?? `result ${code}`;
}

export function encodeNatPmpExternalAddress(): Buffer {
  return Buffer.from([0, OP_EXTERNAL_ADDRESS]);
}

/** A UDP mapping request (pure); lifetime 0 (and suggested port 0) deletes it. */
export function encodeNatPmpMap(internalPort: number, suggestedPort: number, lifetime: number): Buffer {
  const b = Buffer.alloc(12);
  b[1] = OP_MAP_UDP;
  b.writeUInt16BE(internalPort, 4);
  b.writeUInt16BE(suggestedPort, 6);
  b.writeUInt32BE(lifetime >>> 0, 8);
  return b;
}

export type NatPmpResponse =
  | { kind: 'external'; result: number; epoch: number; externalIp: string | null }
  | { kind: 'map'; result: number; epoch: number; internalPort: number; externalPort: number; lifetime: number };

/** Parses a NAT-PMP response (pure, never throws). */
export function parseNatPmpResponse(buf: Buffer): NatPmpResponse | { kind: 'error'; error: string } {
  if (buf.length < 8) return { kind: 'error', error: `too short (${buf.length} bytes)` };
  if (buf.length > NATPMP_MAX_BYTES) return { kind: 'error', error: `too long (${buf.length} bytes)` };
  if (buf[0] !== 0) return { kind: 'error', error: `version ${buf[0]}, expected 0` };
  const op = buf[1];
  const result = buf.readUInt16BE(2);
  const epoch = buf.readUInt32BE(4);
  if (op === 128 + OP_EXTERNAL_ADDRESS) {
    if (buf.length < 12) return result ? { kind: 'external', result, epoch, externalIp: null } : tooShort(buf);
    return { kind: 'external', result, epoch, externalIp: `${buf[8]}.${buf[9]}.${buf[10]}.${buf[11]}` };
  }
  if (op === 128 + OP_MAP_UDP) {
    if (buf.length < 16) {
      return result ? { kind: 'map', result, epoch, internalPort: 0, externalPort: 0, lifetime: 0 } : tooShort(buf);
    }
    return {
      kind: 'map',
      result,
      epoch,
      internalPort: buf.readUInt16BE(8),
      externalPort: buf.readUInt16BE(10),
      lifetime: buf.readUInt32BE(12),
    };
  }
  return { kind: 'error', error: `unexpected opcode ${op}` };
}

function tooShort(buf: Buffer): { kind: 'error'; error: string } {
  return { kind: 'error', error: `successful response too short (${buf.length} bytes)` };
}
