/**
 * Incremental decoding of a DeepSeek-V3 (MLA) checkpoint in the absorbed form, the way
 * vLLM / SGLang / FlashMLA serve MLA: each layer caches one row per token,
 * `[latent c (kv_lora_rank) | k_rope (qk_rope_head_dim)]` (c after kv_a_layernorm, k_rope
 * after RoPE), and attention runs directly over that cache:
 *
 *   q_lat,h = W_UK,h^T q_nope,h            (W_UK,h: head h's key rows of kv_b_proj)
 *   s_j     = scale (q_lat,h . c_j + q_rope,h . k_rope,j)
 *   o_lat,h = softmax(s) . c               (the CPU decode kernel, src/decode.ts)
 *   o_h     = W_UV,h o_lat,h               (W_UV,h: head h's value rows of kv_b_proj)
 *
 * so per-head keys and values are never formed. The prefill path (src/engine/attention.ts)
 * computes the same function in the non-absorbed order; the two agree to float32
 * round-off (tested). The cache is paged (64-token pages), all layers' weights stay resident.
 */
import { mlaDecodeCpu } from '../decode.js';
import { GqaError } from '../errors.js';
import { mlaSoftmaxScale } from '../model/rope.js';
import type { ModelSpec } from '../model/spec-types.js';
import { native } from '../native/binding.js';
import { mlaCacheRows, mlaQueries, ropeFor } from './attention.js';
import { CachedDecoder } from './cached-decoder.js';
import { type EndTensors, readEndTensors } from './decoder-step.js';
import type { ClosableSource } from './model.js';
import { grown, openModelDir } from './resident.js';
import { type LayerWeights, loadLayerWeights, opt, req } from './weights.js';

/** Options of {@link MlaDecoder}. */
export interface MlaDecoderOptions {
  /** tokens per cache page (default 64, as FlashMLA) */
  pageSize?: number;
}

/** One layer's weights plus the absorbed key projections and its latent cache. */
interface DecoderLayer {
  w: LayerWeights;
  /** per head W_UK,h^T [kv_lora_rank, qk_nope_head_dim] (row-major), heads concatenated */
  ukT: Float32Array;
  /** pages of [pageSize, kv_lora_rank + qk_rope_head_dim] */
  cache: Float32Array;
}

/** What every layer of one append shares: positions, RoPE tables, the paged-cache geometry. */
interface DecodeStep {
  start: number;
  n: number;
  pos: Int32Array;
  rope: ReturnType<typeof ropeFor>;
  seqLens: Int32Array;
  blocks: number;
  blockTable: Int32Array;
  scale: number;
}

/**
 * Absorbed-form incremental decoder over a converted (deepseek_v3) checkpoint.
 *
 * @example
 * const dec = await MlaDecoder.open('out/tiny-mla');
 * const promptLogits = await dec.append(promptIds);   // [prompt.length, vocab]
 * const next = await dec.append(Int32Array.of(tok));  // [1, vocab]
 */
export class MlaDecoder extends CachedDecoder<DecoderLayer> {
  readonly pageSize: number;
  private pages = 0;

  private constructor(source: ClosableSource, spec: ModelSpec, layers: DecoderLayer[], end: EndTensors, pageSize: number) {
    super(source, spec, layers, end);
    this.pageSize = pageSize;
  }

  /** Opens a converted checkpoint directory and loads every layer (weights stay resident). */
  static async open(modelDir: string, options: MlaDecoderOptions = {}): Promise<MlaDecoder> {
    return openModelDir(modelDir, (ckpt, spec) => MlaDecoder.fromSource(ckpt, spec, options));
  }

  /** Builds a decoder over an open tensor source (closed by {@link close}). */
  static async fromSource(source: ClosableSource, spec: ModelSpec, options: MlaDecoderOptions = {}): Promise<MlaDecoder> {
    const m = spec.mla;
    if (!m) throw new GqaError('ERR_MODEL_TYPE', `absorbed decoding needs a deepseek_v3 (MLA) checkpoint, got model_type ${spec.modelType}`, 'usage');
    const pageSize = options.pageSize ?? 64;
    if (!Number.isInteger(pageSize) || pageSize < 1) throw new GqaError('ERR_INVALID_ARG', `pageSize must be a positive integer (got ${pageSize})`, 'usage');
    const { kvLoraRank: R, qkNopeHeadDim: dn, vHeadDim: dv } = m;
    const nH = spec.numHeads;
    const layers: DecoderLayer[] = [];
    for (let l = 0; l < spec.numLayers; l++) {
      const w = await loadLayerWeights(source, spec, l);
      const kvb = req(w, 'self_attn.kv_b_proj.weight', nH * (dn + dv) * R);
      const ukT = new Float32Array(nH * R * dn);
      for (let h = 0; h < nH; h++)
        for (let i = 0; i < dn; i++) {
          const src = (h * (dn + dv) + i) * R;
          for (let c = 0; c < R; c++) ukT[h * R * dn + c * dn + i] = kvb[src + c];
        }
      layers.push({ w, ukT, cache: new Float32Array(0) });
    }
    return new MlaDecoder(source, spec, layers, await readEndTensors(source, spec), pageSize);
  }

  /** Cached values per token per layer (kv_lora_rank + qk_rope_head_dim). */
  get cacheValuesPerToken(): number {
    return this.spec.mla!.kvLoraRank + this.spec.mla!.qkRopeHeadDim;
  }

  protected reserve(tokens: number): void {
    const need = Math.ceil(tokens / this.pageSize);
    if (need <= this.pages) return;
    const pages = Math.max(need, this.pages * 2, 1);
    const row = this.cacheValuesPerToken;
    for (const L of this.layers) L.cache = grown(L.cache, pages * this.pageSize * row);
    this.pages = pages;
  }

  protected attentionOf(start: number, n: number): (L: DecoderLayer, xn: Float32Array, h: Float32Array) => Promise<void> {
    const step = this.stepGeometry(start, n);
    return (L, xn, h) => this.attentionStep(L, xn, h, step);
  }

  /** Positions, RoPE tables and the paged-cache geometry of appending `n` tokens after `start`. */
  private stepGeometry(start: number, n: number): DecodeStep {
    const pos = new Int32Array(n);
    for (let i = 0; i < n; i++) pos[i] = start + i;
    // every new token is one "request" over the shared pages; token i sees start + i + 1 rows
    const seqLens = new Int32Array(n);
    for (let i = 0; i < n; i++) seqLens[i] = start + i + 1;
    const blocks = Math.ceil((start + n) / this.pageSize);
    const blockTable = new Int32Array(n * blocks);
    for (let i = 0; i < n; i++) for (let b = 0; b < blocks; b++) blockTable[i * blocks + b] = b;
    return { start, n, pos, rope: ropeFor(this.spec, start + n - 1), seqLens, blocks, blockTable, scale: mlaSoftmaxScale(this.spec) };
  }

  /**
   * One layer's absorbed attention for the new tokens: their cache rows are appended, the
   * queries absorb W_UK, attention runs over the latent cache, W_UV and o_proj follow, and
   * the output is added to the residual stream `h`.
   */
  private async attentionStep(L: DecoderLayer, xn: Float32Array, h: Float32Array, st: DecodeStep): Promise<void> {
    const spec = this.spec;
    const { kvLoraRank: R, qkNopeHeadDim: dn, qkRopeHeadDim: dr, vHeadDim: dv } = spec.mla!;
    const { n, start } = st;
    const H = spec.hiddenSize;
    const nH = spec.numHeads;
    const dq = dn + dr;
    const row = R + dr;
    const ws = this.ws;
    const w = L.w;
    // queries [n, nH, dq] and the new cache rows [RMSNorm(latent) | RoPE(k_rope)], as the prefill path
    const q = ws.get('q', n * nH * dq);
    await mlaQueries(spec, w, xn, n, st.pos, st.rope, q, ws);
    const kva = ws.get('kva', n * row);
    await mlaCacheRows(spec, w, xn, n, st.pos, st.rope, kva);
    L.cache.set(kva, start * row);
    // absorbed queries: q_lat [n, nH, R], q_rope [n, nH, dr]
    const qLat = ws.get('qLat', n * nH * R);
    const qRope = ws.get('qRope', n * nH * dr);
    for (let hh = 0; hh < nH; hh++) {
      await native.linearAsync(q.subarray(hh * dq), L.ukT.subarray(hh * R * dn, (hh + 1) * R * dn), qLat.subarray(hh * R), {
        rows: n,
        inDim: dn,
        outDim: R,
        xStride: nH * dq,
        outStride: nH * R,
      });
    }
    for (let t = 0; t < n; t++)
      for (let hh = 0; hh < nH; hh++) qRope.set(q.subarray((t * nH + hh) * dq + dn, (t * nH + hh + 1) * dq), (t * nH + hh) * dr);
    const oLat = ws.get('oLat', n * nH * R);
    const lse = ws.get('lse', n * nH);
    const cache = L.cache.subarray(0, st.blocks * this.pageSize * row);
    const geometry = { seqLens: st.seqLens, blockTable: st.blockTable, batch: n, heads: nH, kvLoraRank: R, ropeDim: dr, pageSize: this.pageSize };
    await mlaDecodeCpu({ qLat, qRope, cache, ...geometry, softmaxScale: st.scale, out: oLat, lse });
    // o_h = W_UV,h o_lat,h, then o_proj into the residual stream
    const kvb = req(w, 'self_attn.kv_b_proj.weight', nH * (dn + dv) * R);
    const ao = ws.get('attn', n * nH * dv);
    for (let hh = 0; hh < nH; hh++) {
      const wuv = kvb.subarray((hh * (dn + dv) + dn) * R, (hh + 1) * (dn + dv) * R);
      await native.linearAsync(oLat.subarray(hh * R), wuv, ao.subarray(hh * dv), { rows: n, inDim: R, outDim: dv, xStride: nH * R, outStride: nH * dv });
    }
    await native.linearAsync(ao, req(w, 'self_attn.o_proj.weight', H * nH * dv), h, { rows: n, inDim: nH * dv, outDim: H, bias: opt(w, 'self_attn.o_proj.bias', H), accumulate: true });
  }

  protected releaseCache(): void {
    for (const L of this.layers) L.cache = new Float32Array(0);
    this.pages = 0;
  }
}
