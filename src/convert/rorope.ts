/**
 * RoRoPE with FreqFold (TransMLA, arXiv 2502.07864, section 4), from the math.
 *
 * RoPE rotates the pair (x[i], x[i + d/2]) of every key head by the angle t * f_i (the
 * rotate-half layout of Hugging Face checkpoints). An orthogonal map U that mixes the
 * real components x_{h,i} across heads h — and applies the same U to the imaginary
 * components x_{h,i+d/2} — commutes with that rotation, so q.k is unchanged when both
 * sides are rotated. Per group of `freqfold` adjacent frequencies we take the variables
 * (h, i) of all KV heads and frequencies of the group, form their second moment from the
 * key statistics (real and imaginary parts share the rotation, so their moments add),
 * and rotate onto its principal directions. The leading freqfold / collapse directions
 * of each group keep RoPE (collapse = headDim / ropeDim): the a-th kept direction of the
 * group starting at frequency g takes frequency g + a * collapse, i.e. DeepSeek's RoPE
 * pair j = g / collapse + a of a rope head of ropeDim dims (every collapse-th original
 * frequency). All other directions become position-free (NoPE). With freqfold = 1
 * nothing is approximated before the NoPE directions lose their rotation.
 *
 * Query-aware selection (gqa2mla): any invertible T acting identically on the real and
 * imaginary parts also commutes with RoPE, as long as queries get T^{-T}:
 * (T^{-T} q).(T k) = q.k. Given the group's key moment A and query moment B (summed over
 * the query heads that read the group), T = V^T A^{-1/2} with A^{1/2} B A^{1/2} = V L V^T
 * makes both sides diagonal (T A T^T = I, T^{-T} B T^{-1} = L), so direction a carries
 * logit energy L_a = E[q'_a^2] E[k'_a^2], and keeping the largest L_a keeps RoPE where
 * the attention logits need it most.
 */
import { symEigh as eigh } from '../tensor/mat.js';
import { type Mat, zeros } from '../tensor/mat.js';

/** The orthogonal rotation of the merged key latent (nKv * headDim dims). */
export interface RopeRotation {
  /** Query-side map S = T^{-T} (equal to `rot` when the rotation is orthogonal). */
  qrot: Mat;
  /**
   * L x L orthogonal matrix acting on the concatenated pre-RoPE keys. Rows [0, ropeDim)
   * are the RoPE part in rotate-half order (row j and row j + ropeDim/2 form pair j, which
   * rotates at original frequency index j * collapse); rows [ropeDim, L) are NoPE.
   */
  rot: Mat;
  ropeDim: number;
  freqfold: number;
  /** Eigenvalues of every group, each group's sorted descending, groups in order. */
  spectrum: number[][];
  /** Share of the selection criterion kept in the RoPE part (key variance, or logit energy when query-aware). */
  varianceKept: number;
  /**
   * Every rotated pair before truncation: rows [re, im] and the original frequency index
   * they rotate with (for NoPE pairs: the first frequency of their group, exact when
   * freqfold = 1). Used to check that the rotation alone changes nothing.
   */
  pairs: Array<{ re: number; im: number; freq: number }>;
  /**
   * For every NoPE pair: the share of its key-side direction at each original frequency
   * of its group (weights sum to 1). Used to shrink position-free logit terms by the
   * expected cosine of their lost rotation.
   */
  nopeFreqWeights: Array<{ re: number; im: number; freqs: number[]; weights: number[] }>;
}

/**
 * Computes the RoRoPE rotation from the keys' second moment.
 * @param keyMoment E[k k^T] of the pre-RoPE keys, L x L with L = nKv * headDim.
 * @param queryMoment when given (L x L, the query heads' moments summed into their KV
 *   group's block), the selection is query-aware (see the module comment).
 */
export function roropeRotation(
  keyMoment: Mat,
  nKv: number,
  headDim: number,
  ropeDim: number,
  freqfold: number,
  queryMoment?: Mat,
): RopeRotation {
  const L = nKv * headDim;
  const half = headDim / 2;
  const collapse = headDim / ropeDim;
  if (keyMoment.rows !== L || keyMoment.cols !== L) throw new Error(`key moment is ${keyMoment.rows}x${keyMoment.cols}, expected ${L}x${L}`);
  if (!Number.isInteger(collapse) || freqfold % collapse !== 0 || half % freqfold !== 0)
    throw new Error(`freqfold ${freqfold} must be a multiple of headDim/ropeDim = ${collapse} dividing headDim/2 = ${half}`);
  const keep = freqfold / collapse;
  const nv = nKv * freqfold;
  const rot = zeros(L, L);
  const qrot = queryMoment ? zeros(L, L) : rot;
  const spectrum: number[][] = [];
  let nopeRow = ropeDim;
  const pairs: Array<{ re: number; im: number; freq: number }> = [];
  const nopeFreqWeights: RopeRotation['nopeFreqWeights'] = [];
  let kept = 0;
  let total = 0;
  const C = keyMoment.data;
  for (let g0 = 0; g0 < half; g0 += freqfold) {
    // variable v = h * freqfold + f  <->  real dim h*headDim + g0 + f, imaginary dim + half
    const real = new Int32Array(nv);
    for (let h = 0; h < nKv; h++) for (let f = 0; f < freqfold; f++) real[h * freqfold + f] = h * headDim + g0 + f;
    const G = groupMoment(C, L, real, half);
    let values: Float64Array;
    let vectors: Float64Array; // nv x nv, column c = key-side direction c
    let qvectors: Float64Array; // column c = query-side direction c
    if (!queryMoment) {
      ({ values, vectors } = eigh(G, nv));
      qvectors = vectors;
    } else {
      ({ values, vectors, qvectors } = jointDirections(G, groupMoment(queryMoment.data, L, real, half), nv));
    }
    spectrum.push(Array.from(values));
    for (let c = 0; c < nv; c++) {
      total += values[c];
      let rowRe: number;
      let rowIm: number;
      if (c < keep) {
        const j = g0 / collapse + c;
        rowRe = j;
        rowIm = j + ropeDim / 2;
        kept += values[c];
        pairs.push({ re: rowRe, im: rowIm, freq: j * collapse });
      } else {
        rowRe = nopeRow++;
        rowIm = nopeRow++;
        pairs.push({ re: rowRe, im: rowIm, freq: g0 });
        nopeFreqWeights.push({ re: rowRe, im: rowIm, ...directionFreqWeights(vectors, nv, c, freqfold, g0) });
      }
      for (let v = 0; v < nv; v++) {
        const u = vectors[v * nv + c];
        rot.data[rowRe * L + real[v]] = u;
        rot.data[rowIm * L + real[v] + half] = u;
        if (queryMoment) {
          const uq = qvectors[v * nv + c];
          qrot.data[rowRe * L + real[v]] = uq;
          qrot.data[rowIm * L + real[v] + half] = uq;
        }
      }
    }
  }
  return { rot, qrot, ropeDim, freqfold, spectrum, varianceKept: total > 0 ? kept / total : 1, pairs, nopeFreqWeights };
}

/** The original frequencies g0..g0+freqfold-1 of direction `c` (column of `vectors`, nv x nv) and the share of its energy on each. */
function directionFreqWeights(vectors: Float64Array, nv: number, c: number, freqfold: number, g0: number): { freqs: number[]; weights: number[] } {
  const wts = new Array<number>(freqfold).fill(0);
  let tot = 0;
  for (let v = 0; v < nv; v++) {
    const u2 = vectors[v * nv + c] ** 2;
    wts[v % freqfold] += u2;
    tot += u2;
  }
  return { freqs: Array.from({ length: freqfold }, (_, f) => g0 + f), weights: wts.map((w) => (tot > 0 ? w / tot : 1 / freqfold)) };
}

/** The group's moment over its variables: real-real plus imaginary-imaginary blocks. */
function groupMoment(C: Float64Array, L: number, real: Int32Array, half: number): Float64Array {
  const nv = real.length;
  const G = new Float64Array(nv * nv);
  for (let a = 0; a < nv; a++)
    for (let b = 0; b < nv; b++) G[a * nv + b] = C[real[a] * L + real[b]] + C[(real[a] + half) * L + real[b] + half];
  return G;
}

/**
 * Simultaneous diagonalization of the key moment A and query moment B: returns the
 * logit energies (descending) and, as columns, the key-side rows of T = V^T A^{-1/2} and
 * the query-side rows of S = V^T A^{1/2} = T^{-T}. Directions where A vanishes (no key
 * energy) are regularized at 1e-12 of A's largest eigenvalue.
 */
function jointDirections(A: Float64Array, B: Float64Array, nv: number): { values: Float64Array; vectors: Float64Array; qvectors: Float64Array } {
  const ea = eigh(A, nv);
  const floor = Math.max(ea.values[0], 1e-300) * 1e-12;
  const sq = new Float64Array(nv * nv); // A^{1/2}
  const isq = new Float64Array(nv * nv); // A^{-1/2}
  for (let i = 0; i < nv; i++)
    for (let j = 0; j < nv; j++) {
      let s1 = 0;
      let s2 = 0;
      for (let c = 0; c < nv; c++) {
        const lam = Math.max(ea.values[c], floor);
        const p = ea.vectors[i * nv + c] * ea.vectors[j * nv + c];
        s1 += p * Math.sqrt(lam);
        s2 += p / Math.sqrt(lam);
      }
      sq[i * nv + j] = s1;
      isq[i * nv + j] = s2;
    }
  const M = mul(mul(sq, B, nv), sq, nv);
  for (let i = 0; i < nv; i++)
    for (let j = i + 1; j < nv; j++) {
      const v = 0.5 * (M[i * nv + j] + M[j * nv + i]);
      M[i * nv + j] = v;
      M[j * nv + i] = v;
    }
  const em = eigh(M, nv);
  // key-side direction c: column c of A^{-1/2} V ; query side: column c of A^{1/2} V
  return { values: em.values, vectors: mul(isq, em.vectors, nv), qvectors: mul(sq, em.vectors, nv) };
}

function mul(a: Float64Array, b: Float64Array, n: number): Float64Array {
  const c = new Float64Array(n * n);
  for (let i = 0; i < n; i++)
    for (let k = 0; k < n; k++) {
      const v = a[i * n + k];
      if (v === 0) continue;
      for (let j = 0; j < n; j++) c[i * n + j] += v * b[k * n + j];
    }
  return c;
}

/** Legal freqfold values for a head: multiples of collapse that divide headDim / 2. */
export function freqfoldCandidates(headDim: number, ropeDim: number): number[] {
  const collapse = headDim / ropeDim;
  const out: number[] = [];
  for (let f = collapse; f <= headDim / 2; f += collapse) if ((headDim / 2) % f === 0) out.push(f);
  return out;
}
