/**
 * `gqa2mla inspect <model-dir> [--json]`: the ModelSpec read from config.json, the tensor
 * inventory (count, dtypes, bytes, shards), the parameter count and the KV-cache size per
 * token, after validating every shard and checking each tensor the config implies.
 */
import type { Command } from 'commander';
import { Checkpoint } from '../checkpoint/checkpoint.js';
import { numelOf } from '../checkpoint/dtype.js';
import { layerPrefix, layerTensorSpecs } from '../engine/weights.js';
import { GqaError } from '../errors.js';
import { loadModelSpec } from '../model/spec.js';
import type { MlaSpec, ModelSpec, MoeSpec, RopeSpec } from '../model/spec-types.js';

/** The {@link ModelSpec} fields `inspect` reports as they are (`rope` and `mla` as copies). */
type InspectedSpec = Pick<
  ModelSpec,
  | 'modelType'
  | 'numLayers'
  | 'hiddenSize'
  | 'numHeads'
  | 'numKvHeads'
  | 'headDim'
  | 'intermediateSize'
  | 'vocabSize'
  | 'rmsNormEps'
  | 'maxPositionEmbeddings'
  | 'rope'
  | 'attentionBias'
  | 'oBias'
  | 'tieWordEmbeddings'
>;

/** What `inspect` reports (the `--json` output): the spec's settings, then the inventory. */
export interface InspectResult extends InspectedSpec {
  dir: string;
  /** per-head RMSNorm of queries and keys before RoPE (qwen3's q_norm / k_norm) */
  qkNorm: boolean;
  /** DeepSeek-V3 attention settings (deepseek_v3 only, else null) */
  mla: MlaSpec | null;
  /** mixture-of-experts MLP (experts, top-k, per-expert intermediate size, routing), else null */
  moe: MoeSpec | null;
  /** elements of all stored tensors */
  numParams: number;
  numTensors: number;
  /** bytes of all tensors */
  totalBytes: number;
  /** tensors and bytes per stored dtype */
  dtypes: Record<string, { count: number; bytes: number }>;
  /** shard file names */
  shards: string[];
  /** `__metadata__` of the first shard */
  metadata: Record<string, string>;
  /** values cached per token per layer: 2 x kv_heads x head_dim, or kv_lora_rank + qk_rope_head_dim (MLA) */
  kvValuesPerTokenPerLayer: number;
  /** kvValuesPerTokenPerLayer x numLayers */
  kvValuesPerToken: number;
  /** KV-cache bytes per token over all layers at 2 bytes a value (bf16) */
  kvCacheBf16BytesPerToken: number;
  /** stored tensors the config does not account for (e.g. rotary inv_freq buffers) */
  unexpectedTensors: string[];
}

/** Values cached per token per layer by `spec`'s attention. */
export function kvValuesPerTokenPerLayer(spec: ModelSpec): number {
  return spec.mla ? spec.mla.kvLoraRank + spec.mla.qkRopeHeadDim : 2 * spec.numKvHeads * spec.headDim;
}

/** Every tensor `spec` implies, with its shape and whether it may be absent. */
function expectedTensors(spec: ModelSpec): { name: string; shape: number[]; optional: boolean }[] {
  const out = [{ name: 'model.embed_tokens.weight', shape: [spec.vocabSize, spec.hiddenSize], optional: false }];
  for (let l = 0; l < spec.numLayers; l++)
    for (const w of layerTensorSpecs(spec, l)) out.push({ name: layerPrefix(l) + (w.source ?? w.name), shape: w.shape, optional: Boolean(w.optional) });
  out.push({ name: 'model.norm.weight', shape: [spec.hiddenSize], optional: false });
  out.push({ name: 'lm_head.weight', shape: [spec.vocabSize, spec.hiddenSize], optional: spec.tieWordEmbeddings });
  return out;
}

/**
 * Reads `<dir>/config.json` and validates every shard of the checkpoint; checks that each
 * tensor the config implies is present with the implied shape (ERR_TENSOR_MISSING /
 * ERR_TENSOR_SHAPE naming the tensor and file).
 */
export async function inspectModel(dir: string): Promise<InspectResult> {
  const spec = await loadModelSpec(dir);
  const ckpt = await Checkpoint.open(dir);
  try {
    const dtypes: Record<string, { count: number; bytes: number }> = {};
    let numParams = 0;
    const names = ckpt.names();
    for (const name of names) {
      const info = ckpt.info(name);
      numParams += numelOf(info.shape);
      const d = (dtypes[info.dtype] ??= { count: 0, bytes: 0 });
      d.count++;
      d.bytes += info.byteLength;
    }
    const expected = expectedTensors(spec);
    const accounted = new Set<string>();
    for (const e of expected) {
      accounted.add(e.name);
      if (!ckpt.has(e.name)) {
        if (e.optional) continue;
        throw new GqaError('ERR_TENSOR_MISSING', `${dir}: tensor ${e.name} is missing (config.json: model_type ${spec.modelType}, ${spec.numLayers} layers)`, 'input');
      }
      const info = ckpt.info(e.name);
      if (info.shape.length !== e.shape.length || info.shape.some((v, i) => v !== e.shape[i]))
        throw new GqaError('ERR_TENSOR_SHAPE', `${info.file}: tensor ${e.name} has shape [${info.shape.join(', ')}] but config.json implies [${e.shape.join(', ')}]`, 'input');
    }
    const kv = kvValuesPerTokenPerLayer(spec);
    return {
      dir,
      modelType: spec.modelType,
      numLayers: spec.numLayers,
      hiddenSize: spec.hiddenSize,
      numHeads: spec.numHeads,
      numKvHeads: spec.numKvHeads,
      headDim: spec.headDim,
      intermediateSize: spec.intermediateSize,
      vocabSize: spec.vocabSize,
      rmsNormEps: spec.rmsNormEps,
      maxPositionEmbeddings: spec.maxPositionEmbeddings,
      rope: { ...spec.rope },
      attentionBias: spec.attentionBias,
      oBias: spec.oBias,
      qkNorm: spec.qkNorm === true,
      tieWordEmbeddings: spec.tieWordEmbeddings,
      mla: spec.mla ? { ...spec.mla } : null,
      moe: spec.moe ? { ...spec.moe, routing: { ...spec.moe.routing } } : null,
      numParams,
      numTensors: names.length,
      totalBytes: ckpt.totalBytes,
      dtypes,
      shards: ckpt.shards,
      metadata: ckpt.metadata,
      kvValuesPerTokenPerLayer: kv,
      kvValuesPerToken: kv * spec.numLayers,
      kvCacheBf16BytesPerToken: 2 * kv * spec.numLayers,
      unexpectedTensors: names.filter((n) => !accounted.has(n)),
    };
  } finally {
    await ckpt.close();
  }
}

const thousands = (n: number) => n.toLocaleString('en-US');

/** `1234567` -> `1.23 M`. */
function si(n: number, unit = ''): string {
  const steps: [number, string][] = [
    [1e12, 'T'],
    [1e9, 'G'],
    [1e6, 'M'],
    [1e3, 'k'],
  ];
  for (const [v, p] of steps) if (n >= v) return `${(n / v).toFixed(2)} ${p}${unit}`;
  return `${n} ${unit}`.trim();
}

function ropeText(r: RopeSpec): string {
  const parts = [`${r.type}, theta ${r.theta}`];
  if (r.type !== 'default') parts.push(`factor ${r.factor}`);
  if (r.lowFreqFactor !== undefined) parts.push(`low ${r.lowFreqFactor}`, `high ${r.highFreqFactor}`);
  if (r.originalMaxPositionEmbeddings !== undefined) parts.push(`original ${r.originalMaxPositionEmbeddings}`);
  if (r.betaFast !== undefined) parts.push(`beta ${r.betaFast}/${r.betaSlow}`);
  if (r.mscale !== undefined) parts.push(`mscale ${r.mscale}`);
  if (r.mscaleAllDim !== undefined) parts.push(`mscale_all_dim ${r.mscaleAllDim}`);
  if (r.attentionFactor !== undefined) parts.push(`attention_factor ${r.attentionFactor}`);
  if (r.partialRotaryFactor !== 1) parts.push(`partial ${r.partialRotaryFactor}`);
  return parts.join(', ');
}

function table(rows: string[][]): string {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => (c === r.length - 1 ? cell : cell.padEnd(widths[c]))).join('  ')).join('\n');
}

/** The report rows of a mixture-of-experts MLP. */
function moeRows(m: MoeSpec, numLayers: number): string[][] {
  const r = m.routing;
  const groups = r.nGroup > 1 ? `, best ${r.topkGroup} of ${r.nGroup} groups` : '';
  const weights = `${r.normTopkProb ? 'renormalised over the selected' : 'not renormalised'}${r.routedScalingFactor !== 1 ? `, x ${r.routedScalingFactor}` : ''}`;
  const layers = m.moeLayers
    ? `layers ${m.moeLayers.join(', ')} of ${numLayers}`
    : m.firstDense === 0 && m.layerFreq === 1
      ? 'every layer'
      : `layers >= ${m.firstDense}${m.layerFreq === 1 ? '' : ` with index % ${m.layerFreq} = 0`} (of ${numLayers})`;
  return [
    ['experts', `${m.numExperts} routed, top ${m.topK} per token, no shared expert (${layers})`],
    ['expert intermediate size', String(m.expertIntermediateSize)],
    ['routing', `${r.scoring} scores${r.correctionBias ? ' + e_score_correction_bias for selection' : ''}${groups}; weights ${weights}`],
  ];
}

/** The human-readable report of `r`. */
export function formatInspect(r: InspectResult): string {
  const rows: string[][] = [
    ['checkpoint', r.dir],
    ['model type', r.modelType],
    ['layers', String(r.numLayers)],
    ['hidden size', String(r.hiddenSize)],
    ['attention heads', String(r.numHeads)],
    [
      'kv heads',
      `${r.numKvHeads}${r.mla ? ' (MLA: one shared latent per token)' : r.numKvHeads === r.numHeads ? ' (MHA)' : ` (GQA, ${r.numHeads / r.numKvHeads} queries per kv head)`}`,
    ],
    ['head dim', String(r.headDim)],
    ['intermediate size', String(r.intermediateSize)],
    ['vocab size', String(r.vocabSize)],
    ['rms norm eps', String(r.rmsNormEps)],
    ['max positions', String(r.maxPositionEmbeddings)],
    ['rope', ropeText(r.rope)],
    ['qkv bias / o bias', `${r.attentionBias} / ${r.oBias}`],
    ...(r.qkNorm ? [['q/k norm', 'per-head RMSNorm over head dim before RoPE (q_norm, k_norm)']] : []),
    ['tied embeddings', String(r.tieWordEmbeddings)],
  ];
  if (r.mla) {
    const m = r.mla;
    rows.push(
      ['kv_lora_rank', String(m.kvLoraRank)],
      ['q_lora_rank', String(m.qLoraRank)],
      ['qk nope / rope / v dims', `${m.qkNopeHeadDim} / ${m.qkRopeHeadDim} / ${m.vHeadDim}`],
      ['rope interleave', String(m.ropeInterleave)],
      ['latent layernorm', String(m.qkLatentLayernorm)],
    );
  }
  if (r.moe) rows.push(...moeRows(r.moe, r.numLayers));
  rows.push(
    ['parameters', `${si(r.numParams)} (${thousands(r.numParams)})`],
    ['tensors', String(r.numTensors)],
    ['weights size', `${si(r.totalBytes, 'B')} (${thousands(r.totalBytes)} bytes)`],
    ['kv cache / token / layer', `${r.kvValuesPerTokenPerLayer} values`],
    ['kv cache / token', `${thousands(r.kvValuesPerToken)} values, ${si(r.kvCacheBf16BytesPerToken, 'B')} in bf16`],
    ['shards', `${r.shards.length}: ${r.shards.join(', ')}`],
  );
  if (r.unexpectedTensors.length) rows.push(['not used by the config', `${r.unexpectedTensors.length}: ${r.unexpectedTensors.slice(0, 5).join(', ')}${r.unexpectedTensors.length > 5 ? ', ...' : ''}`]);
  const dt: string[][] = [['dtype', 'tensors', 'bytes']];
  for (const [d, v] of Object.entries(r.dtypes).sort()) dt.push([d, String(v.count), thousands(v.bytes)]);
  return `${table(rows)}\n\n${table(dt)}\n`;
}

/** Registers the command. */
export function register(program: Command): void {
  program
    .command('inspect')
    .description('show the model settings, tensor inventory and KV-cache size of a checkpoint (validates every shard)')
    .argument('<model-dir>', 'checkpoint directory (config.json + safetensors; llama, qwen2, qwen3, qwen3_moe, mistral, mixtral or deepseek_v3)')
    .option('--json', 'print the result as one JSON object')
    .addHelpText('after', '\nExamples:\n  gqa2mla inspect test/fixtures/tiny-llama-gqa\n  gqa2mla inspect ./model-mla --json')
    .action(async (modelDir: string, o: { json?: boolean }) => {
      const r = await inspectModel(modelDir);
      process.stdout.write(o.json ? `${JSON.stringify(r, null, 2)}\n` : formatInspect(r));
    });
}
