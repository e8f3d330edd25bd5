/**
 * Stage 6, query compression: q_proj -> q_a_proj / q_a_layernorm / q_b_proj (PCA of the
 * converted queries, exact norm), after the candidate choice and the refits.
 *
 * Invariant: it compresses the query exactly as evaluated so far (the stored-dtype values
 * of the chosen layer), and the error it reports is the held-out error of the layer as
 * written (rounded, with the norm); the compressed layer always replaces the chosen one.
 */
import type { LayerReport } from '../../report-types.js';
import { countSubnormal, latentNormReport } from '../latent-norm.js';
import { withQueryCompression } from '../mla-layer.js';
import { compressQuery } from '../q-compress.js';
import { type Chosen, heldOutError, type LayerInputs, type RunContext, type Target } from './context.js';

/** Compresses target `tg`'s chosen query (when it has a q_lora_rank), replacing it in `chosen`. */
export async function compressLayerQuery(ctx: RunContext, li: LayerInputs, tg: Target, chosen: Chosen): Promise<LayerReport['queryCompression']> {
  const { spec, clock } = ctx;
  const { opt } = tg;
  const qLoraRank = opt.qLoraRank;
  if (qLoraRank === null) return null;
  const dtype = tg.exportSettings.dtype;
  const { qc, mw3 } = await clock.run('query', tg.times, { layer: li.layer, message: 'query compression' }, () => {
    const qw = chosen.mw.tensors['self_attn.q_proj.weight'].data;
    const qb = chosen.mw.tensors['self_attn.q_proj.bias']?.data ?? null;
    const M = spec.numHeads * (spec.headDim + opt.qkRopeDim);
    const q = compressQuery(qw, qb, M, spec.hiddenSize, qLoraRank, li.moments, li.x, ctx.windows.statRows, spec.rmsNormEps, opt.latentNorm === 'exact');
    return { qc: q, mw3: withQueryCompression(chosen.mw, q, dtype, tg.exportSettings.attentionBias) };
  });
  const err = await clock.run('heldOut', tg.times, {}, () => heldOutError(ctx, li, tg.outSpec, mw3));
  const report = {
    qLoraRank: qc.qLoraRank,
    pcaRank: qc.pcaRank,
    lossless: opt.qLoraLossless,
    biasChannel: qc.biasChannel,
    kappa: qc.kappa,
    varianceKept: qc.varianceKept,
    errBefore: chosen.err,
    errAfter: err,
    norm: qc.scaling ? latentNormReport(qc.scaling, countSubnormal(mw3.tensors['self_attn.q_a_proj.weight'].data, dtype)) : null,
  };
  chosen.mw = mw3;
  chosen.err = err;
  return report;
}
