import { readU32BE, writeU32BE } from './bytes.js';
import { DATAGRAM_OVERHEAD } from './datagram.js';

/**
 * Payload of a UserDatagram (DatagramType 0xA9), inside the seal:
 *
 *   offset  size  field
 *   0       4     flow id (big-endian, non-zero): which client of the visit side it belongs to
 *   4       n     the user's UDP payload, as the application sent it
 *
 * The visit side numbers its flows (one per client source address); the
 * serve side gives each flow id its own socket towards the service. A flow id
 * means nothing outside its session.
 */
export const USER_DATAGRAM_HEADER_LEN = 4;

/** Sealed bytes a user datagram costs beyond its payload: the seal (29) and the flow id (4). */
export const USER_DATAGRAM_OVERHEAD = DATAGRAM_OVERHEAD + USER_DATAGRAM_HEADER_LEN;

/** The largest user payload that fits a path whose largest sealed datagram is `maxDatagram`. */
export function maxUserPayload(maxDatagram: number): number {
  return Math.max(0, maxDatagram - USER_DATAGRAM_OVERHEAD);
}

/** The body of a UserDatagram: flow id, then the payload (one copy). */
export function encodeUserDatagram(flow: number, payload: Uint8Array): Uint8Array {
  const out = Buffer.allocUnsafe(USER_DATAGRAM_HEADER_LEN + payload.length);
  writeU32BE(out, 0, flow >>> 0);
  out.set(payload, USER_DATAGRAM_HEADER_LEN);
  return out;
}

/** Flow id and a view of the payload, or null when the body is too short or names flow 0. */
export function decodeUserDatagram(body: Uint8Array): { flow: number; payload: Uint8Array } | null {
  if (body.length < USER_DATAGRAM_HEADER_LEN) return null;
  const flow = readU32BE(body, 0);
  if (flow === 0) return null;
  return { flow, payload: body.subarray(USER_DATAGRAM_HEADER_LEN) };
}
