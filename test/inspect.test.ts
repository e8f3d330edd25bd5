/**
 * `gqa2mla inspect` on the fixtures, sharded synthetic checkpoints and a DeepSeek-V3 (MLA)
 * checkpoint; exit status 3 with one line naming the file for malformed checkpoints, 2 for
 * usage errors. A few runs go through a real child process (the CLI entry run from the
 * TypeScript sources through tsx, so the test never depends on a stale dist/) to check the
 * process's exit status and streams; the rest call main() in-process (faster).
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Checkpoint } from '../src/checkpoint/checkpoint.js';
import { CheckpointWriter } from '../src/checkpoint/safetensors-writer.js';
import { inspectModel } from '../src/cli/inspect.js';
import { layerPrefix, layerTensorSpecs } from '../src/engine/weights.js';
import { parseModelSpec } from '../src/model/spec.js';
import { runCli } from './helpers/run-cli.js';
import { normalGenerator, writeSyntheticModel } from './helpers/synthetic.js';

let tmp: string;
let entry: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'g2m-inspect-'));
  entry = join(tmp, 'cli.mjs');
  const main = pathToFileURL(resolve('src/cli/main.ts')).href;
  writeFileSync(entry, `import { main } from '${main}';\nmain(process.argv).then((c) => { process.exitCode = c; });\n`);
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Runs `gqa2mla <args>` in a child process and returns its status and output. */
function cli(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', entry, ...args], { encoding: 'utf8', timeout: 60000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs `gqa2mla <args>` in-process through main(). */
async function inproc(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  const r = await runCli(...args);
  return { status: r.code, stdout: r.out, stderr: r.err };
}

test('inspect --json on tiny-llama-gqa', () => {
  const r = cli('inspect', 'test/fixtures/tiny-llama-gqa', '--json');
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  const j = JSON.parse(r.stdout);
  for (const k of [
    'modelType',
    'numLayers',
    'hiddenSize',
    'numHeads',
    'numKvHeads',
    'headDim',
    'intermediateSize',
    'rope',
    'attentionBias',
    'tieWordEmbeddings',
    'numParams',
    'dtypes',
    'shards',
    'kvValuesPerTokenPerLayer',
  ])
    expect(j).toHaveProperty(k);
  expect(j).toMatchObject({
    modelType: 'llama',
    numLayers: 4,
    hiddenSize: 256,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 64,
    intermediateSize: 768,
    attentionBias: false,
    tieWordEmbeddings: true,
    kvValuesPerTokenPerLayer: 256,
    kvValuesPerToken: 1024,
    shards: ['model.safetensors'],
    numTensors: 38,
    unexpectedTensors: [],
  });
  expect(j.rope).toEqual({ type: 'default', theta: 10000, factor: 1, partialRotaryFactor: 1 });
  // parameters and bytes from the header, independently of the reader: 2 bytes per bf16 value
  const buf = readFileSync('test/fixtures/tiny-llama-gqa/model.safetensors');
  const header = JSON.parse(buf.subarray(8, 8 + Number(buf.readBigUInt64LE(0))).toString());
  delete header.__metadata__;
  const params = Object.values(header as Record<string, { shape: number[] }>).reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0);
  expect(j.numParams).toBe(params);
  expect(j.dtypes).toEqual({ BF16: { count: 38, bytes: 2 * params } });
  expect(j.totalBytes).toBe(2 * params);
});

test('inspect (table) on tiny-qwen2-gqa: aligned rows, biases shown', async () => {
  const r = await inproc('inspect', 'test/fixtures/tiny-qwen2-gqa');
  expect(r.status).toBe(0);
  const lines = r.stdout.split('\n');
  const block = lines.slice(0, lines.indexOf(''));
  expect(block.length).toBeGreaterThan(15);
  const col = block[0].search(/ {2}\S/) + 2;
  for (const l of block) {
    expect(l.slice(0, col).trimEnd().length).toBeLessThan(col - 1);
    expect(l[col]).not.toBe(' ');
  }
  expect(r.stdout).toMatch(/model type\s+qwen2/);
  expect(r.stdout).toMatch(/kv heads\s+1 \(GQA/);
  expect(r.stdout).toMatch(/qkv bias \/ o bias\s+true \/ false/);
  expect(r.stdout).toMatch(/kv cache \/ token \/ layer\s+256 values/);
  expect(r.stdout).toMatch(/BF16\s+50\s+8,397,312/);
});

test('sharded synthetic checkpoints: shards, dtypes and parameter count', async () => {
  const dir = join(tmp, 'synthetic-sharded');
  const w = await writeSyntheticModel(dir, {
    modelType: 'mistral',
    numLayers: 3,
    hiddenSize: 64,
    numHeads: 8,
    numKvHeads: 2,
    headDim: 8,
    intermediateSize: 160,
    vocabSize: 300,
    tie: false,
    bias: false,
    dtype: 'F16',
    seed: 5,
    maxShardBytes: 40_000,
    ropeScaling: { rope_type: 'linear', factor: 2 },
    tokenizerFrom: 'test/fixtures/tiny-llama-gqa',
  });
  expect(w.shards.length).toBeGreaterThan(2);
  const r = await inproc('inspect', dir, '--json');
  expect(r.status).toBe(0);
  const j = JSON.parse(r.stdout);
  expect(j).toMatchObject({ modelType: 'mistral', numKvHeads: 2, headDim: 8, tieWordEmbeddings: false, shards: w.shards, numParams: w.numParams, kvValuesPerTokenPerLayer: 32 });
  expect(j.rope).toMatchObject({ type: 'linear', factor: 2 });
  expect(j.dtypes).toEqual({ F16: { count: w.tensors.length, bytes: 2 * w.numParams } });
  expect(readFileSync(join(dir, 'tokenizer.json'))).toEqual(readFileSync('test/fixtures/tiny-llama-gqa/tokenizer.json'));
  // the synthetic weights have the advertised scale
  const ck = await Checkpoint.open(dir);
  const q = await ck.read('model.layers.1.self_attn.q_proj.weight');
  const norm = await ck.read('model.layers.1.input_layernorm.weight');
  await ck.close();
  const std = Math.sqrt(q.reduce((a, v) => a + v * v, 0) / q.length);
  const mean = norm.reduce((a, v) => a + v, 0) / norm.length;
  expect(Math.abs(std - 0.02) / 0.02).toBeLessThan(0.1);
  expect(Math.abs(mean - 1)).toBeLessThan(0.05);
});

test('a DeepSeek-V3 (MLA) checkpoint: kv values = kv_lora_rank + qk_rope_head_dim', async () => {
  const config = {
    model_type: 'deepseek_v3',
    hidden_act: 'silu',
    hidden_size: 64,
    intermediate_size: 96,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 4,
    kv_lora_rank: 24,
    q_lora_rank: null,
    qk_rope_head_dim: 8,
    qk_nope_head_dim: 16,
    v_head_dim: 16,
    head_dim: 8,
    rope_interleave: false,
    qk_latent_layernorm: false,
    first_k_dense_replace: 2,
    n_routed_experts: null,
    vocab_size: 100,
    tie_word_embeddings: true,
    rope_theta: 10000,
  };
  const spec = parseModelSpec(config);
  const dir = join(tmp, 'mla');
  const w = await CheckpointWriter.create(dir);
  const g = normalGenerator(2);
  const rand = (shape: number[]) => Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => 0.02 * g());
  await w.add('model.embed_tokens.weight', 'BF16', [100, 64], rand([100, 64]));
  for (let l = 0; l < 2; l++) for (const t of layerTensorSpecs(spec)) if (!t.optional) await w.add(layerPrefix(l) + t.name, 'BF16', t.shape, rand(t.shape));
  await w.add('model.norm.weight', 'BF16', [64], rand([64]));
  await w.addFile('config.json', JSON.stringify(config));
  await w.finish();
  const j = await inspectModel(dir);
  expect(j).toMatchObject({ modelType: 'deepseek_v3', headDim: 16, kvValuesPerTokenPerLayer: 32, kvValuesPerToken: 64, kvCacheBf16BytesPerToken: 128 });
  expect(j.mla).toMatchObject({ kvLoraRank: 24, qkRopeHeadDim: 8, ropeInterleave: false, qkLatentLayernorm: false });
  const r = await inproc('inspect', dir);
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/kv_lora_rank\s+24/);
});

describe('failures', () => {
  test('truncated weights: exit 3, one line naming the file', () => {
    const dir = join(tmp, 'truncated');
    mkdirSync(dir);
    for (const f of ['config.json', 'model.safetensors']) copyFileSync(join('test/fixtures/tiny-llama-gqa', f), join(dir, f));
    const p = join(dir, 'model.safetensors');
    truncateSync(p, statSync(p).size - 1000);
    const r = cli('inspect', dir, '--json');
    expect(r.status).toBe(3);
    expect(r.stdout).toBe('');
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain(p);
    expect(r.stderr).toMatch(/truncated/);
  });

  test('a tensor whose shape disagrees with config.json: exit 3 naming tensor and file', async () => {
    const dir = join(tmp, 'mismatch');
    mkdirSync(dir);
    copyFileSync('test/fixtures/tiny-llama-gqa/model.safetensors', join(dir, 'model.safetensors'));
    const cfg = JSON.parse(readFileSync('test/fixtures/tiny-llama-gqa/config.json', 'utf8'));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...cfg, intermediate_size: 512 }));
    const r = await inproc('inspect', dir);
    expect(r.status).toBe(3);
    expect(r.stderr).toMatch(/model\.safetensors: tensor model\.layers\.0\.mlp\.gate_proj\.weight has shape \[768, 256\] but config\.json implies \[512, 256\]/);
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...cfg, tie_word_embeddings: false }));
    const m = await inproc('inspect', dir);
    expect(m.status).toBe(3);
    expect(m.stderr).toContain('lm_head.weight is missing');
  });

  test('unsupported model type: exit 3; usage errors: exit 2', async () => {
    const dir = join(tmp, 'gpt2');
    mkdirSync(dir);
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ model_type: 'gpt2' }));
    const u = await inproc('inspect', dir);
    expect(u.status).toBe(3);
    expect(u.stderr).toContain(join(dir, 'config.json'));
    expect(cli('inspect').status).toBe(2);
    expect((await inproc('inspect', 'test/fixtures/tiny-llama-gqa', '--bogus')).status).toBe(2);
    const h = await inproc('inspect', '--help');
    expect(h.status).toBe(0);
    expect(h.stdout).toContain('Usage: gqa2mla inspect [options] <model-dir>');
    expect(h.stdout).toContain('--json');
    expect(h.stdout).toContain('gqa2mla inspect test/fixtures/tiny-llama-gqa');
  });
});
