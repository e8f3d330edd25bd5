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
