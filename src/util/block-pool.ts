/**
 * Reusable fixed-size memory blocks with explicit hand-back: the relay's
 * 64 KiB mux frames, and bulk bytes waiting in a stream's send queue.
 *
 * Why: every fresh 64 KiB Buffer is external memory to V8, and V8 answers
 * each 64 MB of it with a full mark-compact of the heap. At relay rates that
 * was a quarter of a peer's CPU. A frame lives until KCP has its segment
 * acknowledged, and queued bytes until they are copied into a frame: clear
 * ends, so their blocks can come back then.
 *
 * Safety: give() accepts only a view of exactly what take() handed out, once;
 * anything else (a fragment, a copy, a block given back already) is ignored
 * and left to the garbage collector. A block taken and never given back is
 * collected like any Buffer.
 */
export class BlockPool {
  private readonly free: ArrayBuffer[] = [];
  /** Blocks handed out and not back yet, with the length take() gave. */
  private readonly out = new WeakMap<ArrayBuffer, number>();
  taken = 0;
  reused = 0;

  constructor(
    readonly blockSize: number,
    /** Most free blocks kept; the rest go to the garbage collector. */
    readonly maxFree: number,
  ) {}

  /** `n` bytes (n <= blockSize) at the start of a block, not zeroed. */
  take(n: number): Buffer {
    if (n > this.blockSize) throw new RangeError(`block pool: ${n} bytes asked, blocks are ${this.blockSize}`);
    let ab = this.free.pop();
    if (ab) this.reused++;
    else ab = new ArrayBuffer(this.blockSize);
    this.taken++;
    this.out.set(ab, n);
    return Buffer.from(ab, 0, n);
  }

  /** Hands back the block under `view` if `view` is what take() returned for it. The caller must not touch it again. */
  give(view: Uint8Array): void {
    const ab = view.buffer as ArrayBuffer;
    if (view.byteOffset !== 0 || this.out.get(ab) !== view.length) return;
    this.out.delete(ab);
    if (this.free.length < this.maxFree) this.free.push(ab);
  }

  get freeCount(): number {
    return this.free.length;
  }
}

/**
 * The process's 64 KiB blocks, for every session and stream. 64 free blocks
 * (4 MiB) cover the gap between blocks coming back and new ones being taken.
 */
export const sharedBlockPool = new BlockPool(64 * 1024, 64);
