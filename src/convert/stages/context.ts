/**
 * What the per-layer stages share: the run (model, options, backend, calibration windows,
 * clock), the per-budget target, and one layer's inputs and statistics.
 *
 * Invariant: a RunContext and a LayerInputs are read-only to the stages; a stage changes
 * only the target it is given (its chosen layer, its report rows and timings).
 */
import type { ComputeBackend } from '../../backend/types.js';
import type { LayerWeights } from '../../engine/weights.js';
import { GqaError } from '../../errors.js';
import type { ModelSpec } from '../../model/spec-types.js';
import type { LayerReport, StageTimes } from '../../report-types.js';
import type { InputMoments } from '../../tensor/moments.js';
import type { GqaAttention } from '../attention-weights.js';
import type { CalibrationSet } from '../calibration.js';
import type { ExportSettings } from '../config.js';
import type { DistanceProfile } from '../distance.js';
import type { ContextQueries } from '../held-out-context.js';
import { attentionAtQueries, gatherListed, type QueryRows } from '../sampled-attention.js';
import type { KvMetric, LayerFactorization, LayerMoments } from '../factorize.js';
import { relativeError, weightedRelativeError } from '../layer-ops.js';
import type { ConvertOptions, ResolvedOptions } from '../options.js';
import type { OutputSink } from '../output.js';
import type { StageClock } from './stage-list.js';

/**
 * Held-out windows at the serving context (held-out-context.ts): the per-layer choices are
 * judged on them; their hidden states travel through the layers beside the statistics windows.
 */
export interface ContextWindows {
  /** [count, seqlen] token ids */
  ids: Int32Array;
  count: number;
  /** tokens per window: the resolved context */
  seqlen: number;
  /** count x seqlen */
  rows: number;
  /** what set the context: the option, or the bound that set the default */
  from: 'option' | 'max_position_embeddings' | 'default-max' | 'calibration text' | 'held-out budget';
  offsets: number[];
  /** the query positions scored per window and their weights (null: every position, weighted by servedContextWeights) */
  queries: ContextQueries | null;
}

/** The calibration windows and their row counts. */
export interface Windows {
  calib: CalibrationSet;
  /** tokens of the calibration text */
  tokens: number;
  /** tokens per window */
  seqlen: number;
  /** rows of the statistics windows (the first calib.samples windows) */
  statRows: number;
  /** rows of all windows (statistics then held-out) */
  allRows: number;
  /** statistics + held-out windows */
  count: number;
  /** held-out windows at the serving context (null: the choices are judged on the short held-out windows) */
  long: ContextWindows | null;
}

/** Hidden states of a run: the statistics + short held-out windows, and the context windows'. */
export interface HiddenStreams {
  /** the whole buffer ([allRows + long rows, hidden]): what a resume state saves */
  all: Float32Array;
  /** the statistics and short held-out windows ([allRows, hidden]) */
  calib: Float32Array;
  /** the context windows ([long.rows, hidden]), null without them */
  long: Float32Array | null;
}

/** The windows a layer's choices are judged on, their normalised inputs and the original attention output there. */
export interface JudgeWindows {
  x: Float32Array;
  nSeq: number;
  seqLen: number;
  /** the original attention output at the judged rows (every row, or the listed queries') */
  ref: Float32Array;
  /**
   * weights of the error: per position (length seqLen; layer-ops.ts servedContextWeights:
   * every serving context up to seqLen counts the same), or per listed query (length
   * nSeq x queries.perWindow); null: every row the same (the short windows)
   */
  weights: Float64Array | null;
  /** the query rows judged (null: every row) */
  queries: QueryRows | null;
}

/** One conversion run (shared by the budgets of a sweep). */
export interface RunContext {
  spec: ModelSpec;
  options: ConvertOptions;
  backend: ComputeBackend;
  clock: StageClock;
  windows: Windows;
  /** timings shared by every target (reading, statistics, forward passes) */
  shared: StageTimes;
}

/** One output of a run: its budget, resolved options and output state. */
export interface Target {
  opt: ResolvedOptions;
  outDir: string;
  sink: OutputSink;
  config: Record<string, unknown>;
  /** the converted layer's spec during the candidate search (q_proj, before query compression) */
  mlaSpec: ModelSpec;
  /** the written model's spec (q_a/q_b when q_lora_rank is set) */
  outSpec: ModelSpec;
  exportSettings: ExportSettings;
  layers: LayerReport[];
  times: StageTimes;
  startLayer: number;
  /**
   * portable target whose exported rope is inexact (llama3, linear), with the
   * ropeDriftCorrection option: per slot, the carried source frequency minus the engine's
   * (src/convert/rope-drift.ts); null: no correction
   */
  ropeDrift: Float64Array | null;
}

/** One decoder layer as the stages read it: weights, inputs, statistics, reference. */
export interface LayerInputs {
  layer: number;
  w: LayerWeights;
  gqa: GqaAttention;
  /** hidden states entering the layer (every stream) */
  hidden: HiddenStreams;
  /** normalised attention inputs of the statistics and short held-out windows (statistics rows first) */
  x: Float32Array;
  moments: InputMoments;
  lm: LayerMoments;
  /** where the choices are judged: the context windows, else the short held-out windows (then `judge === short`) */
  judge: JudgeWindows;
  /** the short held-out windows (a first, cheap ranking of the candidates when `judge` is longer) */
  short: JudgeWindows;
  /** attention distance profile of the NoPE shrink, on the judge windows (null when no target uses it) */
  profile: DistanceProfile | null;
}

/** The candidate a target's layer currently stands at (refits and query compression update it). */
export interface Chosen {
  f: LayerFactorization;
  mw: LayerWeights;
  /** held-out attention-output relative error of `mw` */
  err: number;
  balance: number;
  norm: LayerReport['latentNorm'];
  sel: 'key' | 'qk';
  metric: KvMetric;
}

/** Throws ERR_ABORTED when the run's signal has fired. */
export function checkAbort(signal?: AbortSignal): void {
  if (signal?.aborted)
    throw new GqaError('ERR_ABORTED', 'conversion aborted; the partial output can be continued with --resume', 'runtime');
}

/**
 * Attention output of layer weights `w` (read as `spec`) at the judged rows of `j`: every row
 * (the backend's forward), or the listed queries, each over every key before it (on the CPU
 * only those queries are computed: sampled-attention.ts; other backends compute every row
 * and keep the listed ones).
 */
export async function judgedAttention(ctx: RunContext, spec: ModelSpec, w: LayerWeights, j: Pick<JudgeWindows, 'x' | 'nSeq' | 'seqLen' | 'queries'>): Promise<Float32Array> {
  if (!j.queries) return ctx.backend.attentionForward(spec, w, j.x, j.nSeq, j.seqLen);
  if (ctx.backend.device === 'cpu') return attentionAtQueries(spec, w, j.x, j.nSeq, j.seqLen, j.queries);
  return gatherListed(await ctx.backend.attentionForward(spec, w, j.x, j.nSeq, j.seqLen), j.queries, j.seqLen, spec.hiddenSize);
}

/** Held-out attention-output relative error of layer weights `mw` (read as `spec`) on the judge windows (or the short ones). */
export async function heldOutError(ctx: RunContext, li: LayerInputs, spec: ModelSpec, mw: LayerWeights, on: 'judge' | 'short' = 'judge'): Promise<number> {
  const j = on === 'judge' ? li.judge : li.short;
  const out = await judgedAttention(ctx, spec, mw, j);
  return j.weights ? weightedRelativeError(out, j.ref, j.weights, spec.hiddenSize) : relativeError(out, j.ref);
}
