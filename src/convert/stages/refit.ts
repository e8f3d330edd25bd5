/**
 * Stage 5, refits: the closed-form value refit, then the joint value/output refit, of the
 * chosen layer on the calibration windows.
 *
 * Invariant: a refit's tensors replace the chosen ones only when the layer, rounded to the
 * stored dtype as it would be written, has a lower held-out error; so the held-out error
 * of the chosen layer never rises here.
 */
import type { LayerWeights } from '../../engine/weights.js';
import type { LayerReport } from '../../report-types.js';
import { roundToDtype } from '../layer-ops.js';
import { refitOutput, refitValues } from '../refit.js';
import { type Chosen, heldOutError, type LayerInputs, type RunContext, type Target } from './context.js';

/** Calibration windows used by the refits (bounded for time). */
export const REFIT_WINDOWS = 128;

/** Output of {@link refitLayer}: what each refit did (null when not run). */
export interface RefitResult {
  valueRefit: LayerReport['valueRefit'];
  outputRefit: NonNullable<LayerReport['outputRefit']> | null;
}

/** Keeps `replace` (rounded to the stored dtype) in `chosen` when it lowers the held-out error. */
async function tryReplacing(ctx: RunContext, li: LayerInputs, tg: Target, chosen: Chosen, replace: Record<string, Float32Array>) {
  const dtype = tg.exportSettings.dtype;
  const mw2 = await ctx.clock.run('replace', tg.times, {}, () => {
    const m: LayerWeights = { layer: chosen.mw.layer, tensors: { ...chosen.mw.tensors } };
    for (const [name, data] of Object.entries(replace)) m.tensors[name] = { data: roundToDtype(data, dtype), shape: chosen.mw.tensors[name].shape };
    return m;
  });
  const err = await ctx.clock.run('heldOut', tg.times, {}, () => heldOutError(ctx, li, tg.mlaSpec, mw2));
  const result = { errBefore: chosen.err, errAfter: err, kept: err < chosen.err };
  if (result.kept) {
    chosen.mw = mw2;
    chosen.err = err;
  }
  return result;
}

/** Runs the refits target `tg`'s options ask for on its chosen layer (updated in place when they help). */
export async function refitLayer(ctx: RunContext, li: LayerInputs, tg: Target, chosen: Chosen): Promise<RefitResult> {
  const { spec, clock } = ctx;
  const { calib, seqlen: S } = ctx.windows;
  const { opt, mlaSpec } = tg;
  const nFit = Math.min(calib.samples, REFIT_WINDOWS);
  const out: RefitResult = { valueRefit: null, outputRefit: null };
  if (opt.valueRefit) {
    const at = { layer: li.layer, message: 'value refit' };
    const kvb = await clock.run('refit', tg.times, at, () => refitValues({ spec, mla: mlaSpec, orig: li.w, conv: chosen.mw, x: li.x, nSeq: nFit, seqLen: S }));
    out.valueRefit = { windows: nFit, ...(await tryReplacing(ctx, li, tg, chosen, { 'self_attn.kv_b_proj.weight': kvb })) };
  }
  if (opt.outputRefit) {
    const at = { layer: li.layer, message: 'output refit' };
    const r = await clock.run('refit', tg.times, at, () => refitOutput({ spec, mla: mlaSpec, orig: li.w, conv: chosen.mw, x: li.x, nSeq: nFit, seqLen: S }));
    if (r) out.outputRefit = { windows: nFit, rank: r.rank, ...(await tryReplacing(ctx, li, tg, chosen, { 'self_attn.kv_b_proj.weight': r.kvB, 'self_attn.o_proj.weight': r.oProj })) };
  }
  return out;
}
