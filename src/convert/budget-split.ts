/**
 * The RoPE / latent split of a KV budget: how many of a token's cached values per layer
 * (kv_lora_rank + qk_rope_head_dim) keep RoPE when the user gives only the total
 * (`--kv-budget`).
 *
 * The rule keeps the most RoPE dims that leave a latent of at least min(32, budget / 2): RoPE
 * dims are what carries position at long range, and on every development-zoo model where the
 * split was free the larger RoPE share gave the lower perplexity at 512 and at 2048 tokens
 * (bench/results/fidelity-splits-cpu.json: e.g. zoo-llama2-mha 64 + 128 against 32 + 160,
 * zoo-qwen3 64 + 64 against 32 + 96, zoo-mixtral 32 + 32 against 16 + 48).
 */
import { usageError } from '../errors.js';

/** A split of a KV budget. */
export interface KvSplit {
  qkRopeDim: number;
  kvLoraRank: number;
}

/** Input of {@link splitKvBudget}. */
export interface SplitInput {
  headDim: number;
  /** key/value heads of the source (the latent rank is at most 2 x kv heads x head_dim - RoPE dims) */
  numKvHeads: number;
  /** kv_lora_rank + qk_rope_head_dim */
  budget: number;
}

/** The RoPE dims a conversion may keep: every even divisor of head_dim, ascending (each kept slot carries one source frequency group). */
export function ropeDimChoices(headDim: number): number[] {
  const out: number[] = [];
  for (let d = 2; d <= headDim; d += 2) if (headDim % d === 0) out.push(d);
  return out;
}

/** The tool's split of `budget` (see the module comment); throws a usage error when no split fits. */
export function splitKvBudget({ headDim, numKvHeads, budget }: SplitInput): KvSplit {
  if (!Number.isInteger(budget) || budget < 3) throw usageError('ERR_BAD_OPTION', `kvBudget must be an integer of at least 3 (got ${budget})`);
  const lossless = 2 * numKvHeads * headDim;
  if (budget > lossless) throw usageError('ERR_BAD_OPTION', `kvBudget ${budget} exceeds the source's 2 x kv_heads x head_dim = ${lossless} values per token and layer`);
  const minLatent = Math.min(32, Math.floor(budget / 2));
  const fits = ropeDimChoices(headDim).filter((d) => budget - d >= minLatent);
  const qkRopeDim = fits.length > 0 ? fits[fits.length - 1] : 2;
  return { qkRopeDim, kvLoraRank: budget - qkRopeDim };
}
