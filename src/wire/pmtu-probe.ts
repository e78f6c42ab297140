import { DATAGRAM_OVERHEAD } from './datagram.js';

/**
 * Payloads of PmtuProbe and PmtuProbeAck datagrams (inside the seal, see
 * datagram.ts), for the path MTU search (src/punch/pmtu.ts, docs/PMTU.md).
 *
 * PmtuProbe, padded so that the *sealed* datagram is exactly `size` bytes:
 *
 *   offset  size  field
 *   0       4     probe id (big-endian), echoed by the ack
 *   4       2     size: the sealed datagram's total length (big-endian)
 *   6       n     padding, zeros; n = size - DATAGRAM_OVERHEAD - 6
 *
 * PmtuProbeAck, always 6 bytes (a 35-byte datagram, so it passes any path
 * that carries the probe's answer at all):
 *
 *   0       4     probe id
 *   4       2     size of the probe datagram as it arrived
 *
 * The receiver answers a probe only if its size field equals the length it
 * actually received, so an ack proves that exactly that many bytes crossed
 * the path in one piece. The padding is covered by the AEAD tag like any
 * payload; its content is not checked.
 */
export const PMTU_PROBE_HEADER_LEN = 6;
export const PMTU_PROBE_ACK_LEN = 6;
/** Smallest sealed probe: header and tag, no padding. */
export const MIN_PMTU_PROBE_LEN = DATAGRAM_OVERHEAD + PMTU_PROBE_HEADER_LEN; // 35
/** Largest sealed probe: the largest UDP payload over IPv4 (65535 - 20 - 8), within the 16-bit size field. */
export const MAX_PMTU_PROBE_LEN = 65507;

export interface PmtuProbeBody {
  id: number;
  /** total sealed datagram length */
  size: number;
}

/** Plaintext length that seals into a datagram of exactly `size` bytes. */
export function pmtuProbePayloadLength(size: number): number {
  return size - DATAGRAM_OVERHEAD;
}

/**
 * The plaintext of a probe whose sealed datagram is exactly `size` bytes
 * (seal it as DatagramType.PmtuProbe). Throws RangeError on a size that
 * cannot be a probe: local misuse, not network input.
 */
export function encodePmtuProbe(id: number, size: number): Uint8Array {
  if (!Number.isInteger(size) || size < MIN_PMTU_PROBE_LEN || size > MAX_PMTU_PROBE_LEN)
    throw new RangeError(
      `PMTU probe size must be an integer ${MIN_PMTU_PROBE_LEN}..${MAX_PMTU_PROBE_LEN}, got ${size}`,
    );
  const out = Buffer.alloc(pmtuProbePayloadLength(size)); // zero padding
  out.writeUInt32BE(id >>> 0, 0);
  out.writeUInt16BE(size, 4);
  return out;
}

/**
 * Reads an opened probe payload; null, never a throw, when it is not a
 * well-formed probe whose size field matches the length that arrived.
 */
export function decodePmtuProbe(payload: Uint8Array): PmtuProbeBody | null {
  if (!(payload instanceof Uint8Array) || payload.length < PMTU_PROBE_HEADER_LEN) return null;
  const size = (payload[4] << 8) | payload[5];
  if (size !== payload.length + DATAGRAM_OVERHEAD) return null;
  return { id: readU32(payload, 0), size };
}

/** The plaintext of the ack for a probe (seal it as DatagramType.PmtuProbeAck). */
export function encodePmtuProbeAck(id: number, size: number): Uint8Array {
  if (!Number.isInteger(size) || size < MIN_PMTU_PROBE_LEN || size > MAX_PMTU_PROBE_LEN)
    throw new RangeError(
      `PMTU probe size must be an integer ${MIN_PMTU_PROBE_LEN}..${MAX_PMTU_PROBE_LEN}, got ${size}`,
    );
  const out = Buffer.allocUnsafe(PMTU_PROBE_ACK_LEN);
  out.writeUInt32BE(id >>> 0, 0);
  out.writeUInt16BE(size, 4);
  return out;
}

/** Reads an opened ack payload; null, never a throw, for anything malformed. */
export function decodePmtuProbeAck(payload: Uint8Array): PmtuProbeBody | null {
  if (!(payload instanceof Uint8Array) || payload.length !== PMTU_PROBE_ACK_LEN) return null;
  const size = (payload[4] << 8) | payload[5];
  if (size < MIN_PMTU_PROBE_LEN || size > MAX_PMTU_PROBE_LEN) return null;
  return { id: readU32(payload, 0), size };
}

function readU32(b: Uint8Array, off: number): number {
  return ((b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3]) >>> 0;
}
