/**
 * Conversion options and their limits, checked before any work is done.
 */
import type { ModelSpec } from '../model/spec-types.js';
import { usageError } from '../errors.js';
import { freqfoldCandidates } from './rorope.js';

/** Where each layer's calibration inputs come from. */
export type CalibInputs = 'original' | 'converted';

/** Options of {@link convert}. */
export interface ConvertOptions {
  /** Source checkpoint directory (llama, qwen2 or mistral; GQA or MHA). */
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
  /** RoPE dims kept per head, qk_rope_head_dim (default 64, capped to headDim). */
  qkRopeDim?: number;
  /** Latent rank, kv_lora_rank (default 512, capped to the maximum). */
  kvLoraRank?: number;
  /** Frequencies folded per RoRoPE group, or 'auto' to choose per layer (default 'auto'). */
  freqfold?: number | 'auto';
  /** Norm ratio of NoPE keys to values before the joint PCA (default 1). */
  balanceKv?: number;
  /** Inputs of each layer's calibration: the original model's or the converted one's (default 'original'). */
  calibInputs?: CalibInputs;
  /** Replace an existing output directory. */
  overwrite?: boolean;
  /** Continue an interrupted conversion of the same settings. */
  resume?: boolean;
  /** Maximum shard size in bytes (default 5 GB). */
  maxShardBytes?: number;
  /** Progress callback. */
  onProgress?: (p: ConvertProgress) => void;
  /** Aborts the conversion (the partial output stays resumable, never complete-looking). */
  signal?: AbortSignal;
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
  qkRopeDim: number;
  kvLoraRank: number;
  freqfold: number | 'auto';
  freqfoldCandidates: number[];
  balanceKv: number;
  calibInputs: CalibInputs;
}

function positiveInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v <= 0) throw usageError('ERR_BAD_OPTION', `${name} must be a positive integer (got ${v})`);
  return v;
}

/** Applies defaults and checks every limit against the model; throws a usage GqaError naming the limit. */
export function resolveOptions(spec: ModelSpec, o: ConvertOptions): ResolvedOptions {
  if (spec.modelType === 'deepseek_v3') throw usageError('ERR_ALREADY_MLA', `${o.modelDir} is already a DeepSeek-V3 (MLA) checkpoint`);
  if (spec.rope.partialRotaryFactor !== 1)
    throw usageError('ERR_UNSUPPORTED_ROPE', `partial_rotary_factor ${spec.rope.partialRotaryFactor} is not supported (only full-head RoPE)`);
  const d = spec.headDim;
  const L = spec.numKvHeads * d;
  const calibSamples = positiveInt('calibSamples', o.calibSamples ?? 128);
  const calibSeqlen = positiveInt('calibSeqlen', o.calibSeqlen ?? 256);
  if (calibSeqlen < 2) throw usageError('ERR_BAD_OPTION', 'calibSeqlen must be at least 2');
  const heldOutSamples = positiveInt('heldOutSamples', o.heldOutSamples ?? Math.max(4, Math.floor(calibSamples / 8)));
  const seed = o.seed ?? 42;
  if (!Number.isInteger(seed)) throw usageError('ERR_BAD_OPTION', `seed must be an integer (got ${seed})`);
  const qkRopeDim = positiveInt('qkRopeDim', o.qkRopeDim ?? Math.min(64, d));
  if (qkRopeDim % 2 !== 0 || d % qkRopeDim !== 0)
    throw usageError('ERR_BAD_OPTION', `qkRopeDim ${qkRopeDim} must be even and divide head_dim ${d}`);
  const maxRank = 2 * L - qkRopeDim;
  const kvLoraRank = positiveInt('kvLoraRank', o.kvLoraRank ?? Math.min(512, maxRank));
  if (kvLoraRank > maxRank)
    throw usageError('ERR_BAD_OPTION', `kvLoraRank ${kvLoraRank} exceeds the maximum 2 x kv_heads x head_dim - qkRopeDim = ${maxRank}`);
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
  const balanceKv = o.balanceKv ?? 1;
  if (!(balanceKv > 0) || !Number.isFinite(balanceKv)) throw usageError('ERR_BAD_OPTION', `balanceKv must be a positive number (got ${balanceKv})`);
  const calibInputs = o.calibInputs ?? 'original';
  if (calibInputs !== 'original' && calibInputs !== 'converted')
    throw usageError('ERR_BAD_OPTION', `calibInputs must be 'original' or 'converted' (got ${String(calibInputs)})`);
  return {
    calibSamples,
    calibSeqlen,
    heldOutSamples,
    seed,
    qkRopeDim,
    kvLoraRank,
    freqfold: ff,
    freqfoldCandidates: ff === 'auto' ? candidates : [ff],
    balanceKv,
    calibInputs,
  };
}
