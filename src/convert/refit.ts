/**
 * Value refit under the converted attention (training-free, calibration data only).
 *
 * The converted layer attends with new probabilities P' (partial RoPE, compressed keys).
 * Its value path is linear in the attended latent z_h(t) = sum_s P'_h(t, s) c(s), so the
 * value up-projection W_uv,h (the v rows of kv_b_proj for head h) can be chosen in closed
 * form to reproduce the original head output o_h(t) = sum_s P_h(t, s) v(s):
 *   W_uv,h = argmin sum_t |W z_h(t) - o_h(t)|^2 + ridge = B_h (A_h + lambda I)^-1,
 *   A_h = sum_t z_h z_h^T (R x R), B_h = sum_t o_h z_h^T (d x R), in float64.
 * o_proj is shared and linear, so matching every head's output matches the layer output.
 */
import type { ModelSpec } from '../model/spec-types.js';
import { native } from '../native/binding.js';
import { ropeFor } from '../engine/attention.js';
import type { LayerWeights } from '../engine/weights.js';
import { mlaSoftmaxScale } from '../model/rope.js';
import { gemm, svd, syrkAccumulate } from '../linalg.js';
import { spectralMatrix, symEigh as eigh } from '../tensor/mat.js';

function positions(rows: number, seqLen: number): Int32Array {
  const p = new Int32Array(rows);
  for (let r = 0; r < rows; r++) p[r] = r % seqLen;
  return p;
}

const t = (w: LayerWeights, n: string) => w.tensors[`self_attn.${n}`]?.data ?? null;

/** Per-head attention outputs before o_proj of the original GQA layer: [rows, H, d]. */
async function originalHeadOutputs(spec: ModelSpec, w: LayerWeights, x: Float32Array, nSeq: number, seqLen: number): Promise<Float32Array> {
  const { hiddenSize: hid, numHeads: H, numKvHeads: G, headDim: d } = spec;
  const rows = nSeq * seqLen;
  const q = new Float32Array(rows * H * d);
  const k = new Float32Array(rows * G * d);
  const v = new Float32Array(rows * G * d);
  await native.linearAsync(x, t(w, 'q_proj.weight')!, q, { rows, inDim: hid, outDim: H * d, bias: t(w, 'q_proj.bias') });
  await native.linearAsync(x, t(w, 'k_proj.weight')!, k, { rows, inDim: hid, outDim: G * d, bias: t(w, 'k_proj.bias') });
  await native.linearAsync(x, t(w, 'v_proj.weight')!, v, { rows, inDim: hid, outDim: G * d, bias: t(w, 'v_proj.bias') });
  if (spec.qkNorm) {
    // qwen3: the per-head q/k norms of the original layer (the refit target is its true output)
    await native.rmsNormAsync(q, t(w, 'q_norm.weight'), q, { rows: rows * H, dim: d, eps: spec.rmsNormEps });
    await native.rmsNormAsync(k, t(w, 'k_norm.weight'), k, { rows: rows * G, dim: d, eps: spec.rmsNormEps });
  }
  const rope = ropeFor(spec, seqLen - 1);
  const pos = positions(rows, seqLen);
  const ro = { headStride: d, rotDim: rope.rotDim, scale: rope.attentionScaling };
  await native.ropeAsync(q, pos, rope.invFreq, { ...ro, rowStride: H * d, nHeads: H });
  await native.ropeAsync(k, pos, rope.invFreq, { ...ro, rowStride: G * d, nHeads: G });
  const o = new Float32Array(rows * H * d);
  await native.attentionAsync(q, k, v, o, { nSeq, seqLen, nHeads: H, nKvHeads: G, qkDim: d, vDim: d, scale: 1 / Math.sqrt(d) });
  return o;
}

/** Attended latents of the converted layer, z = P' c per head: [rows, H, R]. */
async function attendedLatents(mla: ModelSpec, w: LayerWeights, x: Float32Array, nSeq: number, seqLen: number): Promise<Float32Array> {
  const m = mla.mla!;
  const { hiddenSize: hid, numHeads: H } = mla;
  const dn = m.qkNopeHeadDim;
  const dr = m.qkRopeHeadDim;
  const dv = m.vHeadDim;
  const R = m.kvLoraRank;
  const dq = dn + dr;
  const rows = nSeq * seqLen;
  const q = new Float32Array(rows * H * dq);
  await native.linearAsync(x, t(w, 'q_proj.weight')!, q, { rows, inDim: hid, outDim: H * dq, bias: t(w, 'q_proj.bias') });
  const kva = new Float32Array(rows * (R + dr));
  await native.linearAsync(x, t(w, 'kv_a_proj_with_mqa.weight')!, kva, { rows, inDim: hid, outDim: R + dr, bias: t(w, 'kv_a_proj_with_mqa.bias') });
  const latent = new Float32Array(rows * R);
  if (m.qkLatentLayernorm) {
    await native.rmsNormAsync(kva, t(w, 'kv_a_layernorm.weight')!, latent, { rows, dim: R, eps: mla.rmsNormEps, xStride: R + dr });
  } else {
    for (let r = 0; r < rows; r++) latent.set(kva.subarray(r * (R + dr), r * (R + dr) + R), r * R);
  }
  // k_nope per head from the k rows of kv_b
  const kvb = t(w, 'kv_b_proj.weight')!;
  const wuk = new Float32Array(H * dn * R);
  for (let h = 0; h < H; h++) wuk.set(kvb.subarray(h * (dn + dv) * R, (h * (dn + dv) + dn) * R), h * dn * R);
  const kn = new Float32Array(rows * H * dn);
  await native.linearAsync(latent, wuk, kn, { rows, inDim: R, outDim: H * dn });
  const rope = ropeFor(mla, seqLen - 1);
  const pos = positions(rows, seqLen);
  const scale = rope.attentionScaling;
  const interleave = m.ropeInterleave;
  await native.ropeAsync(q, pos, rope.invFreq, { rowStride: H * dq, nHeads: H, headStride: dq, offset: dn, rotDim: dr, scale, interleave });
  await native.ropeAsync(kva, pos, rope.invFreq, { rowStride: R + dr, nHeads: 1, headStride: R + dr, offset: R, rotDim: dr, scale, interleave });
  const z = new Float32Array(rows * H * R);
  await native.attentionAsync(q, kn, latent, z, {
    nSeq,
    seqLen,
    nHeads: H,
    nKvHeads: H,
    qkDim: dn,
    vDim: R,
    scale: mlaSoftmaxScale(mla),
    kHeadStride: dn,
    kRowStride: H * dn,
    vHeadStride: 0,
    vRowStride: R,
    kRope: kva.subarray(R),
    ropeDim: dr,
    kRopeRowStride: R + dr,
  });
  return z;
}

/** What a refit reads: the source and converted layers and calibration windows of their inputs. */
export interface RefitInput {
  /** the source (GQA/MHA) spec and layer */
  spec: ModelSpec;
  orig: LayerWeights;
  /** the converted layer's spec and weights (q_proj form) */
  mla: ModelSpec;
  conv: LayerWeights;
  /** normalised attention inputs: `nSeq` windows of `seqLen` tokens */
  x: Float32Array;
  nSeq: number;
  seqLen: number;
  /** ridge of the regressions (default 1e-4) */
  ridge?: number;
}

/**
 * Returns the refit value rows of kv_b_proj ([H * (d + d), R] with the v rows replaced),
 * from `nSeq` calibration windows of normalised attention inputs `x`.
 */
export async function refitValues(input: RefitInput): Promise<Float32Array> {
  const { spec, mla, orig, conv, x, nSeq, seqLen, ridge = 1e-4 } = input;
  const H = spec.numHeads;
  const d = spec.headDim;
  const R = mla.mla!.kvLoraRank;
  const dn = mla.mla!.qkNopeHeadDim;
  const dv = mla.mla!.vHeadDim;
  const rows = nSeq * seqLen;
  const o = await originalHeadOutputs(spec, orig, x, nSeq, seqLen);
  const z = await attendedLatents(mla, conv, x, nSeq, seqLen);
  const kvb = t(conv, 'kv_b_proj.weight')!.slice();
  const zh = new Float64Array(rows * R);
  const oh = new Float64Array(rows * d);
  for (let h = 0; h < H; h++) {
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < R; j++) zh[r * R + j] = z[(r * H + h) * R + j];
      for (let j = 0; j < d; j++) oh[r * d + j] = o[(r * H + h) * d + j];
    }
    const A = new Float64Array(R * R);
    gemm(zh, zh, A, R, R, rows, { transA: true });
    const B = new Float64Array(d * R);
    gemm(oh, zh, B, d, R, rows, { transA: true });
    let tr = 0;
    for (let i = 0; i < R; i++) tr += A[i * R + i];
    const lam = (ridge * tr) / R;
    // (A + lam I)^-1 via eigh
    const { values, vectors } = eigh(A, R);
    const inv = spectralMatrix(values, vectors, R, (l) => 1 / (Math.max(l, 0) + lam)).data;
    const W = new Float64Array(d * R);
    gemm(B, inv, W, d, R, R);
    const base = (h * (dn + dv) + dn) * R;
    for (let i = 0; i < d * R; i++) kvb[base + i] = W[i];
  }
  return kvb;
}

/** (A + lambda I)^{-1/2} and (A + lambda I)^{1/2} of a symmetric PSD n x n matrix (float64). */
function ridgeRoots(a: Float64Array, n: number, lambda: number): { isqrt: Float64Array; sqrt: Float64Array; inv: Float64Array } {
  const { values, vectors } = eigh(a.slice(), n);
  const lam = (l: number) => Math.max(l, 0) + lambda;
  return {
    isqrt: spectralMatrix(values, vectors, n, (l) => 1 / Math.sqrt(lam(l))).data,
    sqrt: spectralMatrix(values, vectors, n, (l) => Math.sqrt(lam(l))).data,
    inv: spectralMatrix(values, vectors, n, (l) => 1 / lam(l)).data,
  };
}

/** Result of {@link refitOutput}. */
export interface OutputRefit {
  /** kv_b_proj.weight with the v rows of every head replaced */
  kvB: Float32Array;
  /** o_proj.weight [hidden, H * vDim] */
  oProj: Float32Array;
  /** per head: the rank of its value-output map (min(kvLoraRank, vDim)) */
  rank: number;
}

/**
 * Joint value/output refit under the converted attention. The layer output is linear in
 * the attended latents of all heads, y(t) = sum_h W_o,h W_uv,h z_h(t); instead of fitting
 * each head's value map alone ({@link refitValues}), the products B_h = W_o,h W_uv,h
 * (hidden x R) are fitted together to the original attention output (before the o_proj
 * bias), so heads can make up for each other's errors:
 *   [B_1 .. B_H] = Y^T Z (Z^T Z + lambda I)^{-1},  Z = [z_1 .. z_H] (rows x H R),
 * one ridge regression whose Gram matrix is shared by every output coordinate (float64).
 * Each B_h is then written as o_proj columns times kv_b value rows: exactly when
 * R <= vDim (B_h = U S V^T, W_o,h = U S^{1/2}, W_uv,h = S^{1/2} V^T, zero-padded), else
 * its best rank-vDim approximation in the metric of head h's latents.
 * Returns null when the joint Gram matrix would exceed `maxDim` (H R) dimensions.
 */
export async function refitOutput(input: RefitInput & { maxDim?: number }): Promise<OutputRefit | null> {
  const { spec, mla, orig, conv, x, nSeq, seqLen, ridge = 1e-4, maxDim = 4096 } = input;
  const { hiddenSize: hid, numHeads: H, headDim: d } = spec;
  const m = mla.mla!;
  const R = m.kvLoraRank;
  const dn = m.qkNopeHeadDim;
  const dv = m.vHeadDim;
  const N = H * R;
  if (N > maxDim) return null;
  const rows = nSeq * seqLen;
  const o = await originalHeadOutputs(spec, orig, x, nSeq, seqLen);
  const y = new Float32Array(rows * hid);
  await native.linearAsync(o, t(orig, 'o_proj.weight')!, y, { rows, inDim: H * d, outDim: hid });
  const z = await attendedLatents(mla, conv, x, nSeq, seqLen);
  // Gram and cross moments in float64, in row chunks
  const G = new Float64Array(N * N);
  const C = new Float64Array(hid * N);
  const chunk = 2048;
  for (let r0 = 0; r0 < rows; r0 += chunk) {
    const nr = Math.min(chunk, rows - r0);
    const z64 = Float64Array.from(z.subarray(r0 * N, (r0 + nr) * N));
    const y64 = Float64Array.from(y.subarray(r0 * hid, (r0 + nr) * hid));
    syrkAccumulate(G, z64, nr, N);
    gemm(y64, z64, C, hid, N, nr, { transA: true, beta: 1 });
  }
  let tr = 0;
  for (let i = 0; i < N; i++) tr += G[i * N + i];
  const { inv } = ridgeRoots(G, N, (ridge * tr) / N);
  const B = new Float64Array(hid * N);
  gemm(C, inv, B, hid, N, N);
  const k = Math.min(R, dv);
  const kvB = t(conv, 'kv_b_proj.weight')!.slice();
  const oProj = new Float32Array(hid * H * dv);
  const bh = new Float64Array(hid * R);
  for (let h = 0; h < H; h++) {
    for (let i = 0; i < hid; i++) for (let j = 0; j < R; j++) bh[i * R + j] = B[i * N + h * R + j];
    // metric of head h's latents (identity when B_h is represented exactly)
    let gs: Float64Array | null = null;
    let gi: Float64Array | null = null;
    let target = bh;
    if (R > dv) {
      const ghh = new Float64Array(R * R);
      for (let i = 0; i < R; i++) for (let j = 0; j < R; j++) ghh[i * R + j] = G[(h * R + i) * N + h * R + j];
      let trh = 0;
      for (let i = 0; i < R; i++) trh += ghh[i * R + i];
      const rr = ridgeRoots(ghh, R, (ridge * trh) / R);
      gs = rr.sqrt;
      gi = rr.isqrt;
      target = new Float64Array(hid * R);
      gemm(bh, gs, target, hid, R, R);
    }
    const { u, s: sv, vt } = svd(target, hid, R); // thin: u hid x K, vt K x R, K = min(hid, R)
    const K = Math.min(hid, R);
    const vRows = new Float64Array(k * R);
    for (let c = 0; c < k; c++) {
      const f = Math.sqrt(sv[c]);
      for (let i = 0; i < hid; i++) oProj[i * H * dv + h * dv + c] = u[i * K + c] * f;
      for (let j = 0; j < R; j++) vRows[c * R + j] = vt[c * R + j] * f;
    }
    let vMap = vRows;
    if (gi) {
      vMap = new Float64Array(k * R);
      gemm(vRows, gi, vMap, k, R, R);
    }
    const base = (h * (dn + dv) + dn) * R;
    for (let i = 0; i < dv * R; i++) kvB[base + i] = i < k * R ? vMap[i] : 0;
  }
  return { kvB, oProj, rank: k };
}
