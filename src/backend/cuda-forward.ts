/**
 * One decoder layer's forward on the GPU: the engine's layer graph (src/engine/graph.ts,
 * also run by the CPU engine) on device kernels (GQA/MHA and DeepSeek-V3 MLA attention,
 * the SwiGLU MLP). Calls only queue work; the caller synchronises.
 */
import { ropeFor } from '../engine/attention.js';
import { attentionGraph, decoderStepGraph, type LayerKernels } from '../engine/graph.js';
import type { LayerWeights } from '../engine/weights.js';
import { GqaError } from '../errors.js';
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

/** Why the CUDA backend does not run mixture-of-experts layers (it has no routing or row gather/scatter kernels). */
export function cudaMoeRefusal(): GqaError {
  return new GqaError('ERR_CUDA_MOE', 'the CUDA backend does not run mixture-of-experts layers (no routing kernels): use --device cpu', 'usage');
}

/** The layer graph's kernels (engine/graph.ts) on device buffers, bound to layer `w` and the rows' positions `pos`. */
function deviceKernels(ctx: DeviceForwardContext, w: LayerWeights, pos: DeviceArray, inv: DeviceArray, rope: { rotDim: number; attentionScaling: number }): LayerKernels<DeviceArray> {
  const { cu, ws, weights: W, allowBf16: bf } = ctx;
  return {
    rope,
    scratch: (name, length) => ws.get(name, 'F32', length),
    offset: (b, elements) => b.sub(elements),
    linear: async (x, weight, bias, out, o) =>
      linear(ctx, x, W.linear(w, weight, o.outDim * o.inDim, bf), out, { ...o, bias: bias ? W.vector(w, bias, o.outDim) : null }),
    rmsNorm: async (x, weight, out, o) => cu.rmsNorm(x.buf, required(ctx, w, weight, o.dim).buf, out.buf, o),
    ropeAt: async (x, o) => cu.rope(x.buf, pos.buf, inv.buf, o),
    attention: async (q, k, v, out, o) => cu.attention(q.buf, k.buf, v.buf, out.buf, { ...o, kRope: o.kRope ? o.kRope.buf : null }),
    swiglu: async (gate, up, out, n) => cu.swiglu(gate.buf, up.buf, out.buf, n),
    route: () => Promise.reject(cudaMoeRefusal()),
    gatherRows: () => Promise.reject(cudaMoeRefusal()),
    scatterAddRows: () => Promise.reject(cudaMoeRefusal()),
  };
}

/** Kernels for `rows` = nSeq * seqLen rows at positions 0..seqLen-1 of every sequence. */
function boundKernels(ctx: DeviceForwardContext, spec: ModelSpec, w: LayerWeights, nSeq: number, seqLen: number): LayerKernels<DeviceArray> {
  const rope = ropeFor(spec, seqLen - 1);
  return deviceKernels(ctx, w, ctx.positions(nSeq * seqLen, seqLen), ctx.invFreq(rope.invFreq), rope);
}

/**
 * Attention output after o_proj of normalised inputs `x` [nSeq*seqLen, hidden] written to
 * (or with `accumulate` added to) `out`; positions 0..seqLen-1 in every sequence.
 */
export async function attentionDevice(
  ctx: DeviceForwardContext,
  spec: ModelSpec,
  w: LayerWeights,
  x: DeviceArray,
  nSeq: number,
  seqLen: number,
  out: DeviceArray,
  accumulate: boolean,
): Promise<void> {
  if (nSeq * seqLen === 0) return;
  await attentionGraph(boundKernels(ctx, spec, w, nSeq, seqLen), spec, { layer: w.layer, x, nSeq, seqLen, out, accumulate });
}

/**
 * Applies decoder layer `w` to the device residual stream `hidden` [nSeq*seqLen, hidden] in
 * place, in micro-batches of at most `microBatchTokens` tokens (at least one sequence).
 */
export async function layerForwardDevice(
  ctx: DeviceForwardContext,
  spec: ModelSpec,
  w: LayerWeights,
  hidden: DeviceArray,
  nSeq: number,
  seqLen: number,
  microBatchTokens: number,
): Promise<void> {
  const H = spec.hiddenSize;
  required(ctx, w, 'input_layernorm.weight', H); // checked before any work
  required(ctx, w, 'post_attention_layernorm.weight', H);
  const perChunk = Math.max(1, Math.floor(microBatchTokens / seqLen));
  for (let s0 = 0; s0 < nSeq; s0 += perChunk) {
    const n = Math.min(perChunk, nSeq - s0);
    const h = hidden.sub(s0 * seqLen * H, n * seqLen * H);
    await decoderStepGraph(boundKernels(ctx, spec, w, n, seqLen), spec, { layer: w.layer, h, nSeq: n, seqLen });
  }
}
