/**
 * One pre-norm decoder layer applied in place to the residual stream:
 *   h += attn(input_layernorm(h));  h += mlp(post_attention_layernorm(h))
 * with the SwiGLU MLP down(silu(gate(x)) * up(x)) (every DeepSeek-V3 layer of a converted
 * checkpoint is dense). Sequences are processed in micro-batches so activation memory is
 * bounded by a token budget, not by the number of sequences.
 */
import { GqaError } from '../errors.js';
import type { ModelSpec } from '../model/spec-types.js';
import { native } from '../native/binding.js';
import { attentionInto } from './attention.js';
import { type LayerWeights, opt, req } from './weights.js';
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

/** SwiGLU MLP of normalised `x` [rows, hidden], added to `out`. */
export async function mlpInto(spec: ModelSpec, w: LayerWeights, x: Float32Array, rows: number, out: Float32Array, ws: Workspace): Promise<void> {
  const H = spec.hiddenSize;
  const I = spec.intermediateSize;
  const gate = ws.get('gate', rows * I);
  const up = ws.get('up', rows * I);
  await native.linearAsync(x, req(w, 'mlp.gate_proj.weight', I * H), gate, { rows, inDim: H, outDim: I, bias: opt(w, 'mlp.gate_proj.bias', I) });
  await native.linearAsync(x, req(w, 'mlp.up_proj.weight', I * H), up, { rows, inDim: H, outDim: I, bias: opt(w, 'mlp.up_proj.bias', I) });
  await native.swigluAsync(gate, up, gate, rows * I);
  await native.linearAsync(gate, req(w, 'mlp.down_proj.weight', H * I), out, {
    rows,
    inDim: I,
    outDim: H,
    bias: opt(w, 'mlp.down_proj.bias', H),
    accumulate: true,
  });
}

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
  const inNorm = req(w, 'input_layernorm.weight', H);
  const postNorm = req(w, 'post_attention_layernorm.weight', H);
  const eps = spec.rmsNormEps;
  const perChunk = Math.max(1, Math.floor((options.microBatchTokens ?? 4096) / seqLen));
  for (let s0 = 0; s0 < nSeq; s0 += perChunk) {
    throwIfAborted(options.signal);
    const n = Math.min(perChunk, nSeq - s0);
    const rows = n * seqLen;
    const h = hidden.subarray(s0 * seqLen * H, (s0 + n) * seqLen * H);
    const xn = ws.get('xn', rows * H);
    await native.rmsNormAsync(h, inNorm, xn, { rows, dim: H, eps });
    if (hooks?.onAttnInput) await hooks.onAttnInput(xn, { seqStart: s0, nSeq: n, seqLen });
    await attentionInto(spec, w, xn, n, seqLen, h, { accumulate: true, workspace: ws });
    await native.rmsNormAsync(h, postNorm, xn, { rows, dim: H, eps });
    await mlpInto(spec, w, xn, rows, h, ws);
  }
}
