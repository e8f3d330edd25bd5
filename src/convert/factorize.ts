/**
 * One decoder layer's attention: GQA/MHA weights + calibration moments -> DeepSeek-V3
 * MLA weights (TransMLA steps 1-4 from the math, plus gqa2mla's objective-aware variants).
 *
 * Notation: x the attention input, L = nKv * d the merged key latent (the concatenated KV
 * heads; step 1, exact), T the RoRoPE map of the keys and S = T^{-T} its query side
 * (rorope.ts; S = T for TransMLA's orthogonal rotation), r = ropeDim. For query head h of
 * KV group g, E_g picks group g's d dims out of L, so q_h . k_g = (S E_g q_h) . (T k).
 * - RoPE part: k_rope = T[:r] k (shared by all heads), q_rope,h = S[:r] E_g q_h.
 * - NoPE part: k' = T[r:] k loses its rotation. BKV-PCA: z = [s Gk k'; Gv v], where Gk, Gv
 *   are identity (TransMLA) or the square roots of the error metrics (objective-aware:
 *   the logit metric of the queries reading k', and the output metric sum_h W_o,h^T W_o,h
 *   of the heads reading v), and s balances the two parts (RMS of the key part =
 *   balanceKv x RMS of the value part). P = top kvLoraRank eigenvectors of E[z z^T];
 *   latent c = P^T z (kv_a); k' ~ Gk^{-1} P_k c / s, v ~ Gv^{-1} P_v c.
 * - Absorb: q_nope,h = q_h (the original head query), k_nope,h = E_g^T S[r:]^T k'(c),
 *   v_h = E_g^T v(c): kv_b rows of head h are [E_g^T S[r:]^T Gk^{-1} P_k / s ; E_g^T Gv^{-1} P_v].
 * - Softmax scale d^-1/2 becomes (d + r)^-1/2: q rows are multiplied by sqrt((d + r) / d).
 * - kvMetric 'attention': the same metrics, but the latent is chosen for the inputs as the
 *   attention reads them (attention-stats.ts): key errors under the attention-weighted
 *   spread of the keys around each query's attended input, value errors under the second
 *   moment of the attended inputs. The two targets then see different input covariances,
 *   so the latent comes from alternating least squares (joint-basis.ts) started at the PCA
 *   above, and the decoders D_k, D_v replace P_k, P_v.
 * - NoPE shrink (nopeCos / nopeSin): per head, each position-free key pair is replaced by
 *   its expected rotation under the head's attention distances (distance.ts).
 * Biases follow the same linear maps.
 */
import type { ModelSpec } from '../model/spec-types.js';
import { symEigh as eigh } from '../tensor/mat.js';
import { type Mat, colSlice, fromArray, matmul, matvec, rowSlice, spectralMatrix, trace, zeros } from '../tensor/mat.js';
import { type RopeRotation, roropeRotation } from './rorope.js';
import { type RopeDriftRotation, driftRows } from './rope-drift.js';
import { type Affine, type InputMoments, crossMoment, secondMoment, symmetrize } from '../tensor/moments.js';
import type { AttentionMoments } from './attention-stats.js';
import { type JointInputs, jointBasis, jointInputs } from './joint-basis.js';
import type { GqaAttention, MlaAttention } from './attention-weights.js';

export type { GqaAttention, MlaAttention };

/** How the RoPE directions are chosen: TransMLA's key PCA, or by attention-logit energy. */
export type RopeSelection = 'key' | 'qk';
/**
 * The metric of the joint K/V compression: plain PCA (TransMLA), the model's error
 * metrics ('objective': keys weighted by the queries that read them, values by o_proj),
 * or those metrics under the attention-aware input statistics ('attention': key errors
 * by their spread under each query's attention, value errors on the attended inputs;
 * needs {@link FactorizeOptions.attention}).
 */
export type KvMetric = 'plain' | 'objective' | 'attention';

/** Settings of one factorization. */
export interface FactorizeOptions {
  qkRopeDim: number;
  kvLoraRank: number;
  freqfold: number;
  balanceKv: number;
  /** default 'key' (TransMLA) */
  ropeSelection?: RopeSelection;
  /** default 'plain' (TransMLA) */
  kvMetric?: KvMetric;
  /**
   * Per query head h, E[cos(f_i * delta)] for each original frequency index i (headDim / 2
   * values) under the head's attention distribution over relative distances delta. When
   * given, each position-free logit term of head h is scaled by the expected cosine of the
   * rotation it lost: the least-squares position-free stand-in for a rotating term.
   */
  nopeCos?: Float64Array[];
  /**
   * With {@link nopeCos}: per query head, E[sin(f_i * delta)] for each original frequency
   * index. Each position-free pair of head h then takes the full expected rotation
   * [[E cos, E sin], [-E sin, E cos]] of its (re, im) key rows instead of the cosine alone.
   */
  nopeSin?: Float64Array[];
  /**
   * The source frequency each RoPE slot carries (qkRopeDim / 2 entries; default slot j carries
   * j * headDim / qkRopeDim): the portable export's llama3 blend-band map (src/export/rope-slots.ts).
   */
  ropeSlots?: ArrayLike<number>;
  /**
   * Per query head, the expected residual rotation of each rope slot whose engine frequency
   * differs from the source frequency it carries (rope-drift.ts): the query's rope rows of the
   * slot take it, the least-squares stand-in for the rotation the engine gets wrong.
   */
  ropeDrift?: RopeDriftRotation;
  /** attention-aware input statistics (attention-stats.ts), required by kvMetric 'attention' */
  attention?: AttentionMoments;
  /** alternating-least-squares steps of the 'attention' metric (default 10: most of the gain comes in the first few) */
  jointIterations?: number;
}

/** Result of factorizing one layer. */
export interface LayerFactorization {
  attention: MlaAttention;
  freqfold: number;
  /** share of the RoPE selection criterion (key variance or logit energy) kept */
  ropeVarianceKept: number;
  /** share of E[|z|^2] kept by the kvLoraRank principal directions */
  pcaVarianceKept: number;
  ropeSpectrum: number[][];
  /** eigenvalues of E[z z^T], descending */
  pcaSpectrum: number[];
  balanceScale: number;
  /**
   * kvMetric 'attention': the joint objective (attention-aware metrics) of the PCA start
   * and after the alternating refinement, and the refinement steps taken
   */
  joint?: { lossStart: number; lossEnd: number; steps: number };
}

function affine(w: Float32Array, b: Float32Array | null | undefined, rows: number, cols: number): Affine {
  return { w: fromArray(w, rows, cols), b: b ? Float64Array.from(b) : null };
}

/**
 * The query heads' second moments summed into their KV group's block (L x L,
 * block-diagonal): the logit metric of the keys.
 */
export function queryMetric(spec: ModelSpec, w: GqaAttention, m: InputMoments): Mat {
  const { hiddenSize: hid, numHeads: H, numKvHeads: nKv, headDim: d } = spec;
  const L = nKv * d;
  const out = zeros(L, L);
  const group = H / nKv;
  for (let h = 0; h < H; h++) {
    const g = Math.floor(h / group);
    const qh = affine(w.wq.subarray(h * d * hid, (h + 1) * d * hid), w.bq ? w.bq.subarray(h * d, (h + 1) * d) : null, d, hid);
    const c = secondMoment(qh, m);
    for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) out.data[(g * d + i) * L + g * d + j] += c.data[i * d + j];
  }
  return out;
}

/** The output metric of the values: blockdiag_g sum_{h in g} W_o,h^T W_o,h (L x L). */
function valueMetric(spec: ModelSpec, wo: Float32Array): Mat {
  const { hiddenSize: hid, numHeads: H, numKvHeads: nKv, headDim: d } = spec;
  const L = nKv * d;
  const out = zeros(L, L);
  const group = H / nKv;
  const W = fromArray(wo, hid, H * d);
  for (let h = 0; h < H; h++) {
    const g = Math.floor(h / group);
    const woh = colSlice(W, h * d, (h + 1) * d); // hid x d
    const c = matmul(woh, woh, true, false); // d x d
    for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) out.data[(g * d + i) * L + g * d + j] += c.data[i * d + j];
  }
  return out;
}

/** Symmetric square root and inverse square root (eigenvalues floored at 1e-10 x max). */
function sqrtPair(a: Mat): { sqrt: Mat; isqrt: Mat } {
  const n = a.rows;
  const { values, vectors } = eigh(a.data.slice(), n);
  const floor = Math.max(values[0], 1e-300) * 1e-10;
  return {
    sqrt: spectralMatrix(values, vectors, n, (l) => Math.sqrt(Math.max(l, floor))),
    isqrt: spectralMatrix(values, vectors, n, (l) => 1 / Math.sqrt(Math.max(l, floor))),
  };
}

function identity(n: number): Mat {
  const m = zeros(n, n);
  for (let i = 0; i < n; i++) m.data[i * n + i] = 1;
  return m;
}

/** Layer statistics shared by every factorization of a layer (freqfold / balance candidates). */
export interface LayerMoments {
  /** keys' second moment, L x L */
  ck: Mat;
  /** values' second moment, L x L */
  cv: Mat;
  /** query logit metric, L x L (only computed when needed) */
  cq: Mat | null;
  /** value output metric, L x L (only computed when needed) */
  mv: Mat | null;
}

/** Computes the per-layer moments the factorization needs. */
export function layerMoments(spec: ModelSpec, w: GqaAttention, m: InputMoments, needQuery: boolean): LayerMoments {
  const L = spec.numKvHeads * spec.headDim;
  const hid = spec.hiddenSize;
  const ck = secondMoment(affine(w.wk, w.bk, L, hid), m);
  const cv = secondMoment(affine(w.wv, w.bv, L, hid), m);
  return { ck, cv, cq: needQuery ? queryMetric(spec, w, m) : null, mv: needQuery ? valueMetric(spec, w.wo) : null };
}

/** The RoRoPE split of the merged keys (T) and of the queries (S) into RoPE and NoPE rows. */
interface RopeSplit {
  rope: RopeRotation;
  tRope: Mat;
  tNope: Mat;
  sRope: Mat;
  sNope: Mat;
}

function ropeSplit(lm: LayerMoments, nKv: number, d: number, opt: FactorizeOptions): RopeSplit {
  const L = nKv * d;
  const r = opt.qkRopeDim;
  const rope: RopeRotation = roropeRotation(lm.ck, nKv, d, r, opt.freqfold, opt.ropeSelection === 'qk' ? lm.cq! : undefined, opt.ropeSlots);
  const tRope = rowSlice(rope.rot, 0, r);
  const tNope = rowSlice(rope.rot, r, L);
  const sRope = rope.qrot === rope.rot ? tRope : rowSlice(rope.qrot, 0, r);
  const sNope = rope.qrot === rope.rot ? tNope : rowSlice(rope.qrot, r, L);
  return { rope, tRope, tNope, sRope, sNope };
}

/** Square roots (and inverses) of the joint compression's key and value metrics: identity for plain PCA. */
function compressionMetrics(lm: LayerMoments, sNope: Mat, nN: number, L: number, objective: boolean) {
  let gk = identity(nN);
  let gkInv = gk;
  let gv = identity(L);
  let gvInv = gv;
  if (objective && nN > 0) {
    const qn = matmul(matmul(sNope, lm.cq!), sNope, false, true);
    symmetrize(qn);
    ({ sqrt: gk, isqrt: gkInv } = sqrtPair(qn));
  }
  if (objective) ({ sqrt: gv, isqrt: gvInv } = sqrtPair(lm.mv!));
  return { gk, gkInv, gv, gvInv };
}

/** The joint PCA of z = [s a ; b]: eigen-decomposition of E[z z^T] and the share the top R directions keep. */
function jointPca(m: InputMoments, kA: Affine, vB: Affine, cA: Mat, cB: Mat, s: number, nN: number, L: number, R: number) {
  const nz = nN + L;
  const cz = zeros(nz, nz);
  const cross = nN > 0 ? crossMoment(kA, vB, m) : zeros(0, L);
  for (let i = 0; i < nN; i++) {
    for (let j = 0; j < nN; j++) cz.data[i * nz + j] = s * s * cA.data[i * nN + j];
    for (let j = 0; j < L; j++) {
      cz.data[i * nz + nN + j] = s * cross.data[i * L + j];
      cz.data[(nN + j) * nz + i] = s * cross.data[i * L + j];
    }
  }
  for (let i = 0; i < L; i++) for (let j = 0; j < L; j++) cz.data[(nN + i) * nz + nN + j] = cB.data[i * L + j];
  symmetrize(cz);
  const { values, vectors } = eigh(cz.data, nz);
  const P = colSlice({ rows: nz, cols: nz, data: vectors }, 0, R); // nz x R
  let totalZ = 0;
  let keptZ = 0;
  for (let i = 0; i < nz; i++) {
    totalZ += values[i];
    if (i < R) keptZ += values[i];
  }
  return { P, values, varianceKept: totalZ > 0 ? keptZ / totalZ : 1 };
}

/** The latent c = P^T [s a; b] (kv_a's latent rows and bias) with its PCA decoders [Dk; Dv] = P. */
function pcaLatent(P: Mat, kA: Affine, vB: Affine, s: number, nN: number, R: number, hid: number, hasBias: boolean) {
  const decK = rowSlice(P, 0, nN);
  const decV = rowSlice(P, nN, P.rows);
  const latentW = nN > 0 ? matmul(decK, kA.w, true, false) : zeros(R, hid);
  if (nN > 0) for (let i = 0; i < latentW.data.length; i++) latentW.data[i] *= s;
  const lv = matmul(decV, vB.w, true, false);
  for (let i = 0; i < latentW.data.length; i++) latentW.data[i] += lv.data[i];
  let latentB: Float64Array | null = null;
  if (hasBias) {
    latentB = new Float64Array(R);
    if (kA.b && nN > 0) {
      const t = matvec(decK, kA.b, true);
      for (let i = 0; i < R; i++) latentB[i] += s * t[i];
    }
    if (vB.b) {
      const t = matvec(decV, vB.b, true);
      for (let i = 0; i < R; i++) latentB[i] += t[i];
    }
  }
  return { decK, decV, latentW, latentB };
}

/** kv_a = [latent ; T[:r] Wk] (and its bias). */
function kvAProjection(latentW: Mat, latentB: Float64Array | null, tRope: Mat, k: Affine, R: number, r: number, hid: number) {
  const ropeW = matmul(tRope, k.w); // r x hid
  const kvA = new Float32Array((R + r) * hid);
  kvA.set(latentW.data);
  kvA.set(ropeW.data, R * hid);
  let kvABias: Float32Array | null = null;
  if (latentB) {
    kvABias = new Float32Array(R + r);
    kvABias.set(latentB);
    if (k.b) kvABias.set(matvec(tRope, k.b), R);
  }
  return { kvA, kvABias };
}

/** k' rows of query head h with each NoPE pair replaced by its expected rotation (nopeCos / nopeSin of head h). */
function nopeRotatedRows(kRec: Mat, rope: RopeRotation, cosH: Float64Array, sinH: Float64Array | undefined, r: number, R: number): Mat {
  const scaled = { rows: kRec.rows, cols: R, data: kRec.data.slice() };
  for (const p of rope.nopeFreqWeights) {
    let c = 0;
    let sn = 0;
    for (let f = 0; f < p.freqs.length; f++) {
      c += p.weights[f] * cosH[p.freqs[f]];
      if (sinH) sn += p.weights[f] * sinH[p.freqs[f]];
    }
    const re = (p.re - r) * R;
    const im = (p.im - r) * R;
    for (let j = 0; j < R; j++) {
      const kr = kRec.data[re + j];
      const ki = kRec.data[im + j];
      scaled.data[re + j] = c * kr + sn * ki;
      scaled.data[im + j] = c * ki - sn * kr;
    }
  }
  return scaled;
}

/** The decoders of the latent as kv_b needs them. */
interface KvDecoders {
  /** k' ~ kRec c / sDec, (L - r) x R */
  kRec: Mat;
  /** v ~ upV c, L x R */
  upV: Mat;
  sDec: number;
}

/** kv_b per head: [E_g^T S[r:]^T Gk^{-1} D_k / s ; E_g^T Gv^{-1} D_v]. */
function kvBProjection(spec: ModelSpec, opt: FactorizeOptions, split: RopeSplit, dec: KvDecoders): Float32Array {
  const { numHeads: H, numKvHeads: nKv, headDim: d } = spec;
  const L = nKv * d;
  const r = opt.qkRopeDim;
  const R = opt.kvLoraRank;
  const nN = L - r;
  const group = H / nKv;
  const { kRec, upV, sDec } = dec;
  const kvB = new Float32Array(H * 2 * d * R);
  let upKShared: Mat | null = null;
  for (let h = 0; h < H; h++) {
    const g = Math.floor(h / group);
    const base = h * 2 * d * R;
    let upK: Mat;
    if (opt.nopeCos && nN > 0) {
      // scale each NoPE row of k' by head h's expected cosine of the lost rotation
      upK = matmul(split.sNope, nopeRotatedRows(kRec, split.rope, opt.nopeCos[h], opt.nopeSin?.[h], r, R), true, false);
    } else {
      upKShared ??= nN > 0 ? matmul(split.sNope, kRec, true, false) : zeros(L, R);
      upK = upKShared;
    }
    for (let i = 0; i < d; i++) {
      const src = (g * d + i) * R;
      for (let c = 0; c < R; c++) {
        kvB[base + i * R + c] = upK.data[src + c] / sDec;
        kvB[base + (d + i) * R + c] = upV.data[src + c];
      }
    }
  }
  return kvB;
}

/** q_proj per head: [q_h ; S[:r] E_g q_h] * sqrt((d + r) / d) (and its bias); the rope rows times the expected residual rotation when given. */
function queryProjection(spec: ModelSpec, w: GqaAttention, sRope: Mat, r: number, drift?: RopeDriftRotation) {
  const { hiddenSize: hid, numHeads: H, numKvHeads: nKv, headDim: d } = spec;
  const group = H / nKv;
  const qs = Math.sqrt((d + r) / d);
  const qProj = new Float32Array(H * (d + r) * hid);
  const qBias = w.bq ? new Float32Array(H * (d + r)) : null;
  for (let h = 0; h < H; h++) {
    const g = Math.floor(h / group);
    const qh = fromArray(w.wq.subarray(h * d * hid, (h + 1) * d * hid), d, hid);
    const sg = colSlice(sRope, g * d, (g + 1) * d); // r x d
    const qRope = matmul(sg, qh); // r x hid
    if (drift) driftRows(qRope.data, hid, r, drift.cos[h], drift.sin[h]);
    const base = h * (d + r) * hid;
    for (let i = 0; i < d * hid; i++) qProj[base + i] = qh.data[i] * qs;
    for (let i = 0; i < r * hid; i++) qProj[base + d * hid + i] = qRope.data[i] * qs;
    if (qBias && w.bq) {
      const bh = w.bq.subarray(h * d, (h + 1) * d);
      const bRope = matvec(sg, bh);
      if (drift) driftRows(bRope, 1, r, drift.cos[h], drift.sin[h]);
      for (let i = 0; i < d; i++) qBias[h * (d + r) + i] = bh[i] * qs;
      for (let i = 0; i < r; i++) qBias[h * (d + r) + d + i] = bRope[i] * qs;
    }
  }
  return { qProj, qBias };
}

/** Factorizes one layer's attention into DeepSeek-V3 MLA weights. */
export function factorizeLayer(
  spec: ModelSpec,
  w: GqaAttention,
  m: InputMoments,
  opt: FactorizeOptions,
  lm: LayerMoments = layerMoments(spec, w, m, opt.ropeSelection === 'qk' || (opt.kvMetric ?? 'plain') !== 'plain'),
): LayerFactorization {
  const { hiddenSize: hid, numKvHeads: nKv, headDim: d } = spec;
  const L = nKv * d;
  const r = opt.qkRopeDim;
  const R = opt.kvLoraRank;
  const nN = L - r;
  const k = affine(w.wk, w.bk, L, hid);
  const v = affine(w.wv, w.bv, L, hid);
  const attn = opt.kvMetric === 'attention';
  const objective = opt.kvMetric === 'objective' || attn;
  if ((opt.ropeSelection === 'qk' || objective) && (!lm.cq || !lm.mv)) throw new Error('factorizeLayer: query/value metrics missing');
  if (attn && !opt.attention) throw new Error("factorizeLayer: kvMetric 'attention' needs the attention moments");

  // ---- RoRoPE (step 2), then the metrics of the joint compression (step 3)
  const split = ropeSplit(lm, nKv, d, opt);
  const { gk, gkInv, gv, gvInv } = compressionMetrics(lm, split.sNope, nN, L, objective);
  // key part a = Gk T[r:] k, value part b = Gv v (affine in x)
  const kA: Affine = { w: matmul(matmul(gk, split.tNope), k.w), b: k.b ? matvec(gk, matvec(split.tNope, k.b)) : null };
  const vB: Affine = objective ? { w: matmul(gv, v.w), b: v.b ? matvec(gv, v.b) : null } : v;
  const cA = nN > 0 ? matmul(matmul(matmul(gk, split.tNope), lm.ck), matmul(gk, split.tNope), false, true) : zeros(0, 0);
  const cB = objective ? matmul(matmul(gv, lm.cv), gv, false, true) : lm.cv;
  const trA = trace(cA);
  const s = nN > 0 && trA > 0 ? opt.balanceKv * Math.sqrt(trace(cB) / trA) : 1;
  const pca = jointPca(m, kA, vB, cA, cB, s, nN, L, R);

  // ---- latent c = P^T [s a; b] (kv_a) with decoders [s a; b] ~ [Dk; Dv] c (PCA: D = P)
  const hasBias = Boolean(k.b || v.b);
  let { decK, decV, latentW, latentB } = pcaLatent(pca.P, kA, vB, s, nN, R, hid, hasBias);
  let joint: LayerFactorization['joint'];
  let sDec = s; // decK maps the latent to sDec * a
  if (attn && nN > 0) {
    const ref = jointRefinement(hid, opt.attention!, hasBias, kA, vB, latentW, latentB, opt.balanceKv, opt.jointIterations ?? 10);
    ({ latentW, latentB, decK, decV, joint } = ref);
    sDec = ref.scale;
  }
  const { kvA, kvABias } = kvAProjection(latentW, latentB, split.tRope, k, R, r, hid);
  const kRec = nN > 0 ? matmul(gkInv, decK) : zeros(0, R);
  const kvB = kvBProjection(spec, opt, split, { kRec, upV: objective ? matmul(gvInv, decV) : decV, sDec });
  const { qProj, qBias } = queryProjection(spec, w, split.sRope, r, opt.ropeDrift);
  return {
    attention: { qProj, qBias, kvA, kvABias, kvB, oProj: w.wo, oBias: w.bo ?? null },
    freqfold: opt.freqfold,
    ropeVarianceKept: split.rope.varianceKept,
    pcaVarianceKept: pca.varianceKept,
    ropeSpectrum: split.rope.spectrum,
    pcaSpectrum: Array.from(pca.values),
    balanceScale: sDec,
    joint,
  };
}

/** Augmented [W | b] (b = 0 when absent) of an affine map, or W alone. */
function augment(p: Affine, withBias: boolean): Mat {
  if (!withBias) return p.w;
  const { rows, cols } = p.w;
  const out = zeros(rows, cols + 1);
  for (let i = 0; i < rows; i++) {
    out.data.set(p.w.data.subarray(i * cols, (i + 1) * cols), i * (cols + 1));
    out.data[i * (cols + 1) + cols] = p.b ? p.b[i] : 0;
  }
  return out;
}

/** The leading n x n block of a square matrix (symmetrized copy). */
function leading(m: Mat, n: number): Mat {
  const out = zeros(n, n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) out.data[i * n + j] = m.data[i * m.cols + j];
  symmetrize(out);
  return out;
}

const inputsCache = new WeakMap<AttentionMoments, { n: number; inputs: JointInputs }>();

/** The input side of the 'attention' metric, once per layer's attention moments. */
function layerJointInputs(am: AttentionMoments, n: number): JointInputs {
  const hit = inputsCache.get(am);
  if (hit && hit.n === n) return hit.inputs;
  const inputs = jointInputs(leading(am.keySpread, n), leading(am.attended, n));
  inputsCache.set(am, { n, inputs });
  return inputs;
}

/**
 * kvMetric 'attention': starting from the PCA latent, the shared encoder of the weighted
 * NoPE keys a (input covariance: the heads' pooled attention-weighted key spread) and the
 * weighted values b (input covariance: the heads' pooled attended-input moments), by
 * alternating least squares (joint-basis.ts). The balance scale s is set from the traces
 * under these covariances (RMS of s a = balanceKv x RMS of b).
 */
function jointRefinement(
  hid: number,
  am: AttentionMoments,
  hasBias: boolean,
  kA: Affine,
  vB: Affine,
  latentW: Mat,
  latentB: Float64Array | null,
  balance: number,
  iterations: number,
): { latentW: Mat; latentB: Float64Array | null; decK: Mat; decV: Mat; scale: number; joint: NonNullable<LayerFactorization['joint']> } {
  if (hasBias && !am.augmented) throw new Error('factorizeLayer: attention moments must be augmented for a layer with K/V biases');
  const n = hasBias ? hid + 1 : hid;
  const inputs = layerJointInputs(am, n);
  const { s1: sk, s2: sv } = inputs;
  const mk = augment(kA, hasBias);
  const mv = augment(vB, hasBias);
  const trK = trace(matmul(matmul(mk, sk), mk, false, true));
  const trV = trace(matmul(matmul(mv, sv), mv, false, true));
  const s = trK > 0 ? balance * Math.sqrt(trV / trK) : 1;
  for (let i = 0; i < mk.data.length; i++) mk.data[i] *= s;
  const R = latentW.rows;
  const a0 = zeros(R, n);
  for (let i = 0; i < R; i++) {
    a0.data.set(latentW.data.subarray(i * hid, (i + 1) * hid), i * n);
    if (hasBias) a0.data[i * n + hid] = latentB![i];
  }
  const jb = jointBasis(mk, mv, inputs, a0, iterations);
  const outW = zeros(R, hid);
  const outB = hasBias ? new Float64Array(R) : null;
  for (let i = 0; i < R; i++) {
    outW.data.set(jb.a.data.subarray(i * n, i * n + hid), i * hid);
    if (outB) outB[i] = jb.a.data[i * n + hid];
  }
  return {
    latentW: outW,
    latentB: outB,
    decK: jb.decoders[0],
    decV: jb.decoders[1],
    scale: s,
    joint: { lossStart: jb.loss[0], lossEnd: jb.loss[jb.loss.length - 1], steps: jb.loss.length - 1 },
  };
}
