/**
 * The converted (MLA) layer as the engine reads it and as it is written: the factorization's
 * weights rounded to the stored dtype with the exact latent norm applied, the compressed
 * query path, and the layer's tensors in their fixed shard order.
 */
import type { ComputeBackend } from '../backend/types.js';
import { type LayerWeights, SWIGLU_PROJECTIONS } from '../engine/weights.js';
import type { ModelSpec } from '../model/spec-types.js';
import type { LayerReport } from '../report-types.js';
import type { OutTensor } from '../tensor/out-tensor.js';
import type { LayerFactorization } from './factorize.js';
import { chooseLatentScaling, countSubnormal, latentNormReport } from './latent-norm.js';
import { roundToDtype } from './layer-ops.js';
import type { ResolvedOptions } from './options.js';
import type { QueryCompression } from './q-compress.js';

/** Input of {@link mlaLayerWeights}. */
export interface MlaLayerInput {
  spec: ModelSpec;
  /** the source layer (its non-attention tensors are kept) */
  w: LayerWeights;
  f: LayerFactorization;
  opt: ResolvedOptions;
  /** stored dtype of the attention weights */
  dtype: string;
  /** normalised attention inputs; the first `statRows` rows choose the latent scaling */
  x: Float32Array;
  statRows: number;
  backend: ComputeBackend;
}

/**
 * The converted layer as the engine reads it, rounded to the stored dtype (what is
 * evaluated is what is written), with the exact latent norm applied when enabled.
 */
export async function mlaLayerWeights(input: MlaLayerInput): Promise<{ weights: LayerWeights; norm: LayerReport['latentNorm'] }> {
  const { spec, w, f, opt, dtype, x, statRows, backend } = input;
  const hid = spec.hiddenSize;
  const R = opt.kvLoraRank;
  const r = opt.qkRopeDim;
  const H = spec.numHeads;
  const d = spec.headDim;
  const a = f.attention;
  const kvA = a.kvA;
  const kvABias = a.kvABias;
  let normWeight = 1;
  let norm: LayerReport['latentNorm'] = null;
  if (opt.latentNorm === 'exact') {
    const { maxMs, minAbs } = await backend.latentMeanSquare(kvA, kvABias, R, hid, x, statRows);
    const sc = chooseLatentScaling(maxMs, minAbs, spec.rmsNormEps);
    for (let i = 0; i < R * hid; i++) kvA[i] *= sc.alpha;
    if (kvABias) for (let i = 0; i < R; i++) kvABias[i] *= sc.alpha;
    normWeight = sc.weight;
    norm = latentNormReport(sc, 0);
  }
  const rd = (v: Float32Array) => roundToDtype(v, dtype);
  const tensors: LayerWeights['tensors'] = {};
  for (const [name, t] of Object.entries(w.tensors)) if (!name.startsWith('self_attn.')) tensors[name] = t;
  tensors['self_attn.q_proj.weight'] = { data: rd(a.qProj), shape: [H * (d + r), hid] };
  if (a.qBias) tensors['self_attn.q_proj.bias'] = { data: rd(a.qBias), shape: [H * (d + r)] };
  tensors['self_attn.kv_a_proj_with_mqa.weight'] = { data: rd(kvA), shape: [R + r, hid] };
  const attnBias = spec.attentionBias || spec.oBias;
  if (attnBias) tensors['self_attn.kv_a_proj_with_mqa.bias'] = { data: rd(kvABias ?? new Float32Array(R + r)), shape: [R + r] };
  tensors['self_attn.kv_a_layernorm.weight'] = { data: new Float32Array(R).fill(normWeight), shape: [R] };
  tensors['self_attn.kv_b_proj.weight'] = { data: rd(a.kvB), shape: [H * 2 * d, R] };
  tensors['self_attn.o_proj.weight'] = { data: a.oProj, shape: [hid, H * d] };
  if (attnBias) tensors['self_attn.o_proj.bias'] = { data: a.oBias ?? new Float32Array(hid), shape: [hid] };
  if (norm) norm.subnormalWeights = countSubnormal(tensors['self_attn.kv_a_proj_with_mqa.weight'].data, dtype);
  return { weights: { layer: w.layer, tensors }, norm };
}

/**
 * `w` with q_proj replaced by the compressed query path. A q bias is carried by q_a_proj's
 * bias channel (q-compress.ts); with attention_bias, stock engines build q_a_proj with a
 * bias, so it is written (zeros) even when the source had no query bias.
 */
export function withQueryCompression(w: LayerWeights, qc: QueryCompression, dtype: string, attentionBias: boolean): LayerWeights {
  const tensors: LayerWeights['tensors'] = {};
  for (const [name, t] of Object.entries(w.tensors)) if (name !== 'self_attn.q_proj.weight' && name !== 'self_attn.q_proj.bias') tensors[name] = t;
  const N = qc.qLoraRank;
  const M = qc.qB.length / N;
  const hid = qc.qA.length / N;
  tensors['self_attn.q_a_proj.weight'] = { data: roundToDtype(qc.qA, dtype), shape: [N, hid] };
  if (qc.qABias || attentionBias) tensors['self_attn.q_a_proj.bias'] = { data: roundToDtype(qc.qABias ?? new Float32Array(N), dtype), shape: [N] };
  tensors['self_attn.q_a_layernorm.weight'] = { data: new Float32Array(N).fill(qc.normWeight), shape: [N] };
  tensors['self_attn.q_b_proj.weight'] = { data: roundToDtype(qc.qB, dtype), shape: [M, N] };
  return { layer: w.layer, tensors };
}

const LAYER_ORDER = [
  'input_layernorm.weight',
  'self_attn.q_proj.weight',
  'self_attn.q_proj.bias',
  'self_attn.q_a_proj.weight',
  'self_attn.q_a_proj.bias',
  'self_attn.q_a_layernorm.weight',
  'self_attn.q_b_proj.weight',
  'self_attn.kv_a_proj_with_mqa.weight',
  'self_attn.kv_a_proj_with_mqa.bias',
  'self_attn.kv_a_layernorm.weight',
  'self_attn.kv_b_proj.weight',
  'self_attn.o_proj.weight',
  'self_attn.o_proj.bias',
  'post_attention_layernorm.weight',
  'mlp.gate_proj.weight',
  'mlp.up_proj.weight',
  'mlp.down_proj.weight',
];

/** A mixture-of-experts layer's tensor names: the router, then each expert's gate, up and down projections. */
function moeOrder(w: LayerWeights): string[] {
  let experts = 0;
  while (w.tensors[`mlp.experts.${experts}.gate_proj.weight`]) experts++;
  if (!experts) return [];
  const out = ['mlp.gate.weight', 'mlp.gate.e_score_correction_bias'];
  for (let e = 0; e < experts; e++) for (const p of SWIGLU_PROJECTIONS) out.push(`mlp.experts.${e}.${p}.weight`);
  return out;
}

/** The tensors of converted layer `l` in a fixed order (float32 values, stored as `dtype`). */
export function layerTensors(l: number, w: LayerWeights, dtype: string): OutTensor[] {
  const out: OutTensor[] = [];
  for (const n of [...LAYER_ORDER, ...moeOrder(w)]) {
    const t = w.tensors[n];
    if (t) out.push({ name: `model.layers.${l}.${n}`, dtype, shape: t.shape, data: t.data });
  }
  return out;
}
