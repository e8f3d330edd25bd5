/**
 * One decoder layer's attention: GQA/MHA weights + calibration moments -> DeepSeek-V3
 * MLA weights (TransMLA steps 1-4, from the math).
 *
 * Notation: x the attention input, L = nKv * d the merged key latent (the concatenated KV
 * heads; step 1, exact), R the RoRoPE rotation (rorope.ts), r = ropeDim. For query head h
 * of KV group g, E_g picks group g's d dims out of L, so q_h . k_g = (R E_g q_h) . (R k).
 * - RoPE part: k_rope = R[:r] k (shared by all heads), q_rope,h = R[:r] E_g q_h.
 * - NoPE part: k' = R[r:] k loses its rotation. BKV-PCA: z = [s k'; v] with the balance
 *   s making the keys' RMS norm balanceKv times the values'; P = top kvLoraRank
 *   eigenvectors of E[z z^T]; latent c = P^T z (kv_a); k' ~ P_k c / s, v ~ P_v c.
 * - Absorb: q_nope,h = q_h (the original head query), k_nope,h = E_g^T R[r:]^T P_k c / s,
 *   v_h = E_g^T P_v c; so kv_b rows of head h are [E_g^T R[r:]^T P_k / s ; E_g^T P_v].
 * - Softmax scale d^-1/2 becomes (d + r)^-1/2: q rows are multiplied by sqrt((d + r) / d).
 * Biases follow the same linear maps.
 */
import type { ModelSpec } from '../model/spec-types.js';
import { eigh } from '../linalg.js';
import { type Mat, colSlice, fromArray, matmul, matvec, rowSlice, trace, zeros } from './mat.js';
import { type RopeRotation, roropeRotation } from './rorope.js';
import { type Affine, type InputMoments, crossMoment, secondMoment } from './statistics.js';

/** A GQA/MHA layer's attention weights as stored ([out, in] row-major). */
export interface GqaAttention {
  wq: Float32Array;
  wk: Float32Array;
  wv: Float32Array;
  wo: Float32Array;
  bq?: Float32Array | null;
  bk?: Float32Array | null;
  bv?: Float32Array | null;
  bo?: Float32Array | null;
}

/** DeepSeek-V3 attention weights of one layer (transformers' names and shapes). */
export interface MlaAttention {
  /** q_proj.weight [H * (d + r), hidden], per head [nope d | rope r] */
  qProj: Float32Array;
  qBias: Float32Array | null;
  /** kv_a_proj_with_mqa.weight [R + r, hidden]: [latent R | k_rope r] */
  kvA: Float32Array;
  kvABias: Float32Array | null;
  /** kv_b_proj.weight [H * (d + d), R], per head [k_nope d | v d] */
  kvB: Float32Array;
  oProj: Float32Array;
  oBias: Float32Array | null;
}

/** Settings of one factorization. */
export interface FactorizeOptions {
  qkRopeDim: number;
  kvLoraRank: number;
  freqfold: number;
  balanceKv: number;
}

/** Result of factorizing one layer. */
export interface LayerFactorization {
  attention: MlaAttention;
  freqfold: number;
  /** share of the keys' second moment kept by the RoPE part */
  ropeVarianceKept: number;
  /** share of E[|z|^2] kept by the kvLoraRank principal directions */
  pcaVarianceKept: number;
  ropeSpectrum: number[][];
  /** eigenvalues of E[z z^T], descending */
  pcaSpectrum: number[];
  balanceScale: number;
}

function affine(w: Float32Array, b: Float32Array | null | undefined, rows: number, cols: number): Affine {
  return { w: fromArray(w, rows, cols), b: b ? Float64Array.from(b) : null };
}

/** Factorizes one layer's attention into DeepSeek-V3 MLA weights. */
export function factorizeLayer(spec: ModelSpec, w: GqaAttention, m: InputMoments, opt: FactorizeOptions): LayerFactorization {
  const { hiddenSize: hid, numHeads: H, numKvHeads: nKv, headDim: d } = spec;
  const L = nKv * d;
  const r = opt.qkRopeDim;
  const R = opt.kvLoraRank;
  const group = H / nKv;
  const k = affine(w.wk, w.bk, L, hid);
  const v = affine(w.wv, w.bv, L, hid);

  const ck = secondMoment(k, m);
  const rope: RopeRotation = roropeRotation(ck, nKv, d, r, opt.freqfold);
  const rotRope = rowSlice(rope.rot, 0, r);
  const rotNope = rowSlice(rope.rot, r, L);

  // Balance: RMS norm of s k' equals balanceKv x RMS norm of v.
  const cNope = matmul(matmul(rotNope, ck), rotNope, false, true);
  const cv = secondMoment(v, m);
  const trNope = trace(cNope);
  const s = L > r && trNope > 0 ? opt.balanceKv * Math.sqrt(trace(cv) / trNope) : 1;

  // z = [s R[r:] k ; v] = Wz x + bz
  const nz = 2 * L - r;
  const kNope: Affine = { w: matmul(rotNope, k.w), b: k.b ? matvec(rotNope, k.b) : null };
  for (let i = 0; i < kNope.w.data.length; i++) kNope.w.data[i] *= s;
  if (kNope.b) for (let i = 0; i < kNope.b.length; i++) kNope.b[i] *= s;
  const z: Affine = {
    w: { rows: nz, cols: hid, data: concat(kNope.w.data, v.w.data) },
    b: kNope.b || v.b ? concat(kNope.b ?? new Float64Array(L - r), v.b ?? new Float64Array(L)) : null,
  };
  const cz = zMoment(cNope, s, kNope, v, cv, m, L - r);
  const { values, vectors } = eigh(cz.data, nz);
  const P = colSlice({ rows: nz, cols: nz, data: vectors }, 0, R); // nz x R
  let totalZ = 0;
  let keptZ = 0;
  for (let i = 0; i < nz; i++) {
    totalZ += values[i];
    if (i < R) keptZ += values[i];
  }

  // kv_a: [P^T Wz ; R[:r] Wk]
  const latentW = matmul(P, z.w, true, false); // R x hid
  const ropeW = matmul(rotRope, k.w); // r x hid
  const kvA = new Float32Array((R + r) * hid);
  kvA.set(latentW.data);
  kvA.set(ropeW.data, R * hid);
  let kvABias: Float32Array | null = null;
  if (z.b || k.b) {
    kvABias = new Float32Array(R + r);
    if (z.b) kvABias.set(matvec(P, z.b, true));
    if (k.b) kvABias.set(matvec(rotRope, k.b), R);
  }

  // kv_b per head: [E_g^T R[r:]^T P_k / s ; E_g^T P_v]
  const Pk = rowSlice(P, 0, L - r);
  const Pv = rowSlice(P, L - r, nz);
  const upK = matmul(rotNope, Pk, true, false); // L x R  (R[r:]^T P_k)
  const kvB = new Float32Array(H * 2 * d * R);
  for (let h = 0; h < H; h++) {
    const g = Math.floor(h / group);
    const base = h * 2 * d * R;
    for (let i = 0; i < d; i++) {
      const src = (g * d + i) * R;
      for (let c = 0; c < R; c++) {
        kvB[base + i * R + c] = upK.data[src + c] / s;
        kvB[base + (d + i) * R + c] = Pv.data[src + c];
      }
    }
  }

  // q_proj per head: [q_h ; R[:r] E_g q_h] * sqrt((d + r) / d)
  const qs = Math.sqrt((d + r) / d);
  const qProj = new Float32Array(H * (d + r) * hid);
  const qBias = w.bq ? new Float32Array(H * (d + r)) : null;
  for (let h = 0; h < H; h++) {
    const g = Math.floor(h / group);
    const qh = fromArray(w.wq.subarray(h * d * hid, (h + 1) * d * hid), d, hid);
    const rg = colSlice(rotRope, g * d, (g + 1) * d); // r x d
    const qRope = matmul(rg, qh); // r x hid
    const base = h * (d + r) * hid;
    for (let i = 0; i < d * hid; i++) qProj[base + i] = qh.data[i] * qs;
    for (let i = 0; i < r * hid; i++) qProj[base + d * hid + i] = qRope.data[i] * qs;
    if (qBias && w.bq) {
      const bh = w.bq.subarray(h * d, (h + 1) * d);
      const bRope = matvec(rg, bh);
      for (let i = 0; i < d; i++) qBias[h * (d + r) + i] = bh[i] * qs;
      for (let i = 0; i < r; i++) qBias[h * (d + r) + d + i] = bRope[i] * qs;
    }
  }

  return {
    attention: { qProj, qBias, kvA, kvABias, kvB, oProj: w.wo, oBias: w.bo ?? null },
    freqfold: opt.freqfold,
    ropeVarianceKept: rope.varianceKept,
    pcaVarianceKept: totalZ > 0 ? keptZ / totalZ : 1,
    ropeSpectrum: rope.spectrum,
    pcaSpectrum: Array.from(values),
    balanceScale: s,
  };
}

/** E[z z^T] for z = [s k'; v] from the already computed blocks. */
function zMoment(cNope: Mat, s: number, kNopeScaled: Affine, v: Affine, cv: Mat, m: InputMoments, nNope: number): Mat {
  const L = cv.rows;
  const nz = nNope + L;
  const out = zeros(nz, nz);
  const cross = nNope > 0 ? crossMoment(kNopeScaled, v, m) : zeros(0, L); // s k' v^T
  for (let i = 0; i < nNope; i++) {
    for (let j = 0; j < nNope; j++) out.data[i * nz + j] = s * s * cNope.data[i * nNope + j];
    for (let j = 0; j < L; j++) {
      out.data[i * nz + nNope + j] = cross.data[i * L + j];
      out.data[(nNope + j) * nz + i] = cross.data[i * L + j];
    }
  }
  for (let i = 0; i < L; i++) for (let j = 0; j < L; j++) out.data[(nNope + i) * nz + nNope + j] = cv.data[i * L + j];
  return out;
}

function concat(a: Float64Array, b: Float64Array): Float64Array {
  const out = new Float64Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
