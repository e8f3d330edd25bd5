/**
 * Stage 8, propagate: the calibration hidden states through the layer just converted, so
 * they are the next layer's inputs: through the converted layer (calibInputs 'converted',
 * a single target) or the original one ('original', shared by a sweep's targets); then the
 * layer is recorded in every target's journal, with the resume state when due.
 *
 * Invariant: after this stage `hidden` holds the inputs of layer l + 1 for every target,
 * and a saved resume state is exactly those hidden states.
 */
import type { LayerWeights } from '../../engine/weights.js';
import type { ModelSpec } from '../../model/spec-types.js';
import type { RunContext, Target } from './context.js';

/** Applies layer `l` (`w` read as `spec`) to `hidden` in place. */
export async function propagate(ctx: RunContext, l: number, spec: ModelSpec, w: LayerWeights, hidden: Float32Array): Promise<void> {
  const { count, seqlen } = ctx.windows;
  await ctx.clock.run('propagate', ctx.shared, { layer: l }, () => ctx.backend.layerForward(spec, w, hidden, count, seqlen));
}

/** Records layer `l` as finished in every target (saving `hidden` where a resume checkpoint is due). */
export async function saveLayer(ctx: RunContext, l: number, hidden: Float32Array, targets: Target[]): Promise<void> {
  await ctx.clock.run('save', ctx.shared, {}, async () => {
    const save = targets.map((tg) => tg.sink.checkpointDue(l));
    if (save.some(Boolean)) await ctx.backend.syncHidden(hidden);
    for (const [i, tg] of targets.entries()) await tg.sink.layerDone(l, hidden, tg.layers, save[i]);
  });
}
