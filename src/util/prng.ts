/**
 * mulberry32: a tiny seeded PRNG, so fuzzers, lossy links and attack tools
 * replay the same sequence from the same seed (a failure can be reproduced).
 * Not for anything secret: use crypto.randomBytes there.
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The same generator, as uint32 values. */
export function mulberry32u(seed: number): () => number {
  const f = mulberry32(seed);
  return () => Math.floor(f() * 4294967296) >>> 0;
}
