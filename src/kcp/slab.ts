/**
 * Bump allocator for short-lived payload copies. Buffer.allocUnsafe pools in
 * 8 KiB chunks, so copying 1400-byte datagrams allocates a fresh ArrayBuffer
 * every ~5 datagrams; a 64 KiB slab cuts that ~10x. A slab stays alive
 * while any slice of it does (e.g. a message the application still holds),
 * so the worst case is one 64 KiB slab pinned per long-held small message;
 * callers that keep received messages for long should copy them.
 */
export class Slab {
  private buf: Buffer;
  private pos = 0;

  constructor(private readonly size = 64 * 1024) {
    this.buf = Buffer.allocUnsafeSlow(size);
  }

  /** A private copy of src (a fresh Buffer object viewing slab memory). */
  copy(src: Uint8Array): Buffer {
    const n = src.length;
    if (n > this.size >>> 3) {
      const own = Buffer.allocUnsafeSlow(n);
      own.set(src, 0);
      return own;
    }
    if (this.pos + n > this.size) {
      this.buf = Buffer.allocUnsafeSlow(this.size);
      this.pos = 0;
    }
    const start = this.pos;
    // Keep slices 8-byte aligned; cheap and friendly to later typed views.
    this.pos = (start + n + 7) & ~7;
    const out = this.buf.subarray(start, start + n);
    out.set(src, 0);
    return out;
  }
}
