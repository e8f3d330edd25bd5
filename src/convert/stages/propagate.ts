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
import type { HiddenStreams, RunContext, Target } from './context.js';

/** Applies layer `l` (`w` read as `spec`) to every stream of `hidden` in place. */
export async function propagate(ctx: RunContext, l: number, spec: ModelSpec, w: LayerWeights, hidden: HiddenStreams): Promise<void> {
  const { count, seqlen, long } = ctx.windows;
  await ctx.clock.run('propagate', ctx.shared, { layer: l }, async () => {
    await ctx.backend.layerForward(spec, w, hidden.calib, count, seqlen);
    if (long && hidden.long) await ctx.backend.layerForward(spec, w, hidden.long, long.count, long.seqlen);
  });
}

/** Records layer `l` as finished in every target (saving every stream of `hidden` where a resume checkpoint is due). */
export async function saveLayer(ctx: RunContext, l: number, hidden: HiddenStreams, targets: Target[]): Promise<void> {
  await ctx.clock.run('save', ctx.shared, {}, async () => {
    const save = targets.map((tg) => tg.sink.checkpointDue(l));
    if (save.some(Boolean)) {
      await ctx.backend.syncHidden(hidden.calib);
      if (hidden.long) await ctx.backend.syncHidden(hidden.long);
    }
    for (const [i, tg] of targets.entries()) await tg.sink.layerDone(l, hidden.all, tg.layers, save[i]);
  });
}
