/**
 * Big-endian u32 fields, the one byte order of our own wire formats (frames,
 * handshake, sealed datagrams, mux frames; KCP's little-endian header is in
 * src/kcp/codec.ts). Hand-rolled rather than DataView or Buffer methods: they
 * run on plain Uint8Arrays on the per-datagram path without a wrapper object.
 */

/** The big-endian u32 at `b[off..off+4)`. */
export function readU32BE(b: Uint8Array, off: number): number {
  return ((b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3]) >>> 0;
}

/** Writes `v` (a u32) big-endian into `b[off..off+4)`. */
export function writeU32BE(b: Uint8Array, off: number, v: number): void {
  b[off] = v >>> 24;
  b[off + 1] = v >>> 16;
  b[off + 2] = v >>> 8;
  b[off + 3] = v;
}

/** Throws unless `v` is a whole number that fits a u32 field (`name` goes in the message). */
export function checkU32(name: string, v: number): void {
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new TypeError(`${name} must be a uint32`);
}
