/**
 * The CPU backend: exactly the conversion's reference path (the engine's float32 kernels
 * and the float64 moment accumulator), in the same order, so CPU results are unchanged.
 */
import type { Checkpoint } from '../checkpoint/checkpoint.js';
import type { OutTensor } from '../tensor/out-tensor.js';
import { type InputMoments, MomentAccumulator } from '../tensor/moments.js';
import { maxLatentMeanSquare } from '../tensor/latent-stats.js';
import { attentionForward } from '../engine/attention.js';
import { layerForward } from '../engine/layer.js';
import { type LayerWeights, loadLayerWeights } from '../engine/weights.js';
import type { ModelSpec } from '../model/spec-types.js';
import { native } from '../native/binding.js';
import { type BackendStats, type ComputeBackend, emptyStats } from './types.js';

/** Rows per float64 moment update (bounds the float64 scratch of syrkAccumulate). */
const MOMENT_CHUNK_ROWS = 8192;

/** Conversion work on the CPU. */
export class CpuBackend implements ComputeBackend {
  readonly device = 'cpu' as const;
  readonly name = 'cpu';
  readonly stats: BackendStats = emptyStats();
  /** refilled by the next layer: weight memory stays flat */
  private prev: LayerWeights | undefined;

  async loadLayer(ckpt: Checkpoint, spec: ModelSpec, layer: number): Promise<LayerWeights> {
    const w = await loadLayerWeights(ckpt, spec, layer, this.prev);
    this.prev = w;
    return w;
  }

  async statistics(spec: ModelSpec, w: LayerWeights, hidden: Float32Array, x: Float32Array, statRows: number, allRows: number): Promise<InputMoments> {
    const hid = spec.hiddenSize;
    await native.rmsNormAsync(hidden, w.tensors['input_layernorm.weight'].data, x, { rows: allRows, dim: hid, eps: spec.rmsNormEps });
    const acc = new MomentAccumulator(hid);
    for (let r0 = 0; r0 < statRows; r0 += MOMENT_CHUNK_ROWS) {
      const r1 = Math.min(statRows, r0 + MOMENT_CHUNK_ROWS);
      acc.add(x.subarray(r0 * hid, r1 * hid), r1 - r0);
    }
    return acc.moments();
  }

  attentionForward(spec: ModelSpec, w: LayerWeights, x: Float32Array, nSeq: number, seqLen: number): Promise<Float32Array> {
    return attentionForward(spec, w, x, nSeq, seqLen);
  }

  layerForward(spec: ModelSpec, w: LayerWeights, hidden: Float32Array, nSeq: number, seqLen: number): Promise<void> {
    return layerForward(spec, w, hidden, nSeq, seqLen);
  }

  async encodeForWrite(tensors: OutTensor[]): Promise<OutTensor[]> {
    return tensors;
  }

  claimMatKernels(): void {}

  async syncHidden(): Promise<void> {}

  async latentMeanSquare(w: Float32Array, b: Float32Array | null, R: number, hid: number, x: Float32Array, rows: number): Promise<{ maxMs: number; minAbs: number }> {
    return maxLatentMeanSquare(w, b, R, hid, x, rows);
  }

  async release(): Promise<void> {
    this.prev = undefined;
  }
}
