/**
 * One decoder layer's forward on the GPU, step for step the engine's (src/engine/attention.ts,
 * src/engine/layer.ts): GQA/MHA and DeepSeek-V3 MLA attention (q_proj or q_a/q_b, latent
 * norms, RoPE on the rope dims, causal attention with the shared rope key) and the SwiGLU
 * MLP, on device arrays. Calls only queue work; the caller synchronises.
 */
import { ropeFor, slidingWindowOf } from '../engine/attention.js';
import type { LayerWeights } from '../engine/weights.js';
import { GqaError } from '../errors.js';
import { mlaSoftmaxScale } from '../model/rope.js';
import type { ModelSpec } from '../model/spec-types.js';
import type { NativeConvertCuda } from '../native/binding.js';
import type { DeviceArray, DeviceWorkspace } from './cuda-memory.js';

/** A weight on the device in the dtype its linear layer uses. */
export interface DeviceWeight {
  arr: DeviceArray;
  dtype: 'BF16' | 'F32';
}

/** Finds (or uploads) device copies of a layer's host tensors. */
export interface DeviceWeightSource {
  /**
   * Tensor `name` of `w` for a linear layer: bf16 when it is stored so and `allowBf16`,
   * else float32. Missing or mis-sized tensors throw ERR_TENSOR_MISSING / ERR_TENSOR_SHAPE.
   */
  linear(w: LayerWeights, name: string, elements: number, allowBf16: boolean): DeviceWeight;
  /** Float32 copy of tensor `name` (biases, norm weights), or null when `w` lacks it. */
  vector(w: LayerWeights, name: string, elements: number): DeviceArray | null;
}

/** What one forward call runs with. */
export interface DeviceForwardContext {
  cu: NativeConvertCuda;
  ws: DeviceWorkspace;
  weights: DeviceWeightSource;
  /** bf16 GEMM operands for weights stored in bf16 (calibration propagation) or float32 everywhere (evaluation) */
  allowBf16: boolean;
  /** int32 positions r % seqLen for `rows` rows */
  positions(rows: number, seqLen: number): DeviceArray;
  /** the rope inverse frequencies of a table, on the device */
  invFreq(table: Float32Array): DeviceArray;
}

function required(ctx: DeviceForwardContext, w: LayerWeights, name: string, elements: number): DeviceArray {
  const v = ctx.weights.vector(w, name, elements);
  if (!v) throw new GqaError('ERR_TENSOR_MISSING', `layer ${w.layer}: weight ${name} is missing`);
  return v;
}

function linear(
  ctx: DeviceForwardContext,
  x: DeviceArray,
  wt: DeviceWeight,
  out: DeviceArray,
  o: { rows: number; inDim: number; outDim: number; bias?: DeviceArray | null; xStride?: number; accumulate?: boolean },
): void {
  ctx.cu.linear(x.buf, wt.arr.buf, out.buf, {
    rows: o.rows,
    inDim: o.inDim,
    outDim: o.outDim,
    wDtype: wt.dtype,
    bias: o.bias ? o.bias.buf : null,
    xStride: o.xStride,
    accumulate: o.accumulate,
  });
}

/**
 * Attention output after o_proj of normalised inputs `x` [nSeq*seqLen, hidden] written to
 * (or with `accumulate` added to) `out`; positions 0..seqLen-1 in every sequence.
 */
export function attentionDevice(
  ctx: DeviceForwardContext,
  spec: ModelSpec,
  w: LayerWeights,
  x: DeviceArray,
  nSeq: number,
  seqLen: number,
  out: DeviceArray,
  accumulate: boolean,
): void {
  const rows = nSeq * seqLen;
  if (rows === 0) return;
  const pos = ctx.positions(rows, seqLen);
  const rope = ropeFor(spec, seqLen - 1);
  const inv = ctx.invFreq(rope.invFreq);
  if (spec.mla) mlaAttention(ctx, spec, w, x, nSeq, seqLen, out, accumulate, pos, inv, rope.attentionScaling);
  else gqaAttention(ctx, spec, w, x, nSeq, seqLen, out, accumulate, pos, inv, rope.rotDim, rope.attentionScaling);
}

function gqaAttention(
  ctx: DeviceForwardContext,
  spec: ModelSpec,
  w: LayerWeights,
  x: DeviceArray,
  nSeq: number,
  seqLen: number,
  out: DeviceArray,
  accumulate: boolean,
  pos: DeviceArray,
  inv: DeviceArray,
  rotDim: number,
  scale: number,
): void {
  const H = spec.hiddenSize;
  const nH = spec.numHeads;
  const G = spec.numKvHeads;
  const d = spec.headDim;
  const rows = nSeq * seqLen;
  const { ws, weights: W, allowBf16: bf } = ctx;
  const q = ws.get('q', 'F32', rows * nH * d);
  const k = ws.get('k', 'F32', rows * G * d);
  const v = ws.get('v', 'F32', rows * G * d);
  const ao = ws.get('attn', 'F32', rows * nH * d);
  linear(ctx, x, W.linear(w, 'self_attn.q_proj.weight', nH * d * H, bf), q, { rows, inDim: H, outDim: nH * d, bias: W.vector(w, 'self_attn.q_proj.bias', nH * d) });
  linear(ctx, x, W.linear(w, 'self_attn.k_proj.weight', G * d * H, bf), k, { rows, inDim: H, outDim: G * d, bias: W.vector(w, 'self_attn.k_proj.bias', G * d) });
  linear(ctx, x, W.linear(w, 'self_attn.v_proj.weight', G * d * H, bf), v, { rows, inDim: H, outDim: G * d, bias: W.vector(w, 'self_attn.v_proj.bias', G * d) });
  const ro = { rows, headStride: d, rotDim, scale };
  ctx.cu.rope(q.buf, pos.buf, inv.buf, { ...ro, rowStride: nH * d, nHeads: nH });
  ctx.cu.rope(k.buf, pos.buf, inv.buf, { ...ro, rowStride: G * d, nHeads: G });
  ctx.cu.attention(q.buf, k.buf, v.buf, ao.buf, {
    nSeq,
    seqLen,
    nHeads: nH,
    nKvHeads: G,
    qkDim: d,
    vDim: d,
    scale: 1 / Math.sqrt(d),
    window: slidingWindowOf(spec, w.layer),
  });
  linear(ctx, ao, W.linear(w, 'self_attn.o_proj.weight', H * nH * d, bf), out, {
    rows,
    inDim: nH * d,
    outDim: H,
    bias: W.vector(w, 'self_attn.o_proj.bias', H),
    accumulate,
  });
}

/** DeepSeek-V3 queries (before RoPE) into `q` [rows, heads, qk_nope + qk_rope], as engine mlaQueries: q_proj, or q_b(q_a_layernorm(q_a(x))). */
function mlaQueriesDevice(ctx: DeviceForwardContext, spec: ModelSpec, w: LayerWeights, x: DeviceArray, rows: number, q: DeviceArray): void {
  const m = spec.mla!;
  const H = spec.hiddenSize;
  const nH = spec.numHeads;
  const dq = m.qkNopeHeadDim + m.qkRopeHeadDim;
  const { ws, weights: W, allowBf16: bf, cu } = ctx;
  if (m.qLoraRank) {
    const Rq = m.qLoraRank;
    const qa = ws.get('qa', 'F32', rows * Rq);
    linear(ctx, x, W.linear(w, 'self_attn.q_a_proj.weight', Rq * H, bf), qa, { rows, inDim: H, outDim: Rq, bias: W.vector(w, 'self_attn.q_a_proj.bias', Rq) });
    if (m.qkLatentLayernorm) cu.rmsNorm(qa.buf, required(ctx, w, 'self_attn.q_a_layernorm.weight', Rq).buf, qa.buf, { rows, dim: Rq, eps: spec.rmsNormEps });
    linear(ctx, qa, W.linear(w, 'self_attn.q_b_proj.weight', nH * dq * Rq, bf), q, {
      rows,
      inDim: Rq,
      outDim: nH * dq,
      bias: W.vector(w, 'self_attn.q_b_proj.bias', nH * dq),
    });
  } else {
    linear(ctx, x, W.linear(w, 'self_attn.q_proj.weight', nH * dq * H, bf), q, { rows, inDim: H, outDim: nH * dq, bias: W.vector(w, 'self_attn.q_proj.bias', nH * dq) });
  }
}

/**
 * The cache rows `kva` [rows, kv_lora_rank + qk_rope] (latent and k_rope, before RoPE) and
 * per head [k_nope | v] in `kvb` from the (kv_a_layernorm-normed) latent.
 */
function mlaKeysValuesDevice(ctx: DeviceForwardContext, spec: ModelSpec, w: LayerWeights, x: DeviceArray, rows: number, kva: DeviceArray, kvb: DeviceArray): void {
  const m = spec.mla!;
  const H = spec.hiddenSize;
  const nH = spec.numHeads;
  const R = m.kvLoraRank;
  const dr = m.qkRopeHeadDim;
  const { ws, weights: W, allowBf16: bf, cu } = ctx;
  linear(ctx, x, W.linear(w, 'self_attn.kv_a_proj_with_mqa.weight', (R + dr) * H, bf), kva, {
    rows,
    inDim: H,
    outDim: R + dr,
    bias: W.vector(w, 'self_attn.kv_a_proj_with_mqa.bias', R + dr),
  });
  let latent = kva;
  let latentStride = R + dr;
  if (m.qkLatentLayernorm) {
    latent = ws.get('latent', 'F32', rows * R);
    latentStride = R;
    cu.rmsNorm(kva.buf, required(ctx, w, 'self_attn.kv_a_layernorm.weight', R).buf, latent.buf, { rows, dim: R, eps: spec.rmsNormEps, xStride: R + dr });
  }
  const kvOut = nH * (m.qkNopeHeadDim + m.vHeadDim);
  linear(ctx, latent, W.linear(w, 'self_attn.kv_b_proj.weight', kvOut * R, bf), kvb, { rows, inDim: R, outDim: kvOut, xStride: latentStride });
}

function mlaAttention(
  ctx: DeviceForwardContext,
  spec: ModelSpec,
  w: LayerWeights,
  x: DeviceArray,
  nSeq: number,
  seqLen: number,
  out: DeviceArray,
  accumulate: boolean,
  pos: DeviceArray,
  inv: DeviceArray,
  scale: number,
): void {
  const m = spec.mla!;
  const H = spec.hiddenSize;
  const nH = spec.numHeads;
  const dn = m.qkNopeHeadDim;
  const dr = m.qkRopeHeadDim;
  const dv = m.vHeadDim;
  const R = m.kvLoraRank;
  const dq = dn + dr;
  const rows = nSeq * seqLen;
  const { ws, weights: W, allowBf16: bf, cu } = ctx;
  const q = ws.get('q', 'F32', rows * nH * dq);
  mlaQueriesDevice(ctx, spec, w, x, rows, q);
  const kva = ws.get('kva', 'F32', rows * (R + dr));
  const kvb = ws.get('kvb', 'F32', rows * nH * (dn + dv));
  mlaKeysValuesDevice(ctx, spec, w, x, rows, kva, kvb);
  const interleave = m.ropeInterleave;
  cu.rope(q.buf, pos.buf, inv.buf, { rows, rowStride: nH * dq, nHeads: nH, headStride: dq, offset: dn, rotDim: dr, scale, interleave });
  cu.rope(kva.buf, pos.buf, inv.buf, { rows, rowStride: R + dr, nHeads: 1, headStride: R + dr, offset: R, rotDim: dr, scale, interleave });
  const ao = ws.get('attn', 'F32', rows * nH * dv);
  cu.attention(q.buf, kvb.buf, kvb.sub(dn).buf, ao.buf, {
    nSeq,
    seqLen,
    nHeads: nH,
    nKvHeads: nH,
    qkDim: dn,
    vDim: dv,
    scale: mlaSoftmaxScale(spec),
    kHeadStride: dn + dv,
    vHeadStride: dn + dv,
    kRope: kva.sub(R).buf,
    ropeDim: dr,
    kRopeRowStride: R + dr,
    window: slidingWindowOf(spec, w.layer),
  });
  linear(ctx, ao, W.linear(w, 'self_attn.o_proj.weight', H * nH * dv, bf), out, {
    rows,
    inDim: nH * dv,
    outDim: H,
    bias: W.vector(w, 'self_attn.o_proj.bias', H),
    accumulate,
  });
}

/** SwiGLU MLP of normalised `x` [rows, hidden], added to `out`. */
export function mlpDevice(ctx: DeviceForwardContext, spec: ModelSpec, w: LayerWeights, x: DeviceArray, rows: number, out: DeviceArray): void {
  const H = spec.hiddenSize;
  const I = spec.intermediateSize;
  const { ws, weights: W, allowBf16: bf } = ctx;
  const gate = ws.get('gate', 'F32', rows * I);
  const up = ws.get('up', 'F32', rows * I);
  linear(ctx, x, W.linear(w, 'mlp.gate_proj.weight', I * H, bf), gate, { rows, inDim: H, outDim: I, bias: W.vector(w, 'mlp.gate_proj.bias', I) });
  linear(ctx, x, W.linear(w, 'mlp.up_proj.weight', I * H, bf), up, { rows, inDim: H, outDim: I, bias: W.vector(w, 'mlp.up_proj.bias', I) });
  ctx.cu.swiglu(gate.buf, up.buf, gate.buf, rows * I);
  linear(ctx, gate, W.linear(w, 'mlp.down_proj.weight', H * I, bf), out, { rows, inDim: I, outDim: H, bias: W.vector(w, 'mlp.down_proj.bias', H), accumulate: true });
}

/**
 * Applies decoder layer `w` to the device residual stream `hidden` [nSeq*seqLen, hidden] in
 * place, in micro-batches of at most `microBatchTokens` tokens (at least one sequence).
 */
export function layerForwardDevice(
  ctx: DeviceForwardContext,
  spec: ModelSpec,
  w: LayerWeights,
  hidden: DeviceArray,
  nSeq: number,
  seqLen: number,
  microBatchTokens: number,
): void {
  const H = spec.hiddenSize;
  const eps = spec.rmsNormEps;
  const inNorm = required(ctx, w, 'input_layernorm.weight', H);
  const postNorm = required(ctx, w, 'post_attention_layernorm.weight', H);
  const perChunk = Math.max(1, Math.floor(microBatchTokens / seqLen));
  for (let s0 = 0; s0 < nSeq; s0 += perChunk) {
    const n = Math.min(perChunk, nSeq - s0);
    const rows = n * seqLen;
    const h = hidden.sub(s0 * seqLen * H, rows * H);
    const xn = ctx.ws.get('xn', 'F32', rows * H);
    ctx.cu.rmsNorm(h.buf, inNorm.buf, xn.buf, { rows, dim: H, eps });
    attentionDevice(ctx, spec, w, xn, n, seqLen, h, true);
    ctx.cu.rmsNorm(h.buf, postNorm.buf, xn.buf, { rows, dim: H, eps });
    mlpDevice(ctx, spec, w, xn, rows, h);
  }
}
