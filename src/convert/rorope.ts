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
 */
import { eigh } from '../linalg.js';
import { type Mat, zeros } from './mat.js';

/** The orthogonal rotation of the merged key latent (nKv * headDim dims). */
export interface RopeRotation {
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
  /** Share of the keys' second moment kept in the RoPE part. */
  varianceKept: number;
  /**
   * Every rotated pair before truncation: rows [re, im] and the original frequency index
   * they rotate with (for NoPE pairs: the first frequency of their group, exact when
   * freqfold = 1). Used to check that the rotation alone changes nothing.
   */
  pairs: Array<{ re: number; im: number; freq: number }>;
}

/**
 * Computes the RoRoPE rotation from the keys' second moment.
 * @param keyMoment E[k k^T] of the pre-RoPE keys, L x L with L = nKv * headDim.
 */
export function roropeRotation(keyMoment: Mat, nKv: number, headDim: number, ropeDim: number, freqfold: number): RopeRotation {
  const L = nKv * headDim;
  const half = headDim / 2;
  const collapse = headDim / ropeDim;
  if (keyMoment.rows !== L || keyMoment.cols !== L) throw new Error(`key moment is ${keyMoment.rows}x${keyMoment.cols}, expected ${L}x${L}`);
  if (!Number.isInteger(collapse) || freqfold % collapse !== 0 || half % freqfold !== 0)
    throw new Error(`freqfold ${freqfold} must be a multiple of headDim/ropeDim = ${collapse} dividing headDim/2 = ${half}`);
  const keep = freqfold / collapse;
  const nv = nKv * freqfold;
  const rot = zeros(L, L);
  const spectrum: number[][] = [];
  let nopeRow = ropeDim;
  const pairs: Array<{ re: number; im: number; freq: number }> = [];
  let kept = 0;
  let total = 0;
  const C = keyMoment.data;
  for (let g0 = 0; g0 < half; g0 += freqfold) {
    // variable v = h * freqfold + f  <->  real dim h*headDim + g0 + f, imaginary dim + half
    const real = new Int32Array(nv);
    for (let h = 0; h < nKv; h++) for (let f = 0; f < freqfold; f++) real[h * freqfold + f] = h * headDim + g0 + f;
    const G = new Float64Array(nv * nv);
    for (let a = 0; a < nv; a++)
      for (let b = 0; b < nv; b++) {
        const ra = real[a];
        const rb = real[b];
        G[a * nv + b] = C[ra * L + rb] + C[(ra + half) * L + rb + half];
      }
    const { values, vectors } = eigh(G, nv);
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
      }
      for (let v = 0; v < nv; v++) {
        const u = vectors[v * nv + c];
        rot.data[rowRe * L + real[v]] = u;
        rot.data[rowIm * L + real[v] + half] = u;
      }
    }
  }
  return { rot, ropeDim, freqfold, spectrum, varianceKept: total > 0 ? kept / total : 1, pairs };
}

/** Legal freqfold values for a head: multiples of collapse that divide headDim / 2. */
export function freqfoldCandidates(headDim: number, ropeDim: number): number[] {
  const collapse = headDim / ropeDim;
  const out: number[] = [];
  for (let f = collapse; f <= headDim / 2; f += collapse) if ((headDim / 2) % f === 0) out.push(f);
  return out;
}
