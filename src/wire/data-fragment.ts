/**
 * DataFragment payloads (inside the seal, see datagram.ts): a Data datagram's
 * plaintext (KCP segments) cut into pieces that each fit the direct path's
 * current size. Only for segments cut before the path MTU shrank (a black
 * hole found mid-transfer) when no relay can carry them whole; the receiver
 * puts the pieces back together and hands the whole to KCP as one Data
 * datagram. Each piece is sealed on its own (own counter, own tag), so a
 * reassembled datagram is as authentic as any other. A lost piece loses the
 * whole datagram; KCP resends it (cut again) like any lost datagram.
 *
 *   offset  size  field
 *   0       4     id: the same for every piece of one datagram (big-endian)
 *   4       1     index of this piece, 0..count-1
 *   5       1     count of pieces, 2..MAX_FRAGMENTS
 *   6       n     the piece's bytes; pieces are in order, all but the last
 *                 of the same length
 */
import { readU32BE } from './bytes.js';
import { DATAGRAM_OVERHEAD, MAX_RELAY_DATAGRAM_PAYLOAD } from './datagram.js';

export const FRAGMENT_HEADER_LEN = 6;
/** Most pieces of one datagram: a 64 KiB relay-sized record over a 548-byte path needs 128. */
export const MAX_FRAGMENTS = 128;

export interface FragmentHeader {
  id: number;
  index: number;
  count: number;
}

/** Pieces needed to carry `length` plaintext bytes in sealed datagrams of at most `maxDatagram` bytes. */
export function fragmentCount(length: number, maxDatagram: number): number {
  const room = maxDatagram - DATAGRAM_OVERHEAD - FRAGMENT_HEADER_LEN;
  return room > 0 ? Math.ceil(length / room) : Infinity;
}

/**
 * The plaintexts of the pieces of `data` (each sealed as DatagramType.DataFragment
 * fits `maxDatagram`). Throws RangeError when it cannot be cut (local misuse).
 */
export function encodeFragments(id: number, data: Uint8Array, maxDatagram: number): Uint8Array[] {
  const count = fragmentCount(data.length, maxDatagram);
  if (count < 2 || count > MAX_FRAGMENTS || data.length > MAX_RELAY_DATAGRAM_PAYLOAD)
    throw new RangeError(`cannot cut ${data.length} bytes into ${MAX_FRAGMENTS} pieces of ${maxDatagram}`);
  const room = Math.ceil(data.length / count);
  const out: Uint8Array[] = [];
  for (let i = 0, off = 0; i < count; i++, off += room) {
    const part = data.subarray(off, Math.min(data.length, off + room));
    const b = Buffer.allocUnsafe(FRAGMENT_HEADER_LEN + part.length);
    b.writeUInt32BE(id >>> 0, 0);
    b[4] = i;
    b[5] = count;
    b.set(part, FRAGMENT_HEADER_LEN);
    out.push(b);
  }
  return out;
}

/** The header of an opened piece; null, never a throw, when it cannot be one. */
export function decodeFragmentHeader(payload: Uint8Array): FragmentHeader | null {
  if (!(payload instanceof Uint8Array) || payload.length <= FRAGMENT_HEADER_LEN) return null;
  const index = payload[4];
  const count = payload[5];
  if (count < 2 || count > MAX_FRAGMENTS || index >= count) return null;
  return { id: readU32BE(payload, 0), index, count };
}

/** Datagrams being put together at once; an older one is dropped for a new one (KCP resends it). */
export const MAX_REASSEMBLIES = 4;

interface Partial {
  id: number;
  parts: (Uint8Array | undefined)[];
  have: number;
  bytes: number;
}

/**
 * Puts pieces back together. Bounded: at most MAX_REASSEMBLIES datagrams in
 * progress (oldest dropped first), each at most MAX_FRAGMENTS pieces and
 * MAX_RELAY_DATAGRAM_PAYLOAD bytes.
 */
export class Reassembler {
  private readonly slots: Partial[] = [];
  /** Datagrams dropped unfinished (evicted, or a piece that did not fit). */
  dropped = 0;

  /** Takes one opened piece; returns the whole datagram's plaintext when this piece completes it. */
  add(payload: Uint8Array): Uint8Array | null {
    const h = decodeFragmentHeader(payload);
    if (!h) return null;
    let slot = this.slots.find((s) => s.id === h.id);
    if (slot && slot.parts.length !== h.count) {
      this.remove(slot);
      slot = undefined;
    }
    if (!slot) {
      if (this.slots.length >= MAX_REASSEMBLIES) {
        this.slots.shift();
        this.dropped++;
      }
      slot = { id: h.id, parts: new Array<Uint8Array | undefined>(h.count), have: 0, bytes: 0 };
      this.slots.push(slot);
    }
    if (slot.parts[h.index]) return null; // duplicate piece
    const body = payload.subarray(FRAGMENT_HEADER_LEN);
    if (slot.bytes + body.length > MAX_RELAY_DATAGRAM_PAYLOAD) {
      this.remove(slot);
      this.dropped++;
      return null;
    }
    // The opened payload may be a loan (reused after this call): keep a copy.
    slot.parts[h.index] = Buffer.from(body);
    slot.have++;
    slot.bytes += body.length;
    if (slot.have < h.count) return null;
    this.remove(slot);
    const whole = Buffer.allocUnsafe(slot.bytes);
    let off = 0;
    for (const p of slot.parts) {
      whole.set(p as Uint8Array, off);
      off += (p as Uint8Array).length;
    }
    return whole;
  }

  private remove(slot: Partial): void {
    const i = this.slots.indexOf(slot);
    if (i >= 0) this.slots.splice(i, 1);
  }
}
