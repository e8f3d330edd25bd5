/**
 * Stage 4b, bias fold (portable target only): stock vLLM/SGLang build every attention linear
 * without a bias and drop bias tensors silently, so the chosen layer's biases are dropped
 * (exactly where they only shift each query's logits by a constant) or carried through the
 * inputs' near-constant direction (src/export/bias-fold.ts), whichever combination has the
 * lowest held-out error. Runs before the refits, which then fit the folded layer.
 *
 * Invariant: with target 'transformers', or a layer without biases, nothing changes; with
 * 'portable', the chosen layer afterwards has no bias tensor and `chosen.err` is its
 * held-out error as it will be written (rounded to the stored dtype).
 */
import { foldLayerBiases } from '../../export/bias-fold.js';
import type { LayerReport } from '../../report-types.js';
import { type Chosen, heldOutError, type LayerInputs, type RunContext, type Target } from './context.js';

/** Folds the chosen layer's biases for the portable target (in place); returns what the fold did, or null. */
export async function foldChosenBiases(ctx: RunContext, li: LayerInputs, tg: Target, chosen: Chosen): Promise<LayerReport['biasFold']> {
  if (tg.opt.target !== 'portable') return null;
  const fold = await ctx.clock.run('heldOut', tg.times, {}, () =>
    foldLayerBiases({
      mlaSpec: tg.mlaSpec,
      weights: chosen.mw,
      moments: li.moments,
      dtype: tg.exportSettings.dtype,
      errWithBiases: chosen.err,
      evaluate: (mw) => heldOutError(ctx, li, tg.mlaSpec, mw),
    }),
  );
  if (!fold) return null;
  chosen.mw = fold.weights;
  chosen.err = fold.err;
  return fold.report;
}
