/**
 * plan(): KV-cache arithmetic, defaults, limits (checked against the converter's own
 * option validation and freqfold candidates), invalid combinations listed, errors.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveOptions } from '../src/convert/options.js';
import { freqfoldCandidates } from '../src/convert/rorope.js';
import { GqaError } from '../src/errors.js';
import { loadModelSpec } from '../src/model/spec.js';
import { allowedFreqfolds, defaultQkRopeDims, plan, planForSpec, validQkRopeDims } from '../src/plan.js';

const LLAMA = 'test/fixtures/tiny-llama-gqa';
const QWEN = 'test/fixtures/tiny-qwen2-gqa';
const GIB = 2 ** 30;

/** Llama-3-8B's config.json (public), as shipped on the Hub. */
const LLAMA3_8B = {
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 128000,
  eos_token_id: 128001,
  hidden_act: 'silu',
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 14336,
  max_position_embeddings: 8192,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: null,
  rope_theta: 500000.0,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  vocab_size: 128256,
};

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'gqa2mla-plan-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function modelDir(name: string, config: Record<string, unknown>): Promise<string> {
  const dir = join(tmp, name);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'config.json'), JSON.stringify(config));
  return dir;
}

async function expectError(p: Promise<unknown>, code: string, exitCode: number, mention?: string): Promise<void> {
  const e = await p.then(
    () => null,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(GqaError);
  expect((e as GqaError).code).toBe(code);
  expect((e as GqaError).exitCode).toBe(exitCode);
  if (mention) expect((e as GqaError).message).toContain(mention);
}

test('tiny-llama-gqa defaults: 2 KV heads x 64 -> 256 values/token/layer; ranks capped to 2L - rope', async () => {
  const p = await plan({ modelDir: LLAMA });
  expect(p.model).toMatchObject({ dir: LLAMA, modelType: 'llama', numLayers: 4, numHeads: 4, numKvHeads: 2, headDim: 64 });
  expect(p.original.valuesPerTokenPerLayer).toBe(256);
  expect(p.original.valuesPerToken).toBe(1024);
  expect(p.original.bytesPerToken).toBe(2048);
  expect(p.original.gibPerSequence).toBe((1024 * 2 * 32768) / GIB);
  expect(p.contextTokens).toBe(32768);
  expect(p.bytesPerValue).toBe(2);
  expect(p.limits).toEqual({ latentDim: 128, validQkRopeDims: [2, 4, 8, 16, 32, 64], maxKvLoraRankPlusRope: 256 });
  expect(p.warnings).toEqual([]);
  expect(p.budgets.map((b) => [b.qkRopeDim, b.kvLoraRank])).toEqual([
    [32, 64],
    [32, 128],
    [32, 224],
    [64, 64],
    [64, 128],
    [64, 192],
  ]);
  for (const b of p.budgets) {
    expect(b.valid).toBe(true);
    expect(b.reasons).toEqual([]);
    expect(b.valuesPerTokenPerLayer).toBe(b.kvLoraRank + b.qkRopeDim);
    expect(b.valuesPerToken).toBe(4 * (b.kvLoraRank + b.qkRopeDim));
    expect(b.bytesPerToken).toBe(2 * b.valuesPerToken);
    expect(b.gibPerSequence).toBe((b.valuesPerToken * 2 * 32768) / GIB);
    expect(b.compressionRatio).toBeCloseTo(256 / (b.kvLoraRank + b.qkRopeDim), 14);
    expect(b.savedFraction).toBeCloseTo(1 - (b.kvLoraRank + b.qkRopeDim) / 256, 14);
    expect(b.maxKvLoraRank).toBe(256 - b.qkRopeDim);
    expect(b.collapse).toBe(64 / b.qkRopeDim);
    expect(b.freqfolds).toEqual(freqfoldCandidates(64, b.qkRopeDim));
  }
  // the fixture budgets of the fidelity table: rope 32 + rank 96 -> 128 values (2x), rank 32 -> 64 (4x)
  const q = await plan({ modelDir: LLAMA, qkRopeDims: [32], kvLoraRanks: [96, 32] });
  expect(q.budgets.map((b) => [b.valuesPerTokenPerLayer, b.compressionRatio])).toEqual([
    [128, 2],
    [64, 4],
  ]);
});

test('invalid combinations are listed with their reason, not thrown; validity matches the converter', async () => {
  const spec = await loadModelSpec(LLAMA);
  const p = planForSpec(spec, { qkRopeDims: [32, 48, 7, 64, 128], kvLoraRanks: [16, 192, 224, 300] }, LLAMA);
  expect(p.budgets).toHaveLength(20);
  const find = (rope: number, rank: number) => p.budgets.find((b) => b.qkRopeDim === rope && b.kvLoraRank === rank)!;
  expect(find(32, 224).valid).toBe(true);
  expect(find(32, 300).reasons).toEqual(['kvLoraRank 300 exceeds the maximum 2 x kv_heads x head_dim - qkRopeDim = 224']);
  expect(find(64, 224).valid).toBe(false);
  expect(find(64, 192).valid).toBe(true);
  expect(find(48, 16).reasons).toEqual(['qkRopeDim 48 must divide head_dim 64']);
  expect(find(48, 16).freqfolds).toEqual([]);
  expect(find(48, 16).collapse).toBeNull();
  expect(find(7, 16).reasons).toEqual(['qkRopeDim 7 must be even', 'qkRopeDim 7 must divide head_dim 64']);
  expect(find(128, 16).reasons).toContain('qkRopeDim 128 must divide head_dim 64');
  for (const b of p.budgets) {
    let accepted = true;
    try {
      resolveOptions(spec, { modelDir: LLAMA, outDir: '/nonexistent', qkRopeDim: b.qkRopeDim, kvLoraRank: b.kvLoraRank });
    } catch (e) {
      expect((e as GqaError).code).toBe('ERR_BAD_OPTION');
      accepted = false;
    }
    expect([b.qkRopeDim, b.kvLoraRank, b.valid]).toEqual([b.qkRopeDim, b.kvLoraRank, accepted]);
  }
});

test('tiny-qwen2-gqa: 1 KV head x 128', async () => {
  const p = await plan({ modelDir: QWEN, kvLoraRanks: [64, 32, 128, 192], qkRopeDims: [64, 128] });
  expect(p.original.valuesPerTokenPerLayer).toBe(256);
  const valid = p.budgets.filter((b) => b.valid).map((b) => [b.qkRopeDim, b.kvLoraRank, b.valuesPerTokenPerLayer]);
  expect(valid).toEqual([
    [64, 64, 128],
    [64, 32, 96],
    [64, 128, 192],
    [64, 192, 256],
    [128, 64, 192],
    [128, 32, 160],
    [128, 128, 256],
  ]);
  expect(p.budgets.find((b) => b.qkRopeDim === 128 && b.kvLoraRank === 192)!.reasons[0]).toContain('maximum');
  expect(p.budgets.find((b) => b.qkRopeDim === 128)!.freqfolds).toEqual(freqfoldCandidates(128, 128));
});

test('Llama-3-8B config: 128 KiB/token, 4 GiB per 32K sequence; rank 512 + rope 64 -> 3.56x', async () => {
  const dir = await modelDir('llama3-8b', LLAMA3_8B);
  const p = await plan({ modelDir: dir });
  expect(p.model).toMatchObject({ numLayers: 32, numHeads: 32, numKvHeads: 8, headDim: 128, hiddenSize: 4096 });
  expect(p.original.valuesPerTokenPerLayer).toBe(2048);
  expect(p.original.bytesPerToken).toBe(128 * 1024);
  expect(p.original.gibPerSequence).toBe(4);
  expect(p.budgets.map((b) => [b.qkRopeDim, b.kvLoraRank])).toEqual([
    [32, 64],
    [32, 128],
    [32, 256],
    [32, 512],
    [64, 64],
    [64, 128],
    [64, 256],
    [64, 512],
  ]);
  const b = p.budgets.find((x) => x.qkRopeDim === 64 && x.kvLoraRank === 512)!;
  expect(b.valuesPerTokenPerLayer).toBe(576);
  expect(b.bytesPerToken).toBe(576 * 32 * 2);
  expect(b.gibPerSequence).toBe(1.125);
  expect(b.compressionRatio).toBeCloseTo(2048 / 576, 14);
  expect(b.freqfolds).toEqual([2, 4, 8, 16, 32, 64]);
  expect(b.maxKvLoraRank).toBe(2048 - 64);
  // 128K context: 16 GiB before
  const long = await plan({ modelDir: dir, contextTokens: 131072, qkRopeDims: [64], kvLoraRanks: [512] });
  expect(long.original.gibPerSequence).toBe(16);
  expect(long.budgets[0].gibPerSequence).toBe(4.5);
});

test('defaults for other head sizes: RoPE dims capped and filtered to valid ones', () => {
  expect(validQkRopeDims(80)).toEqual([2, 4, 8, 10, 16, 20, 40, 80]);
  expect(defaultQkRopeDims(128)).toEqual([32, 64]);
  expect(defaultQkRopeDims(64)).toEqual([32, 64]);
  expect(defaultQkRopeDims(32)).toEqual([32]);
  expect(defaultQkRopeDims(80)).toEqual([40]);
  expect(defaultQkRopeDims(96)).toEqual([32]);
  for (const [d, r] of [
    [64, 32],
    [64, 64],
    [128, 32],
    [128, 64],
    [128, 128],
    [96, 32],
    [80, 40],
  ])
    expect(allowedFreqfolds(d, r)).toEqual(freqfoldCandidates(d, r));
  expect(allowedFreqfolds(64, 48)).toEqual([]);
});

test('errors: missing model (3), already MLA (3), bad option lists (2)', async () => {
  await expectError(plan({ modelDir: join(tmp, 'nope') }), 'ERR_FILE_MISSING', 3, 'config.json');
  const mla = await modelDir('mla', {
    ...LLAMA3_8B,
    model_type: 'deepseek_v3',
    architectures: ['DeepseekV3ForCausalLM'],
    num_key_value_heads: 32,
    kv_lora_rank: 512,
    q_lora_rank: null,
    qk_rope_head_dim: 64,
    qk_nope_head_dim: 128,
    v_head_dim: 128,
    first_k_dense_replace: 32,
    n_routed_experts: null,
  });
  await expectError(plan({ modelDir: mla }), 'ERR_ALREADY_MLA', 3, mla);
  await expectError(plan({ modelDir: LLAMA, kvLoraRanks: [64, 0] }), 'ERR_BAD_OPTION', 2, 'kvLoraRanks');
  await expectError(plan({ modelDir: LLAMA, qkRopeDims: [] }), 'ERR_BAD_OPTION', 2, 'qkRopeDims');
  await expectError(plan({ modelDir: LLAMA, qkRopeDims: [32.5] }), 'ERR_BAD_OPTION', 2, 'qkRopeDims');
  await expectError(plan({ modelDir: LLAMA, contextTokens: -1 }), 'ERR_BAD_OPTION', 2, 'contextTokens');
});

test('named options: a positional call, a missing modelDir or wrong types are usage GqaErrors naming the option, not TypeErrors', async () => {
  const untyped = plan as unknown as (...a: unknown[]) => Promise<unknown>;
  await expectError(untyped(LLAMA), 'ERR_BAD_OPTION', 2, 'plan({ modelDir');
  await expectError(untyped(), 'ERR_BAD_OPTION', 2, 'plan({ modelDir');
  await expectError(untyped({ kvLoraRanks: [64] }), 'ERR_BAD_OPTION', 2, 'modelDir');
  await expectError(untyped({ modelDir: LLAMA, kvLoraRanks: 64 }), 'ERR_BAD_OPTION', 2, 'kvLoraRanks');
  await expectError(untyped({ modelDir: LLAMA, contextTokens: '4096' }), 'ERR_BAD_OPTION', 2, 'contextTokens');
});
