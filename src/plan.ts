/**
 * Budget planning: what a conversion to MLA would cache per token and per sequence for
 * candidate (kvLoraRank, qkRopeDim) budgets, and which budgets the model allows — from
 * config.json alone, without loading weights.
 */
import { GqaError, usageError } from './errors.js';
import { loadModelSpec } from './model/spec.js';
import type { ModelSpec } from './model/spec-types.js';
import { BF16_BYTES, kvBytesPerToken, kvGiBPerSequence } from './report/kv-cache.js';
import { mlaBackends } from './check.js';

/** Options of {@link plan}. */
export interface PlanOptions {
  /** Candidate latent ranks (default 64, 128, 256, 512, each capped to the maximum of its RoPE dim). */
  kvLoraRanks?: number[];
  /** Candidate RoPE dims per head (default 32 and 64, capped to head_dim and filtered to valid ones). */
  qkRopeDims?: number[];
  /** Tokens of the sequence the per-sequence size is given for (default 32768). */
  contextTokens?: number;
  /** Bytes per cached value (default 2: bf16). */
  bytesPerValue?: number;
}

/** KV-cache cost of one configuration. */
export interface KvCost {
  /** cached values per token in one layer */
  valuesPerTokenPerLayer: number;
  /** cached values per token, all layers */
  valuesPerToken: number;
  /** bytes per token, all layers */
  bytesPerToken: number;
  /** GiB (2^30 bytes) per sequence of `contextTokens` tokens, all layers */
  gibPerSequence: number;
}

/** One candidate budget. */
export interface PlanBudget extends KvCost {
  kvLoraRank: number;
  qkRopeDim: number;
  valid: boolean;
  /** why the budget is not allowed (empty when valid) */
  reasons: string[];
  /** the largest kvLoraRank allowed with this qkRopeDim: 2 x kv_heads x head_dim - qkRopeDim */
  maxKvLoraRank: number;
  /** head_dim / qkRopeDim (null when qkRopeDim does not divide head_dim) */
  collapse: number | null;
  /** freqfold values allowed with this qkRopeDim: multiples of collapse dividing head_dim / 2 */
  freqfolds: number[];
  /** original values per token over this budget's */
  compressionRatio: number;
  /** share of the original KV cache saved */
  savedFraction: number;
  /** whether the stock engines' fast MLA backends take this budget (null: not known; src/check.ts) */
  fastMla: { vllm: boolean | null; sglang: boolean | null };
}

/** Result of {@link plan}. */
export interface PlanResult {
  model: {
    dir: string;
    modelType: ModelSpec['modelType'];
    numLayers: number;
    numHeads: number;
    numKvHeads: number;
    headDim: number;
    hiddenSize: number;
    maxPositionEmbeddings: number;
  };
  /** the GQA/MHA cache: 2 x kv_heads x head_dim values per token per layer */
  original: KvCost;
  contextTokens: number;
  bytesPerValue: number;
  limits: {
    /** kv_heads x head_dim */
    latentDim: number;
    /** qkRopeDim values allowed: even divisors of head_dim */
    validQkRopeDims: number[];
    /** kvLoraRank <= maxKvLoraRankPlusRope - qkRopeDim */
    maxKvLoraRankPlusRope: number;
  };
  /** model-wide reasons no budget can be converted (e.g. partial RoPE); empty when convertible */
  warnings: string[];
  budgets: PlanBudget[];
}

/** Default candidate ranks and RoPE dims. */
export const DEFAULT_KV_LORA_RANKS = [64, 128, 256, 512];
export const DEFAULT_QK_ROPE_DIMS = [32, 64];

/** Even divisors of `headDim`, ascending: the qkRopeDim values the conversion allows. */
export function validQkRopeDims(headDim: number): number[] {
  const out: number[] = [];
  for (let r = 2; r <= headDim; r += 2) if (headDim % r === 0) out.push(r);
  return out;
}

/** freqfold values allowed for `qkRopeDim`: multiples of headDim / qkRopeDim that divide headDim / 2. */
export function allowedFreqfolds(headDim: number, qkRopeDim: number): number[] {
  if (!(qkRopeDim > 0) || qkRopeDim % 2 !== 0 || headDim % qkRopeDim !== 0) return [];
  const collapse = headDim / qkRopeDim;
  const half = headDim / 2;
  const out: number[] = [];
  for (let f = collapse; f <= half; f += collapse) if (half % f === 0) out.push(f);
  return out;
}

function checkList(name: string, xs: number[]): number[] {
  if (!Array.isArray(xs) || xs.length === 0) throw usageError('ERR_BAD_OPTION', `${name} must be a non-empty list of positive integers`);
  for (const x of xs) if (!Number.isInteger(x) || x <= 0) throw usageError('ERR_BAD_OPTION', `${name} must hold positive integers (got ${x})`);
  return [...new Set(xs)];
}

function cost(valuesPerTokenPerLayer: number, layers: number, tokens: number, bytesPerValue: number): KvCost {
  const valuesPerToken = valuesPerTokenPerLayer * layers;
  return {
    valuesPerTokenPerLayer,
    valuesPerToken,
    bytesPerToken: kvBytesPerToken(valuesPerToken, bytesPerValue),
    gibPerSequence: kvGiBPerSequence(valuesPerToken, tokens, bytesPerValue),
  };
}

/** The default RoPE dims for a head size: 32 and 64 capped to head_dim and filtered to valid ones. */
export function defaultQkRopeDims(headDim: number): number[] {
  const valid = validQkRopeDims(headDim);
  const out = [...new Set(DEFAULT_QK_ROPE_DIMS.map((r) => Math.min(r, headDim)))].filter((r) => valid.includes(r));
  if (out.length > 0) return out;
  const fallback = valid.filter((r) => r <= 64);
  return fallback.length > 0 ? [fallback[fallback.length - 1]] : valid.slice(0, 1);
}

/** Plans budgets for a parsed model spec (pure; {@link plan} reads the spec from a directory). */
export function planForSpec(spec: ModelSpec, options: PlanOptions = {}, dir = ''): PlanResult {
  const { numLayers, numKvHeads, headDim } = spec;
  const tokens = options.contextTokens ?? 32768;
  if (!Number.isInteger(tokens) || tokens <= 0) throw usageError('ERR_BAD_OPTION', `contextTokens must be a positive integer (got ${tokens})`);
  const bpv = options.bytesPerValue ?? BF16_BYTES;
  if (!(bpv > 0)) throw usageError('ERR_BAD_OPTION', `bytesPerValue must be positive (got ${bpv})`);
  const L = numKvHeads * headDim;
  const original = cost(2 * L, numLayers, tokens, bpv);
  const warnings: string[] = [];
  if (spec.rope.partialRotaryFactor !== 1) warnings.push(`partial_rotary_factor ${spec.rope.partialRotaryFactor} is not supported (only full-head RoPE)`);
  const ropeDims = options.qkRopeDims ? checkList('qkRopeDims', options.qkRopeDims) : defaultQkRopeDims(headDim);
  const explicitRanks = options.kvLoraRanks ? checkList('kvLoraRanks', options.kvLoraRanks) : null;
  const budgets: PlanBudget[] = [];
  for (const rope of ropeDims) {
    const maxRank = 2 * L - rope;
    const ranks = explicitRanks ?? [...new Set(DEFAULT_KV_LORA_RANKS.map((r) => Math.min(r, maxRank)))].filter((r) => r > 0);
    for (const rank of ranks) {
      const reasons = [...warnings];
      if (rope % 2 !== 0) reasons.push(`qkRopeDim ${rope} must be even`);
      if (headDim % rope !== 0) reasons.push(`qkRopeDim ${rope} must divide head_dim ${headDim}`);
      if (rank > maxRank) reasons.push(`kvLoraRank ${rank} exceeds the maximum 2 x kv_heads x head_dim - qkRopeDim = ${maxRank}`);
      if (maxRank <= 0) reasons.push(`qkRopeDim ${rope} leaves no room for a latent (2 x kv_heads x head_dim = ${2 * L})`);
      const c = cost(rank + rope, numLayers, tokens, bpv);
      budgets.push({
        kvLoraRank: rank,
        qkRopeDim: rope,
        valid: reasons.length === 0,
        reasons,
        maxKvLoraRank: maxRank,
        collapse: rope % 2 === 0 && headDim % rope === 0 ? headDim / rope : null,
        freqfolds: allowedFreqfolds(headDim, rope),
        ...c,
        compressionRatio: original.valuesPerToken / c.valuesPerToken,
        savedFraction: 1 - c.valuesPerToken / original.valuesPerToken,
        fastMla: { vllm: mlaBackends('vllm', rank, rope)[0].accepts, sglang: mlaBackends('sglang', rank, rope)[0].accepts },
      });
    }
  }
  return {
    model: {
      dir,
      modelType: spec.modelType,
      numLayers,
      numHeads: spec.numHeads,
      numKvHeads,
      headDim,
      hiddenSize: spec.hiddenSize,
      maxPositionEmbeddings: spec.maxPositionEmbeddings,
    },
    original,
    contextTokens: tokens,
    bytesPerValue: bpv,
    limits: { latentDim: L, validQkRopeDims: validQkRopeDims(headDim), maxKvLoraRankPlusRope: 2 * L },
    warnings,
    budgets,
  };
}

/** Options of {@link plan}: the model directory and the candidates. */
export interface PlanRequest extends PlanOptions {
  /** the source checkpoint directory (only its config.json is read) */
  modelDir: string;
}

function checkRequest(options: unknown): PlanRequest {
  if (!options || typeof options !== 'object' || Array.isArray(options))
    throw usageError('ERR_BAD_OPTION', 'plan() takes one options object: plan({ modelDir, kvLoraRanks?, qkRopeDims?, contextTokens?, bytesPerValue? })');
  const o = options as Record<string, unknown>;
  if (typeof o.modelDir !== 'string' || o.modelDir === '') throw usageError('ERR_BAD_OPTION', `modelDir must be a non-empty string (got ${typeof o.modelDir})`);
  for (const k of ['kvLoraRanks', 'qkRopeDims'] as const)
    if (o[k] !== undefined && !Array.isArray(o[k])) throw usageError('ERR_BAD_OPTION', `${k} must be an array of positive integers (got ${typeof o[k]})`);
  for (const k of ['contextTokens', 'bytesPerValue'] as const)
    if (o[k] !== undefined && typeof o[k] !== 'number') throw usageError('ERR_BAD_OPTION', `${k} must be a number (got ${typeof o[k]})`);
  return o as unknown as PlanRequest;
}

/**
 * Plans candidate budgets for the checkpoint in `modelDir`, reading only its config.json.
 * Invalid combinations are returned with `valid: false` and their reasons (check
 * `budgets.some((b) => b.valid)`); malformed options throw a usage GqaError (exit 2), an
 * unreadable or already-MLA model an input GqaError (exit 3).
 *
 * @example
 * const p = await plan({ modelDir: 'test/fixtures/tiny-llama-gqa', kvLoraRanks: [96], qkRopeDims: [32] });
 * console.log(p.budgets[0].compressionRatio); // 2
 */
export async function plan(options: PlanRequest): Promise<PlanResult> {
  const { modelDir, ...rest } = checkRequest(options);
  const spec = await loadModelSpec(modelDir);
  if (spec.modelType === 'deepseek_v3' || spec.mla)
    throw new GqaError('ERR_ALREADY_MLA', `${modelDir}: already a DeepSeek-V3 (MLA) checkpoint (kv_lora_rank ${spec.mla?.kvLoraRank ?? '?'}); plan takes a GQA/MHA model`);
  return planForSpec(spec, rest, modelDir);
}
