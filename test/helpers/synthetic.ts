/**
 * Writes a synthetic llama / qwen2 / qwen3 / mistral / mixtral checkpoint (config.json + safetensors through
 * CheckpointWriter, optionally a tokenizer copied from another directory) with seeded
 * random weights of realistic scale: linear weights and embeddings ~ N(0, 0.02^2), biases
 * ~ N(0, 0.02^2), RMSNorm weights ~ 1 + N(0, 0.05^2), Mixtral router weights ~ N(0, routerStd^2). Tensors are generated and written one
 * at a time, so memory stays at one tensor.
 */
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { CheckpointWriter } from '../../src/checkpoint/safetensors-writer.js';

/** Shape and settings of a synthetic model. */
export interface SyntheticOptions {
  modelType: 'llama' | 'qwen2' | 'qwen3' | 'mistral' | 'mixtral';
  numLayers: number;
  hiddenSize: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
  vocabSize: number;
  /** tie_word_embeddings (no lm_head.weight) */
  tie: boolean;
  /** attention biases: q/k/v (+o for llama and qwen3); qwen2 requires true, mistral false */
  bias: boolean;
  dtype: 'BF16' | 'F16' | 'F32';
  seed: number;
  /** shard the weights (default: one model.safetensors) */
  maxShardBytes?: number;
  /** old-style `rope_scaling` object (e.g. {rope_type: 'llama3', factor: 8, ...}) */
  ropeScaling?: Record<string, unknown>;
  /** rope_theta (default 10000) */
  ropeTheta?: number;
  /** write transformers-5 `rope_parameters` instead of rope_theta + rope_scaling */
  ropeParameters?: boolean;
  /** copy tokenizer.json (and tokenizer_config.json when present) from this directory */
  tokenizerFrom?: string;
  /** replace an existing directory */
  overwrite?: boolean;
  /** mixtral: num_local_experts (default 4), num_experts_per_tok (default 2), router weight std (default 0.3: logits of order 1, routing that matters) */
  experts?: number;
  topK?: number;
  routerStd?: number;
}

/** What was written. */
export interface SyntheticResult {
  dir: string;
  config: Record<string, unknown>;
  /** tensor names in write order */
  tensors: string[];
  numParams: number;
  shards: string[];
  totalSize: number;
}

/** Seeded normal generator (xorshift128+ style 32-bit state, Box-Muller). */
export function normalGenerator(seed: number): () => number {
  let a = (seed ^ 0x9e3779b9) >>> 0 || 1;
  let b = Math.imul(seed + 1, 0x85ebca6b) >>> 0 || 2;
  const u = () => {
    let t = a ^ (a << 11);
    a = b;
    b = (b ^ (b >>> 19) ^ (t ^ (t >>> 8))) >>> 0;
    t >>>= 0;
    return (b + 0.5) / 4294967296;
  };
  let spare: number | null = null;
  return () => {
    if (spare !== null) {
      const s = spare;
      spare = null;
      return s;
    }
    const r = Math.sqrt(-2 * Math.log(u()));
    const th = 2 * Math.PI * u();
    spare = r * Math.sin(th);
    return r * Math.cos(th);
  };
}

/** The config.json object of `o`. */
export function syntheticConfig(o: SyntheticOptions): Record<string, unknown> {
  const arch = { llama: 'LlamaForCausalLM', qwen2: 'Qwen2ForCausalLM', qwen3: 'Qwen3ForCausalLM', mistral: 'MistralForCausalLM', mixtral: 'MixtralForCausalLM' }[o.modelType];
  const cfg: Record<string, unknown> = {
    architectures: [arch],
    model_type: o.modelType,
    hidden_act: 'silu',
    hidden_size: o.hiddenSize,
    intermediate_size: o.intermediateSize,
    num_hidden_layers: o.numLayers,
    num_attention_heads: o.numHeads,
    num_key_value_heads: o.numKvHeads,
    head_dim: o.headDim,
    vocab_size: o.vocabSize,
    max_position_embeddings: 4096,
    rms_norm_eps: 1e-6,
    tie_word_embeddings: o.tie,
    bos_token_id: 0,
    eos_token_id: 0,
    torch_dtype: { BF16: 'bfloat16', F16: 'float16', F32: 'float32' }[o.dtype],
  };
  if (o.modelType === 'llama' || o.modelType === 'qwen3') cfg.attention_bias = o.bias;
  if (o.modelType === 'qwen2' || o.modelType === 'qwen3') cfg.use_sliding_window = false;
  if (o.modelType === 'mistral' || o.modelType === 'mixtral') cfg.sliding_window = null;
  if (o.modelType === 'mixtral') Object.assign(cfg, { num_local_experts: o.experts ?? 4, num_experts_per_tok: o.topK ?? 2 });
  const theta = o.ropeTheta ?? 10000;
  if (o.ropeParameters) cfg.rope_parameters = { rope_theta: theta, rope_type: 'default', ...(o.ropeScaling ?? {}) };
  else {
    cfg.rope_theta = theta;
    cfg.rope_scaling = o.ropeScaling ?? null;
  }
  return cfg;
}

/** Writes the synthetic checkpoint to `dir` (refused when it exists unless `overwrite`). */
export async function writeSyntheticModel(dir: string, o: SyntheticOptions): Promise<SyntheticResult> {
  if (o.modelType === 'qwen2' && !o.bias) throw new Error('qwen2 always has q/k/v biases: pass bias: true');
  if ((o.modelType === 'mistral' || o.modelType === 'mixtral') && o.bias) throw new Error(`${o.modelType} has no attention biases: pass bias: false`);
  if (o.numHeads % o.numKvHeads !== 0) throw new Error('numKvHeads must divide numHeads');
  const config = syntheticConfig(o);
  const w = await CheckpointWriter.create(dir, { overwrite: o.overwrite, maxShardBytes: o.maxShardBytes });
  const normal = normalGenerator(o.seed);
  const names: string[] = [];
  let numParams = 0;
  const put = async (name: string, shape: number[], kind: 'linear' | 'norm' | 'bias' | 'router') => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    const std = kind === 'router' ? (o.routerStd ?? 0.3) : 0.02;
    if (kind === 'norm') for (let i = 0; i < n; i++) data[i] = 1 + 0.05 * normal();
    else for (let i = 0; i < n; i++) data[i] = std * normal();
    await w.add(name, o.dtype, shape, data);
    names.push(name);
    numParams += n;
  };
  try {
    const H = o.hiddenSize;
    const q = o.numHeads * o.headDim;
    const kv = o.numKvHeads * o.headDim;
    await put('model.embed_tokens.weight', [o.vocabSize, H], 'linear');
    for (let l = 0; l < o.numLayers; l++) {
      const p = `model.layers.${l}.`;
      await put(`${p}input_layernorm.weight`, [H], 'norm');
      await put(`${p}self_attn.q_proj.weight`, [q, H], 'linear');
      if (o.bias) await put(`${p}self_attn.q_proj.bias`, [q], 'bias');
      await put(`${p}self_attn.k_proj.weight`, [kv, H], 'linear');
      if (o.bias) await put(`${p}self_attn.k_proj.bias`, [kv], 'bias');
      await put(`${p}self_attn.v_proj.weight`, [kv, H], 'linear');
      if (o.bias) await put(`${p}self_attn.v_proj.bias`, [kv], 'bias');
      await put(`${p}self_attn.o_proj.weight`, [H, q], 'linear');
      if (o.bias && (o.modelType === 'llama' || o.modelType === 'qwen3')) await put(`${p}self_attn.o_proj.bias`, [H], 'bias');
      if (o.modelType === 'qwen3') {
        await put(`${p}self_attn.q_norm.weight`, [o.headDim], 'norm');
        await put(`${p}self_attn.k_norm.weight`, [o.headDim], 'norm');
      }
      await put(`${p}post_attention_layernorm.weight`, [H], 'norm');
      const I = o.intermediateSize;
      if (o.modelType === 'mixtral') {
        // Mixtral's stored names: w1 = gate, w3 = up, w2 = down
        await put(`${p}block_sparse_moe.gate.weight`, [o.experts ?? 4, H], 'router');
        for (let e = 0; e < (o.experts ?? 4); e++) {
          await put(`${p}block_sparse_moe.experts.${e}.w1.weight`, [I, H], 'linear');
          await put(`${p}block_sparse_moe.experts.${e}.w2.weight`, [H, I], 'linear');
          await put(`${p}block_sparse_moe.experts.${e}.w3.weight`, [I, H], 'linear');
        }
      } else {
        await put(`${p}mlp.gate_proj.weight`, [I, H], 'linear');
        await put(`${p}mlp.up_proj.weight`, [I, H], 'linear');
        await put(`${p}mlp.down_proj.weight`, [H, I], 'linear');
      }
    }
    await put('model.norm.weight', [H], 'norm');
    if (!o.tie) await put('lm_head.weight', [o.vocabSize, H], 'linear');
    await w.addFile('config.json', `${JSON.stringify(config, null, 2)}\n`);
    if (o.tokenizerFrom) {
      await w.addFile('tokenizer.json', await readFile(join(o.tokenizerFrom, 'tokenizer.json')));
      if (existsSync(join(o.tokenizerFrom, 'tokenizer_config.json')))
        await w.addFile('tokenizer_config.json', await readFile(join(o.tokenizerFrom, 'tokenizer_config.json')));
    }
    const r = await w.finish();
    return { dir: r.dir, config, tensors: names, numParams, shards: r.shards, totalSize: r.totalSize };
  } catch (e) {
    await w.abort();
    throw e;
  }
}
