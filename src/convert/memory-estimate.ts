/**
 * Host memory a conversion needs, estimated from the config and the options before any work,
 * so that a request that cannot fit fails at once with what would fit, instead of crashing
 * mid-run (or leaving a partial output behind).
 *
 * Invariant: the estimate counts what run() holds at its peak: the calibration hidden states
 * and the normalised inputs (two float32 buffers of rows x hidden), the stored embedding
 * table, and about three float32 copies of one decoder layer (source weights, the candidate
 * being evaluated, the best so far).
 */
import { freemem } from 'node:os';
import { usageError } from '../errors.js';
import type { ModelSpec } from '../model/spec-types.js';

/** The largest float32 array V8 allocates (elements). */
export const MAX_TYPED_ARRAY_ELEMENTS = 2 ** 32;

/** Bytes of the peak host memory of a conversion, by part. */
export interface MemoryEstimate {
  /** calibration windows x tokens */
  rows: number;
  /** hidden states + normalised inputs: 2 x rows x hidden x 4 */
  calibrationBytes: number;
  /** the embedding table as stored (bf16/f16: 2 bytes a value) */
  embeddingBytes: number;
  /** about three float32 copies of one decoder layer */
  layerBytes: number;
  totalBytes: number;
}

/** What the estimate needs of the options. */
export interface MemoryRequest {
  calibSamples: number;
  heldOutSamples: number;
  calibSeqlen: number;
  /** bytes per stored value of the source (2 for BF16/F16, 4 for F32) */
  storedBytes?: number;
  /** rows of the held-out windows at the serving context (their hidden states and inputs are held too; default 0) */
  contextRows?: number;
}

/** Parameters of one decoder layer (a mixture-of-experts layer: every expert and the router). */
function layerParams(s: ModelSpec): number {
  const attn = s.hiddenSize * s.headDim * (2 * s.numHeads + 2 * s.numKvHeads);
  const m = s.moe;
  const mlp = m ? m.numExperts * (3 * s.hiddenSize * m.expertIntermediateSize + s.hiddenSize) : 3 * s.hiddenSize * s.intermediateSize;
  return attn + mlp + 2 * s.hiddenSize;
}

/** Estimates the peak host memory of a conversion (no I/O). */
export function estimateConversionMemory(spec: ModelSpec, r: MemoryRequest): MemoryEstimate {
  const rows = (r.calibSamples + r.heldOutSamples) * r.calibSeqlen + (r.contextRows ?? 0);
  const calibrationBytes = 2 * rows * spec.hiddenSize * 4;
  const embeddingBytes = spec.vocabSize * spec.hiddenSize * (r.storedBytes ?? 2);
  const layerBytes = 3 * layerParams(spec) * 4;
  return { rows, calibrationBytes, embeddingBytes, layerBytes, totalBytes: calibrationBytes + embeddingBytes + layerBytes };
}

const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;

/**
 * Throws a usage GqaError (exit 2) when the calibration set cannot be held: more float32
 * values per buffer than V8 allows, or more memory than is free. The message says how many
 * calibration windows of this length would fit.
 */
export function checkConversionMemory(spec: ModelSpec, r: MemoryRequest, free: number = freemem()): MemoryEstimate {
  const e = estimateConversionMemory(spec, r);
  const perWindow = 2 * r.calibSeqlen * spec.hiddenSize * 4;
  const fixed = e.embeddingBytes + e.layerBytes;
  const contextBytes = 2 * (r.contextRows ?? 0) * spec.hiddenSize * 4;
  const byLength = Math.floor((MAX_TYPED_ARRAY_ELEMENTS - (r.contextRows ?? 0) * spec.hiddenSize) / (r.calibSeqlen * spec.hiddenSize));
  const byMemory = Math.floor(Math.max(0, free - fixed - contextBytes) / perWindow);
  const fit = Math.min(byLength, byMemory);
  const windows = r.calibSamples + r.heldOutSamples;
  const beside = r.contextRows ? ` beside ${r.contextRows} rows of context windows` : '';
  const hint = `at most ${Math.max(0, fit)} calibration windows of ${r.calibSeqlen} tokens fit${beside} (statistics + held-out; asked for ${r.calibSamples} + ${r.heldOutSamples})`;
  if (e.rows * spec.hiddenSize > MAX_TYPED_ARRAY_ELEMENTS)
    throw usageError('ERR_TOO_LARGE', `the calibration set of ${windows} windows x ${r.calibSeqlen} tokens${beside} x hidden ${spec.hiddenSize} exceeds the largest array (${MAX_TYPED_ARRAY_ELEMENTS} values); ${hint}`);
  if (e.totalBytes > free)
    throw usageError(
      'ERR_TOO_LARGE',
      `the conversion needs about ${gib(e.totalBytes)} of memory (calibration ${gib(e.calibrationBytes)}, embeddings ${gib(e.embeddingBytes)}, one layer ${gib(e.layerBytes)}) but ${gib(free)} are free; ${hint}`,
    );
  return e;
}
