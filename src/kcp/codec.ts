/**
 * Segment header codec. Layout (little-endian, 24 bytes, as ikcp.c):
 *
 *   0 conv u32 | 4 cmd u8 | 5 frg u8 | 6 wnd u16 | 8 ts u32 | 12 sn u32 | 16 una u32 | 20 len u32
 *
 * The hot path in kcp.ts calls the positional writeHeader/read32 directly so
 * no header object is allocated per segment; the object-based helpers are for
 * tests, tools and other modules.
 */
import { KCP_OVERHEAD } from './constants.js';

export interface SegmentHeader {
  conv: number;
  cmd: number;
  frg: number;
  wnd: number;
  ts: number;
  sn: number;
  una: number;
  len: number;
}

/** Reads a little-endian u32 as a JS number in [0, 2^32). */
export function read32(b: Uint8Array, p: number): number {
  return (b[p] | (b[p + 1] << 8) | (b[p + 2] << 16) | (b[p + 3] << 24)) >>> 0;
}

/** Writes the low 32 bits of v little-endian (v may be signed or unsigned). */
export function write32(b: Uint8Array, p: number, v: number): void {
  b[p] = v;
  b[p + 1] = v >>> 8;
  b[p + 2] = v >>> 16;
  b[p + 3] = v >>> 24;
}

/** Writes one header at p; the caller guarantees 24 bytes of room. Returns p + 24. */
export function writeHeader(
  b: Uint8Array,
  p: number,
  conv: number,
  cmd: number,
  frg: number,
  wnd: number,
  ts: number,
  sn: number,
  una: number,
  len: number,
): number {
  write32(b, p, conv);
  b[p + 4] = cmd;
  b[p + 5] = frg;
  b[p + 6] = wnd;
  b[p + 7] = wnd >>> 8;
  write32(b, p + 8, ts);
  write32(b, p + 12, sn);
  write32(b, p + 16, una);
  write32(b, p + 20, len);
  return p + KCP_OVERHEAD;
}

/** Encodes h at offset; returns the offset after the header, or -1 when out has no room. */
export function encodeSegmentHeader(out: Uint8Array, offset: number, h: SegmentHeader): number {
  if (offset < 0 || offset + KCP_OVERHEAD > out.length) return -1;
  return writeHeader(out, offset, h.conv, h.cmd, h.frg, h.wnd, h.ts, h.sn, h.una, h.len);
}

/** Decodes the header at offset (u32 fields as unsigned numbers); null when fewer than 24 bytes remain. */
export function decodeSegmentHeader(buf: Uint8Array, offset = 0): SegmentHeader | null {
  if (offset < 0 || offset + KCP_OVERHEAD > buf.length) return null;
  return {
    conv: read32(buf, offset),
    cmd: buf[offset + 4],
    frg: buf[offset + 5],
    wnd: buf[offset + 6] | (buf[offset + 7] << 8),
    ts: read32(buf, offset + 8),
    sn: read32(buf, offset + 12),
    una: read32(buf, offset + 16),
    len: read32(buf, offset + 20),
  };
}

/**
 * The conv of a KCP datagram (its first u32), so a demultiplexer can route it
 * before any session exists; null when the datagram cannot hold a header.
 */
export function readConv(datagram: Uint8Array): number | null {
  if (datagram.length < KCP_OVERHEAD) return null;
  return read32(datagram, 0);
}
