/**
 * Attention biases without bias tensors (portable target): stock DeepSeek engines build every
 * attention linear with bias=False and skip `.bias` tensors, so a converted layer's
 * q_proj / kv_a_proj_with_mqa / o_proj biases must be folded into the weights.
 *
 * Notation (one converted layer, normalised input x, softmax weights p_ij, sum_j p_ij = 1):
 *   q = Wq x + bq,  latent c = A x + a  (a = [a_lat | a_rope]),  normed latent g c
 *   (g = kv_a_layernorm weight / sqrt(eps) under the exact latent norm, 1 without a norm),
 *   k_nope_h = g Bk_h c,  v_h = g Bv_h c,  out = sum_h Wo_h sum_j p_ij v_hj + bo.
 *
 * Exact:
 *   - the key part of a_lat: g Bk_h a_lat adds q_i . (g Bk_h a_lat) to every logit of query i,
 *     the same for all keys j: softmax is unchanged, so it is dropped exactly;
 *   - the value part of a_lat passes the softmax average unchanged (sum_j p_ij = 1): together
 *     with bo it is one constant output vector C = bo + g M a_lat, M = sum_h Wo_h Bv_h; any
 *     component of a_lat in the null space of M changes nothing else and is dropped exactly.
 * Not exact without a bias tensor: C itself (a constant added to the residual stream), the
 * query bias bq (its logit term bq . k_j depends on the key) and the rope key bias a_rope
 * (its term depends on the position difference). These are carried through the calibration
 * inputs' own constant direction: u = argmin E[(u . x - 1)^2] (ridge, from E[x x^T] and E[x]),
 * so that a bias b becomes the weight term b u^T with error b (u . x - 1):
 *   Wq += bq u^T,  A_rope += a_rope u^T,  A_lat += a* u^T with a* = (g M)^+ C
 * (the min-norm latent whose values reproduce C after the softmax average; its key part again
 * only shifts logits per query as far as u . x = 1).
 * The fold is kept when it beats dropping the biases on the held-out windows (both measured).
 */
import { fromArray, type Mat, matmul, matvec, symEigh } from '../tensor/mat.js';
import type { InputMoments } from '../tensor/moments.js';
import type { BiasFoldReport, FoldParts } from '../report-types.js';
import type { LayerWeights } from '../engine/weights.js';
import type { ModelSpec } from '../model/spec-types.js';
import { roundToDtype } from '../convert/layer-ops.js';

export type { BiasFoldReport, FoldParts };


const norm = (v: ArrayLike<number>) => {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i] * v[i];
  return Math.sqrt(s);
};

/** u = (E[x x^T] + lambda I)^-1 E[x] and its residual E[(u . x - 1)^2]. */
export function constantDirection(m: InputMoments): { u: Float64Array; residual: number } {
  const n = m.mean.length;
  const S = m.second.data;
  let tr = 0;
  for (let i = 0; i < n; i++) tr += S[i * n + i];
  const lambda = 1e-6 * (tr / n);
  const { values, vectors } = symEigh(Float64Array.from(S), n);
  // u = V diag(1 / (values + lambda)) V^T mean
  const u = new Float64Array(n);
  for (let k = 0; k < n; k++) {
    let proj = 0;
    for (let i = 0; i < n; i++) proj += vectors[i * n + k] * m.mean[i];
    const c = proj / (Math.max(values[k], 0) + lambda);
    for (let i = 0; i < n; i++) u[i] += c * vectors[i * n + k];
  }
  let um = 0;
  let uSu = 0;
  for (let i = 0; i < n; i++) {
    um += u[i] * m.mean[i];
    let s = 0;
    for (let j = 0; j < n; j++) s += S[i * n + j] * u[j];
    uSu += u[i] * s;
  }
  return { u, residual: Math.max(0, 1 - 2 * um + uSu) };
}

/** Min-norm least squares x = argmin ||G x - c|| for G [rows x cols] (via eigh of G^T G). */
function minNormSolve(G: Mat, c: Float64Array): Float64Array {
  const { cols } = G;
  const gtg = matmul(G, G, true).data;
  const gtc = matvec(G, c, true);
  const { values, vectors } = symEigh(gtg, cols);
  const tol = Math.max(values[0], 0) * 1e-12;
  const x = new Float64Array(cols);
  for (let k = 0; k < cols; k++) {
    if (!(values[k] > tol)) continue;
    let p = 0;
    for (let i = 0; i < cols; i++) p += vectors[i * cols + k] * gtc[i];
    const s = p / values[k];
    for (let i = 0; i < cols; i++) x[i] += s * vectors[i * cols + k];
  }
  return x;
}

/** Shapes of one converted (internal, half-split) layer. */
interface Dims {
  hid: number;
  H: number;
  dn: number;
  dr: number;
  dv: number;
  R: number;
}

function dimsOf(spec: ModelSpec): Dims {
  const m = spec.mla!;
  return { hid: spec.hiddenSize, H: spec.numHeads, dn: m.qkNopeHeadDim, dr: m.qkRopeHeadDim, dv: m.vHeadDim, R: m.kvLoraRank };
}

/** g M = g sum_h Wo_h Bv_h ([hid x R], float64, through BLAS) and the summed key-shift norm of a_lat. */
function valueMap(w: LayerWeights, d: Dims, g: number, aLat: Float32Array): { GM: Mat; keyShift: number } {
  const wo = w.tensors['self_attn.o_proj.weight'].data;
  const kvb = w.tensors['self_attn.kv_b_proj.weight'].data;
  const { hid, H, dn, dv, R } = d;
  // the value rows of kv_b stacked per head: [H dv, R]
  const bv = new Float64Array(H * dv * R);
  let keyShift = 0;
  for (let h = 0; h < H; h++) {
    const base = h * (dn + dv);
    for (let e = 0; e < dn; e++) {
      let s = 0;
      for (let r = 0; r < R; r++) s += kvb[(base + e) * R + r] * aLat[r];
      keyShift += (g * s) ** 2;
    }
    for (let e = 0; e < dv; e++) for (let r = 0; r < R; r++) bv[(h * dv + e) * R + r] = kvb[(base + dn + e) * R + r];
  }
  const GM = matmul(fromArray(wo, hid, H * dv), { rows: H * dv, cols: R, data: bv });
  for (let i = 0; i < GM.data.length; i++) GM.data[i] *= g;
  return { GM, keyShift: Math.sqrt(keyShift) };
}

/** W [rows x cols] += b u^T, rounded to the stored dtype. */
function addOuter(W: Float32Array, rows: number, cols: number, b: ArrayLike<number>, u: Float64Array, r0 = 0): void {
  for (let r = 0; r < rows; r++) {
    const br = b[r];
    if (br === 0) continue;
    const o = (r0 + r) * cols;
    for (let j = 0; j < cols; j++) W[o + j] += br * u[j];
  }
}

const BIAS_NAMES = ['self_attn.q_proj.bias', 'self_attn.kv_a_proj_with_mqa.bias', 'self_attn.o_proj.bias'];

/** `w` without its attention bias tensors (what a stock engine computes from it). */
export function dropBiases(w: LayerWeights): LayerWeights {
  const tensors: LayerWeights['tensors'] = {};
  for (const [k, t] of Object.entries(w.tensors)) if (!BIAS_NAMES.includes(k)) tensors[k] = t;
  return { layer: w.layer, tensors };
}

/** Whether `w` carries a non-zero attention bias. */
export function hasAttentionBias(w: LayerWeights): boolean {
  return BIAS_NAMES.some((k) => w.tensors[k]?.data.some((v) => v !== 0));
}

/** Options of {@link foldBiases}. */
export interface FoldOptions {
  /** the converted layer's spec (q_proj layout, before query compression) */
  mlaSpec: ModelSpec;
  /** the converted layer with its bias tensors (rounded to the stored dtype) */
  weights: LayerWeights;
  moments: InputMoments;
  dtype: string;
}

/**
 * The exact part of the fold with an o_proj bias (what transformers can hold): the latent bias
 * removed (its key part shifts each query's logits by a constant; its value part passes the
 * softmax average unchanged) and its value part added to o_proj's bias: C = bo + g M a_lat.
 * Computes the same attention as `w` up to float32 rounding (test/portable-export.test.ts).
 */
export function latentBiasAsOutputConstant(spec: ModelSpec, w: LayerWeights): LayerWeights {
  const d = dimsOf(spec);
  const a = w.tensors['self_attn.kv_a_proj_with_mqa.bias']?.data ?? new Float32Array(d.R + d.dr);
  const normW = w.tensors['self_attn.kv_a_layernorm.weight']?.data;
  const g = spec.mla!.qkLatentLayernorm && normW ? normW[0] / Math.sqrt(spec.rmsNormEps) : 1;
  const aLat = a.subarray(0, d.R);
  const { GM } = valueMap(w, d, g, aLat);
  const bo = w.tensors['self_attn.o_proj.bias']?.data;
  const C = new Float32Array(d.hid);
  for (let i = 0; i < d.hid; i++) {
    let s = bo ? bo[i] : 0;
    for (let r = 0; r < d.R; r++) s += GM.data[i * d.R + r] * aLat[r];
    C[i] = s;
  }
  const a2 = Float32Array.from(a);
  a2.fill(0, 0, d.R);
  return {
    layer: w.layer,
    tensors: { ...w.tensors, 'self_attn.kv_a_proj_with_mqa.bias': { data: a2, shape: [d.R + d.dr] }, 'self_attn.o_proj.bias': { data: C, shape: [d.hid] } },
  };
}


/** The folded layer (no bias tensors) and what the fold did (errors filled in by {@link foldLayerBiases}). */
export function foldBiases(o: FoldOptions, parts: FoldParts = { query: true, ropeKey: true, value: true }): { weights: LayerWeights; stats: Omit<BiasFoldReport, 'chosen' | 'folded' | 'errWithBiases' | 'errFolded' | 'errDropped'> } {
  const d = dimsOf(o.mlaSpec);
  const w = o.weights;
  const t = (n: string) => w.tensors[`self_attn.${n}`]?.data ?? null;
  const bq = t('q_proj.bias');
  const a = t('kv_a_proj_with_mqa.bias') ?? new Float32Array(d.R + d.dr);
  const bo = t('o_proj.bias');
  const { u, residual } = constantDirection(o.moments);
  const normW = t('kv_a_layernorm.weight');
  const g = o.mlaSpec.mla!.qkLatentLayernorm && normW ? normW[0] / Math.sqrt(o.mlaSpec.rmsNormEps) : 1;
  const aLat = a.subarray(0, d.R);
  const { GM, keyShift } = valueMap(w, d, g, aLat);
  // C = bo + g M a_lat; a* = (g M)^+ C
  const C = new Float64Array(d.hid);
  for (let i = 0; i < d.hid; i++) {
    let s = bo ? bo[i] : 0;
    for (let r = 0; r < d.R; r++) s += GM.data[i * d.R + r] * aLat[r];
    C[i] = s;
  }
  const aStar = minNormSolve(GM, C);
  const resid = new Float64Array(d.hid);
  for (let i = 0; i < d.hid; i++) {
    let s = 0;
    for (let r = 0; r < d.R; r++) s += GM.data[i * d.R + r] * aStar[r];
    resid[i] = C[i] - s;
  }
  const tensors: LayerWeights['tensors'] = { ...dropBiases(w).tensors };
  const qw = Float32Array.from(tensors['self_attn.q_proj.weight'].data);
  if (bq && parts.query) addOuter(qw, bq.length, d.hid, bq, u);
  const kva = Float32Array.from(tensors['self_attn.kv_a_proj_with_mqa.weight'].data);
  if (parts.value) addOuter(kva, d.R, d.hid, aStar, u);
  if (parts.ropeKey) addOuter(kva, d.dr, d.hid, a.subarray(d.R), u, d.R);
  tensors['self_attn.q_proj.weight'] = { data: roundToDtype(qw, o.dtype), shape: tensors['self_attn.q_proj.weight'].shape };
  tensors['self_attn.kv_a_proj_with_mqa.weight'] = { data: roundToDtype(kva, o.dtype), shape: tensors['self_attn.kv_a_proj_with_mqa.weight'].shape };
  return {
    weights: { layer: w.layer, tensors },
    stats: {
      constantFitResidual: residual,
      exactKeyShiftNorm: keyShift,
      outputConstantNorm: norm(C),
      outputConstantResidual: norm(resid),
      queryBiasNorm: bq ? norm(bq) : 0,
      ropeKeyBiasNorm: norm(a.subarray(d.R)),
    },
  };
}

/**
 * The portable step of one layer: the biases dropped (exact for the key shift) and every
 * combination of the folds of the query, rope-key and value-constant terms are evaluated on
 * the held-out windows (`evaluate`, attention relative error); the lowest is kept. Returns null when the layer has no
 * non-zero bias.
 */
export async function foldLayerBiases(
  o: FoldOptions & { errWithBiases: number; evaluate(w: LayerWeights): Promise<number> },
): Promise<{ weights: LayerWeights; err: number; report: BiasFoldReport } | null> {
  // zero bias tensors stay: the export leaves them out (portable.ts)
  if (!hasAttentionBias(o.weights)) return null;
  const dropped = dropBiases(o.weights);
  const errDropped = await o.evaluate(dropped);
  let best = { weights: dropped, err: errDropped };
  let parts: FoldParts = { query: false, ropeKey: false, value: false };
  let stats: ReturnType<typeof foldBiases>['stats'] | null = null;
  let errFolded = Infinity;
  // every combination: the query and rope-key folds interact (bq_rope . R a_rope)
  for (let mask = 1; mask < 8; mask++) {
    const trial: FoldParts = { query: (mask & 1) !== 0, ropeKey: (mask & 2) !== 0, value: (mask & 4) !== 0 };
    const f = foldBiases(o, trial);
    stats = f.stats;
    const err = await o.evaluate(f.weights);
    errFolded = Math.min(errFolded, err);
    if (err < best.err) [best, parts] = [{ weights: f.weights, err }, trial];
  }
  const chosen = parts.query || parts.ropeKey || parts.value;
  return {
    weights: best.weights,
    err: best.err,
    report: { chosen: chosen ? 'fold' : 'drop', folded: parts, errWithBiases: o.errWithBiases, errFolded, errDropped, ...stats! },
  };
}
