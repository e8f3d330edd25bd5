/**
 * Whole-model passes, streamed layer by layer: token embedding, the decoder layers
 * (each loaded, applied to every sequence of the batch, released), final norm, lm_head and
 * the per-token negative log-likelihood. Peak memory is one layer's weights + the hidden
 * states of the batch + one micro-batch of activations + the embedding / lm_head matrix,
 * whatever the depth.
 */
import { GqaError } from '../errors.js';
import type { ModelSpec } from '../model/spec-types.js';
import { native } from '../native/binding.js';
import { type LayerHooks, layerForward, throwIfAborted } from './layer.js';
import { openModelDir } from './resident.js';
import { type LayerWeights, type TensorSource, loadLayerWeights } from './weights.js';
import { Workspace } from './workspace.js';

export const EMBED_NAME = 'model.embed_tokens.weight';
export const NORM_NAME = 'model.norm.weight';
export const LM_HEAD_NAME = 'lm_head.weight';

async function readChecked(src: TensorSource, name: string, elements: number): Promise<Float32Array> {
  if (!src.has(name)) throw new GqaError('ERR_TENSOR_MISSING', `tensor ${name} is missing from the checkpoint`);
  const t = await src.read(name);
  if (t.length !== elements) throw new GqaError('ERR_TENSOR_SHAPE', `tensor ${name} has ${t.length} elements, config implies ${elements}`);
  return t;
}

/** The output projection: lm_head.weight, or the embedding when tied (or lm_head is absent). */
export async function readLmHead(src: TensorSource, spec: ModelSpec): Promise<Float32Array> {
  const n = spec.vocabSize * spec.hiddenSize;
  if (!spec.tieWordEmbeddings && src.has(LM_HEAD_NAME)) return readChecked(src, LM_HEAD_NAME, n);
  return readChecked(src, EMBED_NAME, n);
}

function checkIds(ids: Int32Array, spec: ModelSpec): void {
  for (let i = 0; i < ids.length; i++)
    if (ids[i] < 0 || ids[i] >= spec.vocabSize)
      throw new GqaError('ERR_TOKEN_ID', `token id ${ids[i]} at ${i} is outside the vocabulary [0, ${spec.vocabSize})`, 'usage');
}

/** Embeddings of `ids`: [ids.length, hidden] (written into `out` when given). */
export async function embedTokens(src: TensorSource, spec: ModelSpec, ids: Int32Array, out?: Float32Array): Promise<Float32Array> {
  checkIds(ids, spec);
  const H = spec.hiddenSize;
  const table = await readChecked(src, EMBED_NAME, spec.vocabSize * H);
  const dst = out ? out.subarray(0, ids.length * H) : new Float32Array(ids.length * H);
  if (dst.length < ids.length * H) throw new GqaError('ERR_SHAPE', `out has ${out!.length} floats, needs ${ids.length * H}`, 'usage');
  await native.embedGatherAsync(table, ids, dst, H);
  return dst;
}

/**
 * Per-position negative log-likelihood from final hidden states (before the final norm):
 * for each sequence s, position t in 0..seqLen-2 scores token ids[s*seqLen+t+1]. Returns
 * float64 [nSeq*(seqLen-1)], sequence-major. `hidden` is not modified.
 */
export async function finalNll(
  src: TensorSource,
  spec: ModelSpec,
  hidden: Float32Array,
  ids: Int32Array,
  nSeq: number,
  seqLen: number,
  workspace?: Workspace,
): Promise<Float64Array> {
  const H = spec.hiddenSize;
  if (ids.length < nSeq * seqLen) throw new GqaError('ERR_SHAPE', `ids has ${ids.length} entries, needs ${nSeq * seqLen}`, 'usage');
  if (hidden.length < nSeq * seqLen * H) throw new GqaError('ERR_SHAPE', `hidden has ${hidden.length} floats, needs ${nSeq * seqLen * H}`, 'usage');
  if (seqLen < 2) throw new GqaError('ERR_SHAPE', 'seqLen must be >= 2 to score any token', 'usage');
  checkIds(ids.subarray(0, nSeq * seqLen), spec);
  const ws = workspace ?? new Workspace();
  const norm = await readChecked(src, NORM_NAME, H);
  const head = await readLmHead(src, spec);
  const out = new Float64Array(nSeq * (seqLen - 1));
  const perChunk = Math.max(1, Math.floor(4096 / seqLen));
  for (let s0 = 0; s0 < nSeq; s0 += perChunk) {
    const n = Math.min(perChunk, nSeq - s0);
    const rows = n * seqLen;
    const xn = ws.get('xn', rows * H);
    await native.rmsNormAsync(hidden.subarray(s0 * seqLen * H, (s0 + n) * seqLen * H), norm, xn, { rows, dim: H, eps: spec.rmsNormEps });
    const targets = new Int32Array(rows);
    for (let s = 0; s < n; s++)
      for (let t = 0; t < seqLen; t++) targets[s * seqLen + t] = t < seqLen - 1 ? ids[(s0 + s) * seqLen + t + 1] : -1;
    const nll = new Float64Array(rows);
    await native.lmHeadNllAsync(xn, head, targets, nll, { rows, hiddenDim: H, vocab: spec.vocabSize });
    for (let s = 0; s < n; s++) out.set(nll.subarray(s * seqLen, s * seqLen + seqLen - 1), (s0 + s) * (seqLen - 1));
  }
  return out;
}

/** What a streamed pass reports after each stage. */
export interface RunStep {
  stage: 'embed' | 'layer' | 'head';
  /** decoder layer just applied (stage 'layer') */
  layer?: number;
  /** stages done / total stages of this pass (numLayers + 2 for nll, + 1 for forward) */
  done: number;
  total: number;
}

/** Options of a streamed pass. */
export interface RunOptions {
  signal?: AbortSignal;
  /** called after each stage */
  onStep?(step: RunStep): void;
  /** per-layer hooks (normalised attention inputs) — receives the layer index */
  onAttnInput?(layer: number, x: Float32Array, info: { seqStart: number; nSeq: number; seqLen: number }): void | Promise<void>;
  /** sees the residual stream after each layer ([nSeq*seqLen, hidden], a reused buffer) */
  onLayerOutput?(layer: number, hidden: Float32Array): void | Promise<void>;
}

/** Settings of a {@link ModelRunner}. */
export interface RunnerOptions {
  /** tokens per micro-batch inside a layer (bounds activation memory; default 4096) */
  microBatchTokens?: number;
}

/** A tensor source that can be closed (a `Checkpoint`). */
export interface ClosableSource extends TensorSource {
  close?(): void | Promise<void>;
}

/**
 * Runs a decoder-only model over batches of equal-length sequences, streaming the layers:
 * each layer is read, applied to every sequence of the batch and dropped before the next
 * one is read. The residual stream lives in one buffer reused across calls.
 */
export class ModelRunner {
  readonly spec: ModelSpec;
  readonly source: ClosableSource;
  private readonly options: RunnerOptions;
  private readonly ws = new Workspace();
  private hidden = new Float32Array(0);

  constructor(source: ClosableSource, spec: ModelSpec, options: RunnerOptions = {}) {
    this.source = source;
    this.spec = spec;
    this.options = options;
  }

  /** Opens `modelDir` (config.json + safetensors) for streamed runs. */
  static async open(modelDir: string, options: RunnerOptions = {}): Promise<ModelRunner> {
    return openModelDir(modelDir, (ckpt, spec) => new ModelRunner(ckpt, spec, options));
  }

  private buffer(n: number): Float32Array {
    if (this.hidden.length < n) this.hidden = new Float32Array(n);
    return this.hidden.subarray(0, n);
  }

  /**
   * Final residual stream (before the model's final norm) of `nSeq` sequences of `seqLen`
   * tokens (`ids` sequence-major). The result is the runner's reused buffer: valid until the
   * next call.
   */
  async forward(ids: Int32Array, nSeq: number, seqLen: number, opts: RunOptions = {}, stagesAfter = 0): Promise<Float32Array> {
    const spec = this.spec;
    if (ids.length !== nSeq * seqLen) throw new GqaError('ERR_SHAPE', `ids has ${ids.length} entries, expected nSeq*seqLen = ${nSeq * seqLen}`, 'usage');
    const total = spec.numLayers + 1 + stagesAfter;
    let done = 0;
    throwIfAborted(opts.signal);
    const h = this.buffer(nSeq * seqLen * spec.hiddenSize);
    await embedTokens(this.source, spec, ids, h);
    opts.onStep?.({ stage: 'embed', done: ++done, total });
    let w: LayerWeights | undefined;
    for (let l = 0; l < spec.numLayers; l++) {
      throwIfAborted(opts.signal);
      w = await loadLayerWeights(this.source, spec, l, w);
      const hooks: LayerHooks | undefined = opts.onAttnInput ? { onAttnInput: (x, info) => opts.onAttnInput!(l, x, info) } : undefined;
      await layerForward(spec, w, h, nSeq, seqLen, hooks, {
        workspace: this.ws,
        microBatchTokens: this.options.microBatchTokens,
        signal: opts.signal,
      });
      if (opts.onLayerOutput) await opts.onLayerOutput(l, h);
      opts.onStep?.({ stage: 'layer', layer: l, done: ++done, total });
    }
    return h;
  }

  /** Per-position NLL (float64 [nSeq*(seqLen-1)]): token t+1 of each sequence scored from its prefix. */
  async nll(ids: Int32Array, nSeq: number, seqLen: number, opts: RunOptions = {}): Promise<Float64Array> {
    const h = await this.forward(ids, nSeq, seqLen, opts, 1);
    throwIfAborted(opts.signal);
    const out = await finalNll(this.source, this.spec, h, ids, nSeq, seqLen, this.ws);
    const total = this.spec.numLayers + 2;
    opts.onStep?.({ stage: 'head', done: total, total });
    return out;
  }

  /** Bytes of scratch and hidden-state buffers currently held. */
  get bufferBytes(): number {
    return this.ws.bytes + this.hidden.byteLength;
  }

  /** Releases buffers and closes the checkpoint. */
  async close(): Promise<void> {
    this.ws.clear();
    this.hidden = new Float32Array(0);
    await this.source.close?.();
  }
}
