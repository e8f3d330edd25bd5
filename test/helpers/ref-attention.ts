/**
 * Float64 reference attention for tests: the original GQA layer (HF rotate-half RoPE),
 * DeepSeek-V3 MLA attention (transformers' semantics, latent norm optional), and a
 * generic "rotated pairs" form used to check that RoRoPE's rotation alone is exact.
 * Straightforward loops, O(T^2) — for small T only.
 */

/** A pair of dims rotating at angle position * theta. */
export interface RotPair {
  re: number;
  im: number;
  theta: number;
}

/** Rotates v in place at `pos` for each pair. */
export function rotatePairs(v: Float64Array, pairs: RotPair[], pos: number): void {
  for (const p of pairs) {
    const a = pos * p.theta;
    const c = Math.cos(a);
    const s = Math.sin(a);
    const x = v[p.re];
    const y = v[p.im];
    v[p.re] = x * c - y * s;
    v[p.im] = y * c + x * s;
  }
}

/** HF rotate-half pairs of a head of `dim` dims with inverse frequencies invFreq. */
export function headPairs(dim: number, invFreq: ArrayLike<number>, offset = 0): RotPair[] {
  const out: RotPair[] = [];
  for (let i = 0; i < dim / 2; i++) out.push({ re: offset + i, im: offset + i + dim / 2, theta: invFreq[i] });
  return out;
}

/** y[T, out] = x[T, in] W^T + b (W [out, in]). */
export function linear(x: Float64Array, T: number, w: ArrayLike<number>, out: number, inn: number, b?: ArrayLike<number> | null): Float64Array {
  const y = new Float64Array(T * out);
  for (let t = 0; t < T; t++)
    for (let o = 0; o < out; o++) {
      let s = b ? b[o] : 0;
      for (let i = 0; i < inn; i++) s += x[t * inn + i] * w[o * inn + i];
      y[t * out + o] = s;
    }
  return y;
}

/** Causal softmax attention given per-head q [T, dq], k [T, dq], v [T, dv] getters. */
function attend(
  T: number,
  H: number,
  dv: number,
  scale: number,
  q: (h: number, t: number) => Float64Array,
  k: (h: number, t: number) => Float64Array,
  v: (h: number, t: number) => Float64Array,
): Float64Array {
  const out = new Float64Array(T * H * dv);
  for (let h = 0; h < H; h++)
    for (let t = 0; t < T; t++) {
      const qt = q(h, t);
      const sc = new Float64Array(t + 1);
      let mx = -Infinity;
      for (let s = 0; s <= t; s++) {
        const ks = k(h, s);
        let d = 0;
        for (let i = 0; i < qt.length; i++) d += qt[i] * ks[i];
        sc[s] = d * scale;
        mx = Math.max(mx, sc[s]);
      }
      let z = 0;
      for (let s = 0; s <= t; s++) {
        sc[s] = Math.exp(sc[s] - mx);
        z += sc[s];
      }
      for (let s = 0; s <= t; s++) {
        const vs = v(h, s);
        const p = sc[s] / z;
        for (let i = 0; i < dv; i++) out[(t * H + h) * dv + i] += p * vs[i];
      }
    }
  return out;
}

/** Shapes of a GQA layer. */
export interface GqaDims {
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
}

/** Weights of a GQA layer's attention. */
export interface GqaW {
  wq: ArrayLike<number>;
  wk: ArrayLike<number>;
  wv: ArrayLike<number>;
  wo: ArrayLike<number>;
  bq?: ArrayLike<number> | null;
  bk?: ArrayLike<number> | null;
  bv?: ArrayLike<number> | null;
  bo?: ArrayLike<number> | null;
}

/** Original GQA attention output (after o_proj) for one sequence x [T, hidden]. */
export function gqaAttentionRef(x: Float64Array, T: number, dm: GqaDims, w: GqaW, invFreq: ArrayLike<number>): Float64Array {
  const { hidden, heads: H, kvHeads: G, headDim: d } = dm;
  const q = linear(x, T, w.wq, H * d, hidden, w.bq);
  const k = linear(x, T, w.wk, G * d, hidden, w.bk);
  const v = linear(x, T, w.wv, G * d, hidden, w.bv);
  const pairs = headPairs(d, invFreq);
  const get = (a: Float64Array, n: number, h: number, t: number, rot: boolean) => {
    const out = a.slice((t * n + h) * d, (t * n + h + 1) * d);
    if (rot) rotatePairs(out, pairs, t);
    return out;
  };
  const grp = H / G;
  const o = attend(T, H, d, 1 / Math.sqrt(d), (h, t) => get(q, H, h, t, true), (h, t) => get(k, G, Math.floor(h / grp), t, true), (h, t) =>
    get(v, G, Math.floor(h / grp), t, false),
  );
  return linear(o, T, w.wo, hidden, H * d, w.bo);
}

/**
 * GQA attention computed in RoRoPE's rotated latent: q'_h = Rot E_g q_h, k' = Rot k, with
 * the given rotated pairs (angles per pair) — equal to the original when nothing is cut.
 */
export function rotatedAttentionRef(
  x: Float64Array,
  T: number,
  dm: GqaDims,
  w: GqaW,
  rot: ArrayLike<number>,
  pairs: RotPair[],
  qrot: ArrayLike<number> = rot,
): Float64Array {
  const { hidden, heads: H, kvHeads: G, headDim: d } = dm;
  const L = G * d;
  const q = linear(x, T, w.wq, H * d, hidden, w.bq);
  const k = linear(x, T, w.wk, L, hidden, w.bk);
  const v = linear(x, T, w.wv, L, hidden, w.bv);
  const grp = H / G;
  const qLat = (h: number, t: number) => {
    const g = Math.floor(h / grp);
    const out = new Float64Array(L);
    for (let i = 0; i < L; i++) {
      let s = 0;
      for (let j = 0; j < d; j++) s += qrot[i * L + g * d + j] * q[(t * H + h) * d + j];
      out[i] = s;
    }
    rotatePairs(out, pairs, t);
    return out;
  };
  const kLat = (_h: number, t: number) => {
    const out = new Float64Array(L);
    for (let i = 0; i < L; i++) {
      let s = 0;
      for (let j = 0; j < L; j++) s += rot[i * L + j] * k[t * L + j];
      out[i] = s;
    }
    rotatePairs(out, pairs, t);
    return out;
  };
  const o = attend(T, H, d, 1 / Math.sqrt(d), qLat, kLat, (h, t) => v.slice(t * L + Math.floor(h / grp) * d, t * L + (Math.floor(h / grp) + 1) * d));
  return linear(o, T, w.wo, hidden, H * d, w.bo);
}

/** Shapes of a DeepSeek-V3 MLA layer (no q compression). */
export interface MlaDims {
  hidden: number;
  heads: number;
  kvLoraRank: number;
  ropeDim: number;
  nopeDim: number;
  vDim: number;
  /** apply kv_a_layernorm (RMSNorm with eps and weight) */
  latentNorm?: { eps: number; weight: ArrayLike<number> } | null;
}

/** Weights of an MLA layer. */
export interface MlaW {
  qProj: ArrayLike<number>;
  qBias?: ArrayLike<number> | null;
  kvA: ArrayLike<number>;
  kvABias?: ArrayLike<number> | null;
  kvB: ArrayLike<number>;
  oProj: ArrayLike<number>;
  oBias?: ArrayLike<number> | null;
}

/** DeepSeek-V3 attention output for one sequence (rotate-half RoPE on the rope dims). */
export function mlaAttentionRef(x: Float64Array, T: number, dm: MlaDims, w: MlaW, ropeInvFreq: ArrayLike<number>): Float64Array {
  const { hidden, heads: H, kvLoraRank: R, ropeDim: r, nopeDim: dn, vDim: dv } = dm;
  const dq = dn + r;
  const q = linear(x, T, w.qProj, H * dq, hidden, w.qBias);
  const kva = linear(x, T, w.kvA, R + r, hidden, w.kvABias);
  const lat = new Float64Array(T * R);
  for (let t = 0; t < T; t++) {
    let ms = 0;
    for (let i = 0; i < R; i++) ms += kva[t * (R + r) + i] ** 2;
    const inv = dm.latentNorm ? 1 / Math.sqrt(ms / R + dm.latentNorm.eps) : 1;
    for (let i = 0; i < R; i++) lat[t * R + i] = kva[t * (R + r) + i] * inv * (dm.latentNorm ? dm.latentNorm.weight[i] : 1);
  }
  const kv = linear(lat, T, w.kvB, H * (dn + dv), R);
  const pairs = headPairs(r, ropeInvFreq, dn);
  const qh = (h: number, t: number) => {
    const out = q.slice((t * H + h) * dq, (t * H + h + 1) * dq);
    rotatePairs(out, pairs, t);
    return out;
  };
  const kh = (h: number, t: number) => {
    const out = new Float64Array(dq);
    out.set(kv.subarray((t * H + h) * (dn + dv), (t * H + h) * (dn + dv) + dn));
    out.set(kva.subarray(t * (R + r) + R, (t + 1) * (R + r)), dn);
    rotatePairs(out, pairs, t);
    return out;
  };
  const vh = (h: number, t: number) => kv.slice((t * H + h) * (dn + dv) + dn, (t * H + h + 1) * (dn + dv));
  const o = attend(T, H, dv, 1 / Math.sqrt(dq), qh, kh, vh);
  return linear(o, T, w.oProj, hidden, H * dv, w.oBias);
}

/** ||a - b|| / ||b|| */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return Math.sqrt(num / den);
}
