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
 * nothing is approximated before the NoPE directions lose their rotation. A slot may carry
 * another source frequency than j * collapse (the portable export of a llama3 source moves
 * the blend band's slots to the source frequencies nearest the engine's, src/export/
 * rope-slots.ts): the groups touched are then one per frequency ({@link slotGroups}).
 *
 * Query-aware selection (gqa2mla): any invertible T acting identically on the real and
 * imaginary parts also commutes with RoPE, as long as queries get T^{-T}:
 * (T^{-T} q).(T k) = q.k. Given the group's key moment A and query moment B (summed over
 * the query heads that read the group), T = V^T A^{-1/2} with A^{1/2} B A^{1/2} = V L V^T
 * makes both sides diagonal (T A T^T = I, T^{-T} B T^{-1} = L), so direction a carries
 * logit energy L_a = E[q'_a^2] E[k'_a^2], and keeping the largest L_a keeps RoPE where
 * the attention logits need it most.
 */
import { GqaError } from '../errors.js';
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
 * @param slots the source frequency each RoPE pair (slot) carries (ropeDim / 2 entries,
 *   strictly increasing); default slot j carries j * headDim / ropeDim. See {@link slotGroups}.
 */
export function roropeRotation(
  keyMoment: Mat,
  nKv: number,
  headDim: number,
  ropeDim: number,
  freqfold: number,
  queryMoment?: Mat,
  slots?: ArrayLike<number>,
): RopeRotation {
  const L = nKv * headDim;
  const half = headDim / 2;
  const collapse = headDim / ropeDim;
  if (keyMoment.rows !== L || keyMoment.cols !== L) throw new Error(`key moment is ${keyMoment.rows}x${keyMoment.cols}, expected ${L}x${L}`);
  if (!Number.isInteger(collapse) || freqfold % collapse !== 0 || half % freqfold !== 0)
    throw new Error(`freqfold ${freqfold} must be a multiple of headDim/ropeDim = ${collapse} dividing headDim/2 = ${half}`);
  const rot = zeros(L, L);
  const qrot = queryMoment ? zeros(L, L) : rot;
  const spectrum: number[][] = [];
  let nopeRow = ropeDim;
  const pairs: Array<{ re: number; im: number; freq: number }> = [];
  const nopeFreqWeights: RopeRotation['nopeFreqWeights'] = [];
  let kept = 0;
  let total = 0;
  const C = keyMoment.data;
  for (const grp of slotGroups(half, ropeDim, freqfold, slots)) {
    const nf = grp.freqs.length;
    const nv = nKv * nf;
    // variable v = h * nf + f  <->  real dim h*headDim + freqs[f], imaginary dim + half
    const real = new Int32Array(nv);
    for (let h = 0; h < nKv; h++) for (let f = 0; f < nf; f++) real[h * nf + f] = h * headDim + grp.freqs[f];
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
      if (c < grp.slots.length) {
        const j = grp.slots[c];
        rowRe = j;
        rowIm = j + ropeDim / 2;
        kept += values[c];
        pairs.push({ re: rowRe, im: rowIm, freq: grp.slotFreqs[c] });
      } else {
        rowRe = nopeRow++;
        rowIm = nopeRow++;
        pairs.push({ re: rowRe, im: rowIm, freq: grp.freqs[0] });
        nopeFreqWeights.push({ re: rowRe, im: rowIm, ...directionFreqWeights(vectors, nv, c, grp.freqs) });
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

/** The original frequencies `freqs` of direction `c` (column of `vectors`, nv x nv, variables h * freqs.length + f) and the share of its energy on each. */
function directionFreqWeights(vectors: Float64Array, nv: number, c: number, freqs: number[]): { freqs: number[]; weights: number[] } {
  const nf = freqs.length;
  const wts = new Array<number>(nf).fill(0);
  let tot = 0;
  for (let v = 0; v < nv; v++) {
    const u2 = vectors[v * nv + c] ** 2;
    wts[v % nf] += u2;
    tot += u2;
  }
  return { freqs: freqs.slice(), weights: wts.map((w) => (tot > 0 ? w / tot : 1 / nf)) };
}

/** One RoRoPE group: its original frequencies, and the RoPE slots its leading directions take (with the frequency each slot carries). */
export interface SlotGroup {
  freqs: number[];
  slots: number[];
  slotFreqs: number[];
}

/**
 * The RoRoPE groups. By default (slot j carries frequency j * collapse, collapse = headDim /
 * ropeDim) every freqfold adjacent frequencies g0.. form a group whose leading freqfold /
 * collapse directions take slots g0 / collapse + a (the a-th rotating at g0 + a * collapse).
 * When some slots carry other frequencies (`slots`, e.g. llama3's blend band in the portable
 * export, src/export/rope-slots.ts), the freqfold groups that those slots and frequencies
 * touch are replaced, over one contiguous range of groups, by one group per frequency: a
 * frequency some slot carries keeps its leading direction (across the KV heads) in that slot,
 * the others are position-free. Outside that range the groups are the default ones.
 */
export function slotGroups(half: number, ropeDim: number, freqfold: number, slots?: ArrayLike<number>): SlotGroup[] {
  const collapse = (2 * half) / ropeDim;
  const keep = freqfold / collapse;
  const moved: number[] = [];
  if (slots) for (let j = 0; j < ropeDim / 2; j++) if (slots[j] !== j * collapse) moved.push(j);
  let f0 = half;
  let f1 = half;
  if (moved.length) {
    const lo = Math.min(...moved.map((j) => Math.min(j * collapse, slots![j])));
    const hi = Math.max(...moved.map((j) => Math.max(j * collapse, slots![j])));
    f0 = Math.floor(lo / freqfold) * freqfold;
    f1 = (Math.floor(hi / freqfold) + 1) * freqfold;
    for (let j = 0; j < ropeDim / 2; j++) {
      const inside = j * collapse >= f0 && j * collapse < f1;
      const ok = inside ? slots![j] >= f0 && slots![j] < f1 : slots![j] === j * collapse;
      if (!ok || (j > 0 && !(slots![j] > slots![j - 1]))) throw new GqaError('ERR_ROPE_CONFIG', `rope slot map ${Array.from(slots!).join(',')} is not strictly increasing inside one range of frequencies`);
    }
  }
  const groups: SlotGroup[] = [];
  for (let g0 = 0; g0 < half; g0 += freqfold) {
    if (g0 >= f0 && g0 < f1) {
      for (let k = g0; k < g0 + freqfold; k++) {
        const js: number[] = [];
        for (let j = f0 / collapse; j < f1 / collapse; j++) if (slots![j] === k) js.push(j);
        groups.push({ freqs: [k], slots: js, slotFreqs: js.map(() => k) });
      }
      continue;
    }
    const freqs = Array.from({ length: freqfold }, (_, f) => g0 + f);
    const js = Array.from({ length: keep }, (_, a) => g0 / collapse + a);
    groups.push({ freqs, slots: js, slotFreqs: js.map((j) => j * collapse) });
  }
  return groups;
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
