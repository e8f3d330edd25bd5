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
import type { LatentNormReport, LatentNormScaling } from '../report-types.js';

export type { LatentNormScaling };

const TARGET_U = 2e-6;

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
