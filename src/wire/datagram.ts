import { readU32BE } from './bytes.js';
/**
 * Sealed datagram layout, shared by every data path (direct UDP and relay).
 *
 *   offset  size  field
 *   0       1     type      (DatagramType)
 *   1       4     receiver  session index chosen by the receiving peer (big-endian)
 *   5       8     counter   per-direction packet counter, also the AEAD nonce (big-endian)
 *   13      n     ciphertext, then a 16-byte Poly1305 tag
 *
 * The 13-byte header is the AEAD's additional data, so a forged type, index or
 * counter fails authentication. Type bytes start at 0xA1 so that a datagram is
 * never mistaken for STUN, whose first two bits are always zero (RFC 5389 §6).
 */
export const DATAGRAM_HEADER_LEN = 13;
export const AEAD_TAG_LEN = 16;
export const DATAGRAM_OVERHEAD = DATAGRAM_HEADER_LEN + AEAD_TAG_LEN;
/** Largest sealed datagram we send or accept over UDP; fits a 1500-byte MTU path with IPv6+UDP headers. */
export const MAX_DATAGRAM_LEN = 1452;
/**
 * Largest sealed datagram accepted from UDP: a 1500-byte IPv4 path carries
 * 1500 - 20 - 8 = 1472 bytes, the most a PMTU search (src/punch/pmtu.ts)
 * probes by default. Receivers must take up to this much even while they send
 * less (the two directions of a path can differ). Routing (peekDatagramHeader,
 * readReceiverIndex) uses it; what a session opens is still bounded by its
 * path's maxDatagram.
 */
export const MAX_UDP_DATAGRAM_LEN = 1472;
/**
 * Largest sealed datagram on the relay path. TCP has no MTU, and every
 * datagram costs a fixed amount of work (an AEAD call, a frame, a KCP
 * segment), so the relay carries records 45x larger than UDP does: this is
 * what lets the relay path run at TCP speed (docs/BENCHMARKS.md).
 */
export const MAX_RELAY_DATAGRAM_LEN = 64 * 1024;

export const enum DatagramType {
  /** KCP segment(s) for the session. */
  Data = 0xa1,
  /** Path probe: payload is a ProbeBody. */
  Probe = 0xa2,
  /** Reply to a probe, sent back to the source address of the probe. */
  ProbeAck = 0xa3,
  /** Keepalive on the direct path. */
  Heartbeat = 0xa4,
  /** Reply to a heartbeat. */
  HeartbeatAck = 0xa5,
  /**
   * Path MTU probe: a PmtuProbe body (src/wire/pmtu-probe.ts) padded so that
   * the sealed datagram is exactly the size being tested. Peers older than
   * this type drop it unread (isDatagramType), so it never costs them a
   * replay-window slot or an AEAD call.
   */
  PmtuProbe = 0xa6,
  /** Reply to a PMTU probe: its id and the size that arrived; small. */
  PmtuProbeAck = 0xa7,
  /**
   * One piece of a Data datagram too large for the direct path's current
   * size (src/wire/data-fragment.ts): KCP segments cut before the path MTU
   * shrank, with no relay to carry them. Sent only to a peer that answers
   * PMTU probes (which reassembles these).
   */
  DataFragment = 0xa8,
  /**
   * One user datagram of a UDP service (`--proto udp`), outside KCP:
   * unreliable, unordered, never retransmitted. Payload: a UserDatagram body
   * (src/wire/user-datagram.ts). Peers older than this type drop it unread.
   */
  UserDatagram = 0xa9,
  /**
   * The sender ended the session on purpose (its process stops, or the
   * session closed on its side): the receiver closes its side at once instead
   * of waiting out --resume-timeout for a peer that will not come back.
   * Empty payload; sealed like every datagram, so only the peer can send it.
   * Peers older than this type drop it unread.
   */
  Close = 0xaa,
}

export function isDatagramType(b: number): b is DatagramType {
  return b >= 0xa1 && b <= 0xaa;
}

export interface DatagramHeader {
  type: DatagramType;
  receiver: number;
  counter: bigint;
}

/** Reads the header without authenticating it; null when the bytes cannot be one of ours. */
export function peekDatagramHeader(buf: Uint8Array): DatagramHeader | null {
  if (buf.length < DATAGRAM_OVERHEAD || buf.length > MAX_UDP_DATAGRAM_LEN) return null;
  const type = buf[0];
  if (!isDatagramType(type)) return null;
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  return { type, receiver: view.getUint32(1), counter: view.getBigUint64(5) };
}

export function writeDatagramHeader(out: Uint8Array, h: DatagramHeader): void {
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  out[0] = h.type;
  view.setUint32(1, h.receiver >>> 0);
  view.setBigUint64(5, h.counter);
}

/** Largest payload (plaintext) that fits in one sealed UDP datagram. */
export const MAX_DATAGRAM_PAYLOAD = MAX_DATAGRAM_LEN - DATAGRAM_OVERHEAD;
/** Largest payload (plaintext) that fits in one sealed relay datagram. */
export const MAX_RELAY_DATAGRAM_PAYLOAD = MAX_RELAY_DATAGRAM_LEN - DATAGRAM_OVERHEAD;

/** Size on the wire of a datagram carrying `payloadLen` plaintext bytes. */
export function sealedLength(payloadLen: number): number {
  return payloadLen + DATAGRAM_OVERHEAD;
}

/**
 * Receiver index of a datagram without authenticating it, for routing an
 * incoming datagram to its session; -1 when the bytes cannot be one of ours.
 * Allocation-free, unlike peekDatagramHeader.
 */
export function readReceiverIndex(buf: Uint8Array): number {
  if (buf.length < DATAGRAM_OVERHEAD || buf.length > MAX_UDP_DATAGRAM_LEN || !isDatagramType(buf[0])) return -1;
  return readU32BE(buf, 1);
}
