/**
 * Query compression into DeepSeek-V3's q_a_proj -> q_a_layernorm -> q_b_proj (q_lora_rank),
 * and the exact place of a query bias in the stock parameter set.
 *
 * Input: the converted query map q = W x + b (W = q_proj [M, hidden], M = heads x
 * (qk_nope + qk_rope), b its bias or none) and the calibration moments of x.
 *
 * - PCA (as TransMLA): U = the top-k eigenvectors of E[(W x)(W x)^T] = W E[x x^T] W^T;
 *   q_a = U^T W (k rows), q_b = U. With k = min(hidden, M) this is exact: U U^T W = W.
 * - Bias (stock DeepSeek-V3 has no q_proj / q_b_proj bias; only q_a_proj has one, with
 *   attention_bias): one extra latent channel of zero weight and constant bias kappa
 *   carries b through q_b_proj, whose column for that channel is b / kappa. The channel
 *   passes through q_a_layernorm like the others, so the whole q (bias included) gets the
 *   same factor 1 / sqrt(1 + u) below, and q = W x + b within that bound.
 * - Exact norm (latentNorm 'exact'): as for the KV latent (latent-norm.ts), the latent rows
 *   and the bias are scaled by alpha and q_a_layernorm.weight = sqrt(eps) / alpha (a power of
 *   two), so RMSNorm(alpha y) = y / sqrt(1 + u) with u = alpha^2 mean(y^2) / eps <= 2e-6 on
 *   the calibration tokens. alpha * kappa is a power of two too (kappa is within a factor
 *   sqrt(2) of the largest per-token RMS of the PCA coordinates), so the bias channel's
 *   stored value is exact in bf16.
 * q_lora_rank = k + 1 with a bias, k without.
 */
import { usageError } from '../errors.js';
import { fromArray, matmul, symEigh as eigh } from '../tensor/mat.js';
import { type InputMoments, secondMoment } from '../tensor/moments.js';
import { chooseLatentScaling, type LatentNormScaling } from './latent-norm.js';
import { maxLatentMeanSquare } from '../tensor/latent-stats.js';

/** q_a_proj / q_a_layernorm / q_b_proj of one layer (float32, [out, in] row-major). */
export interface QueryCompression {
  /** q_a_proj.weight [qLoraRank, hidden] (alpha-scaled with the exact norm) */
  qA: Float32Array;
  /** q_a_proj.bias [qLoraRank]: zeros, kappa * alpha on the bias channel; null without a query bias */
  qABias: Float32Array | null;
  /** q_a_layernorm.weight value (every entry) */
  normWeight: number;
  /** q_b_proj.weight [M, qLoraRank] */
  qB: Float32Array;
  qLoraRank: number;
  /** PCA directions kept (qLoraRank, or qLoraRank - 1 with the bias channel) */
  pcaRank: number;
  /** index of the bias channel (the last), or null */
  biasChannel: number | null;
  /** the bias channel's pre-norm value kappa (before alpha), or null */
  kappa: number | null;
  /** fraction of E||W x||^2 kept by the PCA */
  varianceKept: number;
  /** leading eigenvalues of E[(W x)(W x)^T], descending (at most 512) */
  spectrum: number[];
  /** the exact-norm scaling, null with latentNorm 'off' */
  scaling: LatentNormScaling | null;
}

/** The largest q_lora_rank that is still lossless for a query map of M outputs. */
export function losslessQLoraRank(hidden: number, M: number, hasBias: boolean): number {
  return Math.min(hidden, M) + (hasBias ? 1 : 0);
}

/** Checks a requested q_lora_rank against the model; throws a usage error naming the limit. */
export function checkQLoraRank(rank: number, hidden: number, M: number, hasBias: boolean): void {
  const max = losslessQLoraRank(hidden, M, hasBias);
  const min = hasBias ? 2 : 1;
  if (!Number.isInteger(rank) || rank < min || rank > max)
    throw usageError(
      'ERR_BAD_OPTION',
      `qLoraRank ${rank} must be an integer in [${min}, ${max}] (min(hidden ${hidden}, heads x qk_head_dim ${M})${hasBias ? ' + 1 channel for the query bias' : ''})`,
    );
}

/**
 * Factorizes the query map `W x + b` into q_a / q_a_layernorm / q_b at rank `qLoraRank`.
 *
 * @param qProj - W [M, hidden]
 * @param qBias - b [M] or null
 * @param moments - E[x x^T], E[x] of the attention input
 * @param x - calibration attention inputs [rows, hidden] (for the largest per-token mean square)
 * @param rows - rows of `x` to scan
 * @param eps - the model's rms_norm_eps
 * @param exactNorm - scale for an exact q_a_layernorm (else the weight is 1)
 */
export function compressQuery(
  qProj: Float32Array,
  qBias: Float32Array | null,
  M: number,
  hidden: number,
  qLoraRank: number,
  moments: InputMoments,
  x: Float32Array,
  rows: number,
  eps: number,
  exactNorm: boolean,
): QueryCompression {
  const hasBias = qBias !== null;
  checkQLoraRank(qLoraRank, hidden, M, hasBias);
  const k = qLoraRank - (hasBias ? 1 : 0);
  const W = fromArray(qProj, M, hidden);
  const cov = secondMoment({ w: W, b: null }, moments);
  const { values, vectors } = eigh(cov.data as Float64Array, M);
  let total = 0;
  for (let i = 0; i < M; i++) total += Math.max(0, values[i]);
  let kept = 0;
  for (let i = 0; i < k; i++) kept += Math.max(0, values[i]);
  // U [M, k]: the top-k eigenvectors (columns 0..k-1 of `vectors`)
  const U = fromArray(new Float64Array(M * k), M, k);
  for (let i = 0; i < M; i++) for (let j = 0; j < k; j++) U.data[i * k + j] = vectors[i * M + j];
  const A = matmul(U, W, true, false); // [k, hidden] = U^T W
  const aF32 = new Float32Array(A.data);

  let scaling: LatentNormScaling | null = null;
  let alpha = 1;
  let normWeight = 1;
  let kappa: number | null = null;
  const { maxMs: maxMsPca, minAbs } = maxLatentMeanSquare(aF32, null, k, hidden, x, rows);
  if (hasBias) kappa = Math.sqrt(Math.max(maxMsPca, 1e-30)); // refined below to make alpha * kappa a power of two
  if (exactNorm) {
    // the bias channel is at most sqrt(2) kappa: its share of the mean square is bounded by 2 kappa^2 / rank
    const ms = (k * maxMsPca + (hasBias ? 2 * kappa! * kappa! : 0)) / qLoraRank;
    scaling = chooseLatentScaling(ms, minAbs, eps);
    alpha = scaling.alpha;
    normWeight = scaling.weight;
  }
  if (hasBias) kappa = Math.pow(2, Math.floor(Math.log2(alpha * Math.SQRT2 * kappa!))) / alpha;

  const qA = new Float32Array(qLoraRank * hidden);
  for (let i = 0; i < k * hidden; i++) qA[i] = A.data[i] * alpha;
  const qABias = hasBias ? new Float32Array(qLoraRank) : null;
  if (qABias) qABias[k] = alpha * kappa!;
  const qB = new Float32Array(M * qLoraRank);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < k; j++) qB[i * qLoraRank + j] = U.data[i * k + j];
    if (hasBias) qB[i * qLoraRank + k] = qBias![i] / kappa!;
  }
  const spectrum: number[] = [];
  for (let i = 0; i < Math.min(M, 512); i++) spectrum.push(values[i]);
  return {
    qA,
    qABias,
    normWeight,
    qB,
    qLoraRank,
    pcaRank: k,
    biasChannel: hasBias ? k : null,
    kappa,
    varianceKept: total > 0 ? kept / total : 1,
    spectrum,
    scaling,
  };
}
