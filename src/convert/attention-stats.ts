/**
 * Attention-aware input statistics of one GQA layer (calibration windows only).
 *
 * What the converted layer must preserve is read through the original attention
 * probabilities p_h(t, s) of head h (query t, key s):
 * - values enter the output only as attended values sum_s p_h(t, s) v(s) = V xbar_h(t),
 *   with the attended input xbar_h(t) = sum_s p_h(t, s) x(s); their error metric is the
 *   second moment E_t[xbar_h xbar_h^T] (not E[x x^T]);
 * - a key error e(s) shifts the logits of query t by q_t . e(s); to second order the
 *   attention output (and the KL of the probabilities) only sees the spread of those
 *   shifts under p_h(t, .), so key errors are measured by the attention-weighted,
 *   per-query-centred second moment E_t[sum_s p_h(t, s) (x(s) - xbar_h(t))(x(s) - xbar_h(t))^T]
 *   = E_t[sum_s p_h(t, s) x(s) x(s)^T] - E_t[xbar_h xbar_h^T]. A key error that is the same
 *   for every key (e.g. in a bias) changes nothing, and it gets no weight.
 * With a constant 1 appended to x (`augmented`), the same matrices carry the affine
 * (bias) terms. The heads are pooled as they are used: key spreads weighted by the heads'
 * query energy tr E[q_h q_h^T] (what a key error costs grows with the queries reading it),
 * attended moments by |W_o,h|_F^2 (what a value error costs grows with o_proj), so only two
 * n x n matrices are kept. Accumulated in float64.
 */
import type { ModelSpec } from '../model/spec-types.js';
import { ropeFor, slidingWindowOf } from '../engine/attention.js';
import { native } from '../native/binding.js';
import { gemm, syrkAccumulate } from '../linalg.js';
import { type Mat, fromArray, matmul } from '../tensor/mat.js';
import type { GqaAttention } from './attention-weights.js';
import type { InputMoments } from '../tensor/moments.js';

/** Attention-aware second moments of the (optionally augmented) attention input, pooled over heads. */
export interface AttentionMoments {
  /** input dimension n: hidden size, + 1 when augmented */
  dim: number;
  /** whether a constant 1 was appended to x (last row/column: the affine terms) */
  augmented: boolean;
  /** sum_h valueWeights[h] E_t[xbar_h xbar_h^T], n x n */
  attended: Mat;
  /** sum_h keyWeights[h] E_t[sum_s p_h(t, s) (x(s) - xbar_h(t))(x(s) - xbar_h(t))^T], n x n */
  keySpread: Mat;
  /** the head weights used (each set sums to 1) */
  keyWeights: number[];
  valueWeights: number[];
  /** calibration windows and query tokens used */
  windows: number;
  tokens: number;
  /** every stride-th query of a window enters the attended moments (see rowBudget) */
  stride: number;
}

/**
 * Head weights of the pooled moments, each normalised to sum 1: keys by the query energy
 * tr E[q_h q_h^T] (from the input moments), values by |W_o,h|_F^2.
 */
export function headWeights(spec: ModelSpec, w: GqaAttention, m: InputMoments): { keyWeights: number[]; valueWeights: number[] } {
  const { hiddenSize: hid, numHeads: H, headDim: d } = spec;
  const k: number[] = [];
  const v: number[] = [];
  for (let h = 0; h < H; h++) {
    // tr E[q q^T] = tr(W S W^T) + 2 b.(W mu) + |b|^2
    const wh = fromArray(w.wq.subarray(h * d * hid, (h + 1) * d * hid), d, hid);
    const ws = matmul(wh, m.second);
    let e = 0;
    for (let i = 0; i < ws.data.length; i++) e += ws.data[i] * wh.data[i];
    if (w.bq)
      for (let i = 0; i < d; i++) {
        const b = w.bq[h * d + i];
        let wm = 0;
        for (let j = 0; j < hid; j++) wm += wh.data[i * hid + j] * m.mean[j];
        e += 2 * b * wm + b * b;
      }
    k.push(Math.max(e, 1e-300));
    let o = 0;
    for (let i = 0; i < hid; i++) for (let j = h * d; j < (h + 1) * d; j++) o += w.wo[i * H * d + j] ** 2;
    v.push(Math.max(o, 1e-300));
  }
  const norm = (a: number[]) => {
    const t = a.reduce((x, y) => x + y, 0);
    return a.map((x) => x / t);
  };
  return { keyWeights: norm(k), valueWeights: norm(v) };
}

/** Queries and keys of `rows` inputs (windows of `S` tokens at positions 0..S-1), with RoPE applied. */
async function ropedQueriesKeys(spec: ModelSpec, w: GqaAttention, xs: Float32Array, rows: number, S: number): Promise<{ q: Float32Array; k: Float32Array }> {
  const { hiddenSize: hid, numHeads: H, numKvHeads: G, headDim: d } = spec;
  const q = new Float32Array(rows * H * d);
  const k = new Float32Array(rows * G * d);
  await native.linearAsync(xs, w.wq, q, { rows, inDim: hid, outDim: H * d, bias: w.bq ?? null });
  await native.linearAsync(xs, w.wk, k, { rows, inDim: hid, outDim: G * d, bias: w.bk ?? null });
  const rope = ropeFor(spec, S - 1);
  const pos = new Int32Array(rows);
  for (let r = 0; r < rows; r++) pos[r] = r % S;
  const ro = { headStride: d, rotDim: rope.rotDim, scale: rope.attentionScaling };
  await native.ropeAsync(q, pos, rope.invFreq, { ...ro, rowStride: H * d, nHeads: H });
  await native.ropeAsync(k, pos, rope.invFreq, { ...ro, rowStride: G * d, nHeads: G });
  return { q, k };
}

/**
 * In place: the S x S logits of one head and window -> causal (sliding-window `win` when
 * > 0) softmax probabilities of `scale` x logits, zero outside the window; adds kw x each
 * column's probabilities to `colSum`.
 */
function causalSoftmax(logits: Float32Array, S: number, scale: number, win: number, kw: number, colSum: Float64Array): void {
  for (let t = 0; t < S; t++) {
    const o = t * S;
    const lo = win > 0 ? Math.max(0, t - win + 1) : 0;
    let mx = -Infinity;
    for (let u = lo; u <= t; u++) if (logits[o + u] * scale > mx) mx = logits[o + u] * scale;
    let z = 0;
    for (let u = 0; u < S; u++) {
      if (u < lo || u > t) {
        logits[o + u] = 0;
        continue;
      }
      const e = Math.exp(logits[o + u] * scale - mx);
      logits[o + u] = e;
      z += e;
    }
    for (let u = lo; u <= t; u++) {
      logits[o + u] /= z;
      colSum[u] += kw * logits[o + u];
    }
  }
}

/** Window `s`'s S inputs into `xa` ([S, n], n = hid + 1 with a constant 1 column when augmented). */
function windowInputs(xs: Float32Array, s: number, S: number, hid: number, augmented: boolean, xa: Float32Array): void {
  const n = augmented ? hid + 1 : hid;
  for (let t = 0; t < S; t++) {
    xa.set(xs.subarray((s * S + t) * hid, (s * S + t + 1) * hid), t * n);
    if (augmented) xa[t * n + hid] = 1;
  }
}

/** Row `u` of `src` ([*, n]) times `f` into the same row of `dst`. */
function scaleRow(src: Float32Array, dst: Float32Array, u: number, n: number, f: number): void {
  for (let j = 0; j < n; j++) dst[u * n + j] = src[u * n + j] * f;
}

/**
 * Measures {@link AttentionMoments} of a GQA layer from the original attention on the
 * first `min(nSeq, maxWindows)` windows of normalised attention inputs `x`
 * ([nSeq * seqLen, hidden], windows of `seqLen` tokens at positions 0..seqLen-1).
 * @param layer decoder layer index (for sliding-window layers)
 * @param weights head weights of the pooled moments ({@link headWeights})
 * @param rowBudget bound on the (head, query) rows of the attended moments: when heads x
 *   windows x seqLen exceeds it, every `stride`-th query of each window is used (offset per
 *   window), keeping the cost near that of the input statistics (default nSeq x seqLen)
 */
export async function attentionMoments(
  spec: ModelSpec,
  w: GqaAttention,
  x: Float32Array,
  nSeq: number,
  seqLen: number,
  layer: number,
  augmented: boolean,
  weights: { keyWeights: number[]; valueWeights: number[] },
  maxWindows = 32,
  rowBudget = nSeq * seqLen,
): Promise<AttentionMoments> {
  const { hiddenSize: hid, numHeads: H, numKvHeads: G, headDim: d } = spec;
  const nWin = Math.min(nSeq, maxWindows);
  const S = seqLen;
  const stride = Math.max(1, Math.ceil((H * S * nWin) / Math.max(1, rowBudget)));
  const n = augmented ? hid + 1 : hid;
  const rows = nWin * S;
  if (x.length < rows * hid) throw new Error(`attentionMoments: x has ${x.length} values, needs ${rows} x ${hid}`);
  const xs = x.subarray(0, rows * hid);
  const { q, k } = await ropedQueriesKeys(spec, w, xs, rows, S);
  const win = slidingWindowOf(spec, layer);
  const scale = 1 / Math.sqrt(d);
  const grp = H / G;

  const { keyWeights, valueWeights } = weights;
  if (keyWeights.length !== H || valueWeights.length !== H) throw new Error(`attentionMoments: ${H} head weights expected`);
  const attended = new Float64Array(n * n);
  const weighted = new Float64Array(n * n);
  const attendedK = new Float64Array(n * n); // sum_h keyWeights[h] xbar_h xbar_h^T
  const xa = new Float32Array(S * n); // the window's inputs, augmented
  const qh = new Float32Array(S * d);
  const kg = new Float32Array(S * d);
  const logits = new Float32Array(S * S);
  const maxSampled = Math.ceil(S / stride);
  const pRows = new Float32Array(maxSampled * S);
  const xbar = new Float32Array(maxSampled * n);
  const stackV = new Float32Array(H * maxSampled * n); // rows sqrt(valueWeights[h]) xbar_h(t)
  const stackK = new Float32Array(H * maxSampled * n); // rows sqrt(keyWeights[h]) xbar_h(t)
  const scaledRows = new Float32Array(S * n);
  const colSum = new Float64Array(S); // sum_h keyWeights[h] sum_t p_h(t, s)
  let sampledTokens = 0;
  for (let s = 0; s < nWin; s++) {
    windowInputs(xs, s, S, hid, augmented, xa);
    colSum.fill(0);
    const off = s % stride;
    const m = Math.ceil((S - off) / stride); // sampled queries off, off + stride, ...
    sampledTokens += m;
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / grp);
      for (let t = 0; t < S; t++) {
        qh.set(q.subarray(((s * S + t) * H + h) * d, ((s * S + t) * H + h + 1) * d), t * d);
        kg.set(k.subarray(((s * S + t) * G + g) * d, ((s * S + t) * G + g + 1) * d), t * d);
      }
      gemm(qh, kg, logits, S, S, d, { transB: true });
      const kw = keyWeights[h];
      causalSoftmax(logits, S, scale, win, kw, colSum);
      for (let i = 0; i < m; i++) pRows.set(logits.subarray((off + i * stride) * S, (off + i * stride + 1) * S), i * S);
      gemm(pRows.subarray(0, m * S), xa, xbar.subarray(0, m * n), m, n, S); // xbar = P x (sampled queries)
      const fv = Math.sqrt(valueWeights[h]);
      const fk = Math.sqrt(kw);
      for (let i = 0; i < m * n; i++) {
        stackV[h * m * n + i] = fv * xbar[i];
        stackK[h * m * n + i] = fk * xbar[i];
      }
    }
    // attended moments under the value weights; the key spread subtracts them under the key weights
    syrkAccumulate(attended, stackV.subarray(0, H * m * n), H * m, n);
    syrkAccumulate(attendedK, stackK.subarray(0, H * m * n), H * m, n);
    for (let u = 0; u < S; u++) scaleRow(xa, scaledRows, u, n, Math.sqrt(colSum[u]));
    syrkAccumulate(weighted, scaledRows, S, n);
  }
  const tokens = rows;
  for (let i = 0; i < n * n; i++) {
    attended[i] /= sampledTokens;
    weighted[i] = weighted[i] / tokens - attendedK[i] / sampledTokens;
  }
  const mat = (a: Float64Array): Mat => ({ rows: n, cols: n, data: a });
  return { dim: n, augmented, attended: mat(attended), keySpread: mat(weighted), keyWeights, valueWeights, windows: nWin, tokens, stride };
}

const cache = new WeakMap<object, Promise<AttentionMoments>>();

/**
 * {@link attentionMoments} of the statistics windows, computed once per `key` (an object
 * that lives exactly as long as the layer's statistics, e.g. its layer moments). The
 * moments are augmented when the layer has K or V biases.
 */
export function cachedAttentionMoments(
  key: object,
  spec: ModelSpec,
  w: GqaAttention,
  m: InputMoments,
  x: Float32Array,
  nSeq: number,
  seqLen: number,
  layer: number,
  maxWindows?: number,
): Promise<AttentionMoments> {
  let p = cache.get(key);
  if (!p) {
    p = attentionMoments(spec, w, x, nSeq, seqLen, layer, Boolean(w.bk || w.bv), headWeights(spec, w, m), maxWindows);
    cache.set(key, p);
  }
  return p;
}
