/**
 * FIFO of written chunks, read out in arbitrary byte counts. Chunks are kept
 * by reference (the writer hands them over, as with net.Socket), so the only
 * copy a byte sees on the way out is the one into its outgoing frame.
 */
export class ByteQueue {
  private chunks: Uint8Array[] = [];
  private head = 0; // index of the first live chunk
  private headOffset = 0; // bytes of chunks[head] already taken
  private bytes = 0;

  get length(): number {
    return this.bytes;
  }

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.bytes += chunk.length;
  }

  /** Moves exactly `n` bytes (n <= length) into out[offset..]. */
  copyOut(out: Uint8Array, offset: number, n: number): void {
    let pos = offset;
    let left = n;
    while (left > 0) {
      const c = this.chunks[this.head];
      const avail = c.length - this.headOffset;
      const take = avail <= left ? avail : left;
      out.set(take === c.length ? c : c.subarray(this.headOffset, this.headOffset + take), pos);
      pos += take;
      left -= take;
      if (take === avail) {
        this.chunks[this.head] = undefined as unknown as Uint8Array; // let the chunk be collected
        this.head++;
        this.headOffset = 0;
      } else {
        this.headOffset += take;
      }
    }
    this.bytes -= n;
    this.compact();
  }

  clear(): void {
    this.chunks = [];
    this.head = 0;
    this.headOffset = 0;
    this.bytes = 0;
  }

  // Drop consumed slots now and then, so the array does not grow with every chunk ever written.
  private compact(): void {
    if (this.head === this.chunks.length) {
      this.chunks.length = 0;
      this.head = 0;
    } else if (this.head >= 64 && this.head * 2 >= this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
  }
}
