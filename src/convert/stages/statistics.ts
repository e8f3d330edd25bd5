/**
 * Stage 3, statistics: one decoder layer's weights, its normalised attention inputs, their
 * float64 moments on the statistics windows, the key/value/query second moments, and the
 * original attention output (plus the NoPE distance profile) on the judge windows: the
 * held-out windows at the serving context when the run has them, else the short held-out
 * windows.
 *
 * Invariant: nothing here depends on a target's budget, so a sweep computes it once per
 * layer; the moments come from the statistics windows only, the reference and the profile
 * from held-out windows only.
 */
import type { Checkpoint } from '../../checkpoint/checkpoint.js';
import { type LayerWeights, req } from '../../engine/weights.js';
import { native } from '../../native/binding.js';
import { distanceProfile } from '../distance.js';
import { layerMoments } from '../factorize.js';
import { servedContextWeights } from '../layer-ops.js';
import type { ResolvedOptions } from '../options.js';
import { sourceAttention } from '../qk-norm.js';
import { type HiddenStreams, judgedAttention, type JudgeWindows, type LayerInputs, type RunContext } from './context.js';

/** Input of {@link layerStatistics}. */
export interface StatisticsInput {
  ckpt: Checkpoint;
  layer: number;
  /** hidden states entering the layer (every stream) */
  hidden: HiddenStreams;
  /** buffer for the normalised inputs ([allRows, hidden]) */
  x: Float32Array;
  /** buffer for the context windows' normalised inputs ([long rows, hidden]), null without them */
  xLong: Float32Array | null;
  /** the options of every target (what they need decides what is computed) */
  opts: ResolvedOptions[];
}

/**
 * Whether a conversion with these options reads the normalised calibration inputs x on the
 * host (otherwise the backend may keep them on the device only): the attention-aware KV
 * metric, the NoPE distance profile, the value/output refits and the query compression do.
 * Keep this list in step with the host uses of `x` / `xHeld` in the stages.
 */
export function readsHostInputs(opt: ResolvedOptions): boolean {
  return opt.kvMetric === 'attention' || opt.kvMetric === 'auto' || opt.nopeShrink || opt.valueRefit || opt.outputRefit || opt.qLoraRank !== null;
}

/** Loads layer `layer` and measures what every stage after it reads. */
export async function layerStatistics(ctx: RunContext, input: StatisticsInput): Promise<LayerInputs> {
  const { spec, backend, clock, shared } = ctx;
  const { statRows, allRows } = ctx.windows;
  const { layer, hidden, x, opts } = input;
  const at = { layer };
  const w = await clock.run('load', shared, {}, () => backend.loadLayer(input.ckpt, spec, layer));
  const hostInputs = opts.some(readsHostInputs) || spec.qkNorm === true; // qk-norm.ts fits on the inputs
  const { moments, gqa, lm } = await clock.run('statistics', shared, at, async () => {
    const m = await backend.statistics(spec, w, hidden.calib, x, statRows, allRows, hostInputs);
    const g = await sourceAttention(spec, w, m, x, statRows, opts[0].qkNorm);
    const needQ = opts.some((o) => o.ropeSelection !== 'key' || o.kvMetric !== 'plain');
    return { moments: m, gqa: g, lm: layerMoments(spec, g, m, needQ) };
  });
  const { judge, short, profile } = await clock.run('reference', shared, {}, async () => {
    const sh = await shortWindows(ctx, x, w);
    const j = ctx.windows.long ? await contextWindows(ctx, input, w) : sh;
    // distance profile: every query of the short windows; about 256 sampled queries per context window
    const isShort = j === sh;
    const stride = isShort ? 1 : Math.max(1, Math.floor(j.seqLen / 256));
    const sampling = { maxWindows: isShort ? 4 : j.nSeq, queryStride: stride, queryWeights: isShort ? undefined : servedContextWeights(j.seqLen) };
    const p = opts.some((o) => o.nopeShrink) ? distanceProfile(spec, gqa, j.x, j.nSeq, j.seqLen, sampling) : null;
    return { judge: j, short: sh, profile: p };
  });
  return { layer, w, gqa, hidden, x, moments, lm, judge, short, profile };
}

/** The short held-out rows of `x` and the original attention output of layer `w` there. */
async function shortWindows(ctx: RunContext, x: Float32Array, w: LayerWeights): Promise<JudgeWindows> {
  const { spec, backend } = ctx;
  const { calib, seqlen: S, statRows } = ctx.windows;
  const xs = x.subarray(statRows * spec.hiddenSize);
  return { x: xs, nSeq: calib.heldOut, seqLen: S, weights: null, queries: null, ref: await backend.attentionForward(spec, w, xs, calib.heldOut, S) };
}

/**
 * The context windows of layer `w` (their inputs normalised on the host after the backend's
 * hidden states are made current there), with the original attention output at their judged
 * rows (the listed queries, or every row) and the weights of those rows.
 */
async function contextWindows(ctx: RunContext, input: StatisticsInput, w: LayerWeights): Promise<JudgeWindows> {
  const { spec, backend } = ctx;
  const long = ctx.windows.long!;
  const H = spec.hiddenSize;
  const hl = input.hidden.long!;
  const xl = input.xLong!;
  await backend.syncHidden(hl);
  await native.rmsNormAsync(hl, req(w, 'input_layernorm.weight', H), xl, { rows: long.rows, dim: H, eps: spec.rmsNormEps });
  const j = { x: xl, nSeq: long.count, seqLen: long.seqlen, queries: long.queries };
  const ref = await judgedAttention(ctx, spec, w, j);
  return { ...j, weights: long.queries ? long.queries.weights : servedContextWeights(long.seqlen), ref };
}
