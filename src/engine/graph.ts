/**
 * One decoder layer's math, written once over a small kernel interface: GQA/MHA attention
 * (with qwen3's per-head q/k RMSNorm before RoPE),
 * DeepSeek-V3 MLA attention (q_proj or q_a/q_b, latent norms, RoPE on the rope dims, causal
 * attention with the shared rope key), the SwiGLU MLP, the routed mixture-of-experts MLP
 * (mixtral; deepseek_v3 MoE layers) and the pre-norm layer step. The CPU
 * engine (host-kernels.ts: the addon's float32 kernels on host arrays) and the CUDA backend
 * (backend/cuda-forward.ts: device buffers) implement {@link LayerKernels}.
 *
 * Invariant: the graph decides which kernels run, on which tensors, in which order, with
 * which shapes; a kernel implementation only maps a tensor name to its buffer and runs.
 */
import { mlaSoftmaxScale } from '../model/rope.js';
import { isMoeLayer } from '../model/spec.js';
import type { ModelSpec, MoeRouting } from '../model/spec-types.js';
import type { ExpertChoice } from './moe-routing.js';
import type { NativeAttentionOptions, NativeRmsNormOptions, NativeRopeOptions } from '../native/binding.js';

/** Rows of a linear layer y = x W^T (+ b), optionally strided input, optionally added to `out`. */
export interface LinearShape {
  rows: number;
  inDim: number;
  outDim: number;
  xStride?: number;
  accumulate?: boolean;
}

/**
 * The kernels of one layer call, bound to the layer's weights and to the positions and RoPE
 * tables of its rows. `B` is a buffer of float32 values (a host array or a device buffer).
 */
export interface LayerKernels<B> {
  /** the bound RoPE tables' rotated dims and attention scaling */
  readonly rope: { rotDim: number; attentionScaling: number };
  /** scratch buffer `name` of `length` values (reused across calls; contents undefined) */
  scratch(name: string, length: number): B;
  /** the view of `b` from element `elements` on */
  offset(b: B, elements: number): B;
  /** out = x W^T + b for weight tensor `weight` ([outDim, inDim]) and bias tensor `bias` (used when the layer has it) */
  linear(x: B, weight: string, bias: string | null, out: B, o: LinearShape): Promise<void>;
  /** RMSNorm of rows with the layer's norm weight `weight` ([dim]) */
  rmsNorm(x: B, weight: string, out: B, o: NativeRmsNormOptions): Promise<void>;
  /** RoPE at the bound positions, in place */
  ropeAt(x: B, o: NativeRopeOptions & { rows: number }): Promise<void>;
  /** causal (windowed) attention; `kRope` is MLA's shared rope key */
  attention(q: B, k: B, v: B, out: B, o: Omit<NativeAttentionOptions, 'kRope'> & { kRope?: B }): Promise<void>;
  /** out = silu(gate) * up over `n` values */
  swiglu(gate: B, up: B, out: B, n: number): Promise<void>;
  /** each row's experts and weights from router logits [rows, numExperts] (engine/moe-routing.ts); `bias`: the correction-bias tensor */
  route(logits: B, o: { rows: number; numExperts: number; topK: number; routing: MoeRouting; bias: string | null }): Promise<ExpertChoice>;
  /** out[i] = x[rows[i]] for rows of `dim` values */
  gatherRows(x: B, rows: Int32Array, dim: number, out: B): Promise<void>;
  /** out[rows[i]] += weights[i] * src[i] for rows of `dim` values */
  scatterAddRows(src: B, rows: Int32Array, weights: Float64Array, dim: number, out: B): Promise<void>;
}

/** Sliding-window size of decoder layer `layer` (0 = full causal attention), from config.json. */
export function slidingWindowOf(spec: ModelSpec, layer: number): number {
  const raw = spec.raw;
  const win = typeof raw.sliding_window === 'number' && raw.sliding_window > 0 ? raw.sliding_window : 0;
  if (!win) return 0;
  if (spec.modelType === 'mistral' || spec.modelType === 'mixtral') return win;
  // Qwen3MoeConfig keeps sliding_window only with use_sliding_window, and then every layer uses it
  if (spec.modelType === 'qwen3_moe') return raw.use_sliding_window === true ? win : 0;
  if (spec.modelType === 'qwen2' || spec.modelType === 'qwen3') {
    if (raw.use_sliding_window !== true) return 0;
    const types = raw.layer_types;
    if (Array.isArray(types)) return types[layer] === 'sliding_attention' ? win : 0;
    // Qwen3Config's default max_window_layers is 28
    const maxWindowLayers = typeof raw.max_window_layers === 'number' ? raw.max_window_layers : spec.modelType === 'qwen3' ? 28 : 0;
    return layer >= maxWindowLayers ? win : 0;
  }
  return 0;
}

/** One attention call: the layer, its inputs [nSeq*seqLen, hidden] and where the output goes. */
export interface AttentionCall<B> {
  layer: number;
  x: B;
  nSeq: number;
  seqLen: number;
  out: B;
  /** add to `out` (the residual stream) instead of overwriting it */
  accumulate: boolean;
}

/** Attention output after o_proj (GQA/MHA or MLA by the spec). */
export async function attentionGraph<B>(K: LayerKernels<B>, spec: ModelSpec, c: AttentionCall<B>): Promise<void> {
  if (spec.mla) await mlaAttentionGraph(K, spec, c);
  else await gqaAttentionGraph(K, spec, c);
}

async function gqaAttentionGraph<B>(K: LayerKernels<B>, spec: ModelSpec, c: AttentionCall<B>): Promise<void> {
  const { hiddenSize: H, numHeads: nH, numKvHeads: G, headDim: d } = spec;
  const { x, nSeq, seqLen } = c;
  const rows = nSeq * seqLen;
  const q = K.scratch('q', rows * nH * d);
  const k = K.scratch('k', rows * G * d);
  const v = K.scratch('v', rows * G * d);
  const ao = K.scratch('attn', rows * nH * d);
  await K.linear(x, 'self_attn.q_proj.weight', 'self_attn.q_proj.bias', q, { rows, inDim: H, outDim: nH * d });
  await K.linear(x, 'self_attn.k_proj.weight', 'self_attn.k_proj.bias', k, { rows, inDim: H, outDim: G * d });
  await K.linear(x, 'self_attn.v_proj.weight', 'self_attn.v_proj.bias', v, { rows, inDim: H, outDim: G * d });
  if (spec.qkNorm) {
    // qwen3: RMSNorm of every head's query and key over head_dim, before RoPE (heads are contiguous rows of d)
    await K.rmsNorm(q, 'self_attn.q_norm.weight', q, { rows: rows * nH, dim: d, eps: spec.rmsNormEps });
    await K.rmsNorm(k, 'self_attn.k_norm.weight', k, { rows: rows * G, dim: d, eps: spec.rmsNormEps });
  }
  const ro = { rows, headStride: d, rotDim: K.rope.rotDim, scale: K.rope.attentionScaling };
  await K.ropeAt(q, { ...ro, rowStride: nH * d, nHeads: nH });
  await K.ropeAt(k, { ...ro, rowStride: G * d, nHeads: G });
  const window = slidingWindowOf(spec, c.layer);
  await K.attention(q, k, v, ao, { nSeq, seqLen, nHeads: nH, nKvHeads: G, qkDim: d, vDim: d, scale: 1 / Math.sqrt(d), window });
  await K.linear(ao, 'self_attn.o_proj.weight', 'self_attn.o_proj.bias', c.out, { rows, inDim: nH * d, outDim: H, accumulate: c.accumulate });
}

/**
 * DeepSeek-V3 queries of normalised inputs `x` [rows, hidden] into `q` [rows, heads,
 * qk_nope + qk_rope]: q_proj, or q_b_proj(q_a_layernorm(q_a_proj(x))) (the norm skipped
 * when `qk_latent_layernorm` is false), with RoPE applied to each head's rope part.
 */
export async function mlaQueriesGraph<B>(K: LayerKernels<B>, spec: ModelSpec, x: B, rows: number, q: B): Promise<void> {
  const m = spec.mla!;
  const { hiddenSize: H, numHeads: nH } = spec;
  const dn = m.qkNopeHeadDim;
  const dr = m.qkRopeHeadDim;
  const dq = dn + dr;
  if (m.qLoraRank) {
    const Rq = m.qLoraRank;
    const qa = K.scratch('qa', rows * Rq);
    await K.linear(x, 'self_attn.q_a_proj.weight', 'self_attn.q_a_proj.bias', qa, { rows, inDim: H, outDim: Rq });
    if (m.qkLatentLayernorm) await K.rmsNorm(qa, 'self_attn.q_a_layernorm.weight', qa, { rows, dim: Rq, eps: spec.rmsNormEps });
    await K.linear(qa, 'self_attn.q_b_proj.weight', 'self_attn.q_b_proj.bias', q, { rows, inDim: Rq, outDim: nH * dq });
  } else {
    await K.linear(x, 'self_attn.q_proj.weight', 'self_attn.q_proj.bias', q, { rows, inDim: H, outDim: nH * dq });
  }
  const interleave = m.ropeInterleave;
  await K.ropeAt(q, { rows, rowStride: nH * dq, nHeads: nH, headStride: dq, offset: dn, rotDim: dr, scale: K.rope.attentionScaling, interleave });
}

/**
 * What an MLA cache holds per token, for normalised inputs `x` [rows, hidden], into `kva`
 * [rows, kv_lora_rank + qk_rope]: [kv_a_layernorm(latent) | RoPE(k_rope)] (the norm skipped
 * when `qk_latent_layernorm` is false).
 */
export async function mlaCacheRowsGraph<B>(K: LayerKernels<B>, spec: ModelSpec, x: B, rows: number, kva: B): Promise<void> {
  const m = spec.mla!;
  const R = m.kvLoraRank;
  const dr = m.qkRopeHeadDim;
  const row = R + dr;
  await K.linear(x, 'self_attn.kv_a_proj_with_mqa.weight', 'self_attn.kv_a_proj_with_mqa.bias', kva, { rows, inDim: spec.hiddenSize, outDim: row });
  if (m.qkLatentLayernorm) await K.rmsNorm(kva, 'self_attn.kv_a_layernorm.weight', kva, { rows, dim: R, eps: spec.rmsNormEps, xStride: row, outStride: row });
  await K.ropeAt(kva, { rows, rowStride: row, nHeads: 1, headStride: row, offset: R, rotDim: dr, scale: K.rope.attentionScaling, interleave: m.ropeInterleave });
}

async function mlaAttentionGraph<B>(K: LayerKernels<B>, spec: ModelSpec, c: AttentionCall<B>): Promise<void> {
  const m = spec.mla!;
  const { hiddenSize: H, numHeads: nH } = spec;
  const { kvLoraRank: R, qkNopeHeadDim: dn, qkRopeHeadDim: dr, vHeadDim: dv } = m;
  const { nSeq, seqLen } = c;
  const rows = nSeq * seqLen;
  const q = K.scratch('q', rows * nH * (dn + dr));
  await mlaQueriesGraph(K, spec, c.x, rows, q);
  const kva = K.scratch('kva', rows * (R + dr));
  await mlaCacheRowsGraph(K, spec, c.x, rows, kva);
  // per head [k_nope (dn) | v (dv)] from the normed latent
  const kvb = K.scratch('kvb', rows * nH * (dn + dv));
  await K.linear(kva, 'self_attn.kv_b_proj.weight', null, kvb, { rows, inDim: R, outDim: nH * (dn + dv), xStride: R + dr });
  const ao = K.scratch('attn', rows * nH * dv);
  await K.attention(q, kvb, K.offset(kvb, dn), ao, {
    nSeq,
    seqLen,
    nHeads: nH,
    nKvHeads: nH,
    qkDim: dn,
    vDim: dv,
    scale: mlaSoftmaxScale(spec),
    kHeadStride: dn + dv,
    vHeadStride: dn + dv,
    kRope: K.offset(kva, R),
    ropeDim: dr,
    kRopeRowStride: R + dr,
    window: slidingWindowOf(spec, c.layer),
  });
  await K.linear(ao, 'self_attn.o_proj.weight', 'self_attn.o_proj.bias', c.out, { rows, inDim: nH * dv, outDim: H, accumulate: c.accumulate });
}

/** One SwiGLU MLP down(silu(gate(x)) * up(x)) of `rows` rows with weights `<prefix>{gate,up,down}_proj` of intermediate size `I`, into `out`. */
async function swigluGraph<B>(K: LayerKernels<B>, H: number, I: number, prefix: string, x: B, rows: number, out: B, accumulate: boolean): Promise<void> {
  const gate = K.scratch('gate', rows * I);
  const up = K.scratch('up', rows * I);
  await K.linear(x, `${prefix}gate_proj.weight`, `${prefix}gate_proj.bias`, gate, { rows, inDim: H, outDim: I });
  await K.linear(x, `${prefix}up_proj.weight`, `${prefix}up_proj.bias`, up, { rows, inDim: H, outDim: I });
  await K.swiglu(gate, up, gate, rows * I);
  await K.linear(gate, `${prefix}down_proj.weight`, `${prefix}down_proj.bias`, out, { rows, inDim: I, outDim: H, accumulate });
}

/** The rows (and their weights) routed to each expert, in row order. */
export function rowsPerExpert(c: ExpertChoice, numExperts: number): { rows: Int32Array; weights: Float64Array }[] {
  const count = new Int32Array(numExperts);
  for (const e of c.experts) count[e]++;
  const out = Array.from(count, (n) => ({ rows: new Int32Array(n), weights: new Float64Array(n) }));
  const fill = new Int32Array(numExperts);
  for (let i = 0; i < c.experts.length; i++) {
    const e = c.experts[i];
    out[e].rows[fill[e]] = Math.floor(i / c.topK);
    out[e].weights[fill[e]++] = c.weights[i];
  }
  return out;
}

/**
 * Routed mixture-of-experts MLP of normalised `x` [rows, hidden], added to `out`: router
 * logits from `mlp.gate.weight`, each row's top-k experts and weights by the spec's routing,
 * and for every expert with rows: its SwiGLU (`mlp.experts.<e>.{gate,up,down}_proj`) on
 * those rows, weighted and added to them.
 */
export async function moeGraph<B>(K: LayerKernels<B>, spec: ModelSpec, x: B, rows: number, out: B): Promise<void> {
  const m = spec.moe!;
  const H = spec.hiddenSize;
  const E = m.numExperts;
  const logits = K.scratch('router', rows * E);
  await K.linear(x, 'mlp.gate.weight', null, logits, { rows, inDim: H, outDim: E });
  const bias = m.routing.correctionBias ? 'mlp.gate.e_score_correction_bias' : null;
  const choice = await K.route(logits, { rows, numExperts: E, topK: m.topK, routing: m.routing, bias });
  const perExpert = rowsPerExpert(choice, E);
  for (let e = 0; e < E; e++) {
    const { rows: sel, weights } = perExpert[e];
    if (sel.length === 0) continue;
    const xe = K.scratch('moe_x', sel.length * H);
    const ye = K.scratch('moe_y', sel.length * H);
    await K.gatherRows(x, sel, H, xe);
    await swigluGraph(K, H, m.expertIntermediateSize, `mlp.experts.${e}.`, xe, sel.length, ye, false);
    await K.scatterAddRows(ye, sel, weights, H, out);
  }
}

/** The MLP of decoder layer `layer` (dense SwiGLU, or mixture-of-experts) on normalised `x` [rows, hidden], added to `out`. */
export async function mlpGraph<B>(K: LayerKernels<B>, spec: ModelSpec, x: B, rows: number, out: B, layer: number): Promise<void> {
  if (isMoeLayer(spec, layer)) await moeGraph(K, spec, x, rows, out);
  else await swigluGraph(K, spec.hiddenSize, spec.intermediateSize, 'mlp.', x, rows, out, true);
}

/**
 * One pre-norm decoder layer step on the residual stream `h` [nSeq*seqLen, hidden], in
 * place: h += attn(input_layernorm(h)); h += mlp(post_attention_layernorm(h)). `onAttnInput`
 * sees the normalised attention input (scratch `xn`).
 */
export async function decoderStepGraph<B>(K: LayerKernels<B>, spec: ModelSpec, c: { layer: number; h: B; nSeq: number; seqLen: number; onAttnInput?: (xn: B) => void | Promise<void> }): Promise<void> {
  const H = spec.hiddenSize;
  const eps = spec.rmsNormEps;
  const rows = c.nSeq * c.seqLen;
  const xn = K.scratch('xn', rows * H);
  await K.rmsNorm(c.h, 'input_layernorm.weight', xn, { rows, dim: H, eps });
  if (c.onAttnInput) await c.onAttnInput(xn);
  await attentionGraph(K, spec, { layer: c.layer, x: xn, nSeq: c.nSeq, seqLen: c.seqLen, out: c.h, accumulate: true });
  await K.rmsNorm(c.h, 'post_attention_layernorm.weight', xn, { rows, dim: H, eps });
  await mlpGraph(K, spec, xn, rows, c.h, c.layer);
}
