/**
 * The part of an incremental decoder (GqaDecoder over a key/value cache, MlaDecoder over the
 * latent cache) that does not depend on its cache: the resident weights and end tensors, the
 * count of cached tokens, one append through the layers and closing. A subclass owns the
 * cache: it makes room for more tokens, frees it, and gives each append's attention.
 */
import type { ModelSpec } from '../model/spec-types.js';
import { checkTokenIds, decodeThroughLayers, type DecoderStep, type EndTensors } from './decoder-step.js';
import type { ClosableSource } from './model.js';
import type { LayerWeights } from './weights.js';
import { Workspace } from './workspace.js';

/** An incremental decoder over layers `L` (weights plus that layer's cache). */
export abstract class CachedDecoder<L extends { w: LayerWeights }> {
  protected readonly ws = new Workspace();
  protected len = 0;

  protected constructor(
    protected readonly source: ClosableSource,
    readonly spec: ModelSpec,
    protected readonly layers: L[],
    protected readonly end: EndTensors,
  ) {}

  /** Tokens in the cache. */
  get length(): number {
    return this.len;
  }

  /** Forgets every cached token. */
  reset(): void {
    this.len = 0;
  }

  /**
   * Appends `ids` at positions length .. length + n - 1 and returns their logits [n, vocab]
   * (token i attends to the cache and to new tokens 0..i).
   */
  async append(ids: Int32Array): Promise<Float32Array> {
    const n = ids.length;
    if (n === 0) return new Float32Array(0);
    checkTokenIds(ids, this.spec.vocabSize);
    const start = this.len;
    this.reserve(start + n);
    const logits = await decodeThroughLayers({ spec: this.spec, ws: this.ws, end: this.end, layers: this.layers, ids, attention: this.attentionOf(start, n) });
    this.len = start + n;
    return logits;
  }

  /** Releases the cache and closes the checkpoint. */
  async close(): Promise<void> {
    this.releaseCache();
    this.len = 0;
    this.ws.clear();
    await this.source.close?.();
  }

  /** Makes room for `tokens` cached tokens in every layer, keeping the cached ones. */
  protected abstract reserve(tokens: number): void;

  /** Frees every layer's cache. */
  protected abstract releaseCache(): void;

  /** Each layer's attention when `n` tokens are appended after `start` (it writes their cache rows). */
  protected abstract attentionOf(start: number, n: number): DecoderStep<L>['attention'];
}
