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
 *   it contains the other two as special cases, so its fitting error is never larger; but
 *   fitted on the calibration text it can do worse on other text than the scalar.
 * - 'ridge' (the default, {@link DEFAULT_QK_NORM}): per head, the regression shrunk toward the
 *   scalar fold, (E[n x^T] + lambda A0) (E[x x^T] + lambda I)^-1, lambda chosen on a
 *   validation quarter of the statistics rows from a fixed grid that includes 0 (the
 *   regression) and infinity (the scalar fold), then refitted on all rows.
 * Values are not normed in Qwen3 and are left as they are. The method is the `qkNorm` convert
 * option (`--qk-norm`).
 *
 * What matters, measured on the trained zoo-qwen3 (bench/qk-norm/gqa-level/README.md:
 * transformers' Qwen3 with one side's norm replaced in place, no MLA): the query side's 1/rms
 * is a per-(query, head) softmax temperature the model barely uses (a constant there: ppl
 * 6.15 -> 6.36 on the first 10 windows of 512 tokens), the key side's a per-key logit scale
 * it depends on (a constant there: 6.15 -> 80; the least-squares map of x: 9.0; one rms
 * shared by the two KV heads, which no stock tensor computes for k_pe either: 8.5). So the
 * key map decides, and a fitted map of x beats any per-head scalar by far: end to end
 * (bench/results/qk-norm-ablation-cpu.json, README "Fidelity"), 'ridge' against 'constant'
 * at qk_rope 32 + kv_lora 96 gives ppl 31.6 against 71.0 at 512 tokens (original 16.05), and
 * 27.5 against 63.6 at the lossless 64 + 192: the stand-in, not the compression, is most of
 * what the conversion loses there. 'regression' is within 1.4% of 'ridge' at every budget.
 * Tried and not kept (gqa-level/): a per-layer softmax temperature fitted on the attention
 * output (lower output error, higher ppl), the key regression weighted by the attention
 * each key receives (0.5% better: not worth a method), the query latent's RMSNorm
 * (q_a_layernorm) tracking the heads' norms (the query side has almost nothing to gain).
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
export type QkNormMethod = 'constant' | 'scalar' | 'regression' | 'ridge';

/** The methods, for validation and ablations. */
export const QK_NORM_METHODS: readonly QkNormMethod[] = ['constant', 'scalar', 'regression', 'ridge'];

/** The method of a conversion that names none (the `qkNorm` option, src/convert/options.ts). */
export const DEFAULT_QK_NORM: QkNormMethod = 'ridge';

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
  /** 'ridge': the chosen strength per query head and per key head (relative to the mean eigenvalue of E[x x^T]; Infinity: the scalar fold) */
  ridge?: { q: number[]; k: number[] };
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

/** Second moments of the sampled rows r0..r1: S = E[x x^T], C = E[n x^T], per head E[|n_h|^2], E[n_h . g_h], E[|g_h|^2]. */
interface FitMoments {
  s: Float64Array;
  c: Float64Array;
  nn: Float64Array;
  ng: Float64Array;
  gg: Float64Array;
}

function fitMoments(nh: Float64Array, gh: Float64Array, xa: Float64Array, r0: number, r1: number, heads: number, d: number, n: number): FitMoments {
  const rows = r1 - r0;
  const out = heads * d;
  const s = new Float64Array(n * n);
  syrkAccumulate(s, xa.subarray(r0 * n, r1 * n), rows, n, 1 / rows);
  for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) s[i * n + j] = s[j * n + i] = 0.5 * (s[i * n + j] + s[j * n + i]);
  const c = new Float64Array(out * n);
  gemm(nh.subarray(r0 * out, r1 * out), xa.subarray(r0 * n, r1 * n), c, out, n, rows, { transA: true, alpha: 1 / rows });
  const nn = new Float64Array(heads);
  const ng = new Float64Array(heads);
  const gg = new Float64Array(heads);
  for (let r = r0; r < r1; r++)
    for (let o = 0; o < out; o++) {
      const h = Math.floor(o / d);
      const v = nh[r * out + o];
      const g = gh[r * out + o];
      nn[h] += (v * v) / rows;
      ng[h] += (v * g) / rows;
      gg[h] += (g * g) / rows;
    }
  return { s, c, nn, ng, gg };
}

/** The least-squares scalar fold as an [out, n] map (the last column the intercept when n > hid). */
function scalarMap(m: HeadMap, d: number, hid: number, n: number, f: FitMoments): Float64Array {
  const a = new Float64Array(m.heads * d * n);
  for (let h = 0; h < m.heads; h++) {
    const c = f.gg[h] > 0 ? f.ng[h] / f.gg[h] : 0;
    for (let i = 0; i < d; i++) {
      const o = h * d + i;
      for (let j = 0; j < hid; j++) a[o * n + j] = c * m.gamma[i] * m.w[o * hid + j];
      if (n > hid) a[o * n + hid] = c * m.gamma[i] * (m.b ? m.b[o] : 0);
    }
  }
  return a;
}

/** (C + lambda A0)(S + lambda I)^-1 from the eigendecomposition of S. */
function shrunkMap(f: FitMoments, a0: Float64Array, eig: { values: Float64Array; vectors: Float64Array }, lambda: number, out: number, n: number): Float64Array {
  const rhs = new Float64Array(out * n);
  for (let i = 0; i < rhs.length; i++) rhs[i] = f.c[i] + lambda * a0[i];
  const floor = Math.max(eig.values[0], 1e-300) * 1e-12;
  const scaled = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let k = 0; k < n; k++) scaled[i * n + k] = eig.vectors[i * n + k] / Math.max(eig.values[k] + lambda, floor);
  const inv = new Float64Array(n * n);
  gemm(scaled, eig.vectors, inv, n, n, n, { transB: true });
  const a = new Float64Array(out * n);
  gemm(rhs, inv, a, out, n, n);
  return a;
}

/** Per head, E|n_h - A_h x|^2 on the validation moments. */
function headErrors(a: Float64Array, v: FitMoments, heads: number, d: number, n: number): Float64Array {
  const out = heads * d;
  const as = new Float64Array(out * n);
  gemm(a, v.s, as, out, n, n);
  const e = Float64Array.from(v.nn);
  for (let o = 0; o < out; o++) {
    let q = 0;
    for (let j = 0; j < n; j++) q += a[o * n + j] * (as[o * n + j] - 2 * v.c[o * n + j]);
    e[Math.floor(o / d)] += q;
  }
  return e;
}

/** Ridge strengths tried, relative to the mean eigenvalue of S; Infinity is the scalar fold itself. */
const RIDGE_GRID = [0, 1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1, 10, Infinity];

/**
 * 'ridge': per head, the regression shrunk toward the least-squares scalar fold,
 * (C + lambda A0)(S + lambda I)^-1, with lambda chosen on the last quarter of the sampled
 * statistics rows (fitted on the rest), then refitted on all of them. Returns the map and
 * the chosen relative strengths.
 */
function ridgeMap(m: HeadMap, d: number, hid: number, nh: Float64Array, gh: Float64Array, xa: Float64Array, rows: number, n: number): { w: Float32Array; b: Float32Array | null; ridge: number[] } {
  const out = m.heads * d;
  const split = Math.max(1, Math.floor(rows * 0.75));
  const fit = fitMoments(nh, gh, xa, 0, split, m.heads, d, n);
  const val = fitMoments(nh, gh, xa, split, rows, m.heads, d, n);
  const eigFit = symEigh(fit.s.slice(), n);
  const scale = eigFit.values.reduce((t, v) => t + v, 0) / n;
  const a0 = scalarMap(m, d, hid, n, fit);
  const best = new Float64Array(m.heads).fill(Infinity);
  const choice = new Array<number>(m.heads).fill(Infinity);
  for (const tau of RIDGE_GRID) {
    const e = headErrors(tau === Infinity ? a0 : shrunkMap(fit, a0, eigFit, tau * scale, out, n), val, m.heads, d, n);
    for (let h = 0; h < m.heads; h++)
      if (e[h] < best[h]) {
        best[h] = e[h];
        choice[h] = tau;
      }
  }
  const all = fitMoments(nh, gh, xa, 0, rows, m.heads, d, n);
  const eigAll = symEigh(all.s.slice(), n);
  const scaleAll = eigAll.values.reduce((t, v) => t + v, 0) / n;
  const a0All = scalarMap(m, d, hid, n, all);
  const maps = new Map<number, Float64Array>();
  const w = new Float32Array(out * hid);
  const b = n > hid ? new Float32Array(out) : null;
  for (let o = 0; o < out; o++) {
    const tau = choice[Math.floor(o / d)];
    if (!maps.has(tau)) maps.set(tau, tau === Infinity ? a0All : shrunkMap(all, a0All, eigAll, tau * scaleAll, out, n));
    const a = maps.get(tau)!;
    for (let j = 0; j < hid; j++) w[o * hid + j] = a[o * n + j];
    if (b) b[o] = a[o * n + hid];
  }
  return { w, b, ridge: choice };
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
      if (method === 'ridge') folded.push(ridgeMap(m, d, hid, n, gy, s.xa, s.rows, s.n));
      else folded.push(sInv ? regressionMap(n, s.xa, sInv, m.heads * d, s.rows, s.n, hid) : foldScaled(m, d, hid, leastSquaresScales(n, gy, m.heads, d, s.rows)));
    }
  }
  const attention: GqaAttention = { ...g, wq: folded[0].w, bq: folded[0].b, wk: folded[1].w, bk: folded[1].b };
  const r = folded as { ridge?: number[] }[];
  return method === 'ridge' ? { method, attention, ridge: { q: r[0].ridge!, k: r[1].ridge! } } : { method, attention };
}

/**
 * The source layer's attention as the factorization reads it: its q/k/v/o weights, with a
 * Qwen3 layer's per-head q/k norms replaced by linear maps ({@link foldQkNorm}).
 */
export async function sourceAttention(spec: ModelSpec, w: LayerWeights, moments: InputMoments, x: Float32Array, statRows: number, method: QkNormMethod): Promise<GqaAttention> {
  if (!spec.qkNorm) return gqaAttention(w);
  return (await foldQkNorm(spec, w, moments, x, statRows, method)).attention;
}
