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
import type { KvMetric, LayerFactorization, LayerMoments } from '../factorize.js';
import { relativeError } from '../layer-ops.js';
import type { ConvertOptions, ResolvedOptions } from '../options.js';
import type { OutputSink } from '../output.js';
import type { StageClock } from './stage-list.js';

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
}

/** One decoder layer as the stages read it: weights, inputs, statistics, reference. */
export interface LayerInputs {
  layer: number;
  w: LayerWeights;
  gqa: GqaAttention;
  /** hidden states entering the layer (all windows) */
  hidden: Float32Array;
  /** normalised attention inputs of all windows (statistics rows first) */
  x: Float32Array;
  /** the held-out rows of x */
  xHeld: Float32Array;
  moments: InputMoments;
  lm: LayerMoments;
  /** the original attention output on the held-out windows */
  ref: Float32Array;
  /** attention distance profile of the NoPE shrink (null when no target uses it) */
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

/** Held-out attention-output relative error of layer weights `mw` (read as `spec`) against the reference. */
export async function heldOutError(ctx: RunContext, li: LayerInputs, spec: ModelSpec, mw: LayerWeights): Promise<number> {
  const { calib, seqlen } = ctx.windows;
  const out = await ctx.backend.attentionForward(spec, mw, li.xHeld, calib.heldOut, seqlen);
  return relativeError(out, li.ref);
}
