/**
 * Small per-layer helpers of the conversion: the input RMSNorm (to get the attention
 * input the statistics are taken of), bf16 rounding (so what is evaluated is what is
 * written), and relative errors.
 */

/** y = x / sqrt(mean(x^2) + eps) * w for each row of x [rows, dim]; float32 like the engine. */
export function rmsNormRows(x: Float32Array, rows: number, dim: number, w: Float32Array, eps: number, out?: Float32Array): Float32Array {
  const y = out ?? new Float32Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    const o = r * dim;
    let ss = 0;
    for (let j = 0; j < dim; j++) ss += x[o + j] * x[o + j];
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let j = 0; j < dim; j++) y[o + j] = Math.fround(Math.fround(x[o + j] * inv) * w[j]);
  }
  return y;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Rounds float32 values to bfloat16 precision (round to nearest even), in a copy. */
export function roundToBf16(a: Float32Array): Float32Array {
  const out = new Float32Array(a.length);
  const ou = new Uint32Array(out.buffer);
  for (let i = 0; i < a.length; i++) {
    f32[0] = a[i];
    const bits = u32[0];
    if ((bits & 0x7f800000) === 0x7f800000) {
      ou[i] = (bits & 0xffff0000) | (bits & 0xffff ? 0x400000 : 0); // inf / NaN
      continue;
    }
    const rounded = bits + 0x7fff + ((bits >>> 16) & 1);
    ou[i] = rounded & 0xffff0000;
  }
  return out;
}

/** Rounds to the precision of a stored dtype (BF16, F16 via Math.fround fallback, F32 unchanged). */
export function roundToDtype(a: Float32Array, dtype: string): Float32Array {
  if (dtype === 'BF16') return roundToBf16(a);
  if (dtype === 'F16') return roundToF16(a);
  return a;
}

function roundToF16(a: Float32Array): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) {
    const v = a[i];
    if (!Number.isFinite(v) || v === 0) {
      out[i] = v;
      continue;
    }
    const e = Math.max(Math.floor(Math.log2(Math.abs(v))), -14);
    const q = Math.pow(2, e - 10);
    const r = v / q;
    const fl = Math.floor(r);
    const frac = r - fl;
    const n = frac > 0.5 || (frac === 0.5 && fl % 2 !== 0) ? fl + 1 : fl;
    out[i] = Math.abs(n * q) > 65504 ? Math.sign(v) * Infinity : n * q;
  }
  return out;
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
