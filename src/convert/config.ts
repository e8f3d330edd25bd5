/**
 * config.json of a converted checkpoint, as transformers' DeepseekV3ForCausalLM reads it:
 * every layer a dense SwiGLU MLP (first_k_dense_replace = num_hidden_layers, no routed
 * experts) or, for a mixture-of-experts source, its MoE layers ({@link moeFields}), num_key_value_heads = num_attention_heads, qk_nope_head_dim = v_head_dim =
 * the source head_dim, rope settings carried over for the rope head (rotate-half layout,
 * so rope_interleave is false).
 */
import type { ModelSpec } from '../model/spec-types.js';
import type { ResolvedOptions } from './options.js';

/** Extra settings of the export. */
export interface ExportSettings {
  /** false: the engine must skip kv_a_layernorm (TransMLA's convention). */
  qkLatentLayernorm: boolean;
  /**
   * q_proj carries a bias (gqa2mla's engine reads it; stock engines have no q_proj bias).
   * Only used for the intermediate candidates during conversion: written outputs carry a
   * query bias through q_a_proj / q_b_proj (q-compress.ts).
   */
  qBias: boolean;
  /** q_lora_rank (q_a_proj / q_a_layernorm / q_b_proj), or null for q_proj */
  qLoraRank: number | null;
  /** kv_a_proj_with_mqa and o_proj carry biases. */
  attentionBias: boolean;
  dtype: string;
}

const COPIED_KEYS = [
  'vocab_size',
  'hidden_size',
  'intermediate_size',
  'num_hidden_layers',
  'num_attention_heads',
  'max_position_embeddings',
  'rms_norm_eps',
  'bos_token_id',
  'eos_token_id',
  'pad_token_id',
  'initializer_range',
  'tie_word_embeddings',
  'hidden_act',
];

/**
 * The MoE fields. A dense source: every layer dense (first_k_dense_replace =
 * num_hidden_layers; transformers 5's strict config rejects null for the MoE fields, so they
 * hold small valid integers that no layer uses). A mixture-of-experts source (mixtral,
 * qwen3_moe): its MoE layers as first_k_dense_replace / moe_layer_freq (the spec's
 * firstDense / layerFreq; a layout they cannot express is refused in options.ts), its
 * experts, no shared expert (n_shared_experts 0), and the gate that vLLM and SGLang compute
 * as the source's softmax over all experts, top-k, renormalised over the selected when
 * norm_topk_prob (Mixtral always, Qwen3-MoE as its config says): scoring_func softmax,
 * topk_method greedy, one group, factor 1.0 (docs/engines.md; transformers' DeepSeek-V3 gate
 * is sigmoid whatever the config says).
 */
function moeFields(spec: ModelSpec): Record<string, unknown> {
  const m = spec.moe;
  if (!m)
    return { first_k_dense_replace: spec.numLayers, n_routed_experts: 1, n_shared_experts: 1, moe_intermediate_size: spec.intermediateSize, num_experts_per_tok: 1, moe_layer_freq: 1, n_group: 1, topk_group: 1, routed_scaling_factor: 1.0, norm_topk_prob: true };
  const r = m.routing;
  return {
    first_k_dense_replace: m.firstDense,
    n_routed_experts: m.numExperts,
    n_shared_experts: 0,
    moe_intermediate_size: m.expertIntermediateSize,
    num_experts_per_tok: m.topK,
    moe_layer_freq: m.layerFreq,
    n_group: r.nGroup,
    topk_group: r.topkGroup,
    routed_scaling_factor: r.routedScalingFactor,
    norm_topk_prob: r.normTopkProb,
    scoring_func: r.scoring,
    topk_method: r.correctionBias ? 'noaux_tc' : 'greedy',
  };
}

/** Builds the DeepSeek-V3 config.json object. */
export function deepseekConfig(spec: ModelSpec, opt: ResolvedOptions, ex: ExportSettings): Record<string, unknown> {
  const src = spec.raw;
  const cfg: Record<string, unknown> = {
    architectures: ['DeepseekV3ForCausalLM'],
    model_type: 'deepseek_v3',
  };
  for (const k of COPIED_KEYS) if (k in src) cfg[k] = src[k];
  cfg.hidden_act = src.hidden_act ?? 'silu';
  cfg.tie_word_embeddings = spec.tieWordEmbeddings;
  cfg.rms_norm_eps = spec.rmsNormEps;
  Object.assign(cfg, {
    num_key_value_heads: spec.numHeads,
    q_lora_rank: ex.qLoraRank,
    kv_lora_rank: opt.kvLoraRank,
    qk_rope_head_dim: opt.qkRopeDim,
    qk_nope_head_dim: spec.headDim,
    v_head_dim: spec.headDim,
    head_dim: opt.qkRopeDim,
    rope_interleave: false,
    attention_bias: ex.attentionBias,
    attention_dropout: 0.0,
    ...moeFields(spec),
    dtype: ex.dtype,
  });
  // Rope: the same base and scaling; transformers computes inv_freq for qk_rope_head_dim,
  // which yields every (head_dim / qk_rope_head_dim)-th original frequency.
  if (src.rope_parameters && typeof src.rope_parameters === 'object') {
    cfg.rope_parameters = { ...(src.rope_parameters as Record<string, unknown>) };
  } else {
    cfg.rope_theta = spec.rope.theta;
    cfg.rope_scaling = src.rope_scaling ?? null;
  }
  if (!ex.qkLatentLayernorm) cfg.qk_latent_layernorm = false;
  if (ex.qBias && ex.qLoraRank === null) cfg.gqa2mla_q_bias = true;
  cfg.gqa2mla = {
    source_model_type: spec.modelType,
    source_num_key_value_heads: spec.numKvHeads,
    freqfold: opt.freqfold,
    balance_kv: opt.balanceKv,
    calib_inputs: opt.calibInputs,
  };
  if (ex.qLoraRank !== null) (cfg.gqa2mla as Record<string, unknown>).q_lora = opt.qLoraLossless ? 'lossless: carries the query bias' : 'pca';
  if (spec.qkNorm) (cfg.gqa2mla as Record<string, unknown>).qk_norm = `approximated: ${opt.qkNorm} (convert/qk-norm.ts)`;
  return cfg;
}

/** Keys whose values transformers' strict configs type as floats. */
const FLOAT_KEYS = new Set([
  'rms_norm_eps',
  'rope_theta',
  'routed_scaling_factor',
  'attention_dropout',
  'initializer_range',
  'factor',
  'low_freq_factor',
  'high_freq_factor',
  'beta_fast',
  'beta_slow',
  'mscale',
  'mscale_all_dim',
  'attention_factor',
  'partial_rotary_factor',
]);

/**
 * config.json text: like JSON.stringify(config, null, 2), but float-typed fields keep a
 * decimal point (1.0, not 1), as Python writes them; transformers 5 validates types strictly.
 */
export function stringifyConfig(config: Record<string, unknown>): string {
  const marker = '\u0000float:';
  const text = JSON.stringify(
    config,
    (key, value) => (FLOAT_KEYS.has(key) && typeof value === 'number' && Number.isInteger(value) ? `${marker}${value}.0` : value),
    2,
  );
  return `${text.replace(/"\\u0000float:([-0-9.e+]+)"/g, '$1')}\n`;
}
