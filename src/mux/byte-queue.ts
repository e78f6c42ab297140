import type { BlockPool } from '../util/block-pool.js';

/**
 * FIFO of written chunks, read out in arbitrary byte counts. Chunks are kept
 * by reference (the writer hands them over, as with net.Socket), so the only
 * copy a byte sees on the way out is the one into its outgoing frame.
 * pushCopy() instead copies a chunk that is only valid during the call into
 * pooled blocks, which go back to their pool once read out.
 */
export class ByteQueue {
  private chunks: Uint8Array[] = [];
  private head = 0; // index of the first live chunk
  private headOffset = 0; // bytes of chunks[head] already taken
  private bytes = 0;
  /** Blocks of ours that chunks point into, each by exactly one chunk. */
  private readonly blocks = new Set<ArrayBuffer>();
  private pool: BlockPool | null = null;
  /** The block pushCopy() is filling: its chunk is the last one, and grows in place. */
  private tail: Buffer | null = null;
  private tailFill = 0;

  get length(): number {
    return this.bytes;
  }

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.tail = null; // the last chunk is no longer a block being filled
    this.chunks.push(chunk);
    this.bytes += chunk.length;
  }

  /** Queues a copy of `chunk` (which the caller may overwrite afterwards) in blocks from `pool`. */
  pushCopy(chunk: Uint8Array, pool: BlockPool): void {
    this.pool = pool;
    let pos = 0;
    while (pos < chunk.length) {
      let tail = this.tail;
      if (!tail || this.tailFill === tail.length) {
        tail = this.tail = pool.take(pool.blockSize);
        this.tailFill = 0;
        this.blocks.add(tail.buffer as ArrayBuffer);
        this.chunks.push(tail.subarray(0, 0));
      }
      const n = Math.min(chunk.length - pos, tail.length - this.tailFill);
      tail.set(pos === 0 && n === chunk.length ? chunk : chunk.subarray(pos, pos + n), this.tailFill);
      this.tailFill += n;
      // The block's chunk now covers what is filled (from the block's start,
      // so a partly read head keeps its offset).
      this.chunks[this.chunks.length - 1] = tail.subarray(0, this.tailFill);
      this.bytes += n;
      pos += n;
    }
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
        if (this.blocks.size > 0) this.release(c);
      } else {
        this.headOffset += take;
      }
    }
    this.bytes -= n;
    this.compact();
  }

  clear(): void {
    for (let i = this.head; i < this.chunks.length; i++) this.release(this.chunks[i]);
    this.chunks = [];
    this.head = 0;
    this.headOffset = 0;
    this.bytes = 0;
  }

  /** A chunk is read out (or dropped): if it is one of our blocks, back to the pool. */
  private release(c: Uint8Array): void {
    const ab = c.buffer as ArrayBuffer;
    if (!this.blocks.delete(ab)) return;
    if (this.tail && this.tail.buffer === ab) this.tail = null;
    this.pool!.give(Buffer.from(ab, 0, this.pool!.blockSize));
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
