/**
 * The portable export (`--target portable`, the default): a DeepSeek-V3 directory that stock
 * vLLM, SGLang and transformers load with 0 missing or unexpected keys and compute as
 * gqa2mla's engine does (docs/engines.md lists the engine facts this relies on):
 *   - rope rows of q_proj / q_b_proj and kv_a_proj_with_mqa in the interleaved (GPT-J) layout,
 *     rope_interleave true (a permutation: exact, rope-layout.ts);
 *   - lm_head.weight always written, tie_word_embeddings false (the engines never tie DeepSeek);
 *   - no bias tensors (the engines build every attention linear without a bias and skip
 *     `.bias` tensors silently): biases are folded before export (bias-fold.ts); this module
 *     refuses to drop a non-zero bias;
 *   - every layer dense with integer MoE fields (first_k_dense_replace = layers, moe_layer_freq 1),
 *     or for a mixture-of-experts source (mixtral, qwen3_moe) its MoE layers with the gate config that
 *     vLLM and SGLang compute as the source's routing (config.ts),
 *     every dimension explicit, architectures, both rope config styles (rope_parameters and
 *     rope_theta / rope_scaling) with a deepseek_yarn-compatible rope (rope-yarn.ts), a torch
 *     dtype name.
 */
import { GqaError } from '../errors.js';
import type { ModelSpec } from '../model/spec-types.js';
import type { OutTensor } from '../tensor/out-tensor.js';
import type { PortableReport } from '../report-types.js';
import { permuteRopeRows } from './rope-layout.js';
import { portableRope, ropeConfigFields } from './rope-yarn.js';

export type { PortableReport };

/** safetensors dtype -> torch dtype name (config.json `dtype` / `torch_dtype`). */
export const TORCH_DTYPE: Record<string, string> = { BF16: 'bfloat16', F16: 'float16', F32: 'float32' };

/** MLA dimensions of a written layer, as the export needs them. */
export interface MlaDims {
  heads: number;
  qkNope: number;
  qkRope: number;
  kvLoraRank: number;
  qLoraRank: number | null;
}

/** The MLA dimensions of an exported config object. */
export function mlaDimsOf(config: Record<string, unknown>): MlaDims {
  return {
    heads: config.num_attention_heads as number,
    qkNope: config.qk_nope_head_dim as number,
    qkRope: config.qk_rope_head_dim as number,
    kvLoraRank: config.kv_lora_rank as number,
    qLoraRank: (config.q_lora_rank as number | null) ?? null,
  };
}

function isZero(data: OutTensor['data']): boolean {
  if (!(data instanceof Float32Array)) return false;
  for (let i = 0; i < data.length; i++) if (data[i] !== 0) return false;
  return true;
}

/**
 * One written layer's tensors for the portable target: the rope rows moved to the interleaved
 * layout, zero bias tensors left out. A non-zero bias is an error (it must be folded first).
 */
export function portableLayerTensors(tensors: OutTensor[], dims: MlaDims): OutTensor[] {
  const dq = dims.qkNope + dims.qkRope;
  const out: OutTensor[] = [];
  for (const t of tensors) {
    if (t.name.endsWith('.bias')) {
      if (!isZero(t.data)) throw new GqaError('ERR_INTERNAL', `portable export: ${t.name} is not zero and stock engines drop bias tensors (fold it first)`, 'runtime');
      continue;
    }
    const data = t.data as Float32Array;
    const cols = t.shape.length === 2 ? t.shape[1] : 1;
    if (t.name.endsWith('self_attn.q_proj.weight') || t.name.endsWith('self_attn.q_b_proj.weight'))
      out.push({ ...t, data: permuteRopeRows(data, cols, { blocks: dims.heads, blockRows: dq, offset: dims.qkNope, rotDim: dims.qkRope }) });
    else if (t.name.endsWith('self_attn.kv_a_proj_with_mqa.weight'))
      out.push({ ...t, data: permuteRopeRows(data, cols, { blocks: 1, blockRows: dims.kvLoraRank + dims.qkRope, offset: dims.kvLoraRank, rotDim: dims.qkRope }) });
    else out.push(t);
    if (t.name.endsWith('.mlp.gate.weight')) out.push(...emptySharedExpert(t));
  }
  return out;
}

/**
 * The shared expert of a MoE layer with n_shared_experts 0, as zero-size tensors next to the
 * router `gate` [experts, hidden]: vLLM and SGLang build `shared_experts` whenever
 * n_shared_experts is not null (of intermediate size 0 here) and vLLM's loader refuses
 * parameters the checkpoint does not initialise; null instead would break SGLang's
 * `num_experts_per_tok + n_shared_experts` and transformers' strict config (docs/engines.md).
 */
function emptySharedExpert(gate: OutTensor): OutTensor[] {
  const prefix = gate.name.slice(0, -'gate.weight'.length);
  const hidden = gate.shape[1];
  const t = (n: string, shape: number[]): OutTensor => ({ name: `${prefix}shared_experts.${n}.weight`, dtype: gate.dtype, shape, data: new Float32Array(0) });
  return [t('gate_proj', [0, hidden]), t('up_proj', [0, hidden]), t('down_proj', [hidden, 0])];
}

/** lm_head.weight of a tied source: the embedding table's stored bytes under the lm_head name. */
export function untiedLmHead(embedding: OutTensor): OutTensor {
  return { ...embedding, name: 'lm_head.weight' };
}


/**
 * The portable config.json from the conversion's internal config (config.ts, half-split
 * layout): returns the config to write and the report block.
 */
export function portableConfig(config: Record<string, unknown>, source: ModelSpec): { config: Record<string, unknown>; report: PortableReport } {
  const cfg: Record<string, unknown> = { ...config };
  const rope = portableRope(source, cfg.qk_rope_head_dim as number);
  const dtype = TORCH_DTYPE[String(cfg.dtype)] ?? String(cfg.dtype);
  Object.assign(cfg, {
    architectures: ['DeepseekV3ForCausalLM'],
    model_type: 'deepseek_v3',
    rope_interleave: true,
    tie_word_embeddings: false,
    attention_bias: false,
    // a dense source: every layer dense; a MoE source keeps config.ts's MoE layout
    first_k_dense_replace: source.moe ? cfg.first_k_dense_replace : cfg.num_hidden_layers,
    moe_layer_freq: source.moe ? cfg.moe_layer_freq : 1,
    ...ropeConfigFields(rope),
    dtype,
    torch_dtype: dtype,
  });
  delete cfg.gqa2mla_q_bias;
  delete cfg.qk_latent_layernorm;
  cfg.gqa2mla = { ...(cfg.gqa2mla as Record<string, unknown>), target: 'portable' };
  return { config: cfg, report: { target: 'portable', rope: rope.report } };
}
