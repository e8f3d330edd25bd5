/**
 * Stage 7, export: the chosen layer's shard (written behind the next layer's work) and its
 * report row; at the end, each target's last shard, report, config and report.html.
 *
 * Invariant: what is written is what was evaluated: the chosen layer's tensors, already
 * rounded to the stored dtype, in the fixed order of mla-layer.ts; a target's report lists
 * its layers in order and its timings add the shared stages once.
 */
import type { Checkpoint } from '../../checkpoint/checkpoint.js';
import type { ModelSpec } from '../../model/spec-types.js';
import { writeReportHtml } from '../../report/html.js';
import type { ConversionReport } from '../../report-types.js';
import type { OutTensor } from '../../tensor/out-tensor.js';
import { exportConfig, exportFinalTensors, exportLayerTensors } from '../../export/target.js';
import { layerTensors } from '../mla-layer.js';
import type { Chosen, RunContext, Target, Windows } from './context.js';
import { rawTensor } from './embed.js';
import type { RefitResult } from './refit.js';
import { STAGES } from './stage-list.js';

/** Input of {@link exportLayer}: the layer's outcome in the target. */
export interface LayerOutcome {
  layer: number;
  chosen: Chosen;
  candidates: ConversionReport['layers'][number]['candidates'];
  refits: RefitResult;
  queryCompression: ConversionReport['layers'][number]['queryCompression'];
  /** portable target: what the bias fold did (null: none) */
  biasFold: ConversionReport['layers'][number]['biasFold'];
  /** clock time the layer started (its report's seconds count from here) */
  startedAt: number;
}

/** Writes the layer's shard (behind the next layer's work; the time is the wait) and appends its report row. */
export async function exportLayer(ctx: RunContext, tg: Target, o: LayerOutcome): Promise<void> {
  const { chosen, layer: l } = o;
  await ctx.clock.run('export', tg.times, { layer: l }, async () =>
    // portable target: interleaved rope rows, no bias tensors (src/export/target.ts)
    tg.sink.writeShardBehind(tg.sink.layerShard(l), await ctx.backend.encodeForWrite(exportLayerTensors(tg.opt.target, tg.config, layerTensors(l, chosen.mw, tg.exportSettings.dtype)))),
  );
  tg.layers.push({
    layer: l,
    freqfold: chosen.f.freqfold,
    balanceKv: chosen.balance,
    ropeSelection: chosen.sel,
    kvMetric: chosen.metric,
    candidates: o.candidates,
    attnRelError: chosen.err,
    ropeVarianceKept: chosen.f.ropeVarianceKept,
    pcaVarianceKept: chosen.f.pcaVarianceKept,
    balanceScale: chosen.f.balanceScale,
    ropeSpectrum: chosen.f.ropeSpectrum,
    pcaSpectrum: chosen.f.pcaSpectrum,
    latentNorm: chosen.norm,
    valueRefit: o.refits.valueRefit,
    outputRefit: o.refits.outputRefit,
    queryCompression: o.queryCompression,
    ...(o.biasFold !== undefined && tg.opt.target === 'portable' ? { biasFold: o.biasFold } : {}),
    seconds: ctx.clock.elapsed() - o.startedAt,
  });
}

/** Writes target `tg`'s last shard, config, tokenizer files, conversion-report.json and report.html; returns the report. */
export async function finishTarget(ctx: RunContext, ckpt: Checkpoint, tg: Target): Promise<ConversionReport> {
  const { spec, options } = ctx;
  const t = ctx.clock.elapsed();
  const last: OutTensor[] = [await rawTensor(ckpt, 'model.norm.weight')];
  if (!spec.tieWordEmbeddings) last.push(await rawTensor(ckpt, 'lm_head.weight'));
  // portable target: lm_head always written (src/export/target.ts)
  await tg.sink.writeShard(tg.sink.finalShard, await exportFinalTensors(tg.opt.target, spec, last, () => rawTensor(ckpt, 'model.embed_tokens.weight')));
  const report = buildReport(spec, options.modelDir, tg, ctx.windows);
  // portable target: config.json for the stock engines and its report block
  const exported = exportConfig(tg.opt.target, tg.config, spec);
  if (exported.report) report.portable = exported.report;
  for (const k of Object.keys(ctx.shared) as Array<keyof typeof ctx.shared>) tg.times[k] += ctx.shared[k];
  tg.times[STAGES.finish.time] += ctx.clock.elapsed() - t;
  tg.times.total = ctx.clock.elapsed();
  report.times = tg.times;
  await tg.sink.finish(options.modelDir, exported.config, report);
  await writeReportHtml(tg.outDir);
  return report;
}

/** conversion-report.json of a finished target. */
function buildReport(spec: ModelSpec, modelDir: string, tg: Target, windows: Windows): ConversionReport {
  const { tokens: calibTokens, long } = windows;
  const opt = tg.opt;
  const perLayerBefore = 2 * spec.numKvHeads * spec.headDim;
  const perLayerAfter = opt.kvLoraRank + opt.qkRopeDim;
  const report: ConversionReport = {
    tool: { name: 'gqa2mla', version: tg.sink.toolVersion },
    source: { dir: modelDir, modelType: spec.modelType, numLayers: spec.numLayers, numHeads: spec.numHeads, numKvHeads: spec.numKvHeads, headDim: spec.headDim },
    output: { dir: tg.outDir, shards: Object.keys(tg.sink.shardBytes).sort(), totalBytes: Object.values(tg.sink.shardBytes).reduce((a, b) => a + b, 0) },
    settings: {
      method: opt.method,
      qkRopeDim: opt.qkRopeDim,
      kvLoraRank: opt.kvLoraRank,
      ...(opt.kvBudget !== null ? { kvBudget: opt.kvBudget } : {}),
      ...(opt.ropeDriftCorrection ? { ropeDriftCorrection: true } : {}),
      freqfold: opt.freqfold,
      balanceKv: opt.balanceKv,
      ropeSelection: opt.ropeSelection,
      kvMetric: opt.kvMetric,
      nopeShrink: opt.nopeShrink,
      nopeRotation: opt.nopeRotation,
      outputRefit: opt.outputRefit,
      valueRefit: opt.valueRefit,
      latentNorm: opt.latentNorm,
      qLoraRank: opt.qLoraRank,
      calibInputs: opt.calibInputs,
      calibSamples: opt.calibSamples,
      calibSeqlen: opt.calibSeqlen,
      heldOutSamples: opt.heldOutSamples,
      seed: opt.seed,
      context: long ? { tokens: long.seqlen, windows: long.count, from: long.from, queries: long.queries?.perWindow ?? long.seqlen } : undefined,
      calibTokens,
      qkLatentLayernorm: tg.exportSettings.qkLatentLayernorm,
      dtype: tg.exportSettings.dtype,
    },
    kvValuesPerToken: { before: perLayerBefore * spec.numLayers, after: perLayerAfter * spec.numLayers, perLayerBefore, perLayerAfter, ratio: perLayerBefore / perLayerAfter },
    layers: tg.layers,
    meanAttnRelError: tg.layers.reduce((s, r) => s + r.attnRelError, 0) / Math.max(1, tg.layers.length),
    times: tg.times,
  };
  if (tg.startLayer > 0) report.resumedFromLayer = tg.startLayer;
  return report;
}
