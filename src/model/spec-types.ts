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
  modelType: 'llama' | 'qwen2' | 'qwen3' | 'qwen3_moe' | 'mistral' | 'mixtral' | 'deepseek_v3';
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
   * eps rms_norm_eps (qwen3, qwen3_moe); absent or false otherwise.
   */
  qkNorm?: boolean;
  /** Present for model_type deepseek_v3 (converted checkpoints). */
  mla?: MlaSpec;
  /** Mixture-of-experts MLP (mixtral; qwen3_moe; deepseek_v3 with routed experts); absent for dense models. */
  moe?: MoeSpec;
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

/**
 * How a mixture-of-experts gate turns a token's router logits l (one per expert) into the
 * selected experts and their weights (src/engine/moe-routing.ts):
 * scores s = softmax(l) or sigmoid(l); selection by s (+ the correction bias when present),
 * restricted to the best `topkGroup` of `nGroup` expert groups; weights = the selected s,
 * divided by their sum when `normTopkProb`, times `routedScalingFactor`.
 * Mixtral: softmax, no groups, normTopkProb true, factor 1 (= softmax over the selected logits).
 */
export interface MoeRouting {
  scoring: 'softmax' | 'sigmoid';
  normTopkProb: boolean;
  /** expert groups (1: no grouping) and how many of them a token may use */
  nGroup: number;
  topkGroup: number;
  /** a group's score: its best expert ('max') or the sum of its best two ('top2'; noaux_tc, or any gate with a correction bias) */
  groupScore: 'max' | 'top2';
  /** `mlp.gate.e_score_correction_bias` [experts] is added to the scores for selection only */
  correctionBias: boolean;
  routedScalingFactor: number;
}

/** A sparse mixture-of-experts MLP: routed SwiGLU experts, no shared expert. */
export interface MoeSpec {
  numExperts: number;
  /** experts per token */
  topK: number;
  /** intermediate size of each expert */
  expertIntermediateSize: number;
  routing: MoeRouting;
  /** layers before this one are dense (intermediate_size); deepseek_v3's first_k_dense_replace, 0 for mixtral */
  firstDense: number;
  /** among the others, layers with index % layerFreq === 0 are MoE (deepseek_v3's moe_layer_freq; 1 for mixtral) */
  layerFreq: number;
  /**
   * qwen3_moe only, when firstDense / layerFreq cannot describe its layout: exactly these
   * layers are MoE (from decoder_sparse_step and mlp_only_layers) and firstDense / layerFreq
   * are not used. A DeepSeek-V3 export cannot express such a layout (convert/config.ts refuses it).
   */
  moeLayers?: readonly number[];
}
