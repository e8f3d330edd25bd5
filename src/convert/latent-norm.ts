/**
 * Exact latent norm (stock DeepSeek-V3 engines always apply kv_a_layernorm).
 *
 * RMSNorm(y) = y * w / sqrt(mean(y^2) + eps). With the latent rows of kv_a_proj_with_mqa
 * (and their bias) scaled by a small alpha, y = alpha c, and w = sqrt(eps) / alpha:
 *   RMSNorm(alpha c) = c / sqrt(1 + u),  u = alpha^2 mean(c^2) / eps,
 * so the normed latent equals the unscaled c within a relative 1 - 1/sqrt(1 + u) <= u / 2.
 * alpha is chosen from the largest per-token mean square of c over all calibration tokens,
 * with a margin: u <= 2e-6 on calibration data, so tokens with up to `margin` (100) times
 * that mean square still stay within 1e-4. w is a power of two, exactly representable in
 * bf16/f16, so the only rounding is that of the (derived) kv_a rows themselves.
 */
import { gemm } from '../linalg.js';
import { native } from '../native/binding.js';
import type { LatentNormReport } from './report.js';

/** The chosen scaling of one layer. */
export interface LatentNormScaling {
  /** factor applied to the latent rows of kv_a_proj_with_mqa and its bias */
  alpha: number;
  /** kv_a_layernorm.weight value (all entries) = sqrt(eps) / alpha, a power of two */
  weight: number;
  /** largest per-token mean(c^2) over the calibration tokens */
  maxMeanSquare: number;
  /** bound on |RMSNorm(alpha c) - c| / |c| over the calibration tokens */
  boundCalibration: number;
  /** bound for tokens with up to `margin` times the calibration's largest mean square */
  boundWithMargin: number;
  margin: number;
  /** smallest |alpha c| entry that is not zero (the cache must hold normal numbers) */
  minAbsLatent: number;
}

const TARGET_U = 2e-6;

/** Largest per-token mean square of c = W x + b over rows of x ([rows, hid]). */
export function maxLatentMeanSquare(w: Float32Array, b: Float32Array | null, R: number, hid: number, x: Float32Array, rows: number): { maxMs: number; minAbs: number } {
  const chunk = 4096;
  const c = new Float32Array(Math.min(chunk, rows) * R);
  let maxMs = 0;
  let minAbs = Infinity;
  for (let r0 = 0; r0 < rows; r0 += chunk) {
    const n = Math.min(chunk, rows - r0);
    const out = c.subarray(0, n * R);
    // out[n, R] = x[n, hid] W[R, hid]^T
    gemm(x.subarray(r0 * hid, (r0 + n) * hid), w.subarray(0, R * hid), out, n, R, hid, { transB: true });
    const s = latentRowStats(out, n, R, b);
    maxMs = Math.max(maxMs, s.maxMs);
    minAbs = Math.min(minAbs, s.minAbs);
  }
  return { maxMs, minAbs };
}

/**
 * Largest per-row mean square and smallest non-zero |v| of v = c + b over `n` rows of
 * c ([n, R], the latent before its bias). The backends compute c and share this reduction.
 */
export function latentRowStats(c: Float32Array, n: number, R: number, b: Float32Array | null): { maxMs: number; minAbs: number } {
  if (n === 0) return { maxMs: 0, minAbs: Infinity };
  const out = new Float64Array(2);
  native.latentRowStats(c, b, out, { rows: n, dim: R }); // multithreaded, float64 sums
  return { maxMs: out[0], minAbs: out[1] };
}

/** Chooses alpha and the norm weight for a layer. */
export function chooseLatentScaling(maxMeanSquare: number, minAbsLatent: number, eps: number, margin = 100): LatentNormScaling {
  const ms = Math.max(maxMeanSquare, 1e-30);
  const alpha0 = Math.sqrt((TARGET_U * eps) / ms);
  // weight = sqrt(eps) / alpha rounded up to a power of two (alpha only gets smaller)
  const weight = Math.pow(2, Math.ceil(Math.log2(Math.sqrt(eps) / alpha0)));
  const alpha = Math.sqrt(eps) / weight;
  const u = (alpha * alpha * ms) / eps;
  const bound = (uu: number) => 1 - 1 / Math.sqrt(1 + uu);
  return {
    alpha,
    weight,
    maxMeanSquare,
    boundCalibration: bound(u),
    boundWithMargin: bound(u * margin),
    margin,
    minAbsLatent: minAbsLatent * alpha,
  };
}

/** The scaling as conversion-report.json records it, with the stored weights' subnormal count. */
export function latentNormReport(sc: LatentNormScaling, subnormalWeights: number): LatentNormReport {
  const { minAbsLatent, ...rest } = sc;
  return { ...rest, minAbsCachedLatent: minAbsLatent, subnormalWeights };
}

/** Smallest positive normal of a stored dtype. */
export function minNormal(dtype: string): number {
  return dtype === 'F16' ? 6.103515625e-5 : 1.1754943508222875e-38;
}

/** Counts the non-zero entries below the dtype's smallest normal (would be subnormal or flush to zero). */
export function countSubnormal(a: Float32Array, dtype: string): number {
  const lim = minNormal(dtype);
  let n = 0;
  for (let i = 0; i < a.length; i++) {
    const v = Math.abs(a[i]);
    if (v !== 0 && v < lim) n++;
  }
  return n;
}
