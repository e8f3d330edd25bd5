/**
 * convert(): a GQA/MHA checkpoint -> a DeepSeek-V3 (MLA) checkpoint, one decoder layer at
 * a time. The pipeline reads top-down:
 *
 *   checkpoint -> calibrate -> per layer: statistics -> factorize (each candidate)
 *   -> evaluate on held-out windows -> export -> propagate hidden states -> next layer
 *
 * Only one layer's weights, the calibration hidden states and that layer's statistics
 * are in memory; each layer's tensors are written as soon as it is done, so peak memory
 * does not grow with depth.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Checkpoint } from '../checkpoint/checkpoint.js';
import { loadModelSpec, parseModelSpec } from '../model/spec.js';
import type { ModelSpec } from '../model/spec-types.js';
import { loadTokenizer } from '../tokenize.js';
import { encodeParallel } from '../tokenize-parallel.js';
import { native } from '../native/binding.js';
import type { LayerWeights } from '../engine/weights.js';
import { createBackend } from '../backend/select.js';
import type { ComputeBackend } from '../backend/types.js';
import { GqaError, usageError } from '../errors.js';
import { drawCalibration } from './calibration.js';
import { deepseekConfig, type ExportSettings } from './config.js';
import { factorizeLayer, type KvMetric, type LayerFactorization, layerMoments } from './factorize.js';
import { cachedAttentionMoments } from './attention-stats.js';
import { chooseLatentScaling, countSubnormal, latentNormReport } from './latent-norm.js';
import { relativeError, roundToDtype } from './layer-ops.js';
import { type Dtype, toFloat32 } from '../checkpoint/dtype.js';
import { type ConvertOptions, type ResolvedOptions, resolveOptions } from './options.js';
import { type OutTensor, OutputSink } from './output.js';
import type { ConversionReport, LayerReport, StageTimes } from './report.js';
import { writeReportHtml } from '../report/html.js';
import { distanceProfile } from './distance.js';
import { refitOutput, refitValues } from './refit.js';
import { compressQuery, type QueryCompression } from './q-compress.js';
import { foldLayerBiases } from '../export/bias-fold.js';
import { exportConfig, exportFinalTensors, exportLayerTensors } from '../export/target.js';

/** Calibration windows used by the value refit (bounded for time). */
const REFIT_WINDOWS = 128;

export type { ConvertOptions, ConversionReport };

const now = () => performance.now() / 1000;

function checkAbort(signal?: AbortSignal): void {
  if (signal?.aborted)
    throw new GqaError('ERR_ABORTED', 'conversion aborted; the partial output can be continued with --resume', 'runtime');
}

/** One output of a conversion run: its budget, resolved options and output state. */
interface Target {
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

/** A budget of a sweep. */
export interface Budget {
  kvLoraRank: number;
  qkRopeDim: number;
}

/** Options of {@link convertSweep}: {@link ConvertOptions} with lists of budgets. */
export interface SweepOptions extends Omit<ConvertOptions, 'kvLoraRank' | 'qkRopeDim'> {
  kvLoraRanks: number[];
  qkRopeDims: number[];
}

/** Result of a sweep: one report per budget, written to `<outDir>/r<rank>-p<rope>/`. */
export interface SweepResult {
  outDir: string;
  budgets: Array<{ kvLoraRank: number; qkRopeDim: number; dir: string; report: ConversionReport }>;
  seconds: number;
}

/**
 * Converts a checkpoint to Multi-Head Latent Attention in the DeepSeek-V3 format.
 * Settings are checked before any work; the output appears under `outDir` only when
 * complete (an interrupted run leaves `<outDir>.partial`, continued by `resume: true`).
 */
export async function convert(options: ConvertOptions): Promise<ConversionReport> {
  const spec = await loadModelSpec(options.modelDir);
  const opt = resolveOptions(spec, options);
  const [report] = await run(spec, options, [{ opt, outDir: options.outDir }]);
  return report;
}

/**
 * Converts to several budgets from one calibration pass (statistics do not depend on the
 * budget; only the factorization and export run per budget). Needs calibInputs 'original'
 * (converted inputs depend on the budget). Each output equals the single-budget conversion.
 */
export async function convertSweep(options: SweepOptions): Promise<SweepResult> {
  const t0 = now();
  const spec = await loadModelSpec(options.modelDir);
  if ((options.calibInputs ?? 'original') !== 'original')
    throw usageError('ERR_BAD_OPTION', "a budget sweep needs --calib-inputs original (converted inputs differ per budget); run one conversion per budget instead");
  if (options.kvLoraRanks.length === 0 || options.qkRopeDims.length === 0) throw usageError('ERR_BAD_OPTION', 'a sweep needs at least one rank and one rope dim');
  const targets: Array<{ opt: ResolvedOptions; outDir: string }> = [];
  for (const p of options.qkRopeDims)
    for (const r of options.kvLoraRanks) {
      const o = { ...options, kvLoraRank: r, qkRopeDim: p };
      targets.push({ opt: resolveOptions(spec, o), outDir: join(options.outDir, `r${r}-p${p}`) });
    }
  if (existsSync(options.outDir) && !options.overwrite && !options.resume)
    throw usageError('ERR_OUTPUT_EXISTS', `output directory ${options.outDir} already exists (use --force to replace it)`);
  await mkdir(options.outDir, { recursive: true });
  const reports = await run(spec, { ...options, kvLoraRank: undefined, qkRopeDim: undefined, outDir: options.outDir }, targets);
  return {
    outDir: options.outDir,
    budgets: reports.map((report, i) => ({ kvLoraRank: report.settings.kvLoraRank, qkRopeDim: report.settings.qkRopeDim, dir: targets[i].outDir, report })),
    seconds: now() - t0,
  };
}

async function run(spec: ModelSpec, options: ConvertOptions, outs: Array<{ opt: ResolvedOptions; outDir: string }>): Promise<ConversionReport[]> {
  const t0 = now();
  const shared: StageTimes = { tokenize: 0, read: 0, forward: 0, statistics: 0, factorize: 0, evaluate: 0, write: 0, total: 0 };
  const opt0 = outs[0].opt;
  const { hiddenSize: hid, numLayers } = spec;
  const progress = (stage: Parameters<NonNullable<ConvertOptions['onProgress']>>[0]['stage'], layer?: number, message?: string) =>
    options.onProgress?.({ stage, layer, layers: numLayers, message });

  const ckpt = await Checkpoint.open(options.modelDir);
  // where each layer's norm, moments, held-out attention, propagation and the factorization's
  // float64 products / eigendecompositions run (src/backend/)
  const backend = createBackend(options.device);
  backend.claimMatKernels();
  const targets: Target[] = [];
  try {
    // ---- calibrate: tokenize and draw windows
    let t = now();
    progress('tokenize');
    const text = options.calibText ?? (await readCalibText(options.calibFile));
    const tokenizer = await loadTokenizer(options.modelDir);
    const { ids: tokens } = await encodeParallel(tokenizer, text); // same ids as one encode
    const calib = drawCalibration(tokens, opt0.calibSamples, opt0.heldOutSamples, opt0.calibSeqlen, opt0.seed);
    shared.tokenize += now() - t;
    const count = calib.samples + calib.heldOut;
    const S = opt0.calibSeqlen;
    const statRows = calib.samples * S;
    const allRows = count * S;

    for (const o of outs) {
      const opt = o.opt;
      const dtype = opt.dtype === 'auto' ? storedDtype(ckpt.info('model.embed_tokens.weight').dtype) : opt.dtype;
      const exportSettings: ExportSettings = {
        qkLatentLayernorm: opt.latentNorm === 'exact',
        qBias: Boolean(spec.attentionBias),
        qLoraRank: opt.qLoraRank,
        attentionBias: spec.attentionBias || spec.oBias,
        dtype,
      };
      const config = deepseekConfig(spec, opt, exportSettings);
      const outSpec = parseModelSpec(config, `${o.outDir}/config.json`);
      const mlaSpec = opt.qLoraRank === null ? outSpec : parseModelSpec(deepseekConfig(spec, opt, { ...exportSettings, qLoraRank: null }), `${o.outDir}/config.json`);
      const sink = await OutputSink.open({ ...options, outDir: o.outDir }, opt, numLayers, {
        source: options.modelDir,
        opt,
        calibTokens: tokens.length,
        calibOffsets: calib.offsets,
      });
      targets.push({ opt, outDir: o.outDir, sink, config, mlaSpec, outSpec, exportSettings, layers: [], times: { ...shared }, startLayer: 0 });
    }

    // ---- embeddings (or the state of an interrupted run)
    t = now();
    progress('embed');
    let hidden: Float32Array | null = null;
    let startLayer = 0;
    if (targets.length === 1) {
      const resumed = await targets[0].sink.resumeState(allRows * hid);
      if (resumed) {
        hidden = resumed.hidden;
        startLayer = resumed.nextLayer;
        targets[0].layers.push(...(resumed.layers as LayerReport[]));
        targets[0].startLayer = startLayer;
      }
    }
    if (!hidden) {
      const table = await rawTensor(ckpt, 'model.embed_tokens.weight');
      hidden = await embedRows(table, calib.ids, hid);
      for (const tg of targets) await tg.sink.writeShard(1, [table]);
    }
    shared.forward += now() - t;

    const x = new Float32Array(allRows * hid);
    const hostInputs = targets.some((tg) => readsHostInputs(tg.opt));
    for (let l = startLayer; l < numLayers; l++) {
      checkAbort(options.signal);
      const tl = now();
      t = now();
      const w = await backend.loadLayer(ckpt, spec, l);
      shared.read += now() - t;

      // ---- statistics of the attention input (calibration windows only)
      t = now();
      progress('statistics', l);
      const moments = await backend.statistics(spec, w, hidden, x, statRows, allRows, hostInputs);
      const gqa = gqaAttention(w);
      const needQ = targets.some((tg) => tg.opt.ropeSelection !== 'key' || tg.opt.kvMetric !== 'plain');
      const lm = layerMoments(spec, gqa, moments, needQ);
      shared.statistics += now() - t;

      // ---- reference attention output on the held-out windows
      t = now();
      const xHeld = x.subarray(statRows * hid);
      const ref = await backend.attentionForward(spec, w, xHeld, calib.heldOut, S);
      const profile = targets.some((tg) => tg.opt.nopeShrink) ? distanceProfile(spec, gqa, xHeld, calib.heldOut, S) : null;
      shared.evaluate += now() - t;

      for (const tg of targets) {
        const { opt, mlaSpec } = tg;
        const dtype = tg.exportSettings.dtype;
        // ---- factorize every candidate, keep the best on the held-out windows
        let best: { f: LayerFactorization; mw: LayerWeights; err: number; balance: number; norm: LayerReport['latentNorm']; sel: 'key' | 'qk'; metric: KvMetric } | null = null;
        const candidates: LayerReport['candidates'] = [];
        const tryCandidate = async (ff: number, balance: number, sel: 'key' | 'qk', metric: KvMetric) => {
          checkAbort(options.signal);
          // attention-aware statistics: once per layer (shared by the targets of a sweep)
          const am = metric === 'attention' ? await cachedAttentionMoments(lm, spec, gqa, moments, x, calib.samples, S, l) : undefined;
          t = now();
          const label = `freqfold ${ff}, balance ${balance}, rope ${sel}, metric ${metric}`;
          progress('factorize', l, label);
          const f = factorizeLayer(
            spec,
            gqa,
            moments,
            {
              qkRopeDim: opt.qkRopeDim,
              kvLoraRank: opt.kvLoraRank,
              freqfold: ff,
              balanceKv: balance,
              ropeSelection: sel,
              kvMetric: metric,
              nopeCos: opt.nopeShrink && profile ? profile.cos : undefined,
              nopeSin: opt.nopeShrink && opt.nopeRotation && profile ? profile.sin : undefined,
              attention: am,
            },
            lm,
          );
          const { weights: mw, norm } = await mlaLayerWeights(spec, w, f, opt, dtype, x, statRows, backend);
          tg.times.factorize += now() - t;
          t = now();
          progress('evaluate', l, label);
          const out = await backend.attentionForward(mlaSpec, mw, xHeld, calib.heldOut, S);
          const err = relativeError(out, ref);
          tg.times.evaluate += now() - t;
          candidates.push({ freqfold: ff, balanceKv: balance, ropeSelection: sel, kvMetric: metric, attnRelError: err });
          if (!best || err < best.err) best = { f, mw, err, balance, norm, sel, metric };
          return err;
        };
        const sels = opt.ropeSelection === 'auto' ? (['qk', 'key'] as const) : [opt.ropeSelection];
        const metrics: KvMetric[] = opt.kvMetric === 'auto' ? ['attention', 'objective', 'plain'] : [opt.kvMetric];
        if (sels.length * metrics.length * opt.balanceCandidates.length === 1) {
          for (const ff of opt.freqfoldCandidates) await tryCandidate(ff, opt.balanceCandidates[0], sels[0], metrics[0]);
        } else {
          // greedy: structure (rope selection, metric, freqfold) at balance 1, freqfolds in
          // increasing order until the error rises (more folding only loses RoPE precision) ...
          const b0 = opt.balanceCandidates.includes(1) ? 1 : opt.balanceCandidates[0];
          for (const sel of sels)
            for (const metric of metrics) {
              let prev = Infinity;
              for (const ff of opt.freqfoldCandidates) {
                const e = await tryCandidate(ff, b0, sel, metric);
                if (e > prev) break;
                prev = e;
              }
            }
          // ... then the balance, walking the sorted candidates from b0 while the error falls
          const s0 = best!;
          const bs = [...opt.balanceCandidates].sort((a, b) => a - b);
          const i0 = bs.indexOf(b0);
          for (const dir of [-1, 1]) {
            let last = s0.err;
            let moved = false;
            for (let i = i0 + dir; i >= 0 && i < bs.length; i += dir) {
              const e = await tryCandidate(s0.f.freqfold, bs[i], s0.sel, s0.metric);
              if (e >= last) break;
              last = e;
              moved = true;
            }
            if (moved) break;
          }
        }
        const chosen = best!;
        // [export: portable] fold the attention biases: stock engines drop bias tensors (src/export/bias-fold.ts);
        // before the refits, which then fit the values and o_proj to the folded layer
        let biasFold: LayerReport['biasFold'] = null;
        if (opt.target === 'portable') {
          t = now();
          const evaluate = async (mw: LayerWeights) => relativeError(await backend.attentionForward(mlaSpec, mw, xHeld, calib.heldOut, S), ref);
          const fold = await foldLayerBiases({ mlaSpec, weights: chosen.mw, moments, dtype, errWithBiases: chosen.err, evaluate });
          if (fold) [chosen.mw, chosen.err, biasFold] = [fold.weights, fold.err, fold.report];
          tg.times.evaluate += now() - t;
        }
        /**
         * Evaluates the chosen layer with some attention tensors replaced (rounded to the stored
         * dtype, what is evaluated is what is written) and keeps the replacement when it lowers
         * the held-out error.
         */
        const tryReplacing = async (replace: Record<string, Float32Array>) => {
          t = now();
          const mw2: LayerWeights = { layer: chosen.mw.layer, tensors: { ...chosen.mw.tensors } };
          for (const [name, data] of Object.entries(replace)) mw2.tensors[name] = { data: roundToDtype(data, dtype), shape: chosen.mw.tensors[name].shape };
          tg.times.factorize += now() - t;
          t = now();
          const out = await backend.attentionForward(mlaSpec, mw2, xHeld, calib.heldOut, S);
          const err = relativeError(out, ref);
          tg.times.evaluate += now() - t;
          const result = { errBefore: chosen.err, errAfter: err, kept: err < chosen.err };
          if (result.kept) {
            chosen.mw = mw2;
            chosen.err = err;
          }
          return result;
        };
        const nFit = Math.min(calib.samples, REFIT_WINDOWS); // calibration windows of the refits
        let refit: LayerReport['valueRefit'] = null;
        if (opt.valueRefit) {
          // ---- closed-form value refit under the converted attention (calibration windows)
          t = now();
          progress('factorize', l, 'value refit');
          const kvb = await refitValues(spec, mlaSpec, w, chosen.mw, x, nFit, S);
          tg.times.factorize += now() - t;
          refit = { windows: nFit, ...(await tryReplacing({ 'self_attn.kv_b_proj.weight': kvb })) };
        }
        let outRefit: LayerReport['outputRefit'] = null;
        if (opt.outputRefit) {
          // ---- joint value/output refit across heads (calibration windows)
          t = now();
          progress('factorize', l, 'output refit');
          const r = await refitOutput(spec, mlaSpec, w, chosen.mw, x, nFit, S);
          tg.times.factorize += now() - t;
          if (r) outRefit = { windows: nFit, rank: r.rank, ...(await tryReplacing({ 'self_attn.kv_b_proj.weight': r.kvB, 'self_attn.o_proj.weight': r.oProj })) };
        }
        let queryCompression: LayerReport['queryCompression'] = null;
        if (opt.qLoraRank !== null) {
          // ---- query compression (q_a / q_a_layernorm / q_b), after the candidate choice
          t = now();
          progress('factorize', l, 'query compression');
          // the query as evaluated (a later stage may have changed it), stored-dtype values
          const qw = chosen.mw.tensors['self_attn.q_proj.weight'].data;
          const qb = chosen.mw.tensors['self_attn.q_proj.bias']?.data ?? null;
          const M = spec.numHeads * (spec.headDim + opt.qkRopeDim);
          const qc = compressQuery(qw, qb, M, hid, opt.qLoraRank, moments, x, statRows, spec.rmsNormEps, opt.latentNorm === 'exact');
          const mw3 = withQueryCompression(chosen.mw, qc, dtype, tg.exportSettings.attentionBias);
          tg.times.factorize += now() - t;
          t = now();
          const out = await backend.attentionForward(tg.outSpec, mw3, xHeld, calib.heldOut, S);
          const err = relativeError(out, ref);
          tg.times.evaluate += now() - t;
          queryCompression = {
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
        }
        t = now();
        progress('write', l);
        // written behind the next layer's work (one shard in flight); the time is the wait
        // [export: portable] interleaved rope rows, no bias tensors (src/export/target.ts)
        const written = exportLayerTensors(opt.target, tg.config, layerTensors(l, chosen.mw, dtype));
        await tg.sink.writeShardBehind(tg.sink.layerShard(l), await backend.encodeForWrite(written));
        tg.times.write += now() - t;
        tg.layers.push({
          layer: l,
          freqfold: chosen.f.freqfold,
          balanceKv: chosen.balance,
          ropeSelection: chosen.sel,
          kvMetric: chosen.metric,
          candidates,
          attnRelError: chosen.err,
          ropeVarianceKept: chosen.f.ropeVarianceKept,
          pcaVarianceKept: chosen.f.pcaVarianceKept,
          balanceScale: chosen.f.balanceScale,
          ropeSpectrum: chosen.f.ropeSpectrum,
          pcaSpectrum: chosen.f.pcaSpectrum,
          latentNorm: chosen.norm,
          valueRefit: refit,
          outputRefit: outRefit,
          queryCompression,
          biasFold,
          seconds: now() - tl,
        });
        // ---- propagate through the converted layer (single target with converted inputs)
        if (opt.calibInputs === 'converted') {
          t = now();
          progress('propagate', l);
          await backend.layerForward(tg.outSpec, chosen.mw, hidden, count, S);
          shared.forward += now() - t;
        }
      }
      if (opt0.calibInputs === 'original') {
        t = now();
        progress('propagate', l);
        await backend.layerForward(spec, w, hidden, count, S);
        shared.forward += now() - t;
      }
      t = now();
      const save = targets.map((tg) => tg.sink.checkpointDue(l));
      if (save.some(Boolean)) await backend.syncHidden(hidden);
      for (const [i, tg] of targets.entries()) await tg.sink.layerDone(l, hidden, tg.layers, save[i]);
      shared.write += now() - t;
    }

    // ---- final norm, lm_head, config, tokenizer files, report
    checkAbort(options.signal);
    const reports: ConversionReport[] = [];
    for (const tg of targets) {
      t = now();
      const last: OutTensor[] = [await rawTensor(ckpt, 'model.norm.weight')];
      if (!spec.tieWordEmbeddings) last.push(await rawTensor(ckpt, 'lm_head.weight'));
      // [export: portable] lm_head always written (src/export/target.ts)
      await tg.sink.writeShard(tg.sink.finalShard, await exportFinalTensors(tg.opt.target, spec, last, () => rawTensor(ckpt, 'model.embed_tokens.weight')));
      const report = buildReport(spec, options.modelDir, tg, tokens.length);
      // [export: portable] config.json for the stock engines and its report block (src/export/target.ts)
      const exported = exportConfig(tg.opt.target, tg.config, spec);
      if (exported.report) report.portable = exported.report;
      for (const k of Object.keys(shared) as Array<keyof StageTimes>) tg.times[k] += shared[k];
      tg.times.write += now() - t;
      tg.times.total = now() - t0;
      report.times = tg.times;
      await tg.sink.finish(options.modelDir, exported.config, report);
      await writeReportHtml(tg.outDir);
      reports.push(report);
    }
    progress('done', numLayers);
    return reports;
  } finally {
    // a shard still being written when something failed: let it finish (or fail) first
    for (const tg of targets) await tg.sink.settle();
    await backend.release();
    await ckpt.close();
  }
}

function buildReport(spec: ModelSpec, modelDir: string, tg: Target, calibTokens: number): ConversionReport {
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
      calibTokens,
      qkLatentLayernorm: tg.exportSettings.qkLatentLayernorm,
      dtype: tg.exportSettings.dtype,
    },
    kvValuesPerToken: {
      before: perLayerBefore * spec.numLayers,
      after: perLayerAfter * spec.numLayers,
      perLayerBefore,
      perLayerAfter,
      ratio: perLayerBefore / perLayerAfter,
    },
    layers: tg.layers,
    meanAttnRelError: tg.layers.reduce((s, r) => s + r.attnRelError, 0) / Math.max(1, tg.layers.length),
    times: tg.times,
  };
  if (tg.startLayer > 0) report.resumedFromLayer = tg.startLayer;
  return report;
}

async function readCalibText(file?: string): Promise<string> {
  if (!file) throw new GqaError('ERR_NO_CALIB', 'a calibration text is required (--calib <file>)', 'usage');
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    throw new GqaError('ERR_CALIB_READ', `cannot read calibration text ${file}: ${(e as Error).message}`, 'input');
  }
}

/**
 * Whether a conversion with these options reads the normalised calibration inputs x on the
 * host (otherwise the backend may keep them on the device only): the attention-aware KV
 * metric, the NoPE distance profile, the value/output refits and the query compression do.
 * Keep this list in step with the host uses of `x` / `xHeld` in run().
 */
function readsHostInputs(opt: ResolvedOptions): boolean {
  return opt.kvMetric === 'attention' || opt.kvMetric === 'auto' || opt.nopeShrink || opt.valueRefit || opt.outputRefit || opt.qLoraRank !== null;
}

function storedDtype(d: string): string {
  return d === 'F32' || d === 'F16' || d === 'BF16' ? d : 'F32';
}

async function rawTensor(ckpt: Checkpoint, name: string): Promise<OutTensor> {
  const r = await ckpt.readRaw(name);
  return { name, dtype: r.dtype, shape: r.shape, data: r.data };
}

/**
 * Rows `ids` of an embedding table given by its stored bytes, as float32 ([ids, hid]): only
 * the needed rows are widened (BF16/F16), so the table is read once and never expanded whole.
 */
async function embedRows(table: OutTensor, ids: Int32Array, hid: number): Promise<Float32Array> {
  const bytes = table.data as Uint8Array;
  const vocab = table.shape[0];
  if (table.shape.length !== 2 || table.shape[1] !== hid)
    throw new GqaError('ERR_TENSOR_SHAPE', `model.embed_tokens.weight has shape [${table.shape}], expected [vocab, ${hid}]`);
  const out = new Float32Array(ids.length * hid);
  if (table.dtype === 'BF16' || table.dtype === 'F16') {
    const aligned = bytes.byteOffset % 2 === 0 ? bytes : bytes.slice();
    const u16 = new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 2);
    for (let r = 0; r < ids.length; r++) {
      const id = ids[r];
      if (!(id >= 0 && id < vocab)) throw new GqaError('ERR_OUT_OF_RANGE', `token id ${id} is outside the embedding table [0, ${vocab})`);
      native.widen16(u16.subarray(id * hid, (id + 1) * hid), table.dtype, out.subarray(r * hid, (r + 1) * hid));
    }
    return out;
  }
  await native.embedGatherAsync(toFloat32(bytes, table.dtype as Dtype), ids, out, hid);
  return out;
}

function gqaAttention(w: LayerWeights) {
  const t = (n: string) => w.tensors[`self_attn.${n}`]?.data ?? null;
  return { wq: t('q_proj.weight')!, wk: t('k_proj.weight')!, wv: t('v_proj.weight')!, wo: t('o_proj.weight')!, bq: t('q_proj.bias'), bk: t('k_proj.bias'), bv: t('v_proj.bias'), bo: t('o_proj.bias') };
}

/**
 * The converted layer as the engine reads it, rounded to the stored dtype (what is
 * evaluated is what is written), with the exact latent norm applied when enabled.
 */
async function mlaLayerWeights(
  spec: ModelSpec,
  w: LayerWeights,
  f: LayerFactorization,
  opt: ResolvedOptions,
  dtype: string,
  x: Float32Array,
  statRows: number,
  backend: ComputeBackend,
): Promise<{ weights: LayerWeights; norm: LayerReport['latentNorm'] }> {
  const hid = spec.hiddenSize;
  const R = opt.kvLoraRank;
  const r = opt.qkRopeDim;
  const H = spec.numHeads;
  const d = spec.headDim;
  const a = f.attention;
  const kvA = a.kvA;
  const kvABias = a.kvABias;
  let normWeight = 1;
  let norm: LayerReport['latentNorm'] = null;
  if (opt.latentNorm === 'exact') {
    const { maxMs, minAbs } = await backend.latentMeanSquare(kvA, kvABias, R, hid, x, statRows);
    const sc = chooseLatentScaling(maxMs, minAbs, spec.rmsNormEps);
    for (let i = 0; i < R * hid; i++) kvA[i] *= sc.alpha;
    if (kvABias) for (let i = 0; i < R; i++) kvABias[i] *= sc.alpha;
    normWeight = sc.weight;
    norm = latentNormReport(sc, 0);
  }
  const rd = (v: Float32Array) => roundToDtype(v, dtype);
  const tensors: LayerWeights['tensors'] = {};
  for (const [name, t] of Object.entries(w.tensors)) if (!name.startsWith('self_attn.')) tensors[name] = t;
  tensors['self_attn.q_proj.weight'] = { data: rd(a.qProj), shape: [H * (d + r), hid] };
  if (a.qBias) tensors['self_attn.q_proj.bias'] = { data: rd(a.qBias), shape: [H * (d + r)] };
  tensors['self_attn.kv_a_proj_with_mqa.weight'] = { data: rd(kvA), shape: [R + r, hid] };
  const attnBias = spec.attentionBias || spec.oBias;
  if (attnBias) tensors['self_attn.kv_a_proj_with_mqa.bias'] = { data: rd(kvABias ?? new Float32Array(R + r)), shape: [R + r] };
  tensors['self_attn.kv_a_layernorm.weight'] = { data: new Float32Array(R).fill(normWeight), shape: [R] };
  tensors['self_attn.kv_b_proj.weight'] = { data: rd(a.kvB), shape: [H * 2 * d, R] };
  tensors['self_attn.o_proj.weight'] = { data: a.oProj, shape: [hid, H * d] };
  if (attnBias) tensors['self_attn.o_proj.bias'] = { data: a.oBias ?? new Float32Array(hid), shape: [hid] };
  if (norm) norm.subnormalWeights = countSubnormal(tensors['self_attn.kv_a_proj_with_mqa.weight'].data, dtype);
  return { weights: { layer: w.layer, tensors }, norm };
}

/**
 * `w` with q_proj replaced by the compressed query path. A q bias is carried by q_a_proj's
 * bias channel (q-compress.ts); with attention_bias, stock engines build q_a_proj with a
 * bias, so it is written (zeros) even when the source had no query bias.
 */
function withQueryCompression(w: LayerWeights, qc: QueryCompression, dtype: string, attentionBias: boolean): LayerWeights {
  const tensors: LayerWeights['tensors'] = {};
  for (const [name, t] of Object.entries(w.tensors)) if (name !== 'self_attn.q_proj.weight' && name !== 'self_attn.q_proj.bias') tensors[name] = t;
  const N = qc.qLoraRank;
  const M = qc.qB.length / N;
  const hid = qc.qA.length / N;
  tensors['self_attn.q_a_proj.weight'] = { data: roundToDtype(qc.qA, dtype), shape: [N, hid] };
  if (qc.qABias || attentionBias) tensors['self_attn.q_a_proj.bias'] = { data: roundToDtype(qc.qABias ?? new Float32Array(N), dtype), shape: [N] };
  tensors['self_attn.q_a_layernorm.weight'] = { data: new Float32Array(N).fill(qc.normWeight), shape: [N] };
  tensors['self_attn.q_b_proj.weight'] = { data: roundToDtype(qc.qB, dtype), shape: [M, N] };
  return { layer: w.layer, tensors };
}

const LAYER_ORDER = [
  'input_layernorm.weight',
  'self_attn.q_proj.weight',
  'self_attn.q_proj.bias',
  'self_attn.q_a_proj.weight',
  'self_attn.q_a_proj.bias',
  'self_attn.q_a_layernorm.weight',
  'self_attn.q_b_proj.weight',
  'self_attn.kv_a_proj_with_mqa.weight',
  'self_attn.kv_a_proj_with_mqa.bias',
  'self_attn.kv_a_layernorm.weight',
  'self_attn.kv_b_proj.weight',
  'self_attn.o_proj.weight',
  'self_attn.o_proj.bias',
  'post_attention_layernorm.weight',
  'mlp.gate_proj.weight',
  'mlp.up_proj.weight',
  'mlp.down_proj.weight',
];

/** The tensors of converted layer `l` in a fixed order (float32 values, stored as `dtype`). */
function layerTensors(l: number, w: LayerWeights, dtype: string): OutTensor[] {
  const out: OutTensor[] = [];
  for (const n of LAYER_ORDER) {
    const t = w.tensors[n];
    if (t) out.push({ name: `model.layers.${l}.${n}`, dtype, shape: t.shape, data: t.data });
  }
  return out;
}
