/**
 * Attention output (after o_proj) at chosen query positions of long windows, every key up to
 * each query kept: what the serving-context judge scores (held-out-context.ts
 * sampleContextQueries picks the positions). Keys and values are projected for every row;
 * queries, scores and o_proj only for the listed rows, so a window of n tokens costs about
 * (listed queries x their distances) instead of n^2 / 2 query-key pairs. GQA/MHA specs
 * (biases, qwen3 q/k norms, sliding windows) and DeepSeek-V3 MLA specs, as engine
 * attentionForward computes them at those rows (float32 products, float64 softmax).
 */
import { attentionForward, ropeFor, slidingWindowOf } from '../engine/attention.js';
import { mlaCacheRowsGraph, mlaQueriesGraph } from '../engine/graph.js';
import { hostKernels } from '../engine/host-kernels.js';
import type { LayerWeights } from '../engine/weights.js';
import { Workspace } from '../engine/workspace.js';
import { gemm } from '../linalg.js';
import { mlaSoftmaxScale } from '../model/rope.js';
import type { ModelSpec } from '../model/spec-types.js';

/** Where the listed queries are: per window, `perWindow` positions in increasing order. */
export interface QueryRows {
  /** [nSeq x perWindow] positions within their window */
  positions: Int32Array;
  perWindow: number;
}

/** Queries, keys and values of one attention call, with their layouts. */
interface Operands {
  /** [nSeq * perWindow rows] queries: per head qkDim (+ ropeDim) values at qHead apart */
  q: Float32Array;
  qRow: number;
  qHead: number;
  /** [nSeq * seqLen rows] keys and values per KV head */
  k: Float32Array;
  kRow: number;
  kHead: number;
  v: Float32Array;
  vRow: number;
  vHead: number;
  /** MLA's rope key shared by the heads (null for GQA) */
  kRope: Float32Array | null;
  kRopeRow: number;
  nHeads: number;
  nKvHeads: number;
  qkDim: number;
  ropeDim: number;
  vDim: number;
  scale: number;
  /** keys u with t - u < window only (0: every key) */
  window: number;
}

/** Queries per score block (their keys run to the block's last position). */
const BLOCK = 64;

/** Window-position and row index of every listed query. */
function rowIndex(at: QueryRows, seqLen: number): { pos: Int32Array; rows: Int32Array } {
  const n = at.positions.length;
  const rows = new Int32Array(n);
  for (let i = 0; i < n; i++) rows[i] = Math.floor(i / at.perWindow) * seqLen + at.positions[i];
  return { pos: at.positions, rows };
}

/** Copies head `g`'s keys (with the rope key) and values of window `s` into packed [seqLen, dq] / [seqLen, dv] arrays. */
function packUnit(o: Operands, s: number, g: number, seqLen: number, kp: Float32Array, vp: Float32Array): void {
  const dq = o.qkDim + o.ropeDim;
  for (let t = 0; t < seqLen; t++) {
    const r = s * seqLen + t;
    kp.set(o.k.subarray(r * o.kRow + g * o.kHead, r * o.kRow + g * o.kHead + o.qkDim), t * dq);
    if (o.kRope) kp.set(o.kRope.subarray(r * o.kRopeRow, r * o.kRopeRow + o.ropeDim), t * dq + o.qkDim);
    vp.set(o.v.subarray(r * o.vRow + g * o.vHead, r * o.vRow + g * o.vHead + o.vDim), t * o.vDim);
  }
}

/** Softmax of one score row over keys [lo, t] of the block's [k0, ...) keys (float64 sums), written back as probabilities (0 elsewhere). */
function softmaxRow(srow: Float32Array, k0: number, lo: number, t: number, scale: number): void {
  let mx = -Infinity;
  for (let u = lo - k0; u <= t - k0; u++) mx = Math.max(mx, srow[u] * scale);
  let z = 0;
  for (let u = lo - k0; u <= t - k0; u++) {
    const e = Math.exp(srow[u] * scale - mx);
    srow[u] = e;
    z += e;
  }
  const inv = 1 / z;
  for (let u = lo - k0; u <= t - k0; u++) srow[u] *= inv;
  srow.fill(0, 0, lo - k0);
  srow.fill(0, t + 1 - k0);
}

/** Causal attention of the listed queries over every key up to each: out [nSeq * perWindow, nHeads * vDim]. */
function attendListed(o: Operands, at: QueryRows, nSeq: number, seqLen: number, out: Float32Array): void {
  const dq = o.qkDim + o.ropeDim;
  const m = at.perWindow;
  const grp = o.nHeads / o.nKvHeads;
  const kp = new Float32Array(seqLen * dq);
  const vp = new Float32Array(seqLen * o.vDim);
  const qb = new Float32Array(BLOCK * dq);
  const sb = new Float32Array(BLOCK * seqLen);
  const ob = new Float32Array(BLOCK * o.vDim);
  for (let s = 0; s < nSeq; s++)
    for (let g = 0; g < o.nKvHeads; g++) {
      packUnit(o, s, g, seqLen, kp, vp);
      for (let h = g * grp; h < (g + 1) * grp; h++)
        for (let b0 = 0; b0 < m; b0 += BLOCK) {
          const nb = Math.min(BLOCK, m - b0);
          const first = at.positions[s * m + b0];
          const last = at.positions[s * m + b0 + nb - 1];
          const k0 = o.window > 0 ? Math.max(0, first - o.window + 1) : 0;
          const L = last + 1 - k0;
          for (let i = 0; i < nb; i++) {
            const r = s * m + b0 + i;
            qb.set(o.q.subarray(r * o.qRow + h * o.qHead, r * o.qRow + h * o.qHead + dq), i * dq);
          }
          const sv = sb.subarray(0, nb * L);
          gemm(qb.subarray(0, nb * dq), kp.subarray(k0 * dq, (k0 + L) * dq), sv, nb, L, dq, { transB: true });
          for (let i = 0; i < nb; i++) {
            const t = at.positions[s * m + b0 + i];
            softmaxRow(sv.subarray(i * L, (i + 1) * L), k0, o.window > 0 ? Math.max(k0, t - o.window + 1) : k0, t, o.scale);
          }
          const ov = ob.subarray(0, nb * o.vDim);
          gemm(sv, vp.subarray(k0 * o.vDim, (k0 + L) * o.vDim), ov, nb, o.vDim, L);
          for (let i = 0; i < nb; i++) out.set(ov.subarray(i * o.vDim, (i + 1) * o.vDim), (s * m + b0 + i) * o.nHeads * o.vDim + h * o.vDim);
        }
    }
}

/**
 * Attention output after o_proj (plus its bias) at the listed query rows of normalised inputs
 * `x` [nSeq*seqLen, hidden] of layer `w` read as `spec`: [nSeq * perWindow, hidden], row i the
 * output at position `at.positions[i]` of window floor(i / perWindow).
 */
export async function attentionAtQueries(spec: ModelSpec, w: LayerWeights, x: Float32Array, nSeq: number, seqLen: number, at: QueryRows): Promise<Float32Array> {
  const H = spec.hiddenSize;
  const rows = nSeq * seqLen;
  const { pos, rows: qRows } = rowIndex(at, seqLen);
  const nq = qRows.length;
  const rope = ropeFor(spec, seqLen - 1);
  const allPos = new Int32Array(rows);
  for (let r = 0; r < rows; r++) allPos[r] = r % seqLen;
  const Kq = hostKernels(w, new Workspace(), pos, rope); // bound to the listed queries' positions
  const Kk = hostKernels(w, new Workspace(), allPos, rope); // bound to every row's position
  const xq = new Float32Array(nq * H);
  await Kq.gatherRows(x, qRows, H, xq);
  const operands = spec.mla ? await mlaOperands(spec, Kq, Kk, x, xq, rows, nq) : await gqaOperands(spec, Kq, Kk, x, xq, rows, nq);
  operands.window = slidingWindowOf(spec, w.layer);
  const ao = new Float32Array(nq * operands.nHeads * operands.vDim);
  attendListed(operands, at, nSeq, seqLen, ao);
  const out = new Float32Array(nq * H);
  await Kq.linear(ao, 'self_attn.o_proj.weight', 'self_attn.o_proj.bias', out, { rows: nq, inDim: operands.nHeads * operands.vDim, outDim: H });
  return out;
}

type Kernels = ReturnType<typeof hostKernels>;

async function gqaOperands(spec: ModelSpec, Kq: Kernels, Kk: Kernels, x: Float32Array, xq: Float32Array, rows: number, nq: number): Promise<Operands> {
  const { hiddenSize: H, numHeads: nH, numKvHeads: G, headDim: d } = spec;
  const q = new Float32Array(nq * nH * d);
  const k = new Float32Array(rows * G * d);
  const v = new Float32Array(rows * G * d);
  await Kq.linear(xq, 'self_attn.q_proj.weight', 'self_attn.q_proj.bias', q, { rows: nq, inDim: H, outDim: nH * d });
  await Kk.linear(x, 'self_attn.k_proj.weight', 'self_attn.k_proj.bias', k, { rows, inDim: H, outDim: G * d });
  await Kk.linear(x, 'self_attn.v_proj.weight', 'self_attn.v_proj.bias', v, { rows, inDim: H, outDim: G * d });
  if (spec.qkNorm) {
    await Kq.rmsNorm(q, 'self_attn.q_norm.weight', q, { rows: nq * nH, dim: d, eps: spec.rmsNormEps });
    await Kk.rmsNorm(k, 'self_attn.k_norm.weight', k, { rows: rows * G, dim: d, eps: spec.rmsNormEps });
  }
  const ro = { headStride: d, rotDim: Kq.rope.rotDim, scale: Kq.rope.attentionScaling };
  await Kq.ropeAt(q, { ...ro, rows: nq, rowStride: nH * d, nHeads: nH });
  await Kk.ropeAt(k, { ...ro, rows, rowStride: G * d, nHeads: G });
  return {
    q, qRow: nH * d, qHead: d, k, kRow: G * d, kHead: d, v, vRow: G * d, vHead: d, kRope: null, kRopeRow: 0,
    nHeads: nH, nKvHeads: G, qkDim: d, ropeDim: 0, vDim: d, scale: 1 / Math.sqrt(d), window: 0,
  };
}

async function mlaOperands(spec: ModelSpec, Kq: Kernels, Kk: Kernels, x: Float32Array, xq: Float32Array, rows: number, nq: number): Promise<Operands> {
  const m = spec.mla!;
  const nH = spec.numHeads;
  const { kvLoraRank: R, qkNopeHeadDim: dn, qkRopeHeadDim: dr, vHeadDim: dv } = m;
  const q = new Float32Array(nq * nH * (dn + dr));
  await mlaQueriesGraph(Kq, spec, xq, nq, q);
  const kva = new Float32Array(rows * (R + dr));
  await mlaCacheRowsGraph(Kk, spec, x, rows, kva);
  const kvb = new Float32Array(rows * nH * (dn + dv));
  await Kk.linear(kva, 'self_attn.kv_b_proj.weight', null, kvb, { rows, inDim: R, outDim: nH * (dn + dv), xStride: R + dr });
  return {
    q, qRow: nH * (dn + dr), qHead: dn + dr, k: kvb, kRow: nH * (dn + dv), kHead: dn + dv, v: kvb.subarray(dn), vRow: nH * (dn + dv), vHead: dn + dv,
    kRope: kva.subarray(R), kRopeRow: R + dr, nHeads: nH, nKvHeads: nH, qkDim: dn, ropeDim: dr, vDim: dv, scale: mlaSoftmaxScale(spec), window: 0,
  };
}

/** The rows `at` lists of the full attention output (engine attentionForward): the reference of {@link attentionAtQueries}. */
export async function attentionRowsFull(spec: ModelSpec, w: LayerWeights, x: Float32Array, nSeq: number, seqLen: number, at: QueryRows): Promise<Float32Array> {
  return gatherListed(await attentionForward(spec, w, x, nSeq, seqLen), at, seqLen, spec.hiddenSize);
}

/** Rows `at` lists of `all` ([nSeq*seqLen, dim]). */
export function gatherListed(all: Float32Array, at: QueryRows, seqLen: number, dim: number): Float32Array {
  const { rows } = rowIndex(at, seqLen);
  const out = new Float32Array(rows.length * dim);
  for (let i = 0; i < rows.length; i++) out.set(all.subarray(rows[i] * dim, (rows[i] + 1) * dim), i * dim);
  return out;
}
