/**
 * conversion-report.json: what was done to each layer and what it cost.
 */
import type { LatentNormScaling } from './latent-norm.js';
import type { BiasFoldReport } from '../export/bias-fold.js';
import type { PortableReport } from '../export/portable.js';

/**
 * The exact-norm scaling of a latent (kv_a_layernorm or q_a_layernorm): latent-norm.ts's
 * LatentNormScaling with the smallest cached |alpha c| and the stored weights below the
 * dtype's smallest normal.
 */
export interface LatentNormReport extends Omit<LatentNormScaling, 'minAbsLatent'> {
  /** smallest non-zero |alpha c| (must be a normal number of the stored dtype) */
  minAbsCachedLatent: number;
  subnormalWeights: number;
}

/** Per-layer outcome of the conversion. */
export interface LayerReport {
  layer: number;
  freqfold: number;
  balanceKv: number;
  ropeSelection: 'key' | 'qk';
  kvMetric: 'plain' | 'objective' | 'attention';
  /** attention-output relative error on held-out calibration windows, per candidate tried */
  candidates: Array<{ freqfold: number; balanceKv: number; ropeSelection?: 'key' | 'qk'; kvMetric?: 'plain' | 'objective' | 'attention'; attnRelError: number }>;
  /** ||attn_mla(x) - attn_gqa(x)|| / ||attn_gqa(x)|| on held-out calibration windows */
  attnRelError: number;
  ropeVarianceKept: number;
  pcaVarianceKept: number;
  balanceScale: number;
  /** eigenvalues: RoRoPE per group (descending), and the joint [K_nope, V] PCA */
  ropeSpectrum: number[][];
  pcaSpectrum: number[];
  /** exact latent norm (null with latentNorm 'off') */
  latentNorm: LatentNormReport | null;
  /** closed-form value refit: held-out error before/after, kept when it helped */
  valueRefit: { windows: number; errBefore: number; errAfter: number; kept: boolean } | null;
  /** joint value/output refit across heads (o_proj and kv_b value rows): held-out error before/after, kept when it helped */
  outputRefit?: { windows: number; rank: number; errBefore: number; errAfter: number; kept: boolean } | null;
  /**
   * query compression (q_lora_rank): PCA rank, the bias channel (query bias carried through
   * q_b_proj), the held-out attention error before/after, and the exact q_a_layernorm scaling
   */
  queryCompression?: {
    qLoraRank: number;
    pcaRank: number;
    lossless: boolean;
    biasChannel: number | null;
    kappa: number | null;
    varianceKept: number;
    errBefore: number;
    errAfter: number;
    norm: LatentNormReport | null;
  } | null;
  /** portable target: how the attention biases were folded (null: no bias, or target transformers) */
  biasFold?: BiasFoldReport | null;
  seconds: number;
}

/** Time per stage, seconds. */
export interface StageTimes {
  tokenize: number;
  read: number;
  forward: number;
  statistics: number;
  factorize: number;
  evaluate: number;
  write: number;
  total: number;
}

/** The report written as conversion-report.json and returned by convert(). */
export interface ConversionReport {
  tool: { name: 'gqa2mla'; version: string };
  source: { dir: string; modelType: string; numLayers: number; numHeads: number; numKvHeads: number; headDim: number };
  output: { dir: string; shards: string[]; totalBytes: number };
  settings: {
    method: 'gqa2mla' | 'transmla';
    dtype: string;
    qkRopeDim: number;
    kvLoraRank: number;
    freqfold: number | 'auto';
    balanceKv: number | 'auto';
    ropeSelection: 'key' | 'qk' | 'auto';
    kvMetric: 'plain' | 'objective' | 'attention' | 'auto';
    nopeShrink: boolean;
    /** NoPE key pairs get the expected cosine and sine of the lost rotation */
    nopeRotation?: boolean;
    /** joint value / o_proj output refit (kept per layer when it helps) */
    outputRefit?: boolean;
    valueRefit: boolean;
    latentNorm: 'exact' | 'off';
    /** q_lora_rank, null without query compression */
    qLoraRank?: number | null;
    calibInputs: 'original' | 'converted';
    calibSamples: number;
    calibSeqlen: number;
    heldOutSamples: number;
    seed: number;
    calibTokens: number;
    qkLatentLayernorm: boolean;
  };
  kvValuesPerToken: { before: number; after: number; perLayerBefore: number; perLayerAfter: number; ratio: number };
  layers: LayerReport[];
  meanAttnRelError: number;
  times: StageTimes;
  resumedFromLayer?: number;
  /** portable target: the exported rope and what the stock engines compute (src/export/portable.ts) */
  portable?: PortableReport;
  /** perplexity of the source (before) and the converted model (after), when measured */
  ppl?: { before?: number; after?: number; protocol: string };
}
