/**
 * Small per-layer helpers of the conversion: rounding to the stored dtype (so what is
 * evaluated is what is written) and relative errors.
 */
import { encodeFloat32, floatBitsToBf16, toFloat32 } from '../checkpoint/dtype.js';

/** Rounds float32 values to the precision of a stored dtype (BF16, F16; F32 unchanged), in a copy. */
export function roundToDtype(a: Float32Array, dtype: string): Float32Array {
  if (dtype === 'BF16') {
    // one pass (no 16-bit intermediate): round to nearest even on the top 16 bits, NaN stays quiet NaN
    const n = a.length;
    const u = a.byteOffset % 4 === 0 ? new Uint32Array(a.buffer, a.byteOffset, n) : new Uint32Array(a.slice().buffer);
    const out = new Float32Array(n);
    const o = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) o[i] = floatBitsToBf16(u[i]) << 16;
    return out;
  }
  if (dtype !== 'F16') return a;
  return toFloat32(encodeFloat32(a, dtype), dtype);
}

/** ||a - b||_F / ||b||_F in float64. */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    const d = a[i] - b[i];
    num += d * d;
    den += b[i] * b[i];
  }
  return den > 0 ? Math.sqrt(num / den) : Math.sqrt(num);
}
