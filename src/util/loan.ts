/**
 * Memory lent to synchronous consumers for the length of one call.
 *
 * The receive path decrypts a relay record into a pooled block and hands
 * views of it down: KCP, the mux, a stream's sink, a socket write. When the
 * call returns and nobody kept a view, the block goes back to its pool
 * (session.ts). A consumer that keeps one (a Readable buffering a chunk, a
 * socket write the kernel did not take whole) calls keepLoan(), and the
 * block is then left to the garbage collector like any Buffer. Only ever
 * errs towards keeping: a spurious keepLoan() costs one allocation, never data.
 */
let depth = 0;
let kept = false;

/**
 * Starts a loan; the caller ends it with endLoan() in the same synchronous
 * call. Loans may nest (a consumer's callback reaching another receive): a
 * view kept during any of them counts for all that are open.
 */
export function beginLoan(): void {
  if (depth === 0) kept = false;
  depth++;
}

/** Something keeps a view of the lent memory beyond the current call. */
export function keepLoan(): void {
  kept = true;
}

/** Ends the innermost loan: true if its memory may be reused. */
export function endLoan(): boolean {
  if (depth === 0) return false;
  depth--;
  return !kept;
}
