/**
 * The outputs of a conversion run: per budget, its resolved options, stored dtype, export
 * settings, DeepSeek-V3 config and specs, and its partial output directory.
 */
import type { Checkpoint } from '../checkpoint/checkpoint.js';
import { parseModelSpec } from '../model/spec.js';
import type { ModelSpec } from '../model/spec-types.js';
import { portableRope, ropeConfigFields, type RopeExport } from '../export/rope-yarn.js';
import { deepseekConfig, type ExportSettings } from './config.js';
import { ropeSlotDrift } from './rope-drift.js';
import type { ConvertOptions, ResolvedOptions } from './options.js';
import { OutputSink } from './output.js';
import type { Target, Windows } from './stages/context.js';
import { zeroTimes } from './stages/stage-list.js';

/** A budget to write: resolved options and its output directory. */
export interface TargetSpec {
  opt: ResolvedOptions;
  outDir: string;
}

function storedDtype(d: string): string {
  return d === 'F32' || d === 'F16' || d === 'BF16' ? d : 'F32';
}

/** Opens one target: its settings, config and partial output directory (refused when it exists, unless overwrite/resume). */
async function openTarget(spec: ModelSpec, options: ConvertOptions, ckpt: Checkpoint, o: TargetSpec, windows: Windows): Promise<Target> {
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
  const rope = inexactPortableRope(spec, opt);
  // an inexact portable rope: what is evaluated is what the engines compute (the exported rope)
  const asEngine = (c: Record<string, unknown>) => (rope ? { ...c, ...ropeConfigFields(rope) } : c);
  const outSpec = parseModelSpec(asEngine(config), `${o.outDir}/config.json`);
  const mlaSpec = opt.qLoraRank === null ? outSpec : parseModelSpec(asEngine(deepseekConfig(spec, opt, { ...exportSettings, qLoraRank: null })), `${o.outDir}/config.json`);
  const sink = await OutputSink.open({ ...options, outDir: o.outDir }, opt, spec.numLayers, {
    source: options.modelDir,
    opt,
    calibTokens: windows.tokens,
    calibOffsets: windows.calib.offsets,
  });
  return { opt, outDir: o.outDir, sink, config, mlaSpec, outSpec, exportSettings, layers: [], times: zeroTimes(), startLayer: 0, ropeDrift: rope && opt.ropeDriftCorrection ? ropeSlotDrift(spec, outSpec, rope.slotFrequencies) : null };
}

/**
 * The portable target's rope when the engines do not compute the source's frequencies (llama3,
 * linear: src/export/rope-yarn.ts); null when they are exact (or the target is not portable).
 */
function inexactPortableRope(spec: ModelSpec, opt: ResolvedOptions): RopeExport | null {
  if (opt.target !== 'portable') return null;
  const rope = portableRope(spec, opt.qkRopeDim);
  return rope.report.exact ? null : rope;
}

/** Opens every target in order, pushing each into `into` as soon as it is open (so a failure can still settle the earlier ones). */
export async function openTargets(spec: ModelSpec, options: ConvertOptions, ckpt: Checkpoint, outs: TargetSpec[], windows: Windows, into: Target[]): Promise<void> {
  for (const o of outs) into.push(await openTarget(spec, options, ckpt, o, windows));
}
