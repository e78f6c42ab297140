/** Small pure helpers for turning samples into the figures the bench reports. */

export function median(xs: readonly number[]): number {
  return percentile(xs, 50);
}

/** Nearest-rank percentile (p in 0..100); NaN for no samples. */
export function percentile(xs: readonly number[], p: number): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  if (p <= 0) return v[0];
  if (p >= 100) return v[v.length - 1];
  if (p === 50 && v.length % 2 === 0) return (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
  const rank = Math.ceil((p / 100) * v.length);
  return v[Math.min(v.length, Math.max(1, rank)) - 1];
}

/** Rounds for display and JSON; keeps NaN as null-able by the caller. */
export function round(x: number, digits = 1): number {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export function ratio(ours: number, ref: number): number {
  return ref > 0 && Number.isFinite(ours) ? ours / ref : NaN;
}

/** JSON has no NaN: figures that could not be measured become null. */
export function jsonNum(x: number, digits = 2): number | null {
  return Number.isFinite(x) ? round(x, digits) : null;
}
