/**
 * Sliding replay window over per-direction packet counters, in the style of
 * RFC 6479: a ring of 32-bit words where advancing the window only clears the
 * words it moves past, so each packet costs O(1) however far the counter jumps.
 *
 * Counters are plain numbers: senders stop at MAX_COUNTER (2^53 - 1), which
 * keeps every value exact in a double and the hot path free of BigInt.
 * Use: `if (!w.check(c)) drop; ...verify tag...; w.update(c)`. check() never
 * changes state, so a forged packet cannot move the window.
 */

/** Words in the ring; a power of two so a block number maps to a slot with a mask. */
const WORDS = 128;
const SLOT_MASK = WORDS - 1;
/**
 * Counters this far behind the highest accepted one are still accepted once.
 * One word is sacrificed (RFC 6479 §2) so a whole word can be cleared when the
 * window slides, instead of bit by bit.
 */
export const REPLAY_WINDOW = (WORDS - 1) * 32;

/** Largest counter a sender uses and a receiver accepts: 2^53 - 1. */
export const MAX_COUNTER = Number.MAX_SAFE_INTEGER;

export class ReplayWindow {
  private readonly bits = new Uint32Array(WORDS);
  /** Highest counter accepted so far; -1 before the first. */
  private top = -1;

  /** Would `counter` be accepted? Pure: no state change. */
  check(counter: number): boolean {
    if (!(counter >= 0 && counter <= MAX_COUNTER) || counter !== Math.floor(counter)) return false;
    if (counter > this.top) return true;
    if (this.top - counter >= REPLAY_WINDOW) return false;
    const word = this.bits[Math.floor(counter / 32) & SLOT_MASK];
    return (word & (1 << (counter & 31))) === 0;
  }

  /** Marks `counter` as seen; call only after check() passed and the packet authenticated. */
  update(counter: number): void {
    if (counter > this.top) {
      // Clear the words between the old top and the new one; they hold bits
      // from one ring revolution ago. At most the whole ring.
      const oldBlock = Math.floor(this.top / 32);
      const newBlock = Math.floor(counter / 32);
      const steps = Math.min(newBlock - oldBlock, WORDS);
      for (let i = 1; i <= steps; i++) this.bits[(oldBlock + i) & SLOT_MASK] = 0;
      this.top = counter;
    }
    // `& 31` and `& SLOT_MASK` reduce modulo 2^32 first, which is exact for any
    // integer below 2^53, so they give the right bit and slot.
    this.bits[Math.floor(counter / 32) & SLOT_MASK] |= 1 << (counter & 31);
  }

  /** Highest accepted counter, -1 before any. */
  get highest(): number {
    return this.top;
  }
}
