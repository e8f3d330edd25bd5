/**
 * Mixture-of-experts routing: router logits [rows, experts] -> for every row its top-k
 * experts and their weights, by a {@link MoeRouting} (spec-types.ts). Computed in float64
 * on the host; the selection is a pure function of the logits (ties go to the lower expert
 * index).
 */
import { GqaError } from '../errors.js';
import type { MoeRouting } from '../model/spec-types.js';

/** The routing of `rows` tokens: row r's k-th choice is expert `experts[r*topK+k]` with weight `weights[r*topK+k]`. */
export interface ExpertChoice {
  rows: number;
  topK: number;
  experts: Int32Array;
  weights: Float64Array;
}

/** Input of {@link routeTokens}. */
export interface RouteInput {
  /** router logits, row-major [rows, numExperts] */
  logits: ArrayLike<number>;
  rows: number;
  numExperts: number;
  topK: number;
  routing: MoeRouting;
  /** e_score_correction_bias [numExperts] (required when routing.correctionBias) */
  bias?: ArrayLike<number> | null;
}

/** Scores of one row: softmax or sigmoid of its logits. */
function scoresOf(l: ArrayLike<number>, off: number, E: number, scoring: MoeRouting['scoring'], out: Float64Array): void {
  if (scoring === 'sigmoid') {
    for (let e = 0; e < E; e++) out[e] = 1 / (1 + Math.exp(-l[off + e]));
    return;
  }
  let max = -Infinity;
  for (let e = 0; e < E; e++) max = Math.max(max, l[off + e]);
  let sum = 0;
  for (let e = 0; e < E; e++) sum += out[e] = Math.exp(l[off + e] - max);
  for (let e = 0; e < E; e++) out[e] /= sum;
}

/** Indices of the `k` largest of `v` over the allowed entries (descending; ties to the lower index). */
function topIndices(v: Float64Array, k: number, allowed: (i: number) => boolean): number[] {
  const idx: number[] = [];
  for (let i = 0; i < v.length; i++) if (allowed(i)) idx.push(i);
  idx.sort((a, b) => v[b] - v[a] || a - b);
  return idx.slice(0, k);
}

/** The groups a row may use: the best `topkGroup` of `nGroup` by their best score or best two summed. */
function allowedGroups(choice: Float64Array, r: MoeRouting): Set<number> {
  const per = choice.length / r.nGroup;
  const g = new Float64Array(r.nGroup);
  for (let j = 0; j < r.nGroup; j++) {
    const part = Array.from(choice.subarray(j * per, (j + 1) * per)).sort((a, b) => b - a);
    g[j] = r.groupScore === 'top2' ? part[0] + (part[1] ?? 0) : part[0];
  }
  return new Set(topIndices(g, r.topkGroup, () => true));
}

/** Each row's top-k experts and weights under `routing`. Throws ERR_SHAPE / ERR_TENSOR_MISSING on bad input. */
export function routeTokens(input: RouteInput): ExpertChoice {
  const { logits, rows, numExperts: E, topK, routing: r } = input;
  if (logits.length < rows * E) throw new GqaError('ERR_SHAPE', `router logits hold ${logits.length} values, need rows*experts = ${rows * E}`, 'runtime');
  if (!(topK >= 1 && topK <= E) || E % r.nGroup !== 0) throw new GqaError('ERR_SHAPE', `top-${topK} of ${E} experts in ${r.nGroup} groups is not a valid routing`, 'runtime');
  if (r.correctionBias && (!input.bias || input.bias.length !== E))
    throw new GqaError('ERR_TENSOR_MISSING', `the routing adds e_score_correction_bias [${E}] but it is ${input.bias ? `of length ${input.bias.length}` : 'missing'}`, 'runtime');
  const experts = new Int32Array(rows * topK);
  const weights = new Float64Array(rows * topK);
  const s = new Float64Array(E);
  const choice = new Float64Array(E);
  const per = E / r.nGroup;
  for (let row = 0; row < rows; row++) {
    scoresOf(logits, row * E, E, r.scoring, s);
    for (let e = 0; e < E; e++) choice[e] = s[e] + (r.correctionBias ? input.bias![e] : 0);
    const groups = r.nGroup > 1 ? allowedGroups(choice, r) : null;
    const top = topIndices(choice, topK, (e) => !groups || groups.has(Math.floor(e / per)));
    let sum = 0;
    for (const e of top) sum += s[e];
    const norm = r.normTopkProb ? sum : 1;
    top.forEach((e, k) => {
      experts[row * topK + k] = e;
      weights[row * topK + k] = (s[e] / norm) * r.routedScalingFactor;
    });
  }
  return { rows, topK, experts, weights };
}
