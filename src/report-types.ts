/**
 * The types convert/ writes and report/ reads: conversion-report.json (what was done to each
 * layer and what it cost) and a sweep's sweep.json. Imports nothing, so neither side imports
 * the other for them.
 */

/** The chosen scaling of one layer. */
export interface LatentNormScaling {
  /** factor applied to the latent rows of kv_a_proj_with_mqa and its bias */
  alpha: number;
  /** kv_a_layernorm.weight value (all entries) = sqrt(eps) / alpha, a power of two */
  weight: number;
  /** largest per-token mean(c^2) over the calibration tokens */
  maxMeanSquare: number;
  /** bound on |RMSNorm(alpha c) - c| / |c| over the calibration tokens */
  boundCalibration: number;
  /** bound for tokens with up to `margin` times the calibration's largest mean square */
  boundWithMargin: number;
  margin: number;
  /** smallest |alpha c| entry that is not zero (the cache must hold normal numbers) */
  minAbsLatent: number;
}

/**
 * The exact-norm scaling of a latent (kv_a_layernorm or q_a_layernorm): 
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
  /**
   * every candidate tried, with its held-out error on the short windows (`attnRelError`) and,
   * for those re-judged at the serving context (settings.context), the error there
   */
  candidates: Array<{ freqfold: number; balanceKv: number; ropeSelection?: 'key' | 'qk'; kvMetric?: 'plain' | 'objective' | 'attention'; attnRelError: number; contextRelError?: number }>;
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
    /** the `--kv-budget` the two above were split from (absent when they were given) */
    kvBudget?: number;
    /** the queries' rope drift correction was applied (API option ropeDriftCorrection; absent: off) */
    ropeDriftCorrection?: boolean;
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
    /**
     * the held-out windows at the serving context on which the per-layer choices were judged
     * (`tokens` per window; `from`: the option or the bound that set the default); absent when
     * they were judged on the heldOutSamples windows of calibSeqlen tokens; `queries`: the query
     * positions scored per window (= tokens: every position; absent in reports written before it)
     */
    context?: { tokens: number; windows: number; from: string; queries?: number };
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

/** One row of sweep.json. */
export interface SweepRow {
  dir: string;
  kvLoraRank: number;
  qkRopeDim: number;
  kvValuesPerTokenPerLayer: number;
  /** all layers (absent in sweep.json files written before it was recorded) */
  kvValuesPerToken?: number;
  compression: number;
  meanAttnRelError: number;
  attnRelError: number[];
  ppl?: number;
}

/** The settings every budget of a sweep shares (all but the budget itself). */
export type SweepSettings = Omit<ConversionReport['settings'], 'kvLoraRank' | 'qkRopeDim'>;

/** sweep.json's content. */
export interface SweepSummary {
  source: string;
  outDir: string;
  seconds: number;
  kvValuesPerTokenPerLayerBefore: number;
  pplBefore?: number;
  protocol?: string;
  /** the source model (absent in sweep.json files written before it was recorded) */
  model?: Omit<ConversionReport['source'], 'dir'>;
  /** settings shared by all budgets (likewise optional) */
  settings?: SweepSettings;
  tool?: ConversionReport['tool'];
  budgets: SweepRow[];
}

/** Which bias terms a fold carries through u . x (the rest is dropped: exactly for the key shift). */
export interface FoldParts {
  query: boolean;
  ropeKey: boolean;
  value: boolean;
}

/** Per-layer report of the bias fold (conversion-report.json `layers[].biasFold`). */
export interface BiasFoldReport {
  /** 'fold' (biases carried through u . x) or 'drop' (biases removed; the exact parts only) */
  chosen: 'fold' | 'drop';
  /** the bias terms carried through u . x (kept one by one when the held-out error fell) */
  folded: FoldParts;
  /** held-out attention relative error: with the bias tensors, best fold tried, all dropped */
  errWithBiases: number;
  errFolded: number;
  errDropped: number;
  /** E[(u . x - 1)^2] on the calibration inputs (0 = a perfect constant direction) */
  constantFitResidual: number;
  /** ||g Bk_h a_lat|| summed over heads: the key part of the latent bias, dropped exactly */
  exactKeyShiftNorm: number;
  /** ||C|| (the output constant) and ||C - g M a*|| (what the latent cannot reproduce) */
  outputConstantNorm: number;
  outputConstantResidual: number;
  /** norms of the biases carried through u . x */
  queryBiasNorm: number;
  ropeKeyBiasNorm: number;
}

/** What conversion-report.json says about the exported rope. */
export interface RopeExportReport {
  sourceType: 'default' | 'linear' | 'llama3' | 'dynamic' | 'yarn';
  /** rope_type written: `default` (engines keep it) or `yarn` (engines compute deepseek_yarn) */
  exportedType: 'default' | 'yarn';
  /** every kept frequency and the cos/sin factor reproduced to float32 rounding */
  exact: boolean;
  /** |inv_engine - inv_source| / inv_source per rope slot (qk_rope_head_dim / 2 entries) */
  perFrequencyRelError: number[];
  maxFrequencyRelError: number;
  /** max over slots of |inv_engine - inv_source| x (maxContext - 1), radians */
  maxPhaseErrorAtMaxContext: number;
  /** |inv_engine - inv_source| x (maxContext - 1) per rope slot, radians */
  perFrequencyPhaseError: number[];
  /**
   * The source frequency index (of head_dim / 2) each rope slot carries: i x head_dim /
   * qk_rope_head_dim except where the conversion moved a slot of llama3's blend band to the
   * source frequency nearest the engine's (src/export/rope-yarn.ts)
   */
  slotSourceFrequencies: number[];
  maxContext: number;
  /** the source's and the engine's cos/sin factor */
  attentionFactor: { source: number; engine: number };
  /** chosen ramp ends in rope-slot units (yarn only) */
  ramp?: { low: number; high: number };
  note: string;
}

/** What the portable export adds to conversion-report.json. */
export interface PortableReport {
  target: 'portable';
  rope: RopeExportReport;
}
