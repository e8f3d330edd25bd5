/**
 * Self-attention of one decoder layer on normalised inputs, for GQA/MHA models
 * (Llama, Qwen2, Mistral) and DeepSeek-V3 Multi-Head Latent Attention, with the
 * semantics of transformers' eager implementations in float32.
 */
import { GqaError } from '../errors.js';
import { modelRope, mlaSoftmaxScale, type RopeTables } from '../model/rope.js';
import type { ModelSpec } from '../model/spec-types.js';
import { native } from '../native/binding.js';
import { type LayerWeights, opt, req } from './weights.js';
import { Workspace } from './workspace.js';

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

/** Sliding-window size of decoder layer `layer` (0 = full causal attention), from config.json. */
export function slidingWindowOf(spec: ModelSpec, layer: number): number {
  const raw = spec.raw;
  const win = typeof raw.sliding_window === 'number' && raw.sliding_window > 0 ? raw.sliding_window : 0;
  if (!win) return 0;
  if (spec.modelType === 'mistral') return win;
  if (spec.modelType === 'qwen2') {
    if (raw.use_sliding_window !== true) return 0;
    const types = raw.layer_types;
    if (Array.isArray(types)) return types[layer] === 'sliding_attention' ? win : 0;
    const maxWindowLayers = typeof raw.max_window_layers === 'number' ? raw.max_window_layers : 0;
    return layer >= maxWindowLayers ? win : 0;
  }
  return 0;
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
  if (spec.mla) await mlaAttention(spec, w, x, nSeq, seqLen, out, pos, rope, accumulate, ws);
  else await gqaAttention(spec, w, x, nSeq, seqLen, out, pos, rope, accumulate, ws);
}

async function gqaAttention(
  spec: ModelSpec,
  w: LayerWeights,
  x: Float32Array,
  nSeq: number,
  seqLen: number,
  out: Float32Array,
  pos: Int32Array,
  rope: RopeTables,
  accumulate: boolean,
  ws: Workspace,
): Promise<void> {
  const H = spec.hiddenSize;
  const nH = spec.numHeads;
  const G = spec.numKvHeads;
  const d = spec.headDim;
  const rows = nSeq * seqLen;
  const wq = req(w, 'self_attn.q_proj.weight', nH * d * H);
  const wk = req(w, 'self_attn.k_proj.weight', G * d * H);
  const wv = req(w, 'self_attn.v_proj.weight', G * d * H);
  const wo = req(w, 'self_attn.o_proj.weight', H * nH * d);
  const q = ws.get('q', rows * nH * d);
  const k = ws.get('k', rows * G * d);
  const v = ws.get('v', rows * G * d);
  const ao = ws.get('attn', rows * nH * d);
  await native.linearAsync(x, wq, q, { rows, inDim: H, outDim: nH * d, bias: opt(w, 'self_attn.q_proj.bias', nH * d) });
  await native.linearAsync(x, wk, k, { rows, inDim: H, outDim: G * d, bias: opt(w, 'self_attn.k_proj.bias', G * d) });
  await native.linearAsync(x, wv, v, { rows, inDim: H, outDim: G * d, bias: opt(w, 'self_attn.v_proj.bias', G * d) });
  const ropeOpts = { headStride: d, rotDim: rope.rotDim, scale: rope.attentionScaling };
  await native.ropeAsync(q, pos, rope.invFreq, { ...ropeOpts, rowStride: nH * d, nHeads: nH });
  await native.ropeAsync(k, pos, rope.invFreq, { ...ropeOpts, rowStride: G * d, nHeads: G });
  await native.attentionAsync(q, k, v, ao, {
    nSeq,
    seqLen,
    nHeads: nH,
    nKvHeads: G,
    qkDim: d,
    vDim: d,
    scale: 1 / Math.sqrt(d),
    window: slidingWindowOf(spec, w.layer),
  });
  await native.linearAsync(ao, wo, out, { rows, inDim: nH * d, outDim: H, bias: opt(w, 'self_attn.o_proj.bias', H), accumulate });
}

async function mlaAttention(
  spec: ModelSpec,
  w: LayerWeights,
  x: Float32Array,
  nSeq: number,
  seqLen: number,
  out: Float32Array,
  pos: Int32Array,
  rope: RopeTables,
  accumulate: boolean,
  ws: Workspace,
): Promise<void> {
  const m = spec.mla!;
  const H = spec.hiddenSize;
  const nH = spec.numHeads;
  const dn = m.qkNopeHeadDim;
  const dr = m.qkRopeHeadDim;
  const dv = m.vHeadDim;
  const R = m.kvLoraRank;
  const dq = dn + dr;
  const rows = nSeq * seqLen;
  const q = ws.get('q', rows * nH * dq);
  await mlaQueries(spec, w, x, rows, pos, rope, q, ws);
  const kva = ws.get('kva', rows * (R + dr));
  await mlaCacheRows(spec, w, x, rows, pos, rope, kva);
  // per head [k_nope (dn) | v (dv)] from the normed latent
  const kvb = ws.get('kvb', rows * nH * (dn + dv));
  await native.linearAsync(kva, req(w, 'self_attn.kv_b_proj.weight', nH * (dn + dv) * R), kvb, {
    rows,
    inDim: R,
    outDim: nH * (dn + dv),
    xStride: R + dr,
  });
  const ao = ws.get('attn', rows * nH * dv);
  await native.attentionAsync(q, kvb, kvb.subarray(dn), ao, {
    nSeq,
    seqLen,
    nHeads: nH,
    nKvHeads: nH,
    qkDim: dn,
    vDim: dv,
    scale: mlaSoftmaxScale(spec),
    kHeadStride: dn + dv,
    vHeadStride: dn + dv,
    kRope: kva.subarray(R),
    ropeDim: dr,
    kRopeRowStride: R + dr,
  });
  await native.linearAsync(ao, req(w, 'self_attn.o_proj.weight', H * nH * dv), out, {
    rows,
    inDim: nH * dv,
    outDim: H,
    bias: opt(w, 'self_attn.o_proj.bias', H),
    accumulate,
  });
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
  const m = spec.mla!;
  const H = spec.hiddenSize;
  const nH = spec.numHeads;
  const dn = m.qkNopeHeadDim;
  const dr = m.qkRopeHeadDim;
  const dq = dn + dr;
  if (m.qLoraRank) {
    const Rq = m.qLoraRank;
    const qa = ws.get('qa', rows * Rq);
    await native.linearAsync(x, req(w, 'self_attn.q_a_proj.weight', Rq * H), qa, { rows, inDim: H, outDim: Rq, bias: opt(w, 'self_attn.q_a_proj.bias', Rq) });
    if (m.qkLatentLayernorm) await native.rmsNormAsync(qa, req(w, 'self_attn.q_a_layernorm.weight', Rq), qa, { rows, dim: Rq, eps: spec.rmsNormEps });
    await native.linearAsync(qa, req(w, 'self_attn.q_b_proj.weight', nH * dq * Rq), q, { rows, inDim: Rq, outDim: nH * dq, bias: opt(w, 'self_attn.q_b_proj.bias', nH * dq) });
  } else {
    await native.linearAsync(x, req(w, 'self_attn.q_proj.weight', nH * dq * H), q, { rows, inDim: H, outDim: nH * dq, bias: opt(w, 'self_attn.q_proj.bias', nH * dq) });
  }
  const interleave = m.ropeInterleave;
  await native.ropeAsync(q, pos, rope.invFreq, { rowStride: nH * dq, nHeads: nH, headStride: dq, offset: dn, rotDim: dr, scale: rope.attentionScaling, interleave });
}

/**
 * What an MLA cache holds per token, for normalised inputs `x` [rows, hidden], into `kva`
 * [rows, kv_lora_rank + qk_rope]: [kv_a_layernorm(latent) | RoPE(k_rope) at `pos`] (the
 * norm skipped when `qk_latent_layernorm` is false). Shared by the prefill attention and
 * the absorbed decoder (mla-decoder.ts).
 */
export async function mlaCacheRows(spec: ModelSpec, w: LayerWeights, x: Float32Array, rows: number, pos: Int32Array, rope: RopeTables, kva: Float32Array): Promise<void> {
  const m = spec.mla!;
  const H = spec.hiddenSize;
  const R = m.kvLoraRank;
  const dr = m.qkRopeHeadDim;
  const row = R + dr;
  await native.linearAsync(x, req(w, 'self_attn.kv_a_proj_with_mqa.weight', row * H), kva, { rows, inDim: H, outDim: row, bias: opt(w, 'self_attn.kv_a_proj_with_mqa.bias', row) });
  if (m.qkLatentLayernorm)
    await native.rmsNormAsync(kva, req(w, 'self_attn.kv_a_layernorm.weight', R), kva, { rows, dim: R, eps: spec.rmsNormEps, xStride: row, outStride: row });
  await native.ropeAsync(kva, pos, rope.invFreq, { rowStride: row, nHeads: 1, headStride: row, offset: R, rotDim: dr, scale: rope.attentionScaling, interleave: m.ropeInterleave });
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
