/**
 * ModelSpec from config.json: configs mirroring real Hub checkpoints (old-style rope_theta +
 * rope_scaling), the fixtures' transformers-5 rope_parameters, converted DeepSeek-V3
 * configs, and the errors for unsupported or malformed configs.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModelSpec, parseModelSpec } from '../src/model/spec.js';
import { GqaError } from '../src/errors.js';

const llama31_8b = {
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 128000,
  eos_token_id: 128001,
  hidden_act: 'silu',
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 14336,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  rope_theta: 500000.0,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  transformers_version: '4.43.0.dev0',
  use_cache: true,
  vocab_size: 128256,
};

const llama32_1b = {
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 128000,
  eos_token_id: 128001,
  head_dim: 64,
  hidden_act: 'silu',
  hidden_size: 2048,
  initializer_range: 0.02,
  intermediate_size: 8192,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 16,
  num_key_value_heads: 8,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  rope_theta: 500000.0,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  transformers_version: '4.45.0.dev0',
  use_cache: true,
  vocab_size: 128256,
};

const qwen25_7b = {
  architectures: ['Qwen2ForCausalLM'],
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151643,
  hidden_act: 'silu',
  hidden_size: 3584,
  initializer_range: 0.02,
  intermediate_size: 18944,
  max_position_embeddings: 131072,
  max_window_layers: 28,
  model_type: 'qwen2',
  num_attention_heads: 28,
  num_hidden_layers: 28,
  num_key_value_heads: 4,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 131072,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  transformers_version: '4.40.1',
  use_cache: true,
  use_mrope: false,
  use_sliding_window: false,
  vocab_size: 152064,
};

const mistral7b_v03 = {
  architectures: ['MistralForCausalLM'],
  attention_dropout: 0.0,
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: 'silu',
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 14336,
  max_position_embeddings: 32768,
  model_type: 'mistral',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_theta: 1000000.0,
  sliding_window: null,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  transformers_version: '4.42.0.dev0',
  use_cache: true,
  vocab_size: 32768,
};

const llama2_7b = {
  architectures: ['LlamaForCausalLM'],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: 'silu',
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 11008,
  max_position_embeddings: 4096,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 32,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: null,
  tie_word_embeddings: false,
  torch_dtype: 'float16',
  transformers_version: '4.31.0.dev0',
  use_cache: true,
  vocab_size: 32000,
};

const smollm_135m = {
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 0,
  eos_token_id: 0,
  hidden_act: 'silu',
  hidden_size: 576,
  initializer_range: 0.02,
  intermediate_size: 1536,
  max_position_embeddings: 2048,
  model_type: 'llama',
  num_attention_heads: 9,
  num_hidden_layers: 30,
  num_key_value_heads: 3,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: null,
  rope_theta: 10000.0,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  transformers_version: '4.40.1',
  use_cache: true,
  vocab_size: 49152,
};

/** DeepSeek-V3's attention and rope settings on a dense (non-MoE) model, as a converted checkpoint has. */
// the fields of Qwen3-0.6B's config.json (head_dim 128 with hidden 1024 / 16 heads: explicit, not hidden / heads)
const qwen3_06b = {
  architectures: ['Qwen3ForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151645,
  head_dim: 128,
  hidden_act: 'silu',
  hidden_size: 1024,
  initializer_range: 0.02,
  intermediate_size: 3072,
  max_position_embeddings: 40960,
  max_window_layers: 28,
  model_type: 'qwen3',
  num_attention_heads: 16,
  num_hidden_layers: 28,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  rope_theta: 1000000,
  sliding_window: null,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

const deepseekDense = {
  architectures: ['DeepseekV3ForCausalLM'],
  model_type: 'deepseek_v3',
  hidden_act: 'silu',
  hidden_size: 7168,
  intermediate_size: 18432,
  num_hidden_layers: 4,
  num_attention_heads: 128,
  num_key_value_heads: 128,
  kv_lora_rank: 512,
  q_lora_rank: 1536,
  qk_rope_head_dim: 64,
  qk_nope_head_dim: 128,
  v_head_dim: 128,
  first_k_dense_replace: 4,
  n_routed_experts: null,
  max_position_embeddings: 163840,
  rms_norm_eps: 1e-6,
  rope_theta: 10000,
  rope_scaling: { beta_fast: 32, beta_slow: 1, factor: 40, mscale: 1.0, mscale_all_dim: 1.0, original_max_position_embeddings: 4096, type: 'yarn' },
  tie_word_embeddings: false,
  vocab_size: 129280,
};

function fails(config: object, code: string, mention: string[]): GqaError {
  let err: unknown;
  try {
    parseModelSpec(config, '/models/x/config.json');
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(GqaError);
  const g = err as GqaError;
  expect({ code: g.code, exit: g.exitCode }).toEqual({ code, exit: 3 });
  expect(g.message).toContain('/models/x/config.json');
  for (const m of mention) expect(g.message).toContain(m);
  return g;
}

describe('Hub configs (rope_theta + rope_scaling)', () => {
  test('Llama-3.1-8B: GQA 32/8, head_dim 128 from hidden/heads, llama3 scaling', () => {
    const s = parseModelSpec(llama31_8b);
    expect(s).toMatchObject({
      modelType: 'llama',
      numLayers: 32,
      hiddenSize: 4096,
      numHeads: 32,
      numKvHeads: 8,
      headDim: 128,
      intermediateSize: 14336,
      vocabSize: 128256,
      rmsNormEps: 1e-5,
      tieWordEmbeddings: false,
      attentionBias: false,
      oBias: false,
      maxPositionEmbeddings: 131072,
    });
    expect(s.rope).toEqual({ type: 'llama3', theta: 500000, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192, partialRotaryFactor: 1 });
    expect(s.mla).toBeUndefined();
    expect(s.raw).toBe(llama31_8b);
  });

  test('Llama-3.2-1B: tied, head_dim 64 explicit, factor 32', () => {
    const s = parseModelSpec(llama32_1b);
    expect(s).toMatchObject({ numLayers: 16, hiddenSize: 2048, numHeads: 32, numKvHeads: 8, headDim: 64, tieWordEmbeddings: true });
    expect(s.rope).toMatchObject({ type: 'llama3', theta: 500000, factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
  });

  test('Qwen2.5-7B: q/k/v bias without o bias, 28/4 heads, theta 1e6', () => {
    const s = parseModelSpec(qwen25_7b);
    expect(s).toMatchObject({ modelType: 'qwen2', numLayers: 28, numHeads: 28, numKvHeads: 4, headDim: 128, attentionBias: true, oBias: false, tieWordEmbeddings: false });
    expect(s.rope).toEqual({ type: 'default', theta: 1e6, factor: 1, partialRotaryFactor: 1 });
  });

  test('Mistral-7B-v0.3: 32/8, theta 1e6, no biases', () => {
    const s = parseModelSpec(mistral7b_v03);
    expect(s).toMatchObject({ modelType: 'mistral', numHeads: 32, numKvHeads: 8, headDim: 128, vocabSize: 32768, attentionBias: false, oBias: false, maxPositionEmbeddings: 32768 });
    expect(s.rope).toMatchObject({ type: 'default', theta: 1e6 });
  });

  test('Llama-2-7B: MHA 32/32, default theta 10000 when rope_theta is absent', () => {
    const s = parseModelSpec(llama2_7b);
    expect(s).toMatchObject({ numHeads: 32, numKvHeads: 32, headDim: 128, intermediateSize: 11008, maxPositionEmbeddings: 4096 });
    expect(s.rope).toEqual({ type: 'default', theta: 10000, factor: 1, partialRotaryFactor: 1 });
    const { num_key_value_heads: _drop, ...noKv } = llama2_7b;
    expect(parseModelSpec(noKv).numKvHeads).toBe(32); // absent: MHA
  });

  test('SmolLM-135M: 9/3 heads, head_dim 64, tied', () => {
    const s = parseModelSpec(smollm_135m);
    expect(s).toMatchObject({ numLayers: 30, hiddenSize: 576, numHeads: 9, numKvHeads: 3, headDim: 64, tieWordEmbeddings: true, vocabSize: 49152 });
  });

  test('llama attention_bias covers q/k/v and o_proj; mistral and absent tie default to false', () => {
    expect(parseModelSpec({ ...smollm_135m, attention_bias: true })).toMatchObject({ attentionBias: true, oBias: true });
    const { tie_word_embeddings: _t, ...noTie } = qwen25_7b;
    expect(parseModelSpec(noTie).tieWordEmbeddings).toBe(false);
    const { tie_word_embeddings: _m, ...mNoTie } = mistral7b_v03;
    expect(parseModelSpec(mNoTie).tieWordEmbeddings).toBe(false);
  });

  test('Qwen3-0.6B: per-head q/k norms, explicit head_dim 128 (16 x 128 != hidden 1024), no biases, tied', () => {
    const s = parseModelSpec(qwen3_06b);
    expect(s).toMatchObject({ modelType: 'qwen3', qkNorm: true, numHeads: 16, numKvHeads: 8, headDim: 128, hiddenSize: 1024, attentionBias: false, oBias: false, tieWordEmbeddings: true, maxPositionEmbeddings: 40960 });
    expect(s.rope).toEqual({ type: 'default', theta: 1e6, factor: 1, partialRotaryFactor: 1 });
    expect(parseModelSpec(llama2_7b).qkNorm).toBeUndefined();
  });

  test("qwen3 defaults follow Qwen3Config: head_dim 128 when absent, attention_bias covers q/k/v and o_proj, 32768 positions", () => {
    const { head_dim: _h, max_position_embeddings: _m, ...bare } = qwen3_06b;
    expect(parseModelSpec({ ...bare, hidden_size: 512 })).toMatchObject({ headDim: 128, maxPositionEmbeddings: 32768 });
    expect(parseModelSpec({ ...qwen3_06b, attention_bias: true })).toMatchObject({ attentionBias: true, oBias: true });
    fails({ ...qwen3_06b, attention_bias: 'no' }, 'ERR_BAD_CONFIG', ['attention_bias']);
  });

  test('legacy "type" key, linear / dynamic / yarn scaling', () => {
    expect(parseModelSpec({ ...llama2_7b, rope_scaling: { type: 'linear', factor: 4 } }).rope).toEqual({ type: 'linear', theta: 10000, factor: 4, partialRotaryFactor: 1 });
    expect(parseModelSpec({ ...llama2_7b, rope_scaling: { type: 'dynamic', factor: 2 } }).rope).toMatchObject({ type: 'dynamic', factor: 2 });
    expect(parseModelSpec({ ...qwen25_7b, rope_scaling: { type: 'yarn', factor: 4, original_max_position_embeddings: 32768 } }).rope).toEqual({
      type: 'yarn',
      theta: 1e6,
      factor: 4,
      originalMaxPositionEmbeddings: 32768,
      betaFast: 32,
      betaSlow: 1,
      partialRotaryFactor: 1,
    });
  });
});

describe('transformers-5 rope_parameters', () => {
  test.each([
    ['tiny-llama-gqa', { modelType: 'llama', numLayers: 4, hiddenSize: 256, numHeads: 4, numKvHeads: 2, headDim: 64, attentionBias: false, tieWordEmbeddings: true }, 10000],
    ['tiny-qwen2-gqa', { modelType: 'qwen2', numLayers: 4, hiddenSize: 256, numHeads: 2, numKvHeads: 1, headDim: 128, attentionBias: true, oBias: false, tieWordEmbeddings: true }, 1e6],
  ])('fixture %s', async (name, want, theta) => {
    const s = await loadModelSpec(`test/fixtures/${name}`);
    expect(s).toMatchObject({ ...want, intermediateSize: 768, vocabSize: 4096, rmsNormEps: 1e-6, maxPositionEmbeddings: 2048 });
    expect(s.rope).toEqual({ type: 'default', theta, factor: 1, partialRotaryFactor: 1 });
  });

  test('Llama-3.1-8B in rope_parameters form reads the same as the legacy form', () => {
    const { rope_scaling, rope_theta, ...rest } = llama31_8b;
    const v5 = { ...rest, rope_parameters: { ...rope_scaling, rope_theta } };
    expect(parseModelSpec(v5).rope).toEqual(parseModelSpec(llama31_8b).rope);
  });
});

describe('deepseek_v3 (converted checkpoints)', () => {
  test('MLA settings, defaults and yarn rope', () => {
    const s = parseModelSpec(deepseekDense);
    expect(s).toMatchObject({ modelType: 'deepseek_v3', numHeads: 128, numKvHeads: 128, headDim: 128, attentionBias: false, oBias: false });
    expect(s.mla).toEqual({ qLoraRank: 1536, kvLoraRank: 512, qkRopeHeadDim: 64, qkNopeHeadDim: 128, vHeadDim: 128, ropeInterleave: true, qkLatentLayernorm: true, qBias: false });
    expect(s.rope).toEqual({
      type: 'yarn',
      theta: 10000,
      factor: 40,
      originalMaxPositionEmbeddings: 4096,
      betaFast: 32,
      betaSlow: 1,
      mscale: 1,
      mscaleAllDim: 1,
      partialRotaryFactor: 1,
    });
  });

  test('gqa2mla export keys: q_lora_rank null, rope_interleave false, no latent norm, q bias, attention_bias', () => {
    const s = parseModelSpec({
      ...deepseekDense,
      q_lora_rank: null,
      rope_interleave: false,
      qk_latent_layernorm: false,
      gqa2mla_q_bias: true,
      attention_bias: true,
      qk_nope_head_dim: 64,
      qk_rope_head_dim: 32,
      head_dim: 32,
    });
    expect(s.mla).toEqual({ qLoraRank: null, kvLoraRank: 512, qkRopeHeadDim: 32, qkNopeHeadDim: 64, vHeadDim: 128, ropeInterleave: false, qkLatentLayernorm: false, qBias: true });
    expect(s).toMatchObject({ headDim: 64, attentionBias: true, oBias: true });
  });

  test('mixture-of-experts layers are read (routed experts); shared experts are refused', () => {
    const moe = { ...deepseekDense, num_hidden_layers: 61, first_k_dense_replace: 3, n_routed_experts: 256, num_experts_per_tok: 8, moe_intermediate_size: 2048 };
    fails({ ...moe, n_shared_experts: 1 }, 'ERR_UNSUPPORTED_MODEL', ['n_shared_experts 1', 'shared experts are not supported']);
    expect(parseModelSpec({ ...moe, n_shared_experts: 0 }).moe).toMatchObject({ numExperts: 256, topK: 8, expertIntermediateSize: 2048, firstDense: 3, layerFreq: 1 });
  });

  test("absent n_routed_experts / first_k_dense_replace take transformers' defaults (256 experts after 3 dense layers)", () => {
    const { n_routed_experts: _e, first_k_dense_replace: _f, ...bare } = deepseekDense;
    // layer 3 of 4 is MoE, with DeepseekV3Config's default of one shared expert
    fails(bare, 'ERR_UNSUPPORTED_MODEL', ['n_shared_experts 1']);
    expect(parseModelSpec({ ...bare, n_shared_experts: 0, num_experts_per_tok: 8, moe_intermediate_size: 2048 }).moe).toMatchObject({ numExperts: 256, firstDense: 3 });
    expect(parseModelSpec({ ...bare, num_hidden_layers: 3 }).numLayers).toBe(3); // all 3 layers dense by default
    expect(parseModelSpec({ ...bare, first_k_dense_replace: 4 }).mla?.kvLoraRank).toBe(512);
    expect(parseModelSpec({ ...bare, n_routed_experts: null }).numLayers).toBe(4);
    expect(parseModelSpec({ ...bare, n_routed_experts: 0, first_k_dense_replace: 0 }).numLayers).toBe(4);
    fails({ ...bare, n_routed_experts: 'many' }, 'ERR_BAD_CONFIG', ['n_routed_experts']);
    fails({ ...bare, first_k_dense_replace: '4' }, 'ERR_BAD_CONFIG', ['first_k_dense_replace']);
  });
});

describe('errors', () => {
  test('unsupported model type lists the supported ones', () => {
    fails({ ...llama2_7b, model_type: 'gpt2' }, 'ERR_UNSUPPORTED_MODEL', ['"gpt2"', 'llama, qwen2, qwen3, qwen3_moe, mistral, mixtral, deepseek_v3']);
    fails({ ...llama2_7b, model_type: undefined }, 'ERR_UNSUPPORTED_MODEL', ['model_type']);
    fails({ ...llama2_7b, hidden_act: 'gelu' }, 'ERR_UNSUPPORTED_MODEL', ['hidden_act', 'gelu']);
  });

  test.each(['gemma2', 'gemma3', 'gemma3_text'])('%s is refused (exit 3) naming what stock DeepSeek-V3 cannot express', (mt) => {
    const gemma = { ...llama2_7b, model_type: mt, hidden_act: 'gelu_pytorch_tanh', final_logit_softcapping: 30, query_pre_attn_scalar: 256 };
    fails(gemma, 'ERR_UNSUPPORTED_MODEL', [JSON.stringify(mt), 'sandwich norms', 'logit soft-capping', 'GeGLU', 'scaled embeddings']);
  });

  test('unsupported rope type lists the supported ones', () => {
    fails({ ...llama2_7b, rope_scaling: { type: 'longrope', factor: 4 } }, 'ERR_UNSUPPORTED_ROPE', ['longrope', 'default, linear, llama3, dynamic, yarn']);
    fails({ ...llama2_7b, rope_parameters: { rope_type: 'mrope', rope_theta: 1e4 } }, 'ERR_UNSUPPORTED_ROPE', ['mrope']);
  });

  test('missing or invalid fields name the field and the file', () => {
    const { hidden_size: _h, ...noHidden } = llama2_7b;
    fails(noHidden, 'ERR_BAD_CONFIG', ['hidden_size', 'missing']);
    fails({ ...llama2_7b, num_hidden_layers: 0 }, 'ERR_BAD_CONFIG', ['num_hidden_layers']);
    fails({ ...llama2_7b, num_attention_heads: '32' }, 'ERR_BAD_CONFIG', ['num_attention_heads']);
    fails({ ...llama31_8b, num_key_value_heads: 5 }, 'ERR_BAD_CONFIG', ['num_key_value_heads', 'divide']);
    fails({ ...smollm_135m, num_attention_heads: 7, num_key_value_heads: 7 }, 'ERR_BAD_CONFIG', ['hidden_size', 'divisible']);
    fails({ ...llama2_7b, rms_norm_eps: -1 }, 'ERR_BAD_CONFIG', ['rms_norm_eps']);
    fails({ ...llama2_7b, rope_theta: 'big' }, 'ERR_BAD_CONFIG', ['rope_theta']);
    fails({ ...llama2_7b, tie_word_embeddings: 'yes' }, 'ERR_BAD_CONFIG', ['tie_word_embeddings']);
    fails({ ...llama31_8b, rope_scaling: { ...llama31_8b.rope_scaling, low_freq_factor: undefined } }, 'ERR_BAD_CONFIG', ['rope_scaling.low_freq_factor', 'llama3']);
    fails({ ...llama2_7b, rope_scaling: { type: 'linear' } }, 'ERR_BAD_CONFIG', ['rope_scaling.factor']);
    fails({ ...llama2_7b, rope_scaling: 'linear' }, 'ERR_BAD_CONFIG', ['rope_scaling']);
    const { kv_lora_rank: _k, ...noKvRank } = deepseekDense;
    fails(noKvRank, 'ERR_BAD_CONFIG', ['kv_lora_rank']);
    fails({ ...deepseekDense, q_lora_rank: 0 }, 'ERR_BAD_CONFIG', ['q_lora_rank']);
  });

  test('loadModelSpec: missing directory and invalid JSON name the file', async () => {
    const tmp = mkdtempSync(join(tmpdir(), 'g2m-spec-'));
    try {
      await expect(loadModelSpec(join(tmp, 'nope'))).rejects.toMatchObject({ code: 'ERR_FILE_MISSING', message: expect.stringContaining(join(tmp, 'nope', 'config.json')) });
      mkdirSync(join(tmp, 'm'));
      writeFileSync(join(tmp, 'm', 'config.json'), '{"model_type": "llama",');
      await expect(loadModelSpec(join(tmp, 'm'))).rejects.toMatchObject({ code: 'ERR_BAD_CONFIG', message: expect.stringContaining(join(tmp, 'm', 'config.json')) });
      writeFileSync(join(tmp, 'm', 'config.json'), JSON.stringify({ ...llama2_7b, vocab_size: null }));
      await expect(loadModelSpec(join(tmp, 'm'))).rejects.toMatchObject({ code: 'ERR_BAD_CONFIG', message: expect.stringMatching(/config\.json: vocab_size is missing/) });
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
