/**
 * One pre-norm decoder layer applied in place to the residual stream:
 *   h += attn(input_layernorm(h));  h += mlp(post_attention_layernorm(h))
 * with the SwiGLU MLP down(silu(gate(x)) * up(x)), or the routed mixture-of-experts MLP
 * (graph.ts `moeGraph`). Sequences are processed in micro-batches so activation memory is
 * bounded by a token budget, not by the number of sequences.
 */
import { GqaError } from '../errors.js';
import type { ModelSpec } from '../model/spec-types.js';
import { ropeFor } from './attention.js';
import { decoderStepGraph, mlpGraph } from './graph.js';
import { hostKernels } from './host-kernels.js';
import { type LayerWeights, req } from './weights.js';
import { Workspace } from './workspace.js';

/** Where a micro-batch sits in the layer call. */
export interface MicroBatchInfo {
  /** index of the micro-batch's first sequence */
  seqStart: number;
  /** sequences in this micro-batch */
  nSeq: number;
  seqLen: number;
}

/** Observers of a layer forward. */
export interface LayerHooks {
  /**
   * Receives the normalised attention input (input_layernorm output) of each micro-batch,
   * [info.nSeq*seqLen, hidden]. The array is a scratch view: valid only until the hook's
   * promise settles; copy what must outlive it.
   */
  onAttnInput?(x: Float32Array, info: MicroBatchInfo): void | Promise<void>;
}

/** Options of {@link layerForward}. */
export interface LayerForwardOptions {
  /** scratch buffers reused across calls */
  workspace?: Workspace;
  /** upper bound on tokens per micro-batch (default 4096; at least one sequence) */
  microBatchTokens?: number;
  /** checked between micro-batches */
  signal?: AbortSignal;
}

/** Throws the abort reason (or a GqaError ERR_ABORTED) when `signal` is aborted. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) {
    if (signal.reason instanceof Error) throw signal.reason;
    throw new GqaError('ERR_ABORTED', 'operation aborted', 'runtime');
  }
}

/** The MLP of layer `w` (SwiGLU, or mixture-of-experts) of normalised `x` [rows, hidden], added to `out`. */
export async function mlpInto(spec: ModelSpec, w: LayerWeights, x: Float32Array, rows: number, out: Float32Array, ws: Workspace): Promise<void> {
  await mlpGraph(hostKernels(w, ws, NO_POSITIONS, ropeFor(spec, 0)), spec, x, rows, out, w.layer);
}

const NO_POSITIONS = new Int32Array(0);

/**
 * Applies decoder layer `w` to `hidden` [nSeq*seqLen*hiddenSize] in place (positions
 * 0..seqLen-1 in every sequence). `hooks.onAttnInput` sees each micro-batch's normalised
 * attention input.
 */
export async function layerForward(
  spec: ModelSpec,
  w: LayerWeights,
  hidden: Float32Array,
  nSeq: number,
  seqLen: number,
  hooks?: LayerHooks,
  options: LayerForwardOptions = {},
): Promise<void> {
  const H = spec.hiddenSize;
  if (!Number.isInteger(nSeq) || !Number.isInteger(seqLen) || nSeq < 0 || seqLen < 1)
    throw new GqaError('ERR_SHAPE', `nSeq (${nSeq}) and seqLen (${seqLen}) must be integers, seqLen >= 1`, 'usage');
  if (hidden.length < nSeq * seqLen * H)
    throw new GqaError('ERR_SHAPE', `hidden has ${hidden.length} floats, needs nSeq*seqLen*hidden = ${nSeq * seqLen * H}`, 'usage');
  const ws = options.workspace ?? new Workspace();
  req(w, 'input_layernorm.weight', H); // checked before any work
  req(w, 'post_attention_layernorm.weight', H);
  const perChunk = Math.max(1, Math.floor((options.microBatchTokens ?? 4096) / seqLen));
  const rope = ropeFor(spec, seqLen - 1);
  for (let s0 = 0; s0 < nSeq; s0 += perChunk) {
    throwIfAborted(options.signal);
    const n = Math.min(perChunk, nSeq - s0);
    const h = hidden.subarray(s0 * seqLen * H, (s0 + n) * seqLen * H);
    const pos = new Int32Array(n * seqLen);
    for (let r = 0; r < pos.length; r++) pos[r] = r % seqLen;
    const onAttn = hooks?.onAttnInput;
    const onAttnInput = onAttn ? (xn: Float32Array) => onAttn(xn, { seqStart: s0, nSeq: n, seqLen }) : undefined;
    await decoderStepGraph(hostKernels(w, ws, pos, rope), spec, { layer: w.layer, h, nSeq: n, seqLen, onAttnInput });
  }
}
