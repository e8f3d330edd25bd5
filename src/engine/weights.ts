/**
 * Decoder-layer weights as plain float32 arrays keyed by their Hugging Face names relative
 * to `model.layers.<i>.` — whether read from a checkpoint or built in memory (the
 * conversion builds MLA layers this way and runs them through the same engine).
 */
import { GqaError } from '../errors.js';
import { isMoeLayer } from '../model/spec.js';
import type { ModelSpec } from '../model/spec-types.js';

/** One tensor: row-major float32 data and its shape. */
export interface WeightTensor {
  data: Float32Array;
  shape: number[];
}

/**
 * All tensors of one decoder layer, keyed by name relative to `model.layers.<layer>.`,
 * e.g. `self_attn.q_proj.weight`, `mlp.down_proj.weight`, `input_layernorm.weight`.
 * Linear weights are [out, in] as stored by transformers.
 */
export interface LayerWeights {
  /** decoder layer index (selects per-layer attention settings such as sliding windows) */
  layer: number;
  tensors: Record<string, WeightTensor>;
}

/** The subset of a checkpoint reader the engine needs (satisfied by `Checkpoint`). */
export interface TensorSource {
  has(name: string): boolean;
  /** `into`: a buffer of the right size the reader may fill instead of allocating */
  read(name: string, into?: Float32Array): Promise<Float32Array>;
}

/** Prefix of decoder layer `layer`'s tensor names. */
export function layerPrefix(layer: number): string {
  return `model.layers.${layer}.`;
}

/** The three projections of a SwiGLU MLP (dense, each routed expert, the shared expert), as DeepSeek-V3 names them. */
export const SWIGLU_PROJECTIONS = ['gate_proj', 'up_proj', 'down_proj'] as const;

/** One tensor of a decoder layer as the engine names it, and as the checkpoint stores it. */
export interface WantedTensor {
  /** the engine's name, relative to `model.layers.<i>.` */
  name: string;
  /** the checkpoint's name when it differs (Mixtral's `block_sparse_moe.*`) */
  source?: string;
  shape: number[];
  optional?: boolean;
}

/**
 * The MLP tensors of a layer: the dense SwiGLU, or the router `mlp.gate.weight` [experts,
 * hidden] and every expert's `mlp.experts.<e>.{gate,up,down}_proj.weight` (DeepSeek-V3
 * names, as Qwen3-MoE stores them; Mixtral stores them as `block_sparse_moe.gate.weight` and
 * `block_sparse_moe.experts.<e>.{w1,w3,w2}.weight`).
 */
function mlpTensorSpecs(spec: ModelSpec, layer: number): WantedTensor[] {
  const H = spec.hiddenSize;
  const m = spec.moe;
  if (!m || !isMoeLayer(spec, layer)) {
    const I = spec.intermediateSize;
    return [
      { name: 'mlp.gate_proj.weight', shape: [I, H] },
      { name: 'mlp.up_proj.weight', shape: [I, H] },
      { name: 'mlp.down_proj.weight', shape: [H, I] },
      { name: 'mlp.gate_proj.bias', shape: [I], optional: true },
      { name: 'mlp.up_proj.bias', shape: [I], optional: true },
      { name: 'mlp.down_proj.bias', shape: [H], optional: true },
    ];
  }
  const mixtral = spec.modelType === 'mixtral';
  const I = m.expertIntermediateSize;
  const out: WantedTensor[] = [{ name: 'mlp.gate.weight', shape: [m.numExperts, H], ...(mixtral ? { source: 'block_sparse_moe.gate.weight' } : {}) }];
  if (m.routing.correctionBias) out.push({ name: 'mlp.gate.e_score_correction_bias', shape: [m.numExperts] });
  if (spec.modelType === 'deepseek_v3')
    // the portable export's zero-size shared expert of n_shared_experts 0 (export/portable.ts): read, never used
    out.push(
      { name: 'mlp.shared_experts.gate_proj.weight', shape: [0, H], optional: true },
      { name: 'mlp.shared_experts.up_proj.weight', shape: [0, H], optional: true },
      { name: 'mlp.shared_experts.down_proj.weight', shape: [H, 0], optional: true },
    );
  const parts = [
    ['gate_proj', 'w1', [I, H]],
    ['up_proj', 'w3', [I, H]],
    ['down_proj', 'w2', [H, I]],
  ] as const;
  for (let e = 0; e < m.numExperts; e++)
    for (const [ds, mx, shape] of parts)
      out.push({ name: `mlp.experts.${e}.${ds}.weight`, shape: [...shape], ...(mixtral ? { source: `block_sparse_moe.experts.${e}.${mx}.weight` } : {}) });
  return out;
}

/** The tensors (engine names, checkpoint names and expected shapes) of decoder layer `layer` of `spec`. */
export function layerTensorSpecs(spec: ModelSpec, layer = 0): WantedTensor[] {
  const H = spec.hiddenSize;
  const out: WantedTensor[] = [
    { name: 'input_layernorm.weight', shape: [H] },
    { name: 'post_attention_layernorm.weight', shape: [H] },
    ...mlpTensorSpecs(spec, layer),
  ];
  const nH = spec.numHeads;
  if (spec.mla) {
    const m = spec.mla;
    const dq = m.qkNopeHeadDim + m.qkRopeHeadDim;
    if (m.qLoraRank) {
      out.push(
        { name: 'self_attn.q_a_proj.weight', shape: [m.qLoraRank, H] },
        { name: 'self_attn.q_a_proj.bias', shape: [m.qLoraRank], optional: true },
        { name: 'self_attn.q_a_layernorm.weight', shape: [m.qLoraRank], optional: !m.qkLatentLayernorm },
        { name: 'self_attn.q_b_proj.weight', shape: [nH * dq, m.qLoraRank] },
        { name: 'self_attn.q_b_proj.bias', shape: [nH * dq], optional: true },
      );
    } else {
      out.push(
        { name: 'self_attn.q_proj.weight', shape: [nH * dq, H] },
        { name: 'self_attn.q_proj.bias', shape: [nH * dq], optional: true },
      );
    }
    out.push(
      { name: 'self_attn.kv_a_proj_with_mqa.weight', shape: [m.kvLoraRank + m.qkRopeHeadDim, H] },
      { name: 'self_attn.kv_a_proj_with_mqa.bias', shape: [m.kvLoraRank + m.qkRopeHeadDim], optional: true },
      { name: 'self_attn.kv_a_layernorm.weight', shape: [m.kvLoraRank], optional: !m.qkLatentLayernorm },
      { name: 'self_attn.kv_b_proj.weight', shape: [nH * (m.qkNopeHeadDim + m.vHeadDim), m.kvLoraRank] },
      { name: 'self_attn.o_proj.weight', shape: [H, nH * m.vHeadDim] },
      { name: 'self_attn.o_proj.bias', shape: [H], optional: true },
    );
  } else {
    const d = spec.headDim;
    const G = spec.numKvHeads;
    out.push(
      { name: 'self_attn.q_proj.weight', shape: [nH * d, H] },
      { name: 'self_attn.k_proj.weight', shape: [G * d, H] },
      { name: 'self_attn.v_proj.weight', shape: [G * d, H] },
      { name: 'self_attn.o_proj.weight', shape: [H, nH * d] },
      { name: 'self_attn.q_proj.bias', shape: [nH * d], optional: !spec.attentionBias },
      { name: 'self_attn.k_proj.bias', shape: [G * d], optional: !spec.attentionBias },
      { name: 'self_attn.v_proj.bias', shape: [G * d], optional: !spec.attentionBias },
      { name: 'self_attn.o_proj.bias', shape: [H], optional: !spec.oBias },
    );
    if (spec.qkNorm) out.push({ name: 'self_attn.q_norm.weight', shape: [d] }, { name: 'self_attn.k_norm.weight', shape: [d] });
  }
  return out;
}

const numel = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/**
 * Reads every tensor of decoder layer `layer` as float32 (BF16/F16/F32 upcast by the
 * checkpoint reader). Required tensors that are missing, and tensors whose size does not
 * match the config, raise GqaError ERR_TENSOR_MISSING / ERR_TENSOR_SHAPE naming the tensor.
 * `reuse`: the previous layer's weights, no longer needed; their buffers are refilled
 * (same names and sizes), so streaming layers allocates no new weight memory.
 */
export async function loadLayerWeights(ckpt: TensorSource, spec: ModelSpec, layer: number, reuse?: LayerWeights): Promise<LayerWeights> {
  if (!Number.isInteger(layer) || layer < 0 || layer >= spec.numLayers)
    throw new GqaError('ERR_OUT_OF_RANGE', `layer ${layer} is outside [0, ${spec.numLayers})`, 'usage');
  const prefix = layerPrefix(layer);
  const tensors: Record<string, WeightTensor> = {};
  for (const want of layerTensorSpecs(spec, layer)) {
    const full = prefix + (want.source ?? want.name);
    if (!ckpt.has(full)) {
      if (want.optional) continue;
      throw new GqaError('ERR_TENSOR_MISSING', `tensor ${full} is missing from the checkpoint (model_type ${spec.modelType})`);
    }
    const data = await ckpt.read(full, reuse?.tensors[want.name]?.data);
    if (data.length !== numel(want.shape))
      throw new GqaError(
        'ERR_TENSOR_SHAPE',
        `tensor ${full} has ${data.length} elements, config implies [${want.shape.join(', ')}] = ${numel(want.shape)}`,
      );
    tensors[want.name] = { data, shape: want.shape };
  }
  return { layer, tensors };
}

/** Required tensor `name` of `w`, checked against `elements`. */
export function req(w: LayerWeights, name: string, elements: number): Float32Array {
  const t = w.tensors[name];
  if (!t) throw new GqaError('ERR_TENSOR_MISSING', `layer ${w.layer}: weight ${name} is missing`);
  if (t.data.length !== elements)
    throw new GqaError('ERR_TENSOR_SHAPE', `layer ${w.layer}: weight ${name} has ${t.data.length} elements, expected ${elements}`);
  return t.data;
}

/** Optional tensor `name` of `w` (null when absent), checked against `elements`. */
export function opt(w: LayerWeights, name: string, elements: number): Float32Array | null {
  return w.tensors[name] ? req(w, name, elements) : null;
}
