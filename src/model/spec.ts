/**
 * Hugging Face config.json -> ModelSpec for llama, qwen2, mistral (GQA and MHA) and
 * deepseek_v3 (converted checkpoints). RoPE settings are read in both styles: `rope_theta`
 * + `rope_scaling` (most Hub checkpoints) and transformers-5 `rope_parameters`.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GqaError } from '../errors.js';
import type { ModelSpec, RopeSpec } from './spec-types.js';

export type { ModelSpec, RopeSpec };

/** model_type values gqa2mla reads. */
export const SUPPORTED_MODEL_TYPES = ['llama', 'qwen2', 'mistral', 'deepseek_v3'] as const;
/** RoPE types gqa2mla reads. */
export const SUPPORTED_ROPE_TYPES = ['default', 'linear', 'llama3', 'dynamic', 'yarn'] as const;

/** Reads `<dir>/config.json`. */
export async function loadModelSpec(dir: string): Promise<ModelSpec> {
  const path = join(dir, 'config.json');
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw new GqaError('ERR_FILE_MISSING', `${path}: cannot read config.json (is ${dir} a checkpoint directory?)`, 'input');
  }
  let cfg: unknown;
  try {
    cfg = JSON.parse(text);
  } catch (e) {
    throw new GqaError('ERR_BAD_CONFIG', `${path}: not valid JSON (${(e as Error).message})`, 'input');
  }
  if (!cfg || typeof cfg !== 'object' || Array.isArray(cfg)) throw new GqaError('ERR_BAD_CONFIG', `${path}: not a JSON object`, 'input');
  return parseModelSpec(cfg as Record<string, unknown>, path);
}

/** Builds a ModelSpec from a parsed config object; `source` names it in errors. */
export function parseModelSpec(config: Record<string, unknown>, source = 'config.json'): ModelSpec {
  const c = config;
  const fail = (field: string, why: string) => new GqaError('ERR_BAD_CONFIG', `${source}: ${field} ${why}`, 'input');
  const int = (k: string, dflt?: number): number => {
    const v = c[k] ?? dflt;
    if (v === undefined || v === null) throw fail(k, 'is missing');
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw fail(k, `must be a positive integer (got ${JSON.stringify(v)})`);
    return v;
  };
  const mt = c.model_type;
  if (typeof mt !== 'string' || !(SUPPORTED_MODEL_TYPES as readonly string[]).includes(mt))
    throw new GqaError(
      'ERR_UNSUPPORTED_MODEL',
      `${source}: model_type ${JSON.stringify(mt)} is not supported (supported: ${SUPPORTED_MODEL_TYPES.join(', ')})`,
      'input',
    );
  const modelType = mt as ModelSpec['modelType'];
  const hiddenSize = int('hidden_size');
  const numHeads = int('num_attention_heads');
  const numKvHeads = int('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) throw fail('num_key_value_heads', `(${numKvHeads}) must divide num_attention_heads (${numHeads})`);
  const eps = c.rms_norm_eps ?? 1e-6;
  if (typeof eps !== 'number' || !(eps > 0)) throw fail('rms_norm_eps', 'must be a positive number');
  let headDim: number;
  let mla: ModelSpec['mla'];
  if (modelType === 'deepseek_v3') {
    const nope = int('qk_nope_head_dim');
    const qlr = c.q_lora_rank;
    if (qlr !== null && qlr !== undefined && (typeof qlr !== 'number' || !Number.isInteger(qlr) || qlr <= 0)) throw fail('q_lora_rank', 'must be null or a positive integer');
    if (c.n_routed_experts && (typeof c.first_k_dense_replace !== 'number' || c.first_k_dense_replace < int('num_hidden_layers')))
      throw new GqaError('ERR_UNSUPPORTED_MODEL', `${source}: mixture-of-experts DeepSeek-V3 layers are not supported (only dense layers: first_k_dense_replace = num_hidden_layers)`, 'input');
    mla = {
      qLoraRank: (qlr as number | null | undefined) ?? null,
      kvLoraRank: int('kv_lora_rank'),
      qkRopeHeadDim: int('qk_rope_head_dim'),
      qkNopeHeadDim: nope,
      vHeadDim: int('v_head_dim'),
      ropeInterleave: c.rope_interleave === undefined ? true : Boolean(c.rope_interleave),
      qkLatentLayernorm: c.qk_latent_layernorm === undefined ? true : Boolean(c.qk_latent_layernorm),
      qBias: Boolean(c.gqa2mla_q_bias),
    };
    headDim = nope;
  } else {
    headDim = c.head_dim === undefined || c.head_dim === null ? hiddenSize / numHeads : int('head_dim');
    if (!Number.isInteger(headDim)) throw fail('hidden_size', `(${hiddenSize}) is not divisible by num_attention_heads (${numHeads}) and head_dim is absent`);
  }
  const attentionBias = modelType === 'qwen2' ? true : Boolean(c.attention_bias);
  const rope = parseRope(c, source, modelType === 'deepseek_v3' ? mla!.qkRopeHeadDim : headDim);
  const vocab = int('vocab_size');
  return {
    modelType,
    numLayers: int('num_hidden_layers'),
    hiddenSize,
    numHeads,
    numKvHeads,
    headDim,
    intermediateSize: int('intermediate_size'),
    vocabSize: vocab,
    rmsNormEps: eps,
    tieWordEmbeddings: c.tie_word_embeddings === undefined ? modelType === 'qwen2' : Boolean(c.tie_word_embeddings),
    attentionBias: modelType === 'deepseek_v3' ? Boolean(c.attention_bias) : attentionBias,
    oBias: modelType === 'qwen2' ? false : Boolean(c.attention_bias),
    maxPositionEmbeddings: typeof c.max_position_embeddings === 'number' ? c.max_position_embeddings : 2048,
    rope,
    mla,
    raw: config,
  };
}

function parseRope(c: Record<string, unknown>, source: string, _dim: number): RopeSpec {
  const params = (c.rope_parameters && typeof c.rope_parameters === 'object' ? c.rope_parameters : null) as Record<string, unknown> | null;
  const scaling = (c.rope_scaling && typeof c.rope_scaling === 'object' ? c.rope_scaling : null) as Record<string, unknown> | null;
  const src: Record<string, unknown> = { ...(scaling ?? {}), ...(params ?? {}) };
  const theta = (params?.rope_theta ?? c.rope_theta ?? 10000) as unknown;
  if (typeof theta !== 'number' || !(theta > 0)) throw new GqaError('ERR_BAD_CONFIG', `${source}: rope_theta must be a positive number`, 'input');
  const type = (src.rope_type ?? src.type ?? 'default') as string;
  if (!(SUPPORTED_ROPE_TYPES as readonly string[]).includes(type))
    throw new GqaError('ERR_UNSUPPORTED_ROPE', `${source}: rope type ${JSON.stringify(type)} is not supported (supported: ${SUPPORTED_ROPE_TYPES.join(', ')})`, 'input');
  const num = (k: string): number | undefined => (typeof src[k] === 'number' ? (src[k] as number) : undefined);
  const factor = num('factor') ?? 1;
  if (type !== 'default' && !(factor > 0)) throw new GqaError('ERR_BAD_CONFIG', `${source}: rope scaling factor must be positive`, 'input');
  const prf = (params?.partial_rotary_factor ?? c.partial_rotary_factor ?? 1) as number;
  const spec: RopeSpec = { type: type as RopeSpec['type'], theta, factor: type === 'default' ? 1 : factor, partialRotaryFactor: prf };
  if (type === 'llama3') {
    spec.lowFreqFactor = num('low_freq_factor') ?? 1;
    spec.highFreqFactor = num('high_freq_factor') ?? 4;
  }
  const orig = num('original_max_position_embeddings') ?? (type === 'dynamic' && typeof c.max_position_embeddings === 'number' ? c.max_position_embeddings : undefined);
  if (orig !== undefined) spec.originalMaxPositionEmbeddings = orig;
  if (type === 'llama3' && spec.originalMaxPositionEmbeddings === undefined)
    throw new GqaError('ERR_BAD_CONFIG', `${source}: llama3 rope scaling needs original_max_position_embeddings`, 'input');
  if (type === 'yarn') {
    spec.betaFast = num('beta_fast') ?? 32;
    spec.betaSlow = num('beta_slow') ?? 1;
    if (num('mscale') !== undefined) spec.mscale = num('mscale');
    if (num('mscale_all_dim') !== undefined) spec.mscaleAllDim = num('mscale_all_dim');
    if (num('attention_factor') !== undefined) spec.attentionFactor = num('attention_factor');
  }
  return spec;
}
