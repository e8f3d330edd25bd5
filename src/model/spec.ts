/**
 * Hugging Face config.json -> ModelSpec for llama, qwen2, qwen3, mistral (GQA and MHA), mixtral
 * (sparse mixture-of-experts MLP), qwen3_moe (qwen3's attention and a sparse MoE MLP) and deepseek_v3 (converted checkpoints, dense or MoE); Gemma2/Gemma3 are refused with the reason. RoPE settings are read in both styles: `rope_theta`
 * + `rope_scaling` (most Hub checkpoints) and transformers-5 `rope_parameters`.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GqaError } from '../errors.js';
import type { ModelSpec, MoeRouting, MoeSpec, RopeSpec } from './spec-types.js';

export type { ModelSpec, MoeRouting, MoeSpec, RopeSpec };

/** model_type values gqa2mla reads. */
export const SUPPORTED_MODEL_TYPES = ['llama', 'qwen2', 'qwen3', 'qwen3_moe', 'mistral', 'mixtral', 'deepseek_v3'] as const;
/**
 * model_type values refused with a reason: stock DeepSeek-V3 has no place for what these
 * architectures compute, so a conversion could not be faithful.
 */
const REFUSED_MODEL_TYPES: Record<string, string> = {
  gemma2: gemmaRefusal('Gemma2'),
  gemma3: gemmaRefusal('Gemma3'),
  gemma3_text: gemmaRefusal('Gemma3'),
};

function gemmaRefusal(name: string): string {
  return (
    `${name} cannot be converted into stock DeepSeek-V3, which cannot express its sandwich norms (pre/post-feedforward RMSNorms around each block), ` +
    'logit soft-capping (attention and final logits), GeGLU MLP (gelu_pytorch_tanh gate) or scaled embeddings (embeddings times sqrt(hidden_size))'
  );
}

/** RoPE types gqa2mla reads. */
export const SUPPORTED_ROPE_TYPES = ['default', 'linear', 'llama3', 'dynamic', 'yarn'] as const;

/** `<dir>/config.json` as a JSON object, with its path (input errors name the file). */
export async function readConfigJson(dir: string): Promise<{ config: Record<string, unknown>; path: string }> {
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
  return { config: cfg as Record<string, unknown>, path };
}

/** Reads `<dir>/config.json`. */
export async function loadModelSpec(dir: string): Promise<ModelSpec> {
  const { config, path } = await readConfigJson(dir);
  return parseModelSpec(config, path);
}

/** max_position_embeddings of each model type's transformers config class, used when absent. */
const DEFAULT_MAX_POSITIONS: Record<ModelSpec['modelType'], number> = {
  llama: 2048,
  mistral: 131072,
  mixtral: 131072,
  qwen2: 32768,
  qwen3: 32768,
  qwen3_moe: 32768,
  deepseek_v3: 4096,
};

/**
 * Builds a ModelSpec from a parsed config.json object; `source` names it in errors.
 * Defaults follow transformers' config classes (tie_word_embeddings false, rms_norm_eps 1e-6,
 * num_key_value_heads = num_attention_heads, head_dim = hidden_size / heads). Biases follow
 * the modeling code: llama's and qwen3's attention_bias cover q/k/v and o_proj; qwen2 always
 * has q/k/v biases and never an o_proj bias; mistral has none; deepseek_v3's attention_bias
 * covers q_a_proj / kv_a_proj_with_mqa and o_proj. qwen3 has per-head q_norm / k_norm
 * (`qkNorm`) and, as transformers' Qwen3Config, head_dim 128 when absent. mixtral has no biases
 * and a sparse MoE MLP (`moe`: num_local_experts, num_experts_per_tok, intermediate_size per
 * expert, softmax top-k routing renormalised over the selected). qwen3_moe is qwen3's attention
 * (head_dim hidden_size / heads when absent, as its modeling code falls back) with the MoE MLP
 * of {@link parseQwen3Moe}. For deepseek_v3, headDim is
 * qk_nope_head_dim; routed experts (n_routed_experts, with transformers' defaults of 256
 * experts and 3 dense layers when absent) give `moe` with the gate read as vLLM reads it
 * (see {@link parseDeepseekMoe}); shared experts are refused.
 * Throws ERR_UNSUPPORTED_MODEL, ERR_UNSUPPORTED_ROPE or ERR_BAD_CONFIG (naming the field).
 */
export function parseModelSpec(config: object, source = 'config.json'): ModelSpec {
  if (!config || typeof config !== 'object' || Array.isArray(config)) throw new GqaError('ERR_BAD_CONFIG', `${source}: not a JSON object`, 'input');
  const c = config as Record<string, unknown>;
  const f = configFields(c, source);
  const mt = c.model_type;
  if (typeof mt === 'string' && Object.hasOwn(REFUSED_MODEL_TYPES, mt))
    throw new GqaError('ERR_UNSUPPORTED_MODEL', `${source}: model_type ${JSON.stringify(mt)} is not supported: ${REFUSED_MODEL_TYPES[mt]}`, 'input');
  if (typeof mt !== 'string' || !(SUPPORTED_MODEL_TYPES as readonly string[]).includes(mt))
    throw new GqaError(
      'ERR_UNSUPPORTED_MODEL',
      `${source}: model_type ${JSON.stringify(mt)} is not supported (supported: ${SUPPORTED_MODEL_TYPES.join(', ')})`,
      'input',
    );
  const modelType = mt as ModelSpec['modelType'];
  const qwen3Family = modelType === 'qwen3' || modelType === 'qwen3_moe';
  if (c.hidden_act !== undefined && c.hidden_act !== 'silu' && c.hidden_act !== 'swish')
    throw new GqaError('ERR_UNSUPPORTED_MODEL', `${source}: hidden_act ${JSON.stringify(c.hidden_act)} is not supported (supported: silu)`, 'input');
  const numLayers = f.int('num_hidden_layers');
  const hiddenSize = f.int('hidden_size');
  const numHeads = f.int('num_attention_heads');
  const numKvHeads = f.int('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) throw f.fail('num_key_value_heads', `(${numKvHeads}) must divide num_attention_heads (${numHeads})`);
  const eps = c.rms_norm_eps ?? 1e-6;
  if (typeof eps !== 'number' || !(eps > 0) || !Number.isFinite(eps)) throw f.fail('rms_norm_eps', `must be a positive number (got ${JSON.stringify(eps)})`);
  let headDim: number;
  let mla: ModelSpec['mla'];
  let moe: MoeSpec | undefined;
  if (modelType === 'deepseek_v3') {
    mla = parseMla(f);
    moe = parseDeepseekMoe(f, numLayers, source);
    headDim = mla.qkNopeHeadDim;
  } else {
    const dfltHeadDim = modelType === 'qwen3' ? 128 : hiddenSize / numHeads;
    headDim = c.head_dim === undefined || c.head_dim === null ? dfltHeadDim : f.int('head_dim');
    if (!Number.isInteger(headDim)) throw f.fail('hidden_size', `(${hiddenSize}) is not divisible by num_attention_heads (${numHeads}) and head_dim is absent`);
  }
  const llamaStyle = modelType === 'llama' || qwen3Family;
  const llamaBias = llamaStyle ? f.bool('attention_bias', false) : false;
  const dsBias = modelType === 'deepseek_v3' ? f.bool('attention_bias', false) : false;
  const attentionBias = modelType === 'qwen2' ? true : llamaStyle ? llamaBias : dsBias;
  const oBias = llamaStyle ? llamaBias : dsBias;
  const maxPos = c.max_position_embeddings ?? DEFAULT_MAX_POSITIONS[modelType];
  if (typeof maxPos !== 'number' || !Number.isSafeInteger(maxPos) || maxPos <= 0)
    throw f.fail('max_position_embeddings', `must be a positive integer (got ${JSON.stringify(maxPos)})`);
  const rope = parseRope(c, source);
  if (modelType === 'mixtral') moe = parseMixtralMoe(f);
  if (modelType === 'qwen3_moe') moe = parseQwen3Moe(f, numLayers);
  return {
    modelType,
    numLayers,
    hiddenSize,
    numHeads,
    numKvHeads,
    headDim,
    intermediateSize: f.int('intermediate_size'),
    vocabSize: f.int('vocab_size'),
    rmsNormEps: eps,
    tieWordEmbeddings: f.bool('tie_word_embeddings', false),
    attentionBias,
    oBias,
    maxPositionEmbeddings: maxPos,
    rope,
    mla,
    ...(moe ? { moe } : {}),
    ...(qwen3Family ? { qkNorm: true } : {}),
    raw: c,
  };
}

/** Typed readers of config.json fields, failing with ERR_BAD_CONFIG naming the field. */
interface ConfigFields {
  c: Record<string, unknown>;
  fail: (field: string, why: string) => GqaError;
  /** a positive integer (`dflt` when absent) */
  int: (k: string, dflt?: number) => number;
  /** a boolean (`dflt` when absent or null) */
  bool: (k: string, dflt: boolean) => boolean;
}

function configFields(c: Record<string, unknown>, source: string): ConfigFields {
  const fail = (field: string, why: string) => new GqaError('ERR_BAD_CONFIG', `${source}: ${field} ${why}`, 'input');
  const int = (k: string, dflt?: number): number => {
    const v = c[k] ?? dflt;
    if (v === undefined || v === null) throw fail(k, 'is missing');
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) throw fail(k, `must be a positive integer (got ${JSON.stringify(v)})`);
    return v;
  };
  const bool = (k: string, dflt: boolean): boolean => {
    const v = c[k];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'boolean') throw fail(k, `must be true or false (got ${JSON.stringify(v)})`);
    return v;
  };
  return { c, fail, int, bool };
}

/** The MLA fields of a deepseek_v3 config. */
function parseMla(f: ConfigFields): NonNullable<ModelSpec['mla']> {
  const { c, fail, int, bool } = f;
  const qlr = c.q_lora_rank;
  if (qlr !== null && qlr !== undefined && (typeof qlr !== 'number' || !Number.isSafeInteger(qlr) || qlr <= 0))
    throw fail('q_lora_rank', `must be null or a positive integer (got ${JSON.stringify(qlr)})`);
  const mla = {
    qLoraRank: (qlr as number | null | undefined) ?? null,
    kvLoraRank: int('kv_lora_rank'),
    qkRopeHeadDim: int('qk_rope_head_dim'),
    qkNopeHeadDim: int('qk_nope_head_dim'),
    vHeadDim: int('v_head_dim'),
    ropeInterleave: bool('rope_interleave', true),
    qkLatentLayernorm: bool('qk_latent_layernorm', true),
    qBias: bool('gqa2mla_q_bias', false),
  };
  if (mla.qkRopeHeadDim % 2 !== 0) throw fail('qk_rope_head_dim', `must be even (got ${mla.qkRopeHeadDim})`);
  return mla;
}

/** Whether decoder layer `layer` of `spec` has a mixture-of-experts MLP. */
export function isMoeLayer(spec: ModelSpec, layer: number): boolean {
  const m = spec.moe;
  if (m?.moeLayers) return m.moeLayers.includes(layer);
  return m !== undefined && layer >= m.firstDense && layer % m.layerFreq === 0;
}

/** Mixtral's sparse MoE block: softmax over all router logits, top-k, renormalised (MixtralConfig defaults 8 experts, top 2). */
function parseMixtralMoe(f: ConfigFields): MoeSpec {
  const numExperts = f.int('num_local_experts', 8);
  const topK = f.int('num_experts_per_tok', 2);
  if (topK > numExperts) throw f.fail('num_experts_per_tok', `(${topK}) exceeds num_local_experts (${numExperts})`);
  const routing: MoeRouting = { scoring: 'softmax', normTopkProb: true, nGroup: 1, topkGroup: 1, groupScore: 'max', correctionBias: false, routedScalingFactor: 1 };
  return { numExperts, topK, expertIntermediateSize: f.int('intermediate_size'), routing, firstDense: 0, layerFreq: 1 };
}

/**
 * Qwen3-MoE's sparse block (transformers' Qwen3MoeSparseMoeBlock / Qwen3MoeTopKRouter):
 * softmax over all router logits, top-k, renormalised over the selected only when
 * norm_topk_prob; no shared expert. Qwen3MoeConfig's defaults: 128 experts (`num_experts`;
 * transformers 5 saves it as `num_local_experts`), top 8, moe_intermediate_size 768,
 * norm_topk_prob false, decoder_sparse_step 1, mlp_only_layers []. Layer l is MoE when it is
 * not in mlp_only_layers and (l + 1) % decoder_sparse_step === 0, else a dense MLP of
 * intermediate_size. The layout is written as DeepSeek-V3's firstDense / layerFreq when they
 * express it exactly, else listed (`moeLayers`). Undefined when no layer is MoE (num_experts 0).
 */
function parseQwen3Moe(f: ConfigFields, numLayers: number): MoeSpec | undefined {
  const a = f.c.num_experts;
  const b = f.c.num_local_experts;
  if (a !== undefined && a !== null && b !== undefined && b !== null && a !== b)
    throw f.fail('num_experts', `(${JSON.stringify(a)}) and num_local_experts (${JSON.stringify(b)}) disagree (transformers reads one as the other)`);
  const key = a !== undefined && a !== null ? 'num_experts' : 'num_local_experts';
  const numExperts = nonNegInt(f, key, 128);
  const step = f.int('decoder_sparse_step', 1);
  const dense = mlpOnlyLayers(f);
  const moeLayers: number[] = [];
  for (let l = 0; l < numLayers; l++) if (numExperts > 0 && !dense.has(l) && (l + 1) % step === 0) moeLayers.push(l);
  if (!moeLayers.length) return undefined;
  const topK = f.int('num_experts_per_tok', 8);
  if (topK > numExperts) throw f.fail('num_experts_per_tok', `(${topK}) exceeds ${key} (${numExperts})`);
  const routing: MoeRouting = { scoring: 'softmax', normTopkProb: f.bool('norm_topk_prob', false), nGroup: 1, topkGroup: 1, groupScore: 'max', correctionBias: false, routedScalingFactor: 1 };
  const layout = deepseekLayout(moeLayers, numLayers) ?? { firstDense: moeLayers[0], layerFreq: 1, moeLayers };
  return { numExperts, topK, expertIntermediateSize: f.int('moe_intermediate_size', 768), routing, ...layout };
}

/** qwen3_moe's `mlp_only_layers` (null or absent: none): layer indices, each a non-negative integer. */
function mlpOnlyLayers(f: ConfigFields): Set<number> {
  const v = f.c.mlp_only_layers ?? [];
  if (!Array.isArray(v) || v.some((l) => typeof l !== 'number' || !Number.isSafeInteger(l) || l < 0))
    throw f.fail('mlp_only_layers', `must be a list of layer indices (non-negative integers; got ${JSON.stringify(v)})`);
  return new Set(v as number[]);
}

/**
 * The DeepSeek-V3 layout (first_k_dense_replace, moe_layer_freq: layer l is MoE when
 * l >= firstDense and l % layerFreq === 0) whose MoE layers among `numLayers` are exactly
 * `moeLayers` (ascending), preferring layerFreq 1 (the only one transformers reads); null when none is.
 */
function deepseekLayout(moeLayers: readonly number[], numLayers: number): { firstDense: number; layerFreq: number } | null {
  const want = moeLayers.join();
  for (let layerFreq = 1; layerFreq <= numLayers; layerFreq++)
    for (let firstDense = 0; firstDense < numLayers; firstDense++) {
      const got: number[] = [];
      for (let l = firstDense; l < numLayers; l++) if (l % layerFreq === 0) got.push(l);
      if (got.join() === want) return { firstDense, layerFreq };
    }
  return null;
}

/** A non-negative integer field (`dflt` when absent or null). */
function nonNegInt(f: ConfigFields, k: string, dflt: number): number {
  const v = f.c[k] ?? dflt;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw f.fail(k, `must be a non-negative integer (got ${JSON.stringify(v)})`);
  return v;
}

/**
 * The routed experts of a deepseek_v3 config, or undefined when every layer is dense
 * (n_routed_experts null or 0, or first_k_dense_replace >= num_hidden_layers). The gate is
 * read as vLLM's DeepseekV2MoE reads it over transformers' DeepseekV3Config (docs/engines.md):
 * scoring_func (not a config field: vLLM's default softmax), topk_method noaux_tc =
 * e_score_correction_bias, and the config class's defaults n_group 8, topk_group 4,
 * norm_topk_prob true, routed_scaling_factor 2.5, n_shared_experts 1 when absent. Shared
 * experts (n_shared_experts > 0) are refused (ERR_UNSUPPORTED_MODEL).
 */
function parseDeepseekMoe(f: ConfigFields, numLayers: number, source: string): MoeSpec | undefined {
  const { c, fail, int, bool } = f;
  // transformers' DeepseekV3Config defaults: n_routed_experts 256, first_k_dense_replace 3
  const experts = c.n_routed_experts === undefined ? 256 : c.n_routed_experts;
  if (experts === null || experts === 0) return undefined;
  if (typeof experts !== 'number' || !Number.isSafeInteger(experts) || experts < 0)
    throw fail('n_routed_experts', `must be null or a non-negative integer (got ${JSON.stringify(experts)})`);
  const firstDense = nonNegInt(f, 'first_k_dense_replace', 3);
  if (firstDense >= numLayers) return undefined;
  const shared = nonNegInt(f, 'n_shared_experts', 1);
  if (shared > 0)
    throw new GqaError('ERR_UNSUPPORTED_MODEL', `${source}: n_shared_experts ${shared}: shared experts are not supported (gqa2mla writes and reads routed experts only; set n_shared_experts 0 or null)`, 'input');
  const scoring = c.scoring_func ?? 'softmax';
  if (scoring !== 'softmax' && scoring !== 'sigmoid') throw fail('scoring_func', `must be "softmax" or "sigmoid" (got ${JSON.stringify(scoring)})`);
  const method = c.topk_method ?? 'greedy';
  if (method !== 'greedy' && method !== 'group_limited_greedy' && method !== 'noaux_tc')
    throw fail('topk_method', `must be "greedy", "group_limited_greedy" or "noaux_tc" (got ${JSON.stringify(method)})`);
  const nGroup = int('n_group', 8);
  const topkGroup = int('topk_group', 4);
  if (experts % nGroup !== 0) throw fail('n_group', `(${nGroup}) must divide n_routed_experts (${experts})`);
  if (topkGroup > nGroup) throw fail('topk_group', `(${topkGroup}) exceeds n_group (${nGroup})`);
  const topK = int('num_experts_per_tok');
  if (topK > (experts / nGroup) * topkGroup) throw fail('num_experts_per_tok', `(${topK}) exceeds the experts of topk_group groups (${(experts / nGroup) * topkGroup})`);
  const factor = c.routed_scaling_factor ?? 2.5;
  if (typeof factor !== 'number' || !(factor > 0) || !Number.isFinite(factor)) throw fail('routed_scaling_factor', `must be a positive number (got ${JSON.stringify(factor)})`);
  const correctionBias = method === 'noaux_tc';
  const routing: MoeRouting = { scoring, normTopkProb: bool('norm_topk_prob', true), nGroup, topkGroup, groupScore: correctionBias ? 'top2' : 'max', correctionBias, routedScalingFactor: factor };
  return { numExperts: experts, topK, expertIntermediateSize: int('moe_intermediate_size'), routing, firstDense, layerFreq: int('moe_layer_freq', 1) };
}

/**
 * RoPE settings from `rope_parameters` (transformers 5: theta, type and scaling fields in
 * one object) or `rope_theta` + `rope_scaling` ("rope_type" or legacy "type").
 */
export function parseRope(c: Record<string, unknown>, source = 'config.json'): RopeSpec {
  const bad = (field: string, why: string) => new GqaError('ERR_BAD_CONFIG', `${source}: ${field} ${why}`, 'input');
  const objOrNull = (k: string): Record<string, unknown> | null => {
    const v = c[k];
    if (v === undefined || v === null) return null;
    if (typeof v !== 'object' || Array.isArray(v)) throw bad(k, `must be an object or null (got ${JSON.stringify(v)})`);
    return v as Record<string, unknown>;
  };
  const params = objOrNull('rope_parameters');
  const scaling = objOrNull('rope_scaling');
  const field = params ? 'rope_parameters' : 'rope_scaling';
  const src: Record<string, unknown> = params ?? scaling ?? {};
  const theta = params?.rope_theta ?? c.rope_theta ?? 10000;
  if (typeof theta !== 'number' || !(theta > 0) || !Number.isFinite(theta))
    throw bad(params?.rope_theta !== undefined ? 'rope_parameters.rope_theta' : 'rope_theta', `must be a positive number (got ${JSON.stringify(theta)})`);
  const type = src.rope_type ?? src.type ?? 'default';
  if (typeof type !== 'string' || !(SUPPORTED_ROPE_TYPES as readonly string[]).includes(type))
    throw new GqaError('ERR_UNSUPPORTED_ROPE', `${source}: rope type ${JSON.stringify(type)} is not supported (supported: ${SUPPORTED_ROPE_TYPES.join(', ')})`, 'input');
  const num = (k: string, required: boolean): number | undefined => {
    const v = src[k];
    if (v === undefined || v === null) {
      if (required) throw bad(`${field}.${k}`, `is missing (needed by rope type ${type})`);
      return undefined;
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(`${field}.${k}`, `must be a number (got ${JSON.stringify(v)})`);
    return v;
  };
  const prf = params?.partial_rotary_factor ?? c.partial_rotary_factor ?? 1;
  if (typeof prf !== 'number' || !(prf > 0 && prf <= 1)) throw bad('partial_rotary_factor', `must be in (0, 1] (got ${JSON.stringify(prf)})`);
  const spec: RopeSpec = { type: type as RopeSpec['type'], theta, factor: 1, partialRotaryFactor: prf };
  if (type === 'default') return spec;
  const factor = num('factor', true)!;
  if (!(factor > 0)) throw bad(`${field}.factor`, `must be positive (got ${factor})`);
  spec.factor = factor;
  const orig = num('original_max_position_embeddings', type === 'llama3');
  if (orig !== undefined) {
    if (!(orig > 0)) throw bad(`${field}.original_max_position_embeddings`, `must be positive (got ${orig})`);
    spec.originalMaxPositionEmbeddings = orig;
  }
  if (type === 'llama3') {
    spec.lowFreqFactor = num('low_freq_factor', true);
    spec.highFreqFactor = num('high_freq_factor', true);
    if (!(spec.highFreqFactor! > spec.lowFreqFactor!)) throw bad(`${field}.high_freq_factor`, `(${spec.highFreqFactor}) must exceed low_freq_factor (${spec.lowFreqFactor})`);
  }
  if (type === 'yarn') {
    spec.betaFast = num('beta_fast', false) ?? 32;
    spec.betaSlow = num('beta_slow', false) ?? 1;
    for (const [k, key] of [
      ['mscale', 'mscale'],
      ['mscale_all_dim', 'mscaleAllDim'],
      ['attention_factor', 'attentionFactor'],
    ] as const) {
      const v = num(k, false);
      if (v !== undefined) spec[key] = v;
    }
  }
  return spec;
}
