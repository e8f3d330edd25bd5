/**
 * --kv-budget: the tool's RoPE / latent split of a total (src/convert/budget-split.ts) on the
 * development zoo's shapes (the splits bench/results/fidelity-splits-cpu.json measured best),
 * its limits, its exclusivity with --qk-rope-dim / --kv-lora-rank, and the report field.
 */
import { splitKvBudget } from '../src/convert/budget-split.js';
import { resolveOptions } from '../src/convert/options.js';
import { GqaError } from '../src/errors.js';
import { loadModelSpec } from '../src/model/spec.js';
import { runCli } from './helpers/run-cli.js';

const LLAMA = 'test/fixtures/tiny-llama-gqa';

describe('splitKvBudget', () => {
  test.each([
    // [head_dim, kv heads, budget, rope, latent]: the zoo's half and quarter budgets
    [64, 6, 192, 64, 128], // zoo-llama2-mha half (measured 64+128 best of 16/32/64)
    [64, 6, 96, 64, 32], // zoo-llama2-mha quarter (64+32 best)
    [64, 2, 128, 64, 64], // zoo-qwen3 half (64+64 best of 16/32/64)
    [64, 2, 64, 32, 32], // zoo-qwen3 quarter (32+32 best of 16/32)
    [32, 2, 64, 32, 32], // zoo-mixtral half (32+32 best of 16/32)
    [128, 1, 128, 64, 64], // zoo-llama31 half (64+64 best of 16/32/64)
    [128, 1, 64, 32, 32], // zoo-llama31 quarter
    [64, 1, 32, 16, 16], // a quarter budget of 32: the latent keeps half
    [128, 8, 576, 128, 448], // Llama-3-8B at 576 values: every RoPE frequency kept
  ])('head_dim %i, %i KV heads, budget %i -> %i + %i', (headDim, numKvHeads, budget, rope, latent) => {
    expect(splitKvBudget({ headDim, numKvHeads, budget })).toEqual({ qkRopeDim: rope, kvLoraRank: latent });
  });

  test('impossible budgets name the limit', () => {
    expect(() => splitKvBudget({ headDim: 64, numKvHeads: 2, budget: 257 })).toThrow(/exceeds the source's 2 x kv_heads x head_dim = 256/);
    expect(() => splitKvBudget({ headDim: 64, numKvHeads: 2, budget: 2 })).toThrow(/at least 3/);
    expect(() => splitKvBudget({ headDim: 64, numKvHeads: 2, budget: 10.5 })).toThrow(GqaError);
  });
});

describe('kvBudget option', () => {
  test('resolves the split and records the budget; exclusive with the two dims', async () => {
    const spec = await loadModelSpec(LLAMA);
    const r = resolveOptions(spec, { modelDir: LLAMA, outDir: '/nonexistent', kvBudget: 96 });
    expect([r.qkRopeDim, r.kvLoraRank, r.kvBudget]).toEqual([64, 32, 96]);
    expect(resolveOptions(spec, { modelDir: LLAMA, outDir: '/nonexistent' }).kvBudget).toBeNull();
    expect(() => resolveOptions(spec, { modelDir: LLAMA, outDir: '/nonexistent', kvBudget: 96, qkRopeDim: 32 })).toThrow(/either kvBudget or those two/);
  });

  test('the CLI refuses --kv-budget with --qk-rope-dim before any work', async () => {
    const r = await runCli('convert', LLAMA, '/nonexistent/out', '--calib', 'test/fixtures/pydocs-eval.txt', '--kv-budget', '96', '--qk-rope-dim', '32');
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--kv-budget chooses --qk-rope-dim and --kv-lora-rank/);
  });
});
