/**
 * Float64 references for the forward-kernel tests: straightforward loops, no blocking,
 * no online softmax — the simplest correct form of each operation.
 */
import { seededRandom } from '../../src/generate-sampling.js';

/** Seeded uniform generator (mulberry32, the one of src/generate-sampling.ts). */
export const rng = seededRandom;

/** n standard-normal float32 values times `scale` (Box-Muller on a seeded generator). */
export function randn(n: number, seed: number, scale = 1): Float32Array {
  const u = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(u() + 1e-12));
    const th = 2 * Math.PI * u();
    out[i] = r * Math.cos(th) * scale;
    if (i + 1 < n) out[i + 1] = r * Math.sin(th) * scale;
  }
  return out;
}

/** max_i |a_i - b_i| / max_i |b_i| */
export function maxRelErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch ${a.length} vs ${b.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / den;
}

/** y[r, o] = sum_i x[r, i] w[o, i] + b[o] in float64. */
export function linearRef(x: ArrayLike<number>, w: ArrayLike<number>, rows: number, inDim: number, outDim: number, b?: ArrayLike<number> | null): Float64Array {
  const y = new Float64Array(rows * outDim);
  for (let r = 0; r < rows; r++)
    for (let o = 0; o < outDim; o++) {
      let s = b ? b[o] : 0;
      for (let i = 0; i < inDim; i++) s += x[r * inDim + i] * w[o * inDim + i];
      y[r * outDim + o] = s;
    }
  return y;
}

/** HF RMSNorm in float64. */
export function rmsNormRef(x: ArrayLike<number>, w: ArrayLike<number> | null, rows: number, dim: number, eps: number): Float64Array {
  const y = new Float64Array(rows * dim);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < dim; i++) ss += x[r * dim + i] ** 2;
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let i = 0; i < dim; i++) y[r * dim + i] = x[r * dim + i] * inv * (w ? w[i] : 1);
  }
  return y;
}

/** Per-row NLL of `targets` under softmax(logits) in float64. */
export function nllRef(logits: ArrayLike<number>, targets: ArrayLike<number>, rows: number, vocab: number): Float64Array {
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    if (targets[r] < 0) continue;
    let mx = -Infinity;
    for (let v = 0; v < vocab; v++) mx = Math.max(mx, logits[r * vocab + v]);
    let s = 0;
    for (let v = 0; v < vocab; v++) s += Math.exp(logits[r * vocab + v] - mx);
    out[r] = mx + Math.log(s) - logits[r * vocab + targets[r]];
  }
  return out;
}

/**
 * Rotate-half RoPE of one head vector (float64) at `pos` with inverse frequencies `inv`.
 * The angle pos * inv is rounded to float32 as transformers' float32 `inv_freq @ position_ids`
 * does (at position ~1000 that rounding alone moves cos/sin by ~3e-5).
 */
export function ropeHalfRef(v: ArrayLike<number>, inv: ArrayLike<number>, pos: number, scale = 1): Float64Array {
  const d = inv.length * 2;
  const h = d / 2;
  const out = new Float64Array(d);
  for (let i = 0; i < h; i++) {
    const a = Math.fround(pos * inv[i]);
    const c = Math.cos(a) * scale;
    const s = Math.sin(a) * scale;
    out[i] = v[i] * c - v[i + h] * s;
    out[i + h] = v[i + h] * c + v[i] * s;
  }
  return out;
}

/** transformers' interleaved RoPE: de-interleave (x.view(d/2, 2).T), then rotate-half. */
export function ropeInterleavedRef(v: ArrayLike<number>, inv: ArrayLike<number>, pos: number, scale = 1): Float64Array {
  const d = inv.length * 2;
  const de = new Float64Array(d);
  for (let i = 0; i < d / 2; i++) {
    de[i] = v[2 * i];
    de[i + d / 2] = v[2 * i + 1];
  }
  return ropeHalfRef(de, inv, pos, scale);
}

/** Layout of dense q/k/v for the attention reference. */
export interface AttnRefDims {
  nSeq: number;
  seqLen: number;
  nHeads: number;
  nKvHeads: number;
  /** q/k dims per head */
  dqk: number;
  dv: number;
  scale: number;
  window?: number;
}

/**
 * Causal attention, full softmax per query in float64. q [rows, H, dqk], k [rows, G, dqk],
 * v [rows, G, dv]; out [rows, H, dv]. Optional kRope [rows, dr] shared by all heads matched
 * against q's extra dims (q then is [rows, H, dqk + dr]).
 */
export function attentionRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  dm: AttnRefDims,
  kRope?: { data: ArrayLike<number>; dim: number },
): Float64Array {
  const { nSeq, seqLen: T, nHeads: H, nKvHeads: G, dqk, dv, scale } = dm;
  const dr = kRope ? kRope.dim : 0;
  const dq = dqk + dr;
  const out = new Float64Array(nSeq * T * H * dv);
  const grp = H / G;
  for (let s = 0; s < nSeq; s++)
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / grp);
      for (let t = 0; t < T; t++) {
        const qr = (s * T + t) * H * dq + h * dq;
        const lo = dm.window ? Math.max(0, t - dm.window + 1) : 0;
        const sc = new Float64Array(t + 1 - lo);
        let mx = -Infinity;
        for (let u = lo; u <= t; u++) {
          const kr = (s * T + u) * G * dqk + g * dqk;
          let d = 0;
          for (let c = 0; c < dqk; c++) d += q[qr + c] * k[kr + c];
          if (kRope) for (let c = 0; c < dr; c++) d += q[qr + dqk + c] * kRope.data[(s * T + u) * dr + c];
          sc[u - lo] = d * scale;
          mx = Math.max(mx, sc[u - lo]);
        }
        let z = 0;
        for (let j = 0; j < sc.length; j++) {
          sc[j] = Math.exp(sc[j] - mx);
          z += sc[j];
        }
        const o = (s * T + t) * H * dv + h * dv;
        for (let u = lo; u <= t; u++) {
          const p = sc[u - lo] / z;
          const vr = (s * T + u) * G * dv + g * dv;
          for (let c = 0; c < dv; c++) out[o + c] += p * v[vr + c];
        }
      }
    }
  return out;
}
