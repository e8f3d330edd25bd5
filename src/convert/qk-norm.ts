/**
 * Qwen3's per-head q/k RMSNorm as linear maps, so the factorization can read a Qwen3 layer
 * as a plain GQA layer and the output is a stock DeepSeek-V3 checkpoint (no q_norm / k_norm).
 *
 * Qwen3 computes, per token x and head h, n_h(x) = gamma ⊙ y_h / rms(y_h) with
 * y_h = W_h x (+ b_h) and rms(y) = sqrt(mean(y^2) + eps), then RoPE. RoPE rotates each head
 * vector, so the scalar 1 / rms commutes with it; only that per-token, per-head scalar has no
 * place in stock DeepSeek-V3 (its one per-token norm, kv_a_layernorm, would scale the values
 * too). Each method replaces n_h by a linear map A_h x (+ a_h), fitted in float64 on the
 * statistics windows:
 * - 'constant': gamma folded into the rows of W_h and 1 / rms replaced by the constant
 *   1 / sqrt(E[mean(y_h^2)] + eps), from the input moments alone (E[y y^T] = W E[x x^T] W^T).
 * - 'scalar': gamma folded and 1 / rms replaced by the least-squares scalar
 *   c_h = E[n_h . (gamma ⊙ y_h)] / E[|gamma ⊙ y_h|^2] (the best multiple of the folded map).
 * - 'regression': the least-squares linear map A_h = E[n_h x^T] E[x x^T]^-1 (affine, with an
 *   intercept, when the layer has q/k biases), the best linear stand-in for the normed head;
 *   it contains the other two as special cases, so its fitting error is never larger.
 * Values are not normed in Qwen3 and are left as they are.
 */
import type { LayerWeights } from '../engine/weights.js';
import { GqaError } from '../errors.js';
import { gemm, syrkAccumulate } from '../linalg.js';
import type { ModelSpec } from '../model/spec-types.js';
import { native } from '../native/binding.js';
import { fromArray, symEigh } from '../tensor/mat.js';
import { type InputMoments, secondMoment } from '../tensor/moments.js';
import { type GqaAttention, gqaAttention } from './attention-weights.js';

/** How the per-head q/k RMSNorm is replaced by a linear map (see the module comment). */
export type QkNormMethod = 'constant' | 'scalar' | 'regression';

/** The methods, for validation and ablations. */
export const QK_NORM_METHODS: readonly QkNormMethod[] = ['constant', 'scalar', 'regression'];

/** The method a conversion uses: GQA2MLA_QK_NORM when set (an ablation switch), else 'regression'. */
export function qkNormMethod(env: Record<string, string | undefined> = process.env): QkNormMethod {
  const v = env.GQA2MLA_QK_NORM;
  if (v === undefined || v === '') return 'regression';
  if (!(QK_NORM_METHODS as readonly string[]).includes(v))
    throw new GqaError('ERR_BAD_OPTION', `GQA2MLA_QK_NORM must be one of ${QK_NORM_METHODS.join(', ')} (got ${JSON.stringify(v)})`, 'usage');
  return v as QkNormMethod;
}

/** Bound on the float64 copy of the inputs the fit reads (values); rows beyond are sampled with a stride. */
const FIT_VALUES = 1 << 25;

/** One projection's heads: weights [heads * d, hid], bias, norm weight gamma [d]. */
interface HeadMap {
  w: Float32Array;
  b: Float32Array | null;
  gamma: Float32Array;
  heads: number;
}

/** The layer's attention with both norms replaced by linear maps of the chosen method. */
export interface QkNormFold {
  method: QkNormMethod;
  attention: GqaAttention;
}

/** gamma ⊙ rows of head h scaled by `c` (weights and bias). */
function foldScaled(m: HeadMap, d: number, hid: number, scales: ArrayLike<number>): { w: Float32Array; b: Float32Array | null } {
  const w = new Float32Array(m.w.length);
  const b = m.b ? new Float32Array(m.b.length) : null;
  for (let h = 0; h < m.heads; h++)
    for (let i = 0; i < d; i++) {
      const f = m.gamma[i] * scales[h];
      const r = h * d + i;
      for (let j = 0; j < hid; j++) w[r * hid + j] = m.w[r * hid + j] * f;
      if (b) b[r] = m.b![r] * f;
    }
  return { w, b };
}

/** Per head, 1 / sqrt(E[mean(y_h^2)] + eps) from the input moments. */
export function momentScales(m: HeadMap, d: number, hid: number, moments: InputMoments, eps: number): Float64Array {
  const out = new Float64Array(m.heads);
  for (let h = 0; h < m.heads; h++) {
    const w = fromArray(m.w.subarray(h * d * hid, (h + 1) * d * hid), d, hid);
    const b = m.b ? Float64Array.from(m.b.subarray(h * d, (h + 1) * d)) : null;
    const c = secondMoment({ w, b }, moments);
    let tr = 0;
    for (let i = 0; i < d; i++) tr += c.data[i * d + i];
    out[h] = 1 / Math.sqrt(tr / d + eps);
  }
  return out;
}

/** The sampled rows of `x` the fits read, as float64 [rows, n] (n = hid + 1 with a constant 1 column when `augmented`). */
function sampleInputs(x: Float32Array, statRows: number, hid: number, augmented: boolean): { x32: Float32Array; xa: Float64Array; rows: number; n: number } {
  const n = augmented ? hid + 1 : hid;
  const stride = Math.max(1, Math.ceil((statRows * n) / FIT_VALUES));
  const rows = Math.ceil(statRows / stride);
  const x32 = new Float32Array(rows * hid);
  const xa = new Float64Array(rows * n);
  for (let r = 0; r < rows; r++) {
    const src = x.subarray(r * stride * hid, (r * stride + 1) * hid);
    x32.set(src, r * hid);
    for (let j = 0; j < hid; j++) xa[r * n + j] = src[j];
    if (augmented) xa[r * n + hid] = 1;
  }
  if (rows > 0 && !Number.isFinite(x32[0]))
    throw new GqaError('ERR_INTERNAL', 'qk-norm fit: the normalised inputs are not on the host (the backend kept them on the device)', 'runtime');
  return { x32, xa, rows, n };
}

/** Normed heads n_h (float64 [rows, heads * d]) and the folded, unscaled heads gamma ⊙ y_h of the sampled inputs. */
async function normedHeads(m: HeadMap, d: number, hid: number, x32: Float32Array, rows: number, eps: number): Promise<{ n: Float64Array; g: Float64Array }> {
  const out = m.heads * d;
  const y = new Float32Array(rows * out);
  await native.linearAsync(x32, m.w, y, { rows, inDim: hid, outDim: out, bias: m.b });
  const n = new Float64Array(rows * out);
  const g = new Float64Array(rows * out);
  for (let r = 0; r < rows; r++)
    for (let h = 0; h < m.heads; h++) {
      const o = r * out + h * d;
      let ss = 0;
      for (let i = 0; i < d; i++) ss += y[o + i] * y[o + i];
      const inv = 1 / Math.sqrt(ss / d + eps);
      for (let i = 0; i < d; i++) {
        g[o + i] = m.gamma[i] * y[o + i];
        n[o + i] = g[o + i] * inv;
      }
    }
  return { n, g };
}

/** Per head, the least-squares scalar E[n_h . g_h] / E[|g_h|^2]. */
function leastSquaresScales(n: Float64Array, g: Float64Array, heads: number, d: number, rows: number): Float64Array {
  const out = new Float64Array(heads);
  for (let h = 0; h < heads; h++) {
    let ng = 0;
    let gg = 0;
    for (let r = 0; r < rows; r++)
      for (let i = 0; i < d; i++) {
        const o = r * heads * d + h * d + i;
        ng += n[o] * g[o];
        gg += g[o] * g[o];
      }
    out[h] = gg > 0 ? ng / gg : 0;
  }
  return out;
}

/** S^-1 of the sampled inputs' second moment (eigenvalues floored at 1e-9 x the largest). */
function inverseSecondMoment(xa: Float64Array, rows: number, n: number): Float64Array {
  const s = new Float64Array(n * n);
  syrkAccumulate(s, xa, rows, n, 1 / rows);
  for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) s[i * n + j] = s[j * n + i] = 0.5 * (s[i * n + j] + s[j * n + i]);
  const { values, vectors } = symEigh(s, n);
  const floor = Math.max(values[0], 1e-300) * 1e-9;
  const scaled = new Float64Array(n * n); // V diag(1 / lambda)
  for (let i = 0; i < n; i++) for (let k = 0; k < n; k++) scaled[i * n + k] = vectors[i * n + k] / Math.max(values[k], floor);
  const inv = new Float64Array(n * n);
  gemm(scaled, vectors, inv, n, n, n, { transB: true });
  return inv;
}

/** A = E[n x^T] E[x x^T]^-1 over the sampled rows: weights [heads * d, hid] and, when augmented, the intercept. */
function regressionMap(nh: Float64Array, xa: Float64Array, sInv: Float64Array, out: number, rows: number, n: number, hid: number): { w: Float32Array; b: Float32Array | null } {
  const c = new Float64Array(out * n);
  gemm(nh, xa, c, out, n, rows, { transA: true, alpha: 1 / rows });
  const a = new Float64Array(out * n);
  gemm(c, sInv, a, out, n, n);
  const w = new Float32Array(out * hid);
  const b = n > hid ? new Float32Array(out) : null;
  for (let r = 0; r < out; r++) {
    for (let j = 0; j < hid; j++) w[r * hid + j] = a[r * n + j];
    if (b) b[r] = a[r * n + hid];
  }
  return { w, b };
}

/**
 * Replaces q_norm and k_norm of a Qwen3 layer by linear maps (method `method`), fitted on
 * the first `statRows` rows of the normalised attention inputs `x` (not read by 'constant',
 * which needs only the input moments).
 */
export async function foldQkNorm(spec: ModelSpec, w: LayerWeights, moments: InputMoments, x: Float32Array, statRows: number, method: QkNormMethod): Promise<QkNormFold> {
  const { hiddenSize: hid, numHeads: H, numKvHeads: G, headDim: d, rmsNormEps: eps } = spec;
  const g = gqaAttention(w, true);
  const norm = (n: string) => {
    const t = w.tensors[`self_attn.${n}.weight`];
    if (!t || t.data.length !== d) throw new GqaError('ERR_TENSOR_MISSING', `layer ${w.layer}: weight self_attn.${n}.weight [${d}] is missing`);
    return t.data;
  };
  const maps: HeadMap[] = [
    { w: g.wq, b: g.bq ?? null, gamma: norm('q_norm'), heads: H },
    { w: g.wk, b: g.bk ?? null, gamma: norm('k_norm'), heads: G },
  ];
  let folded: { w: Float32Array; b: Float32Array | null }[];
  if (method === 'constant') {
    folded = maps.map((m) => foldScaled(m, d, hid, momentScales(m, d, hid, moments, eps)));
  } else {
    const s = sampleInputs(x, statRows, hid, Boolean(g.bq || g.bk));
    const sInv = method === 'regression' ? inverseSecondMoment(s.xa, s.rows, s.n) : null;
    folded = [];
    for (const m of maps) {
      const { n, g: gy } = await normedHeads(m, d, hid, s.x32, s.rows, eps);
      folded.push(sInv ? regressionMap(n, s.xa, sInv, m.heads * d, s.rows, s.n, hid) : foldScaled(m, d, hid, leastSquaresScales(n, gy, m.heads, d, s.rows)));
    }
  }
  const attention: GqaAttention = { ...g, wq: folded[0].w, bq: folded[0].b, wk: folded[1].w, bk: folded[1].b };
  return { method, attention };
}

/**
 * The source layer's attention as the factorization reads it: its q/k/v/o weights, with a
 * Qwen3 layer's per-head q/k norms replaced by linear maps ({@link foldQkNorm}).
 */
export async function sourceAttention(spec: ModelSpec, w: LayerWeights, moments: InputMoments, x: Float32Array, statRows: number): Promise<GqaAttention> {
  if (!spec.qkNorm) return gqaAttention(w);
  return (await foldQkNorm(spec, w, moments, x, statRows, qkNormMethod())).attention;
}
