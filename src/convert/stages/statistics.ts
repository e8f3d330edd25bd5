/**
 * Stage 3, statistics: one decoder layer's weights, its normalised attention inputs, their
 * float64 moments on the statistics windows, the key/value/query second moments, and the
 * original attention output (plus the NoPE distance profile) on the held-out windows.
 *
 * Invariant: nothing here depends on a target's budget, so a sweep computes it once per
 * layer; the moments come from the statistics windows only, the reference from the
 * held-out ones only.
 */
import type { Checkpoint } from '../../checkpoint/checkpoint.js';
import { distanceProfile } from '../distance.js';
import { layerMoments } from '../factorize.js';
import type { ResolvedOptions } from '../options.js';
import { sourceAttention } from '../qk-norm.js';
import type { LayerInputs, RunContext } from './context.js';

/** Input of {@link layerStatistics}. */
export interface StatisticsInput {
  ckpt: Checkpoint;
  layer: number;
  /** hidden states entering the layer (all windows) */
  hidden: Float32Array;
  /** buffer for the normalised inputs ([allRows, hidden]) */
  x: Float32Array;
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
  const { calib, seqlen: S, statRows, allRows } = ctx.windows;
  const { layer, hidden, x, opts } = input;
  const at = { layer };
  const w = await clock.run('load', shared, {}, () => backend.loadLayer(input.ckpt, spec, layer));
  const hostInputs = opts.some(readsHostInputs) || spec.qkNorm === true; // qk-norm.ts fits on the inputs
  const { moments, gqa, lm } = await clock.run('statistics', shared, at, async () => {
    const m = await backend.statistics(spec, w, hidden, x, statRows, allRows, hostInputs);
    const g = await sourceAttention(spec, w, m, x, statRows);
    const needQ = opts.some((o) => o.ropeSelection !== 'key' || o.kvMetric !== 'plain');
    return { moments: m, gqa: g, lm: layerMoments(spec, g, m, needQ) };
  });
  const xHeld = x.subarray(statRows * spec.hiddenSize);
  const { ref, profile } = await clock.run('reference', shared, {}, async () => ({
    ref: await backend.attentionForward(spec, w, xHeld, calib.heldOut, S),
    profile: opts.some((o) => o.nopeShrink) ? distanceProfile(spec, gqa, xHeld, calib.heldOut, S) : null,
  }));
  return { layer, w, gqa, hidden, x, xHeld, moments, lm, ref, profile };
}
