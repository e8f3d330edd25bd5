/**
 * Self-attention of one decoder layer on normalised inputs, for GQA/MHA models
 * (Llama, Qwen2, Mistral) and DeepSeek-V3 Multi-Head Latent Attention, with the
 * semantics of transformers' eager implementations in float32: the layer graph
 * (graph.ts) on the host kernels (host-kernels.ts).
 */
import { GqaError } from '../errors.js';
import { modelRope, type RopeTables } from '../model/rope.js';
import type { ModelSpec } from '../model/spec-types.js';
import { attentionGraph, mlaCacheRowsGraph, mlaQueriesGraph } from './graph.js';
import { hostKernels } from './host-kernels.js';
import type { LayerWeights } from './weights.js';
import { Workspace } from './workspace.js';

export { slidingWindowOf } from './graph.js';

/** Options of {@link attentionInto}. */
export interface AttentionIntoOptions {
  /** add the attention output to `out` (residual connection) instead of overwriting it */
  accumulate?: boolean;
  /** positions of each sequence's tokens: seqLen entries (shared) or nSeq*seqLen; default 0..seqLen-1 */
  positions?: Int32Array;
  /** scratch buffers to reuse */
  workspace?: Workspace;
}

const ropeCache = new WeakMap<ModelSpec, Map<number, RopeTables>>();

/** The rope tables of `spec` for sequences whose largest position is `maxPos` (cached per spec). */
export function ropeFor(spec: ModelSpec, maxPos: number): RopeTables {
  // only `dynamic` depends on the length, and only above max_position_embeddings
  const key = spec.rope.type === 'dynamic' && maxPos + 1 > spec.maxPositionEmbeddings ? maxPos + 1 : 0;
  let m = ropeCache.get(spec);
  if (!m) {
    m = new Map();
    ropeCache.set(spec, m);
  }
  let t = m.get(key);
  if (!t) {
    t = modelRope(spec, key || undefined);
    m.set(key, t);
  }
  return t;
}

/** Per-row positions (nSeq*seqLen) from the caller's positions or 0..seqLen-1. */
function rowPositions(nSeq: number, seqLen: number, positions: Int32Array | undefined): { pos: Int32Array; max: number } {
  const rows = nSeq * seqLen;
  const pos = new Int32Array(rows);
  let max = 0;
  if (positions) {
    if (positions.length !== seqLen && positions.length !== rows)
      throw new GqaError('ERR_SHAPE', `positions has ${positions.length} entries; expected seqLen (${seqLen}) or nSeq*seqLen (${rows})`, 'usage');
    for (let r = 0; r < rows; r++) {
      const p = positions.length === rows ? positions[r] : positions[r % seqLen];
      if (p < 0) throw new GqaError('ERR_OUT_OF_RANGE', `positions must be >= 0 (got ${p})`, 'usage');
      pos[r] = p;
      if (p > max) max = p;
    }
  } else {
    for (let r = 0; r < rows; r++) pos[r] = r % seqLen;
    max = seqLen - 1;
  }
  return { pos, max };
}

/**
 * Attention output (after o_proj, plus its bias) of normalised inputs `x`
 * [nSeq*seqLen, hidden] written to (or, with `accumulate`, added to) `out`
 * [nSeq*seqLen, hidden]. `w` needs the layer's `self_attn.*` tensors only.
 */
export async function attentionInto(
  spec: ModelSpec,
  w: LayerWeights,
  x: Float32Array,
  nSeq: number,
  seqLen: number,
  out: Float32Array,
  options: AttentionIntoOptions = {},
): Promise<void> {
  const H = spec.hiddenSize;
  const rows = nSeq * seqLen;
  if (!Number.isInteger(nSeq) || !Number.isInteger(seqLen) || nSeq < 0 || seqLen < 1)
    throw new GqaError('ERR_SHAPE', `nSeq (${nSeq}) and seqLen (${seqLen}) must be integers, seqLen >= 1`, 'usage');
  if (x.length < rows * H) throw new GqaError('ERR_SHAPE', `x has ${x.length} floats, needs nSeq*seqLen*hidden = ${rows * H}`, 'usage');
  if (out.length < rows * H) throw new GqaError('ERR_SHAPE', `out has ${out.length} floats, needs ${rows * H}`, 'usage');
  if (rows === 0) return;
  const ws = options.workspace ?? new Workspace();
  const { pos, max } = rowPositions(nSeq, seqLen, options.positions);
  const rope = ropeFor(spec, max);
  const accumulate = options.accumulate ?? false;
  await attentionGraph(hostKernels(w, ws, pos, rope), spec, { layer: w.layer, x, nSeq, seqLen, out, accumulate });
}

/**
 * DeepSeek-V3 queries of normalised inputs `x` [rows, hidden] into `q` [rows, heads,
 * qk_nope + qk_rope]: q_proj, or q_b_proj(q_a_layernorm(q_a_proj(x))) (the norm skipped
 * when `qk_latent_layernorm` is false), with RoPE applied to each head's rope part at `pos`.
 * Shared by the prefill attention and the absorbed decoder (mla-decoder.ts).
 */
export async function mlaQueries(
  spec: ModelSpec,
  w: LayerWeights,
  x: Float32Array,
  rows: number,
  pos: Int32Array,
  rope: RopeTables,
  q: Float32Array,
  ws: Workspace,
): Promise<void> {
  await mlaQueriesGraph(hostKernels(w, ws, pos, rope), spec, x, rows, q);
}

/**
 * What an MLA cache holds per token, for normalised inputs `x` [rows, hidden], into `kva`
 * [rows, kv_lora_rank + qk_rope]: [kv_a_layernorm(latent) | RoPE(k_rope) at `pos`] (the
 * norm skipped when `qk_latent_layernorm` is false). Shared by the prefill attention and
 * the absorbed decoder (mla-decoder.ts).
 */
export async function mlaCacheRows(spec: ModelSpec, w: LayerWeights, x: Float32Array, rows: number, pos: Int32Array, rope: RopeTables, kva: Float32Array): Promise<void> {
  await mlaCacheRowsGraph(hostKernels(w, new Workspace(), pos, rope), spec, x, rows, kva);
}

/**
 * Attention output after o_proj for normalised attention inputs `x` [nSeq*seqLen, hidden]
 * (the output of the layer's input_layernorm): returns [nSeq*seqLen, hidden]. Works for
 * GQA/MHA specs (q/k/v/o_proj) and DeepSeek-V3 MLA specs (q_proj or q_a/q_b, kv_a_proj_with_mqa,
 * kv_a_layernorm unless `qk_latent_layernorm` is false, kv_b_proj, o_proj), on weights read
 * from a checkpoint or built in memory. `positions`: seqLen entries shared by every sequence,
 * or one per row; default 0..seqLen-1.
 */
export async function attentionForward(
  spec: ModelSpec,
  w: LayerWeights,
  x: Float32Array,
  nSeq: number,
  seqLen: number,
  positions?: Int32Array,
): Promise<Float32Array> {
  const out = new Float32Array(nSeq * seqLen * spec.hiddenSize);
  await attentionInto(spec, w, x, nSeq, seqLen, out, { positions });
  return out;
}
