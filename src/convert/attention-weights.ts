/**
 * One layer's attention weights as the factorization reads them (GQA/MHA, the source) and
 * writes them (MLA, DeepSeek-V3 names), row-major [out, in].
 */
import type { LayerWeights } from '../engine/weights.js';
import { GqaError } from '../errors.js';

/** A GQA/MHA layer's attention weights as stored ([out, in] row-major). */
export interface GqaAttention {
  wq: Float32Array;
  wk: Float32Array;
  wv: Float32Array;
  wo: Float32Array;
  bq?: Float32Array | null;
  bk?: Float32Array | null;
  bv?: Float32Array | null;
  bo?: Float32Array | null;
}

/** DeepSeek-V3 attention weights of one layer (transformers' names and shapes). */
export interface MlaAttention {
  /** q_proj.weight [H * (d + r), hidden], per head [nope d | rope r] */
  qProj: Float32Array;
  qBias: Float32Array | null;
  /** kv_a_proj_with_mqa.weight [R + r, hidden]: [latent R | k_rope r] */
  kvA: Float32Array;
  kvABias: Float32Array | null;
  /** kv_b_proj.weight [H * (d + d), R], per head [k_nope d | v d] */
  kvB: Float32Array;
  oProj: Float32Array;
  oBias: Float32Array | null;
}

/**
 * The GQA/MHA attention tensors of a loaded layer. A layer with per-head q/k norms (qwen3)
 * is not linear in these tensors alone: it is refused unless `qkNormHandled` (qk-norm.ts
 * replaces the norms by linear maps and reads the raw tensors through this).
 */
export function gqaAttention(w: LayerWeights, qkNormHandled = false): GqaAttention {
  if (!qkNormHandled && (w.tensors['self_attn.q_norm.weight'] || w.tensors['self_attn.k_norm.weight']))
    throw new GqaError('ERR_INTERNAL', `layer ${w.layer}: per-head q_norm / k_norm (qwen3) must be folded first (convert/qk-norm.ts sourceAttention)`, 'runtime');
  const t = (n: string) => w.tensors[`self_attn.${n}`]?.data ?? null;
  return { wq: t('q_proj.weight')!, wk: t('k_proj.weight')!, wv: t('v_proj.weight')!, wo: t('o_proj.weight')!, bq: t('q_proj.bias'), bk: t('k_proj.bias'), bv: t('v_proj.bias'), bo: t('o_proj.bias') };
}
