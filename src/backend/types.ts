/**
 * The compute backend of a conversion: where each layer's heavy work runs. The CPU
 * backend is the reference (the addon's float32 kernels, OpenBLAS/LAPACK); the CUDA
 * backend keeps the calibration hidden states on the GPU and runs the same steps there.
 * convert() calls these methods in place of the engine's functions; their signatures
 * mirror those functions so the two paths read the same.
 */
import type { Checkpoint } from '../checkpoint/checkpoint.js';
import type { OutTensor } from '../tensor/out-tensor.js';
import type { InputMoments } from '../tensor/moments.js';
import type { LayerWeights } from '../engine/weights.js';
import type { ModelSpec } from '../model/spec-types.js';

/** Where a conversion computes: `auto` picks CUDA when the addon has it and a GPU is present. */
export type DeviceChoice = 'auto' | 'cpu' | 'cuda';

/** Counters of a backend's own work (seconds are wall-clock on the host). */
export interface BackendStats {
  /** host -> device weight and activation uploads */
  uploadSeconds: number;
  /** device -> host downloads (normalised inputs, moments, hidden states, outputs) */
  downloadSeconds: number;
  /** waiting for the prefetched next layer's bytes (0 when the read was already done) */
  readWaitSeconds: number;
  /** symmetric eigendecompositions of the factorization, their count and largest order */
  eighCalls: number;
  eighSeconds: number;
  eighMaxN: number;
  /** float64 products the backend ran for the factorization (GPU only) */
  gemmCalls: number;
  gemmSeconds: number;
  /** tensors written from their source bytes unchanged (no decode / encode round trip) */
  passthroughTensors: number;
}

/** One conversion's compute backend. */
export interface ComputeBackend {
  readonly device: 'cpu' | 'cuda';
  /** e.g. `cpu` or the GPU's name */
  readonly name: string;
  readonly stats: BackendStats;
  /**
   * Layer `layer`'s weights as float32 host arrays (the CUDA backend also keeps device
   * copies and reads the next layer in the background). The previous layer's weights are
   * no longer valid afterwards: their buffers may be refilled.
   */
  loadLayer(ckpt: Checkpoint, spec: ModelSpec, layer: number): Promise<LayerWeights>;
  /**
   * Writes the attention input x = input_layernorm(hidden) of all `allRows` rows into `x`
   * and returns the float64 moments E[x x^T], E[x] of the first `statRows` rows. With
   * `hostInputs` false the caller promises not to read `x` on the host for this layer: the
   * CUDA backend then keeps x on the device only (its own methods taking `x` still work) and
   * marks the host array's first row NaN, so a stray host read shows up as NaN.
   */
  statistics(spec: ModelSpec, w: LayerWeights, hidden: Float32Array, x: Float32Array, statRows: number, allRows: number, hostInputs?: boolean): Promise<InputMoments>;
  /** Attention output after o_proj of normalised inputs `x` ([nSeq*seqLen, hidden]), as engine attentionForward. */
  attentionForward(spec: ModelSpec, w: LayerWeights, x: Float32Array, nSeq: number, seqLen: number): Promise<Float32Array>;
  /** Applies decoder layer `w` to `hidden` in place, as engine layerForward. */
  layerForward(spec: ModelSpec, w: LayerWeights, hidden: Float32Array, nSeq: number, seqLen: number): Promise<void>;
  /** The tensors of a shard ready to write: the same tensors, possibly as stored bytes. */
  encodeForWrite(tensors: OutTensor[]): Promise<OutTensor[]>;
  /**
   * Makes the factorization's float64 products and eigendecompositions (src/convert/mat.ts)
   * run on this backend until `release()`; the CPU backend leaves them as they are.
   */
  claimMatKernels(): void;
  /**
   * Makes the host array `hidden` current. The CUDA backend keeps the hidden states on the
   * device after `layerForward` and copies them back only when asked (a resume checkpoint).
   */
  syncHidden(hidden: Float32Array): Promise<void>;
  /**
   * Largest per-token mean square and smallest non-zero |c| of the latent c = W x + b
   * ([R, hid] weights) over the first `rows` rows of the normalised inputs `x`, as
   * latent-norm.ts maxLatentMeanSquare (the exact latent norm's alpha comes from it).
   */
  latentMeanSquare(w: Float32Array, b: Float32Array | null, R: number, hid: number, x: Float32Array, rows: number): Promise<{ maxMs: number; minAbs: number }>;
  /** Undoes `claimMatKernels` and frees device memory. */
  release(): Promise<void>;
}

/** Fresh zeroed counters. */
export function emptyStats(): BackendStats {
  return {
    uploadSeconds: 0,
    downloadSeconds: 0,
    readWaitSeconds: 0,
    eighCalls: 0,
    eighSeconds: 0,
    eighMaxN: 0,
    gemmCalls: 0,
    gemmSeconds: 0,
    passthroughTensors: 0,
  };
}
