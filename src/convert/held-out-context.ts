/**
 * Held-out windows at the serving context (issue 14, `--context N`): the per-layer choices
 * (freqfold, RoPE directions, balance, metric, refits) are judged on held-out calibration
 * windows of `context` tokens instead of `calibSeqlen`, so that a choice is ranked by how it
 * behaves at the distances the model will be served at.
 *
 * The length defaults to min(max_position_embeddings, 4096), bounded by the calibration
 * text (a window cannot be longer than the text) and by twice the held-out token budget
 * (heldOutSamples x calibSeqlen), so a small calibration set gets short context windows. The windows come from the calibration
 * text only, one per equal stratum of the text's start offsets (seeded), so they spread over
 * the text and do not depend on the statistics windows' draw.
 *
 * convert() draws these windows in its calibrate stage (stages/calibrate.ts), carries their
 * hidden states through every layer beside the statistics windows, and judges every
 * candidate, refit and bias fold on them (stages/context.ts heldOutError); the NoPE distance
 * profile is measured on them too (distance.ts). A context at most `calibSeqlen` keeps the
 * short held-out windows.
 *
 * The judge's error on these windows is position-weighted (layer-ops.ts servedContextWeights)
 * and estimated on `contextQueries` query positions per window (sampleContextQueries: the
 * heavy early positions always, the rest by weight-proportional systematic sampling), each
 * attending to every key before it (sampled-attention.ts): about the cost of the short
 * windows instead of context^2 / 2 query-key pairs per window, with the candidates ranked
 * as every position ranks them (bench/results/context-queries-cpu.json).
 */
import { usageError } from '../errors.js';
import { seededRandom } from './calibration.js';

/** The option as ConvertOptions will carry it. */
export interface ContextOptions {
  /** tokens per held-out window (>= 2); default min(max_position_embeddings, 4096), bounded by the calibration text */
  context?: number;
}

/** Default upper bound of the held-out context. */
export const DEFAULT_MAX_CONTEXT = 4096;

/** A resolved context length and what bounded it. */
export interface ResolvedContext {
  context: number;
  /** 'option' (given), or the bound that set the default */
  from: 'option' | 'max_position_embeddings' | 'default-max' | 'calibration text' | 'held-out budget';
}

/**
 * The held-out context length for a model with `maxPositionEmbeddings` and a calibration
 * text of `calibTokens` tokens (the default also at most 2 x `heldOutTokens` when given). A
 * given `context` longer than the text is a usage error.
 */
export function resolveContext(o: ContextOptions, maxPositionEmbeddings: number, calibTokens: number, heldOutTokens?: number): ResolvedContext {
  if (o.context !== undefined) {
    if (!Number.isInteger(o.context) || o.context < 2) throw usageError('ERR_BAD_OPTION', `context must be an integer >= 2 (got ${o.context})`);
    if (o.context > calibTokens)
      throw usageError('ERR_CALIB_TOO_SHORT', `calibration text has ${calibTokens} tokens, fewer than one held-out window of context = ${o.context}`);
    return { context: o.context, from: 'option' };
  }
  const bounds: Array<[number, ResolvedContext['from']]> = [
    [maxPositionEmbeddings, 'max_position_embeddings'],
    [DEFAULT_MAX_CONTEXT, 'default-max'],
    [calibTokens, 'calibration text'],
  ];
  if (heldOutTokens !== undefined) bounds.push([2 * heldOutTokens, 'held-out budget']);
  let best = bounds[0];
  for (const b of bounds) if (b[0] < best[0]) best = b;
  if (best[0] < 2) throw usageError('ERR_CALIB_TOO_SHORT', `calibration text has ${calibTokens} tokens, fewer than one held-out window of 2`);
  return { context: best[0], from: best[1] };
}

/**
 * Default number of held-out windows of `context` tokens: about the tokens of the short
 * held-out windows (heldOut x seqlen), at least two windows.
 */
export function defaultContextWindows(heldOut: number, seqlen: number, context: number): number {
  return Math.max(2, Math.round((heldOut * seqlen) / context));
}

/** Held-out windows of one length. */
export interface HeldOutWindows {
  /** [heldOut, context] token ids */
  ids: Int32Array;
  heldOut: number;
  context: number;
  offsets: number[];
}

/**
 * Draws `heldOut` windows of `context` tokens: the valid start offsets 0..n-context are cut
 * into `heldOut` equal strata and one offset is drawn in each (seeded by `seed`, a stream of
 * its own, so the statistics windows' draw is unchanged).
 */
export function drawHeldOutWindows(tokens: ArrayLike<number>, heldOut: number, context: number, seed: number): HeldOutWindows {
  const n = tokens.length;
  if (!Number.isInteger(heldOut) || heldOut < 1) throw usageError('ERR_BAD_OPTION', `heldOut must be a positive integer (got ${heldOut})`);
  if (n < context) throw usageError('ERR_CALIB_TOO_SHORT', `calibration text has ${n} tokens, fewer than one held-out window of context = ${context}`);
  const rand = seededRandom((seed ^ 0x6c8e9cf5) >>> 0);
  const span = n - context + 1; // valid start offsets
  const ids = new Int32Array(heldOut * context);
  const offsets: number[] = [];
  for (let s = 0; s < heldOut; s++) {
    const lo = Math.floor((s * span) / heldOut);
    const hi = Math.max(lo + 1, Math.floor(((s + 1) * span) / heldOut));
    const off = lo + Math.floor(rand() * (hi - lo));
    offsets.push(off);
    for (let t = 0; t < context; t++) ids[s * context + t] = tokens[off + t];
  }
  return { ids, heldOut, context, offsets };
}

/**
 * Default number of query positions scored per context window: about as many query-key
 * pairs in all as the short held-out windows' full causal attention (the early positions,
 * whose weight is largest, are all kept; each later doubling of the distance gets an equal
 * share of the rest).
 */
export const DEFAULT_CONTEXT_QUERIES = 512;

/** Query positions of the context windows and their weights in the position-weighted error. */
export interface ContextQueries {
  /** per window, its `perWindow` positions in increasing order ([windows x perWindow]) */
  positions: Int32Array;
  /** weight of each listed query (same layout); every window's weights sum to the sum of the position weights */
  weights: Float64Array;
  perWindow: number;
}

/**
 * Picks `queries` of the `w.length` positions of each of `windows` windows so that a sum
 * over the listed queries with their weights estimates the sum over every position with
 * weights `w` (probability-proportional-to-size systematic sampling): a position whose
 * weight is at least the sampling step is always taken with its own weight; the rest are
 * hit by equally spaced points of their cumulative weight, each hit position weighing one
 * step. The points' offset differs per window ((s + 0.5) / windows of a step), so the
 * windows together cover more positions. With `queries` >= w.length every position is
 * listed with its weight (the exact weighted sum).
 */
export function sampleContextQueries(w: Float64Array, windows: number, queries: number): ContextQueries {
  const n = w.length;
  if (!Number.isInteger(queries) || queries < 1) throw usageError('ERR_BAD_OPTION', `contextQueries must be a positive integer (got ${queries})`);
  const m = Math.min(queries, n);
  const certain = certainPositions(w, m);
  // cumulative weight of the positions not always taken, in position order
  const open: number[] = [];
  const cum: number[] = [];
  let rest = 0;
  for (let t = 0; t < n; t++)
    if (!certain[t]) {
      rest += w[t];
      open.push(t);
      cum.push(rest);
    }
  const draws = m - (n - open.length);
  const step = draws > 0 ? rest / draws : 0;
  const positions = new Int32Array(windows * m);
  const weights = new Float64Array(windows * m);
  for (let s = 0; s < windows; s++) {
    const hit = new Float64Array(n).fill(-1); // weight of each position listed for this window (-1: not listed)
    for (let t = 0; t < n; t++) if (certain[t]) hit[t] = w[t];
    for (let j = 0; j < draws; j++) hit[open[firstAbove(cum, (j + (s + 0.5) / windows) * step)]] = step;
    let k = s * m;
    for (let t = 0; t < n; t++)
      if (hit[t] >= 0) {
        positions[k] = t;
        weights[k++] = hit[t];
      }
  }
  return { positions, weights, perWindow: m };
}

/** The first index i with c[i] > x (c non-decreasing, x < its last entry). */
function firstAbove(c: number[], x: number): number {
  let lo = 0;
  let hi = c.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (c[mid] > x) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** Positions whose weight is at least the sampling step of the others (iterated until no more join). */
function certainPositions(w: Float64Array, m: number): Uint8Array {
  const n = w.length;
  const certain = new Uint8Array(n);
  if (m >= n) return certain.fill(1);
  let total = 0;
  for (const v of w) total += v;
  let rest = total;
  let left = m;
  for (let changed = true; changed && left > 0; ) {
    changed = false;
    const step = rest / left;
    for (let t = 0; t < n && left > 0; t++)
      if (!certain[t] && w[t] >= step) {
        certain[t] = 1;
        rest -= w[t];
        left--;
        changed = true;
      }
  }
  return certain;
}
