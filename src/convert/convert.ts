/**
 * convert(): a GQA/MHA checkpoint -> a DeepSeek-V3 (MLA) checkpoint, one decoder layer at
 * a time, as a composition of the stages in ./stages/ (their list, with the progress event
 * and report timing of each, is stages/stage-list.ts):
 *
 *   calibrate -> embed -> per layer: statistics -> candidate search -> refits
 *   -> query compression -> export -> propagate -> next layer; then finish
 *
 * Only one layer's weights, the calibration hidden states and that layer's statistics
 * are in memory; each layer's tensors are written as soon as it is done, so peak memory
 * does not grow with depth.
 */
import { mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Checkpoint } from '../checkpoint/checkpoint.js';
import { loadModelSpec } from '../model/spec.js';
import type { ModelSpec } from '../model/spec-types.js';
import { createBackend } from '../backend/select.js';
import { checkOutputTarget } from '../checkpoint/output-guard.js';
import { GqaError, usageError } from '../errors.js';
import type { ConversionReport } from '../report-types.js';
import { defaultContextWindows, resolveContext } from './held-out-context.js';
import { checkConversionMemory } from './memory-estimate.js';
import { type ConvertOptions, type ResolvedOptions, resolveOptions } from './options.js';
import { finishSweepDir } from './output.js';
import { openTargets, type TargetSpec } from './targets.js';
import { foldChosenBiases } from './stages/bias-fold.js';
import { calibrate } from './stages/calibrate.js';
import { checkAbort, type RunContext, type Target } from './stages/context.js';
import { embed } from './stages/embed.js';
import { exportLayer, finishTarget } from './stages/export.js';
import { propagate, saveLayer } from './stages/propagate.js';
import { compressLayerQuery } from './stages/query.js';
import { refitLayer } from './stages/refit.js';
import { searchCandidates } from './stages/search.js';
import { StageClock, zeroTimes } from './stages/stage-list.js';
import { type StatisticsInput, layerStatistics } from './stages/statistics.js';

export type { ConvertOptions, ConversionReport };

const now = () => performance.now() / 1000;

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
  checkAbort(options.signal);
  const spec = await loadModelSpec(options.modelDir);
  const opt = resolveOptions(spec, options);
  await checkBeforeWork(spec, options, opt);
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
  checkAbort(options.signal);
  const spec = await loadModelSpec(options.modelDir);
  if ((options.calibInputs ?? 'original') !== 'original')
    throw usageError('ERR_BAD_OPTION', "a budget sweep needs calibInputs 'original' (converted inputs differ per budget); run one conversion per budget instead");
  if (options.kvLoraRanks.length === 0 || options.qkRopeDims.length === 0) throw usageError('ERR_BAD_OPTION', 'a sweep needs at least one rank and one rope dim');
  const targets: Array<{ opt: ResolvedOptions; outDir: string }> = [];
  for (const p of options.qkRopeDims)
    for (const r of options.kvLoraRanks) {
      const o = { ...options, kvLoraRank: r, qkRopeDim: p };
      targets.push({ opt: resolveOptions(spec, o), outDir: join(options.outDir, `r${r}-p${p}`) });
    }
  await checkBeforeWork(spec, options, targets[0].opt);
  for (const tg of targets) checkOutputTarget({ ...options, outDir: tg.outDir });
  await mkdir(options.outDir, { recursive: true });
  const reports = await run(spec, { ...options, kvLoraRank: undefined, qkRopeDim: undefined, outDir: options.outDir }, targets);
  await finishSweepDir(options.outDir, targets.map((tg) => tg.outDir), reports[0]?.tool.version ?? '0.1.0');
  return {
    outDir: options.outDir,
    budgets: reports.map((report, i) => ({ kvLoraRank: report.settings.kvLoraRank, qkRopeDim: report.settings.qkRopeDim, dir: targets[i].outDir, report })),
    seconds: now() - t0,
  };
}

async function run(spec: ModelSpec, options: ConvertOptions, outs: TargetSpec[]): Promise<ConversionReport[]> {
  const clock = new StageClock(spec.numLayers, options.onProgress);
  const ckpt = await Checkpoint.open(options.modelDir);
  // where each layer's norm, moments, held-out attention, propagation and the factorization's
  // float64 products / eigendecompositions run (src/backend/)
  const backend = createBackend(options.device);
  backend.claimMatKernels();
  const targets: Target[] = [];
  try {
    const shared = zeroTimes();
    const windows = await clock.run('calibrate', shared, {}, () => calibrate({ ...options, maxPositionEmbeddings: spec.maxPositionEmbeddings, opt: outs[0].opt }));
    const ctx: RunContext = { spec, options, backend, clock, windows, shared };
    await openTargets(spec, options, ckpt, outs, windows, targets);
    const { hidden, startLayer } = await clock.run('embed', shared, {}, () => embed(ckpt, spec.hiddenSize, windows, targets));
    const x = new Float32Array(windows.allRows * spec.hiddenSize);
    const xLong = windows.long ? new Float32Array(windows.long.rows * spec.hiddenSize) : null;
    const opts = targets.map((tg) => tg.opt);
    for (let l = startLayer; l < spec.numLayers; l++) await convertLayer(ctx, { ckpt, layer: l, hidden, x, xLong, opts }, targets);
    checkAbort(options.signal);
    const reports: ConversionReport[] = [];
    for (const tg of targets) reports.push(await finishTarget(ctx, ckpt, tg));
    clock.done();
    return reports;
  } catch (e) {
    // a run that recorded no layer leaves nothing to resume: remove its partial directory
    for (const tg of targets) await tg.sink.discardIfUnused();
    throw e;
  } finally {
    // a shard still being written when something failed: let it finish (or fail) first
    for (const tg of targets) await tg.sink.settle();
    await backend.release();
    await ckpt.close();
  }
}

/**
 * Every check that needs no tokenization, before any work: the output directory (and that it
 * does not overlap the source or the inputs), the calibration text's presence, the memory
 * the calibration set needs, and an aborted signal.
 */
async function checkBeforeWork(spec: ModelSpec, options: ConvertOptions, opt: ResolvedOptions): Promise<void> {
  checkAbort(options.signal);
  checkOutputTarget({ ...options, inputs: [options.calibFile] });
  if (options.calibText === undefined) {
    if (!options.calibFile) throw new GqaError('ERR_NO_CALIB', 'a calibration text is required (calibFile or calibText)', 'usage');
    const st = await stat(options.calibFile).catch(() => null);
    if (!st?.isFile()) throw new GqaError('ERR_CALIB_READ', `cannot read calibration text ${options.calibFile}: no such file`, 'input');
  }
  checkConversionMemory(spec, { ...opt, contextRows: contextRowsBound(spec, opt) });
  checkAbort(options.signal);
}

/** The most rows the context windows can take (the context before the calibration text bounds it). */
function contextRowsBound(spec: ModelSpec, opt: ResolvedOptions): number {
  // resolved as the calibrate stage will, before the text is tokenized (no text bound yet)
  const { context } = resolveContext({ context: opt.context ?? undefined }, spec.maxPositionEmbeddings, Infinity, opt.heldOutSamples * opt.calibSeqlen);
  if (context <= opt.calibSeqlen) return 0;
  return (opt.contextWindows ?? defaultContextWindows(opt.heldOutSamples, opt.calibSeqlen, context)) * context;
}

/** One decoder layer through every stage, for every target; `input.hidden` then holds the next layer's inputs. */
async function convertLayer(ctx: RunContext, input: StatisticsInput, targets: Target[]): Promise<void> {
  checkAbort(ctx.options.signal);
  const startedAt = ctx.clock.elapsed();
  const li = await layerStatistics(ctx, input);
  for (const tg of targets) {
    const { chosen, candidates } = await searchCandidates(ctx, li, tg);
    const biasFold = await foldChosenBiases(ctx, li, tg, chosen);
    const refits = await refitLayer(ctx, li, tg, chosen);
    const queryCompression = await compressLayerQuery(ctx, li, tg, chosen);
    await exportLayer(ctx, tg, { layer: li.layer, chosen, candidates, refits, queryCompression, biasFold, startedAt });
    if (tg.opt.calibInputs === 'converted') await propagate(ctx, li.layer, tg.outSpec, chosen.mw, li.hidden);
  }
  if (targets[0].opt.calibInputs === 'original') await propagate(ctx, li.layer, ctx.spec, li.w, li.hidden);
  await saveLayer(ctx, li.layer, li.hidden, targets);
}
