/**
 * A FIFO of segment payload references (buffer, offset, length, frg) kept in
 * parallel arrays on a power-of-two ring: the send queue and the receive
 * queue of KCP. ikcp.c uses linked lists of heap segments; a ring avoids one
 * object per segment and keeps push/shift O(1).
 */
export class SegQueue {
  private bufs: (Uint8Array | undefined)[];
  private offs: Int32Array;
  private lens: Int32Array;
  private frgs: Uint8Array;
  private mask: number;
  private head = 0;
  /** Number of queued segments. */
  size = 0;

  constructor(capacity = 64) {
    let cap = 16;
    while (cap < capacity) cap <<= 1;
    this.bufs = new Array<Uint8Array | undefined>(cap).fill(undefined);
    this.offs = new Int32Array(cap);
    this.lens = new Int32Array(cap);
    this.frgs = new Uint8Array(cap);
    this.mask = cap - 1;
  }

  push(buf: Uint8Array, off: number, len: number, frg: number): void {
    if (this.size > this.mask) this.grow();
    const i = (this.head + this.size) & this.mask;
    this.bufs[i] = buf;
    this.offs[i] = off;
    this.lens[i] = len;
    this.frgs[i] = frg;
    this.size++;
  }

  /** Drops the head entry (call after reading it with the head* accessors). */
  shift(): void {
    this.bufs[this.head] = undefined;
    this.head = (this.head + 1) & this.mask;
    this.size--;
  }

  // Accessors by position from the head (0 = oldest). No bounds checks: hot path.
  buf(k: number): Uint8Array {
    return this.bufs[(this.head + k) & this.mask]!;
  }
  off(k: number): number {
    return this.offs[(this.head + k) & this.mask];
  }
  len(k: number): number {
    return this.lens[(this.head + k) & this.mask];
  }
  frg(k: number): number {
    return this.frgs[(this.head + k) & this.mask];
  }

  /** Replaces the newest entry's payload (stream-mode coalescing). */
  setTail(buf: Uint8Array, off: number, len: number): void {
    const i = (this.head + this.size - 1) & this.mask;
    this.bufs[i] = buf;
    this.offs[i] = off;
    this.lens[i] = len;
  }

  clear(): void {
    this.bufs.fill(undefined);
    this.head = 0;
    this.size = 0;
  }

  private grow(): void {
    const cap = (this.mask + 1) * 2;
    const bufs = new Array<Uint8Array | undefined>(cap).fill(undefined);
    const offs = new Int32Array(cap);
    const lens = new Int32Array(cap);
    const frgs = new Uint8Array(cap);
    for (let k = 0; k < this.size; k++) {
      const i = (this.head + k) & this.mask;
      bufs[k] = this.bufs[i];
      offs[k] = this.offs[i];
      lens[k] = this.lens[i];
      frgs[k] = this.frgs[i];
    }
    this.bufs = bufs;
    this.offs = offs;
    this.lens = lens;
    this.frgs = frgs;
    this.mask = cap - 1;
    this.head = 0;
  }
}
