/**
 * How far each head looks: from the original layer's attention on held-out calibration
 * windows, the distribution p_h(delta) of attention mass over relative distances, and
 * from it E_h[cos(f_i delta)] for every RoPE frequency f_i. A logit term that loses its
 * rotation (NoPE) is best replaced, in least squares, by its value at delta = 0 times this
 * expected cosine: ~1 for slow frequencies, ~0 for fast ones whose rotation averages out.
 */
import type { ModelSpec } from '../model/spec-types.js';
import { ropeFor } from '../engine/attention.js';
import { gemm } from '../linalg.js';
import type { GqaAttention } from './attention-weights.js';

/** Attention-mass distribution over distances per head, and the expected cosines. */
export interface DistanceProfile {
  /** per head: p(delta) for delta = 0..seqLen-1 (sums to 1) */
  mass: Float64Array[];
  /** per head: E[cos(f_i delta)] for i < headDim / 2 */
  cos: Float64Array[];
  /**
   * per head: E[sin(f_i delta)] for i < headDim / 2. With the cosines, the expected
   * rotation E[R(-f_i delta)] = [[cos, sin], [-sin, cos]] that a query at t applies to a
   * key at s = t - delta, as seen through the (re, im) pair of frequency i.
   */
  sin: Float64Array[];
}

function project(x: Float32Array, rows: number, hid: number, w: Float32Array, b: Float32Array | null | undefined, out: number): Float32Array {
  const y = new Float32Array(rows * out);
  gemm(x.subarray(0, rows * hid), w, y, rows, out, hid, { transB: true });
  if (b) for (let r = 0; r < rows; r++) for (let j = 0; j < out; j++) y[r * out + j] += b[j];
  return y;
}

function rotate(a: Float32Array, rows: number, heads: number, d: number, seqLen: number, inv: Float32Array, scale: number): void {
  const half = d / 2;
  for (let r = 0; r < rows; r++) {
    const pos = r % seqLen;
    for (let h = 0; h < heads; h++) {
      const o = (r * heads + h) * d;
      for (let i = 0; i < half; i++) {
        const ang = pos * inv[i];
        const c = Math.cos(ang) * scale;
        const s = Math.sin(ang) * scale;
        const x0 = a[o + i];
        const x1 = a[o + i + half];
        a[o + i] = x0 * c - x1 * s;
        a[o + i + half] = x1 * c + x0 * s;
      }
    }
  }
}

/** E[cos(f delta)] and E[sin(f delta)] under the distance distribution `mass` (delta = 0..). */
export function expectedRotation(mass: Float64Array, f: number): [number, number] {
  let c = 0;
  let s = 0;
  for (let delta = 0; delta < mass.length; delta++) {
    c += mass[delta] * Math.cos(f * delta);
    s += mass[delta] * Math.sin(f * delta);
  }
  return [c, s];
}

/** Adds query t's attention over keys 0..t (head h, KV head g) to `mass` by distance. */
function accumulateQuery(
  q: Float32Array,
  k: Float32Array,
  at: { base: number; t: number; h: number; g: number; H: number; G: number; d: number },
  scores: Float64Array,
  mass: Float64Array,
  weight = 1,
): void {
  const { base, t, h, g, H, G, d } = at;
  const scale = 1 / Math.sqrt(d);
  const qo = ((base + t) * H + h) * d;
  let mx = -Infinity;
  for (let u = 0; u <= t; u++) {
    const ko = ((base + u) * G + g) * d;
    let dot = 0;
    for (let i = 0; i < d; i++) dot += q[qo + i] * k[ko + i];
    scores[u] = dot * scale;
    if (scores[u] > mx) mx = scores[u];
  }
  let z = 0;
  for (let u = 0; u <= t; u++) {
    scores[u] = Math.exp(scores[u] - mx);
    z += scores[u];
  }
  const wz = weight / z;
  for (let u = 0; u <= t; u++) mass[t - u] += weight === 1 ? scores[u] / z : scores[u] * wz;
}

/** Which windows and queries {@link distanceProfile} reads. */
export interface ProfileSampling {
  /** at most this many windows (default 4) */
  maxWindows?: number;
  /**
   * every `queryStride`-th query position of a window (the last position always among them;
   * default 1: every query). Long windows sample queries so the cost stays near
   * (queries x window) instead of window^2, with every distance still represented.
   */
  queryStride?: number;
  /** weight of each query position's attention (length seqLen; default: every query the same) */
  queryWeights?: Float64Array;
}

/**
 * Measures the distance profile of a GQA layer on `nSeq` windows of `seqLen` normalised
 * attention inputs `x` (held-out calibration windows), from the queries `sampling` picks.
 */
export function distanceProfile(spec: ModelSpec, w: GqaAttention, x: Float32Array, nSeq: number, seqLen: number, sampling: ProfileSampling = {}): DistanceProfile {
  const { hiddenSize: hid, numHeads: H, numKvHeads: G, headDim: d } = spec;
  const n = Math.min(nSeq, sampling.maxWindows ?? 4);
  const stride = Math.max(1, Math.floor(sampling.queryStride ?? 1));
  const rows = n * seqLen;
  const tables = ropeFor(spec, seqLen - 1);
  const inv = tables.invFreq;
  const q = project(x, rows, hid, w.wq, w.bq, H * d);
  const k = project(x, rows, hid, w.wk, w.bk, G * d);
  rotate(q, rows, H, d, seqLen, inv, tables.attentionScaling);
  rotate(k, rows, G, d, seqLen, inv, tables.attentionScaling);
  const mass = Array.from({ length: H }, () => new Float64Array(seqLen));
  const grp = H / G;
  const scores = new Float64Array(seqLen);
  for (let s = 0; s < n; s++)
    for (let h = 0; h < H; h++)
      for (let t = (seqLen - 1) % stride; t < seqLen; t += stride)
        accumulateQuery(q, k, { base: s * seqLen, t, h, g: Math.floor(h / grp), H, G, d }, scores, mass[h], sampling.queryWeights?.[t] ?? 1);
  const sin: Float64Array[] = [];
  const cos = mass.map((m) => {
    let tot = 0;
    for (const v of m) tot += v;
    for (let i = 0; i < m.length; i++) m[i] /= tot;
    const c = new Float64Array(d / 2);
    const sn = new Float64Array(d / 2);
    for (let i = 0; i < d / 2; i++) [c[i], sn[i]] = expectedRotation(m, inv[i]);
    sin.push(sn);
    return c;
  });
  return { mass, cos, sin };
}
