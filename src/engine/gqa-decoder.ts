/**
 * Incremental decoding of a GQA/MHA checkpoint (llama, qwen2, qwen3, mistral) with a per-layer
 * key/value cache: the first append runs the prefill path's causal attention (the native
 * kernel of src/engine/attention.ts) over the prompt, later appends attend from each new
 * token to the cached keys and values (float64 softmax, sliding window as config.json says).
 * Projections, RoPE, norms and the MLP are the engine's own functions, so the logits equal
 * ModelRunner's prefill to float32 round-off (tested). All layers' weights stay resident.
 */
import { GqaError } from '../errors.js';
import type { ModelSpec } from '../model/spec-types.js';
import { native } from '../native/binding.js';
import { ropeFor, slidingWindowOf } from './attention.js';
import { CachedDecoder } from './cached-decoder.js';
import { type EndTensors, readEndTensors } from './decoder-step.js';
import type { ClosableSource } from './model.js';
import { grown, openModelDir } from './resident.js';
import { type LayerWeights, loadLayerWeights, opt, req } from './weights.js';

/** One layer's weights and its key/value cache ([capacity, kv_heads * head_dim] each, RoPE applied to keys). */
interface CachedLayer {
  w: LayerWeights;
  k: Float32Array;
  v: Float32Array;
}

/**
 * KV-cached incremental decoder over a GQA/MHA checkpoint.
 *
 * @example
 * const dec = await GqaDecoder.open('test/fixtures/tiny-llama-gqa');
 * const promptLogits = await dec.append(Int32Array.of(5, 17, 42)); // [3, vocab]
 * const next = await dec.append(Int32Array.of(7));                 // [1, vocab]
 * await dec.close();
 */
export class GqaDecoder extends CachedDecoder<CachedLayer> {
  private capacity = 0;

  private constructor(source: ClosableSource, spec: ModelSpec, layers: CachedLayer[], end: EndTensors) {
    super(source, spec, layers, end);
  }

  /** Opens a GQA/MHA checkpoint directory and loads every layer (weights stay resident). */
  static async open(modelDir: string): Promise<GqaDecoder> {
    return openModelDir(modelDir, (ckpt, spec) => GqaDecoder.fromSource(ckpt, spec));
  }

  /** Builds a decoder over an open tensor source (closed by {@link close}). */
  static async fromSource(source: ClosableSource, spec: ModelSpec): Promise<GqaDecoder> {
    if (spec.mla) throw new GqaError('ERR_MODEL_TYPE', 'GqaDecoder takes a GQA/MHA checkpoint; use MlaDecoder for deepseek_v3', 'usage');
    const layers: CachedLayer[] = [];
    for (let l = 0; l < spec.numLayers; l++) layers.push({ w: await loadLayerWeights(source, spec, l), k: new Float32Array(0), v: new Float32Array(0) });
    return new GqaDecoder(source, spec, layers, await readEndTensors(source, spec));
  }

  protected reserve(tokens: number): void {
    if (tokens <= this.capacity) return;
    const cap = Math.max(tokens, this.capacity * 2, 64);
    const row = this.spec.numKvHeads * this.spec.headDim;
    for (const L of this.layers) {
      L.k = grown(L.k, cap * row);
      L.v = grown(L.v, cap * row);
    }
    this.capacity = cap;
  }

  protected attentionOf(start: number, n: number): (L: CachedLayer, xn: Float32Array, h: Float32Array) => Promise<void> {
    const pos = new Int32Array(n);
    for (let i = 0; i < n; i++) pos[i] = start + i;
    return (L, xn, h) => this.attention(L, xn, n, start, pos, h);
  }

  /** Attention of the n new rows (normalised input xn) added into the residual stream h. */
  private async attention(L: CachedLayer, xn: Float32Array, n: number, start: number, pos: Int32Array, h: Float32Array): Promise<void> {
    const spec = this.spec;
    const { hiddenSize: H, numHeads: nH, numKvHeads: G, headDim: d } = spec;
    const w = L.w;
    const q = this.ws.get('q', n * nH * d);
    const k = L.k.subarray(start * G * d, (start + n) * G * d);
    const v = L.v.subarray(start * G * d, (start + n) * G * d);
    await native.linearAsync(xn, req(w, 'self_attn.q_proj.weight', nH * d * H), q, { rows: n, inDim: H, outDim: nH * d, bias: opt(w, 'self_attn.q_proj.bias', nH * d) });
    await native.linearAsync(xn, req(w, 'self_attn.k_proj.weight', G * d * H), k, { rows: n, inDim: H, outDim: G * d, bias: opt(w, 'self_attn.k_proj.bias', G * d) });
    await native.linearAsync(xn, req(w, 'self_attn.v_proj.weight', G * d * H), v, { rows: n, inDim: H, outDim: G * d, bias: opt(w, 'self_attn.v_proj.bias', G * d) });
    if (spec.qkNorm) {
      // qwen3: per-head RMSNorm of queries and keys before RoPE (the cache holds normed, rotated keys)
      await native.rmsNormAsync(q, req(w, 'self_attn.q_norm.weight', d), q, { rows: n * nH, dim: d, eps: spec.rmsNormEps });
      await native.rmsNormAsync(k, req(w, 'self_attn.k_norm.weight', d), k, { rows: n * G, dim: d, eps: spec.rmsNormEps });
    }
    const rope = ropeFor(spec, start + n - 1);
    const ropeOpts = { headStride: d, rotDim: rope.rotDim, scale: rope.attentionScaling };
    await native.ropeAsync(q, pos, rope.invFreq, { ...ropeOpts, rowStride: nH * d, nHeads: nH });
    await native.ropeAsync(k, pos, rope.invFreq, { ...ropeOpts, rowStride: G * d, nHeads: G });
    const ao = this.ws.get('attn', n * nH * d);
    const window = slidingWindowOf(spec, w.layer);
    if (start === 0) {
      await native.attentionAsync(q, k, v, ao, { nSeq: 1, seqLen: n, nHeads: nH, nKvHeads: G, qkDim: d, vDim: d, scale: 1 / Math.sqrt(d), window });
    } else {
      cachedAttention({ q, k: L.k, v: L.v, out: ao, n, start, nH, G, d, window });
    }
    await native.linearAsync(ao, req(w, 'self_attn.o_proj.weight', H * nH * d), h, { rows: n, inDim: nH * d, outDim: H, bias: opt(w, 'self_attn.o_proj.bias', H), accumulate: true });
  }

  protected releaseCache(): void {
    for (const L of this.layers) {
      L.k = new Float32Array(0);
      L.v = new Float32Array(0);
    }
    this.capacity = 0;
  }
}

/**
 * Causal attention of new rows start..start+n-1 over cache rows 0..start+i (within the
 * sliding window when > 0): float64 scores and softmax, heads grouped onto KV heads.
 */
function cachedAttention(a: { q: Float32Array; k: Float32Array; v: Float32Array; out: Float32Array; n: number; start: number; nH: number; G: number; d: number; window: number }): void {
  const { q, k, v, out, n, start, nH, G, d, window } = a;
  const group = nH / G;
  const scale = 1 / Math.sqrt(d);
  const s = new Float64Array(start + n);
  const acc = new Float64Array(d);
  for (let i = 0; i < n; i++) {
    const t = start + i;
    const lo = window > 0 ? Math.max(0, t + 1 - window) : 0;
    for (let hh = 0; hh < nH; hh++) {
      const g = Math.floor(hh / group);
      const qo = (i * nH + hh) * d;
      let max = -Infinity;
      for (let u = lo; u <= t; u++) {
        const ko = (u * G + g) * d;
        let dot = 0;
        for (let c = 0; c < d; c++) dot += q[qo + c] * k[ko + c];
        s[u] = dot * scale;
        if (s[u] > max) max = s[u];
      }
      let sum = 0;
      acc.fill(0);
      for (let u = lo; u <= t; u++) {
        const p = Math.exp(s[u] - max);
        sum += p;
        const vo = (u * G + g) * d;
        for (let c = 0; c < d; c++) acc[c] += p * v[vo + c];
      }
      for (let c = 0; c < d; c++) out[qo + c] = acc[c] / sum;
    }
  }
}
