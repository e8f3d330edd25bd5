/**
 * Conversion options and their limits, checked before any work is done.
 */
import { splitKvBudget, type KvSplit } from './budget-split.js';
import type { ModelSpec } from '../model/spec-types.js';
import { GqaError, usageError } from '../errors.js';
import { DEFAULT_CONTEXT_QUERIES } from './held-out-context.js';
import { freqfoldCandidates } from './rorope.js';
import { checkQLoraRank, losslessQLoraRank } from './q-compress.js';
import { DEFAULT_QK_NORM, QK_NORM_METHODS, type QkNormMethod } from './qk-norm.js';

/** Which engines the output is written for (src/export/portable.ts). */
export type ExportTarget = 'portable' | 'transformers';

/** Where each layer's calibration inputs come from. */
export type CalibInputs = 'original' | 'converted';

/** Options of {@link convert}. */
export interface ConvertOptions {
  /** Source checkpoint directory (llama, qwen2, qwen3, qwen3_moe, mistral or mixtral; GQA or MHA). */
  modelDir: string;
  /** Output directory (DeepSeek-V3 layout). */
  outDir: string;
  /** Calibration text file (UTF-8), or `calibText` directly. */
  calibFile?: string;
  calibText?: string;
  /** Calibration sequences used for statistics (default 128). */
  calibSamples?: number;
  /** Tokens per calibration sequence (default 256). */
  calibSeqlen?: number;
  /** Extra calibration sequences held out for errors and choices (default max(4, samples / 8)). */
  heldOutSamples?: number;
  /** Seed of the calibration offsets (default 42). */
  seed?: number;
  /**
   * Tokens per held-out window on which the per-layer choices (freqfold, RoPE selection,
   * balance, metric, refits) are judged and the NoPE distance profile is measured: the
   * serving context (issue 14). Default min(max_position_embeddings, 4096), bounded by the
   * calibration text and by 2 x heldOutSamples x calibSeqlen (a small calibration set gets
   * short windows). A value at most `calibSeqlen` judges on the `heldOutSamples` windows
   * of `calibSeqlen` tokens instead (the behaviour before this option).
   */
  context?: number;
  /**
   * Held-out windows of `context` tokens (default max(2, round(heldOutSamples x calibSeqlen /
   * context)): about as many tokens as the short held-out windows, at least two windows).
   */
  contextWindows?: number;
  /**
   * Query positions scored per held-out window of `context` tokens (default
   * {@link DEFAULT_CONTEXT_QUERIES}): the position-weighted error of the judge is estimated on
   * these queries, each attending to every key before it (the positions with the largest
   * weights always, the rest by weight-proportional systematic sampling; see
   * held-out-context.ts sampleContextQueries). A value >= `context` scores every position.
   */
  contextQueries?: number;
  /** RoPE dims kept per head, qk_rope_head_dim (default 64, capped to headDim). */
  qkRopeDim?: number;
  /** Latent rank, kv_lora_rank (default 512, capped to the maximum). */
  kvLoraRank?: number;
  /**
   * Cached values per token and layer, kv_lora_rank + qk_rope_head_dim, split by the tool
   * (src/convert/budget-split.ts: the most RoPE dims that leave a latent of at least
   * min(32, budget / 2)). Exclusive with `qkRopeDim` and `kvLoraRank`.
   */
  kvBudget?: number;
  /**
   * Portable target with an inexact engine rope (llama3 blend band): multiply the queries'
   * rope rows of the drifting slots by their expected residual rotation (src/convert/rope-drift.ts).
   * Default false: on zoo-llama31 it helped at 64+64 (+2.98% vs +3.26% against the source rope,
   * 8 windows of 2048) and hurt at 32+32 (grid, 40 windows: 41.83 vs 38.68 at 2048 tokens).
   */
  ropeDriftCorrection?: boolean;
  /** Frequencies folded per RoRoPE group, or 'auto' to choose per layer (default 'auto'). */
  freqfold?: number | 'auto';
  /**
   * Defaults of the factorization: 'gqa2mla' (RoPE selection per layer, attention-aware
   * joint K/V compression, balance searched per layer, NoPE expected rotation, value and
   * output refits) or 'transmla' (TransMLA's method: key PCA, plain joint PCA, balance 1,
   * no refits). Explicit options below override the preset.
   */
  method?: 'gqa2mla' | 'transmla';
  /**
   * Norm ratio of NoPE keys to values before the joint PCA, or 'auto' to search per layer
   * (default 'auto': walked from 1 over {@link BALANCE_CANDIDATES} while the held-out error falls).
   */
  balanceKv?: number | 'auto';
  /**
   * How RoPE directions are chosen: 'key' (TransMLA: PCA of the keys), 'qk' (by their
   * attention-logit energy, query and key statistics together), or 'auto' (per layer, on
   * held-out calibration windows). Default 'auto'.
   */
  ropeSelection?: 'key' | 'qk' | 'auto';
  /**
   * Scale each position-free logit term by the expected cosine of the rotation it lost,
   * measured from each head's attention distances on held-out calibration windows
   * (default true; false in the 'transmla' preset).
   */
  nopeShrink?: boolean;
  /**
   * With nopeShrink: replace each position-free key pair by its expected rotation
   * (E[cos], E[sin] of the lost angle under the head's attention distances) instead of
   * scaling it by the expected cosine alone (default true; false in the 'transmla' preset).
   */
  nopeRotation?: boolean;
  /**
   * Refit the value up-projection in closed form under the converted attention, kept only
   * when it lowers the held-out error (default true; false in the 'transmla' preset).
   */
  valueRefit?: boolean;
  /**
   * After the value refit, refit o_proj and the value rows of kv_b jointly across heads in
   * closed form (one ridge regression of the original attention output on every head's
   * attended latent), kept only when it lowers the held-out error (default true; false in
   * the 'transmla' preset).
   */
  outputRefit?: boolean;
  /**
   * Metric of the joint K/V compression: 'plain' (TransMLA's PCA), 'objective' (keys
   * weighted by the queries that read them, values by o_proj), 'attention' (the same
   * metrics under attention-aware input statistics: key errors by their spread under each
   * query's attention, value errors on the attended inputs; the latent refined by
   * alternating least squares; the default), or 'auto' (per layer among the three).
   */
  kvMetric?: 'plain' | 'objective' | 'attention' | 'auto';
  /**
   * 'exact' (default): scale the latent so that stock engines' kv_a_layernorm is an exact
   * identity; 'off': write qk_latent_layernorm=false (TransMLA's convention, needs a patched engine).
   */
  latentNorm?: 'exact' | 'off';
  /**
   * How a Qwen3 layer's per-head q_norm / k_norm (which stock DeepSeek-V3 cannot express) is
   * replaced by linear maps before the factorization: one of {@link QK_NORM_METHODS}
   * (default {@link DEFAULT_QK_NORM}; see src/convert/qk-norm.ts). Ignored for models
   * without q/k norms.
   */
  qkNorm?: QkNormMethod;
  /** Inputs of each layer's calibration: the original model's or the converted one's (default 'original'). */
  calibInputs?: CalibInputs;
  /** Stored dtype of the converted attention weights: 'auto' (the source's, default), BF16, F16 or F32. */
  dtype?: 'auto' | 'BF16' | 'F16' | 'F32';
  /**
   * Compress the queries too (DeepSeek-V3 q_lora_rank: q_a_proj, q_a_layernorm, q_b_proj; PCA
   * of the converted queries, exact norm as for the KV latent). With a query bias (Qwen2) one
   * of the channels carries the bias, and when this is not given the rank defaults to the
   * lossless min(hidden, heads x qk_head_dim) + 1: stock DeepSeek-V3 has no q_proj bias, so
   * that is the only exact place for it. Without a bias the default is no compression (q_proj).
   */
  qLoraRank?: number | null;
  /**
   * What the output is written for (default 'portable'): 'portable' computes the same in stock
   * vLLM, SGLang and transformers (interleaved rope rows with rope_interleave true, lm_head
   * always written, no bias tensors: biases folded, exactly where foldable, see
   * src/export/bias-fold.ts; a deepseek_yarn-compatible rope config, src/export/rope-yarn.ts);
   * 'transformers' keeps transformers-only features (the exact bias construction through
   * attention_bias and the lossless q_lora_rank that carries a query bias).
   */
  target?: ExportTarget;
  /** Replace an existing output directory. */
  overwrite?: boolean;
  /** Continue an interrupted conversion of the same settings. */
  resume?: boolean;
  /**
   * Seconds between saves of the resume state (the calibration hidden states, tokens x
   * hidden float32; default 60, 0 = after every layer). A resumed run redoes the layers
   * after the last save. Does not change the output.
   */
  checkpointSeconds?: number;
  /** Progress callback. */
  onProgress?: (p: ConvertProgress) => void;
  /** Aborts the conversion (the partial output stays resumable, never complete-looking). */
  signal?: AbortSignal;
  /**
   * Where the per-layer work runs: 'cpu', 'cuda' (needs the addon built with CUDA and a GPU),
   * or 'auto' (default: CUDA when available, else the CPU). Results agree within the
   * float32/bf16 rounding of the GPU path; the choice is not part of the resume settings.
   */
  device?: 'auto' | 'cpu' | 'cuda';
}

/** A progress event. */
export interface ConvertProgress {
  stage: 'tokenize' | 'embed' | 'statistics' | 'factorize' | 'evaluate' | 'write' | 'propagate' | 'done';
  layer?: number;
  layers: number;
  message?: string;
}

/** Options with defaults applied and limits checked. */
export interface ResolvedOptions {
  calibSamples: number;
  calibSeqlen: number;
  heldOutSamples: number;
  seed: number;
  /** the `context` option (null: the default, resolved against the calibration text) */
  context: number | null;
  /** the `contextWindows` option (null: the default) */
  contextWindows: number | null;
  /** query positions scored per context window */
  contextQueries: number;
  qkRopeDim: number;
  kvLoraRank: number;
  /** the `kvBudget` the split came from (null: qkRopeDim / kvLoraRank given or defaulted) */
  kvBudget: number | null;
  ropeDriftCorrection: boolean;
  freqfold: number | 'auto';
  freqfoldCandidates: number[];
  method: 'gqa2mla' | 'transmla';
  balanceKv: number | 'auto';
  balanceCandidates: number[];
  ropeSelection: 'key' | 'qk' | 'auto';
  kvMetric: 'plain' | 'objective' | 'attention' | 'auto';
  nopeShrink: boolean;
  nopeRotation: boolean;
  valueRefit: boolean;
  outputRefit: boolean;
  latentNorm: 'exact' | 'off';
  calibInputs: CalibInputs;
  /** the q/k-norm stand-in (qwen3 sources; recorded for every source) */
  qkNorm: QkNormMethod;
  dtype: 'auto' | 'BF16' | 'F16' | 'F32';
  /** q_lora_rank of the output, null for q_proj (no query compression) */
  qLoraRank: number | null;
  /** the q_lora_rank was chosen automatically as the lossless rank (query bias, no qLoraRank given) */
  qLoraLossless: boolean;
  /** what the output is written for */
  target: ExportTarget;
}

/** Balance ratios of balanceKv 'auto': walked per layer from 1 while the held-out error falls. */
export const BALANCE_CANDIDATES = [0.0625, 0.125, 0.25, 0.5, 1, 2, 4, 8];

function positiveInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v <= 0) throw usageError('ERR_BAD_OPTION', `${name} must be a positive integer (got ${v})`);
  return v;
}

/** The export target and the query compression it implies (checked against the model). */
function resolveExport(spec: ModelSpec, o: ConvertOptions, latentNorm: 'exact' | 'off', qkRopeDim: number): Pick<ResolvedOptions, 'target' | 'qLoraRank' | 'qLoraLossless'> {
  const target = o.target ?? 'portable';
  if (target !== 'portable' && target !== 'transformers') throw usageError('ERR_BAD_OPTION', `target must be 'portable' or 'transformers' (got ${String(target)})`);
  if (target === 'portable' && latentNorm === 'off')
    throw usageError('ERR_BAD_OPTION', "latentNorm 'off' (qk_latent_layernorm false) is not computed by stock engines, which always apply the latent norms: use target 'transformers'");
  const qDim = spec.numHeads * (spec.headDim + qkRopeDim);
  // portable: the query bias is folded into q_proj before any query compression (bias-fold.ts)
  const hasQBias = Boolean(spec.attentionBias) && target === 'transformers';
  let qLoraRank: number | null = o.qLoraRank ?? null;
  if (qLoraRank !== null) checkQLoraRank(qLoraRank, spec.hiddenSize, qDim, hasQBias);
  const qLoraLossless = qLoraRank === null && hasQBias;
  if (qLoraLossless) qLoraRank = losslessQLoraRank(spec.hiddenSize, qDim, true);
  return { target, qLoraRank, qLoraLossless };
}

/** The calibration and held-out window settings. */
function resolveWindows(o: ConvertOptions): Pick<ResolvedOptions, 'calibSamples' | 'calibSeqlen' | 'heldOutSamples' | 'seed' | 'context' | 'contextWindows' | 'contextQueries'> {
  const calibSamples = positiveInt('calibSamples', o.calibSamples ?? 128);
  const calibSeqlen = positiveInt('calibSeqlen', o.calibSeqlen ?? 256);
  if (calibSeqlen < 2) throw usageError('ERR_BAD_OPTION', 'calibSeqlen must be at least 2');
  const heldOutSamples = positiveInt('heldOutSamples', o.heldOutSamples ?? Math.max(4, Math.floor(calibSamples / 8)));
  const seed = o.seed ?? 42;
  if (!Number.isInteger(seed)) throw usageError('ERR_BAD_OPTION', `seed must be an integer (got ${seed})`);
  const context = o.context === undefined ? null : positiveInt('context', o.context);
  if (context !== null && context < 2) throw usageError('ERR_BAD_OPTION', 'context must be at least 2');
  const contextWindows = o.contextWindows === undefined ? null : positiveInt('contextWindows', o.contextWindows);
  const contextQueries = positiveInt('contextQueries', o.contextQueries ?? DEFAULT_CONTEXT_QUERIES);
  return { calibSamples, calibSeqlen, heldOutSamples, seed, context, contextWindows, contextQueries };
}

/** qk_rope_head_dim and kv_lora_rank: given, defaulted (64 + 512, capped) or split from `kvBudget`. */
function resolveBudget(spec: ModelSpec, o: ConvertOptions): Pick<ResolvedOptions, 'qkRopeDim' | 'kvLoraRank' | 'kvBudget'> {
  const d = spec.headDim;
  let kvBudget: number | null = null;
  let split: Partial<KvSplit> = { qkRopeDim: o.qkRopeDim, kvLoraRank: o.kvLoraRank };
  if (o.kvBudget !== undefined) {
    if (o.qkRopeDim !== undefined || o.kvLoraRank !== undefined)
      throw usageError('ERR_BAD_OPTION', 'kvBudget chooses qkRopeDim and kvLoraRank: give either kvBudget or those two, not both');
    kvBudget = positiveInt('kvBudget', o.kvBudget);
    split = splitKvBudget({ headDim: d, numKvHeads: spec.numKvHeads, budget: kvBudget });
  }
  const qkRopeDim = positiveInt('qkRopeDim', split.qkRopeDim ?? Math.min(64, d));
  if (qkRopeDim % 2 !== 0 || d % qkRopeDim !== 0)
    throw usageError('ERR_BAD_OPTION', `qkRopeDim ${qkRopeDim} must be even and divide head_dim ${d}`);
  const maxRank = 2 * spec.numKvHeads * d - qkRopeDim;
  const kvLoraRank = positiveInt('kvLoraRank', split.kvLoraRank ?? Math.min(512, maxRank));
  if (kvLoraRank > maxRank)
    throw usageError('ERR_BAD_OPTION', `kvLoraRank ${kvLoraRank} exceeds the maximum 2 x kv_heads x head_dim - qkRopeDim = ${maxRank}`);
  return { qkRopeDim, kvLoraRank, kvBudget };
}

/** A Qwen3-MoE layout of dense and MoE layers that DeepSeek-V3's first_k_dense_replace / moe_layer_freq cannot express (exit 3). */
function moeLayoutRefusal(spec: ModelSpec, dir: string): GqaError {
  const r = spec.raw;
  return new GqaError(
    'ERR_UNSUPPORTED_MODEL',
    `${dir}: the mixture-of-experts layers ${spec.moe!.moeLayers!.join(', ')} of ${spec.numLayers} (decoder_sparse_step ${JSON.stringify(r.decoder_sparse_step ?? 1)}, ` +
      `mlp_only_layers ${JSON.stringify(r.mlp_only_layers ?? [])}) cannot be written in DeepSeek-V3, whose MoE layers are exactly those with ` +
      'index >= first_k_dense_replace and index % moe_layer_freq == 0: no such pair gives these layers',
    'input',
  );
}

/** Applies defaults and checks every limit against the model; throws a usage GqaError naming the limit (an unsupported layout: an input error). */
export function resolveOptions(spec: ModelSpec, o: ConvertOptions): ResolvedOptions {
  if (spec.modelType === 'deepseek_v3') throw usageError('ERR_ALREADY_MLA', `${o.modelDir} is already a DeepSeek-V3 (MLA) checkpoint`);
  if (spec.moe?.moeLayers) throw moeLayoutRefusal(spec, o.modelDir);
  if (spec.rope.partialRotaryFactor !== 1)
    throw usageError('ERR_UNSUPPORTED_ROPE', `partial_rotary_factor ${spec.rope.partialRotaryFactor} is not supported (only full-head RoPE)`);
  const d = spec.headDim;
  const windows = resolveWindows(o);
  const { qkRopeDim, kvLoraRank, kvBudget } = resolveBudget(spec, o);
  const candidates = freqfoldCandidates(d, qkRopeDim);
  const ff = o.freqfold ?? 'auto';
  if (ff !== 'auto') {
    positiveInt('freqfold', ff);
    if (!candidates.includes(ff))
      throw usageError(
        'ERR_BAD_OPTION',
        `freqfold ${ff} must be a multiple of head_dim / qkRopeDim = ${d / qkRopeDim} that divides head_dim / 2 = ${d / 2} (allowed: ${candidates.join(', ')})`,
      );
  }
  const method = o.method ?? 'gqa2mla';
  if (method !== 'gqa2mla' && method !== 'transmla') throw usageError('ERR_BAD_OPTION', `method must be 'gqa2mla' or 'transmla' (got ${String(method)})`);
  const tm = method === 'transmla';
  const balanceKv = o.balanceKv ?? (tm ? 1 : 'auto');
  if (balanceKv !== 'auto' && (!(balanceKv > 0) || !Number.isFinite(balanceKv)))
    throw usageError('ERR_BAD_OPTION', `balanceKv must be a positive number or 'auto' (got ${balanceKv})`);
  const ropeSelection = o.ropeSelection ?? (tm ? 'key' : 'auto');
  if (!['key', 'qk', 'auto'].includes(ropeSelection)) throw usageError('ERR_BAD_OPTION', `ropeSelection must be 'key', 'qk' or 'auto' (got ${String(ropeSelection)})`);
  const kvMetric = o.kvMetric ?? (tm ? 'plain' : 'attention');
  if (!['plain', 'objective', 'attention', 'auto'].includes(kvMetric))
    throw usageError('ERR_BAD_OPTION', `kvMetric must be 'plain', 'objective', 'attention' or 'auto' (got ${String(kvMetric)})`);
  const latentNorm = o.latentNorm ?? 'exact';
  if (latentNorm !== 'exact' && latentNorm !== 'off') throw usageError('ERR_BAD_OPTION', `latentNorm must be 'exact' or 'off' (got ${String(latentNorm)})`);
  const dtype = o.dtype ?? 'auto';
  if (!['auto', 'BF16', 'F16', 'F32'].includes(dtype)) throw usageError('ERR_BAD_OPTION', `dtype must be auto, BF16, F16 or F32 (got ${String(dtype)})`);
  if (o.device !== undefined && !['auto', 'cpu', 'cuda'].includes(o.device))
    throw usageError('ERR_BAD_OPTION', `device must be 'auto', 'cpu' or 'cuda' (got ${String(o.device)})`);
  const calibInputs = o.calibInputs ?? 'original';
  if (calibInputs !== 'original' && calibInputs !== 'converted')
    throw usageError('ERR_BAD_OPTION', `calibInputs must be 'original' or 'converted' (got ${String(calibInputs)})`);
  const { target, qLoraRank, qLoraLossless } = resolveExport(spec, o, latentNorm, qkRopeDim);
  const qkNorm = resolveQkNorm(o.qkNorm);
  return {
    ...windows,
    qkRopeDim,
    kvLoraRank,
    kvBudget,
    ropeDriftCorrection: o.ropeDriftCorrection === true,
    freqfold: ff,
    freqfoldCandidates: ff === 'auto' ? candidates : [ff],
    method,
    balanceKv,
    balanceCandidates: balanceKv === 'auto' ? BALANCE_CANDIDATES : [balanceKv],
    ropeSelection,
    kvMetric,
    nopeShrink: o.nopeShrink ?? !tm,
    nopeRotation: o.nopeRotation ?? !tm,
    valueRefit: o.valueRefit ?? !tm,
    outputRefit: o.outputRefit ?? !tm,
    latentNorm,
    calibInputs,
    qkNorm,
    dtype,
    qLoraRank,
    qLoraLossless,
    target,
  };
}

/** The `qkNorm` option checked (default {@link DEFAULT_QK_NORM}); throws a usage GqaError listing the methods. */
export function resolveQkNorm(v: unknown): QkNormMethod {
  if (v === undefined) return DEFAULT_QK_NORM;
  if (typeof v !== 'string' || !(QK_NORM_METHODS as readonly string[]).includes(v))
    throw usageError('ERR_BAD_OPTION', `qkNorm must be one of ${QK_NORM_METHODS.join(', ')} (got ${JSON.stringify(v)})`);
  return v as QkNormMethod;
}
