/**
 * Small per-layer helpers of the conversion: rounding to the stored dtype (so what is
 * evaluated is what is written) and relative errors.
 */
import { native } from '../native/binding.js';

/** Float32 values rounded to the precision of a stored dtype: a copy for BF16/F16, `a` itself otherwise. */
export function roundToDtype(a: Float32Array, dtype: string): Float32Array {
  if (dtype === 'BF16' || dtype === 'F16') {
    // native, multithreaded: round to nearest even, NaN stays (quiet) NaN, f16 overflows to infinity
    const out = new Float32Array(a.length);
    native.roundFloat32(a, dtype, out);
    return out;
  }
  return a;
}

/** ||a - b||_F / ||b||_F over b's length, accumulated in float64. */
export function relativeError(a: Float32Array, b: Float32Array): number {
  const sums = new Float64Array(2);
  native.squaredDiffSums(a, b, sums);
  const [num, den] = sums;
  return den > 0 ? Math.sqrt(num / den) : Math.sqrt(num);
}

/** Shortest serving context the position weights of {@link contextWeightedError} stand for. */
export const MIN_SERVED_CONTEXT = 64;

/**
 * Weight of query position t (0-based) in a window of `n` tokens when serving contexts L are
 * spread log-uniformly over [MIN_SERVED_CONTEXT, n] and each context averages its positions
 * t < L: w(t) = 1 / max(t + 1, MIN_SERVED_CONTEXT) - 1 / n (the integral of 1/L^2 over L > t).
 * Every doubling of the context counts the same, so near positions are not outvoted by far ones.
 */
export function servedContextWeights(n: number): Float64Array {
  const w = new Float64Array(n);
  for (let t = 0; t < n; t++) w[t] = Math.max(0, 1 / Math.max(t + 1, Math.min(MIN_SERVED_CONTEXT, n)) - 1 / n) + 1 / (n * n);
  return w;
}

/**
 * Relative error of `a` against `b` ([windows x n rows, dim]) with the rows of each window
 * weighted by `w` (per position, length n): sqrt(sum_t w_t ||a_t - b_t||^2 / sum_t w_t ||b_t||^2), float64.
 */
export function weightedRelativeError(a: Float32Array, b: Float32Array, w: Float64Array, dim: number): number {
  const n = w.length;
  const rows = b.length / dim;
  let num = 0;
  let den = 0;
  for (let r = 0; r < rows; r++) {
    const wt = w[r % n];
    let e = 0;
    let q = 0;
    for (let j = r * dim; j < (r + 1) * dim; j++) {
      const d = a[j] - b[j];
      e += d * d;
      q += b[j] * b[j];
    }
    num += wt * e;
    den += wt * q;
  }
  return den > 0 ? Math.sqrt(num / den) : Math.sqrt(num);
}
