/**
 * `gqa2mla check`: verdicts per engine on real converted directories (portable, transformers
 * target, a TransMLA-style config, MoE fields), the CLI's usage errors and --json shape.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convert } from '../src/convert/convert.js';
import { checkDirectory, mlaBackends } from '../src/check.js';
import { plan, planForSpec } from '../src/plan.js';
import { parseModelSpec } from '../src/model/spec.js';
import { expectOneLineError, runCli } from './helpers/run-cli.js';

const FIX = join(new URL('.', import.meta.url).pathname, 'fixtures');
const CALIB = readFileSync(join(FIX, 'pydocs-train-3M.txt'), 'utf8').slice(0, 400_000);
// context = calibSeqlen (the short held-out windows): the verdicts read the output's config and
// tensors, not the held-out window length; the serving-context default's long windows only add CPU time.
const small = { calibText: CALIB, calibSamples: 16, calibSeqlen: 128, heldOutSamples: 4, context: 128, method: 'transmla' as const, overwrite: true, qkRopeDim: 32, kvLoraRank: 64 };
let tmp: string;
let portable: string;
let hf: string;

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'gqa2mla-check-'));
  portable = join(tmp, 'portable');
  hf = join(tmp, 'transformers');
  await convert({ ...small, modelDir: join(FIX, 'tiny-llama-gqa'), outDir: portable });
  await convert({ ...small, modelDir: join(FIX, 'tiny-llama-gqa'), outDir: hf, target: 'transformers' });
}, 300_000);
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A copy of `src` with config.json changed by `edit`. */
function variant(src: string, name: string, edit: (c: Record<string, unknown>) => void): string {
  const dst = join(tmp, name);
  mkdirSync(dst, { recursive: true });
  for (const f of readdirSync(src)) if (f !== 'config.json') copyFileSync(join(src, f), join(dst, f));
  const c = JSON.parse(readFileSync(join(src, 'config.json'), 'utf8')) as Record<string, unknown>;
  edit(c);
  writeFileSync(join(dst, 'config.json'), JSON.stringify(c, null, 2));
  return dst;
}

const codes = (r: Awaited<ReturnType<typeof checkDirectory>>, e: string) => r.engines.find((v) => v.engine === e)!.problems.map((p) => p.code).sort();

test('portable output: every engine loads it and computes what gqa2mla computes', async () => {
  const r = await checkDirectory(portable);
  expect(r.ok).toBe(true);
  for (const v of r.engines) {
    expect(v).toMatchObject({ loads: true, computesSame: true, problems: [] });
    expect(v.rope).toEqual({ freq: 0, cosSin: 0, softmax: 0 });
  }
  expect(r.budget).toEqual({ kvLoraRank: 64, qkRopeDim: 32, cacheHeadSize: 96 });
});

test('transformers target: transformers is fine; vLLM and SGLang name the half-split rope, the missing lm_head and the dtype name', async () => {
  const r = await checkDirectory(hf);
  expect(r.ok).toBe(false);
  expect(codes(r, 'transformers')).toEqual([]);
  expect(codes(r, 'vllm')).toEqual(['dtype-name', 'lm-head-missing', 'rope-layout']);
  expect(codes(r, 'sglang')).toEqual(['dtype-name', 'lm-head-missing', 'rope-layout', 'rope-theta-legacy-missing']);
  expect(r.engines.find((v) => v.engine === 'vllm')!.loads).toBe(false);
});

test('TransMLA-style directory: each problem named per engine', async () => {
  const dir = variant(hf, 'transmla-style', (c) => {
    Object.assign(c, { rope_interleave: false, qk_latent_layernorm: false, tie_word_embeddings: true, dtype: 'bfloat16', rope_theta: 10000.0 });
  });
  const r = await checkDirectory(dir);
  expect(codes(r, 'vllm')).toEqual(['latent-norm', 'lm-head-missing', 'rope-layout']);
  expect(codes(r, 'sglang')).toEqual(['latent-norm', 'lm-head-missing', 'rope-layout']);
  expect(codes(r, 'transformers')).toEqual(['latent-norm']);
});

test('MoE fields: null experts and layers at or after first_k_dense_replace are named', async () => {
  const nul = await checkDirectory(variant(portable, 'moe-null', (c) => Object.assign(c, { n_routed_experts: null })));
  for (const e of ['vllm', 'sglang', 'transformers']) expect(codes(nul, e)).toEqual(['moe-null']);
  const moe = await checkDirectory(variant(portable, 'moe-layers', (c) => Object.assign(c, { first_k_dense_replace: 1, moe_layer_freq: 2 })));
  const p = moe.engines.find((v) => v.engine === 'vllm')!.problems;
  expect(p.map((x) => x.code)).toEqual(['moe-layers']);
  expect(p[0].message).toContain('layers 2');
});

test('a scaled rope left as llama3 is rewritten to deepseek_yarn by vLLM (and named)', async () => {
  const dir = variant(portable, 'llama3-rope', (c) => {
    const p = { rope_type: 'llama3', rope_theta: 10000.0, factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 256 };
    Object.assign(c, { rope_parameters: p, rope_scaling: p });
  });
  const r = await checkDirectory(dir);
  expect(codes(r, 'vllm')).toEqual(['rope-frequencies', 'rope-rewritten']);
  expect(codes(r, 'transformers')).toEqual([]);
  expect(r.engines.find((v) => v.engine === 'vllm')!.rope!.cosSin).toBeGreaterThan(0.1); // mscale(8, 1) = 1.208 on cos/sin
});

test('MLA backends per budget (for plan)', () => {
  expect(mlaBackends('vllm', 512, 64)[0].accepts).toBe(true);
  expect(mlaBackends('vllm', 256, 64)[0].accepts).toBe(true);
  expect(mlaBackends('vllm', 448, 64)[0].accepts).toBe(false);
  expect(mlaBackends('transformers', 7, 2)[0].accepts).toBe(true);
});

test('plan shows per budget whether vLLM\'s fast MLA backends take it', async () => {
  const p = await plan({ modelDir: join(FIX, 'tiny-llama-gqa'), kvLoraRanks: [96, 224], qkRopeDims: [32] });
  expect(p.budgets.map((b) => [b.kvLoraRank + b.qkRopeDim, b.fastMla.vllm])).toEqual([[128, false], [256, false]]);
  const llama8b = parseModelSpec({ model_type: 'llama', hidden_size: 4096, num_attention_heads: 32, num_key_value_heads: 8, num_hidden_layers: 32, intermediate_size: 14336, vocab_size: 128256 });
  const q = planForSpec(llama8b, { kvLoraRanks: [256, 448, 512], qkRopeDims: [64] });
  expect(q.budgets.map((b) => b.fastMla.vllm)).toEqual([true, false, true]); // 320, 512, 576
});

test('cli: usage error for an unknown engine, --json shape', async () => {
  const bad = await runCli('check', portable, '--engine', 'tgi');
  expect(bad.code).toBe(2);
  expectOneLineError(bad, '--engine must be one of vllm, sglang, transformers or all');
  const missing = await runCli('check');
  expect(missing.code).toBe(2);
  const r = await runCli('check', hf, '--engine', 'vllm', '--json');
  expect(r.code).toBe(0);
  const j = JSON.parse(r.out);
  expect(Object.keys(j).sort()).toEqual(['budget', 'dir', 'engines', 'ok']);
  expect(j.engines).toHaveLength(1);
  expect(Object.keys(j.engines[0]).sort()).toEqual(['backends', 'computesSame', 'engine', 'loads', 'problems', 'rope', 'routing']);
  expect(j.engines[0].routing).toBeNull(); // a dense directory
  expect(j.engines[0].problems[0]).toEqual(expect.objectContaining({ code: expect.any(String), effect: expect.stringMatching(/^(load|compute)$/), message: expect.any(String) }));
  const text = await runCli('check', portable);
  expect(text.code).toBe(0);
  expect(text.out).toContain('vllm: loads yes; computes what gqa2mla computes: yes');
});
