/**
 * conversion-report.json: what was done to each layer and what it cost.
 */

/** Per-layer outcome of the conversion. */
export interface LayerReport {
  layer: number;
  freqfold: number;
  balanceKv: number;
  ropeSelection: 'key' | 'qk';
  kvMetric: 'plain' | 'objective';
  /** attention-output relative error on held-out calibration windows, per candidate tried */
  candidates: Array<{ freqfold: number; balanceKv: number; ropeSelection?: 'key' | 'qk'; kvMetric?: 'plain' | 'objective'; attnRelError: number }>;
  /** ||attn_mla(x) - attn_gqa(x)|| / ||attn_gqa(x)|| on held-out calibration windows */
  attnRelError: number;
  ropeVarianceKept: number;
  pcaVarianceKept: number;
  balanceScale: number;
  /** eigenvalues: RoRoPE per group (descending), and the joint [K_nope, V] PCA */
  ropeSpectrum: number[][];
  pcaSpectrum: number[];
  /** exact latent norm (null with latentNorm 'off') */
  latentNorm: {
    alpha: number;
    weight: number;
    maxMeanSquare: number;
    boundCalibration: number;
    boundWithMargin: number;
    margin: number;
    minAbsCachedLatent: number;
    subnormalWeights: number;
  } | null;
  /** closed-form value refit: held-out error before/after, kept when it helped */
  valueRefit: { windows: number; errBefore: number; errAfter: number; kept: boolean } | null;
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
    kvMetric: 'plain' | 'objective' | 'auto';
    nopeShrink: boolean;
    valueRefit: boolean;
    latentNorm: 'exact' | 'off';
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
  /** perplexity of the source (before) and the converted model (after), when measured */
  ppl?: { before?: number; after?: number; protocol: string };
}
