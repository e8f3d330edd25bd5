/** Rotary position embedding settings, normalised from either config style. */
export interface RopeSpec {
  /** default | linear | llama3 | dynamic | yarn */
  type: 'default' | 'linear' | 'llama3' | 'dynamic' | 'yarn';
  theta: number;
  /** scaling factor (linear, llama3, dynamic, yarn); 1 for default */
  factor: number;
  /** llama3 */
  lowFreqFactor?: number;
  highFreqFactor?: number;
  /** llama3, dynamic, yarn: the pre-scaling context length */
  originalMaxPositionEmbeddings?: number;
  /** yarn */
  betaFast?: number;
  betaSlow?: number;
  mscale?: number;
  mscaleAllDim?: number;
  attentionFactor?: number;
  /** partial rotary factor (fraction of head_dim rotated); 1 when absent */
  partialRotaryFactor: number;
}

/** What gqa2mla needs to know about a decoder-only checkpoint. */
export interface ModelSpec {
  modelType: 'llama' | 'qwen2' | 'qwen3' | 'mistral' | 'deepseek_v3';
  numLayers: number;
  hiddenSize: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
  vocabSize: number;
  rmsNormEps: number;
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry a bias (qwen2 always, llama and qwen3 with attention_bias) */
  attentionBias: boolean;
  /** o_proj carries a bias */
  oBias: boolean;
  maxPositionEmbeddings: number;
  rope: RopeSpec;
  /**
   * Per-head RMSNorm of the queries and keys over head_dim after the projections and before
   * RoPE, with weights `self_attn.q_norm.weight` / `self_attn.k_norm.weight` [head_dim] and
   * eps rms_norm_eps (qwen3); absent or false otherwise.
   */
  qkNorm?: boolean;
  /** Present for model_type deepseek_v3 (converted checkpoints). */
  mla?: MlaSpec;
  /** The raw config.json. */
  raw: Record<string, unknown>;
}

/** DeepSeek-V3 attention settings of a converted checkpoint. */
export interface MlaSpec {
  qLoraRank: number | null;
  kvLoraRank: number;
  qkRopeHeadDim: number;
  qkNopeHeadDim: number;
  vHeadDim: number;
  ropeInterleave: boolean;
  /** false: kv_a_layernorm / q_a_layernorm are skipped (TransMLA's convention) */
  qkLatentLayernorm: boolean;
  /** q_proj / q_b_proj carry a bias (gqa2mla extension until exact-bias export lands) */
  qBias: boolean;
}
