/**
 * End-to-end conversion on the real fixtures: exactness settings (a)-(c) of the
 * conversion-core issue, resume after abort, and refusal of impossible settings.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convert } from '../src/convert/convert.js';
import { Checkpoint } from '../src/checkpoint/checkpoint.js';
import { loadModelSpec } from '../src/model/spec.js';
import { loadLayerWeights } from '../src/engine/weights.js';
import { roropeRotation } from '../src/convert/rorope.js';
import { fromArray } from '../src/tensor/mat.js';
import { MomentAccumulator, secondMoment } from '../src/tensor/moments.js';
import { native } from '../src/native/binding.js';
import { evalPpl } from '../src/eval/ppl.js';
import { LOSSLESS_REL_TOL } from './helpers/tolerance.js';
import { gqaAttentionRef, relErr, rotatedAttentionRef, type RotPair } from './helpers/ref-attention.js';

const FIX = join(new URL('.', import.meta.url).pathname, 'fixtures');
const LLAMA = join(FIX, 'tiny-llama-gqa');
const QWEN = join(FIX, 'tiny-qwen2-gqa');
const CALIB = readFileSync(join(FIX, 'pydocs-train-3M.txt'), 'utf8').slice(0, 400_000);
const EVAL = join(FIX, 'pydocs-eval.txt');
let tmp: string;

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'gqa2mla-conv-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

// context = calibSeqlen: the choices judged on the short held-out windows (the path before the
// serving-context default, as test/pinned-outputs.test.ts pins it); this file tests mechanics that do not
// depend on the held-out window length, and the default's long windows (2 x 1024 tokens) made this file
// take 3x the CPU time (165.6 s vs 54.9 s, measured under load).
// The serving-context windows are tested in test/convert-context.test.ts.
const small = { calibText: CALIB, calibSamples: 16, calibSeqlen: 128, heldOutSamples: 4, context: 128 };

test.each([
  ['tiny-llama-gqa', LLAMA],
  ['tiny-qwen2-gqa', QWEN],
])('(a) %s: merge + RoRoPE rotation without truncation reproduces every layer (float64)', async (_n, dir) => {
  const spec = await loadModelSpec(dir);
  const ck = await Checkpoint.open(dir);
  try {
    const T = 40;
    const ids = Int32Array.from({ length: T }, (_, i) => (i * 37 + 11) % spec.vocabSize);
    const table = await ck.read('model.embed_tokens.weight');
    const h = new Float32Array(T * spec.hiddenSize);
    native.embedGather(table, ids, h, spec.hiddenSize);
    const invFreq = new Float64Array(spec.headDim / 2).map((_, i) => Math.pow(spec.rope.theta, (-2 * i) / spec.headDim));
    for (let l = 0; l < spec.numLayers; l++) {
      const w = await loadLayerWeights(ck, spec, l);
      const x = new Float32Array(T * spec.hiddenSize);
      native.rmsNorm(h, w.tensors['input_layernorm.weight'].data, x, { rows: T, dim: spec.hiddenSize, eps: spec.rmsNormEps });
      const acc = new MomentAccumulator(spec.hiddenSize);
      acc.add(x, T);
      const L = spec.numKvHeads * spec.headDim;
      const t = (n: string) => w.tensors[`self_attn.${n}`]?.data ?? null;
      const gw = { wq: t('q_proj.weight')!, wk: t('k_proj.weight')!, wv: t('v_proj.weight')!, wo: t('o_proj.weight')!, bq: t('q_proj.bias'), bk: t('k_proj.bias'), bv: t('v_proj.bias') };
      const ckm = secondMoment({ w: fromArray(gw.wk, L, spec.hiddenSize), b: gw.bk ? Float64Array.from(gw.bk) : null }, acc.moments());
      const rope = roropeRotation(ckm, spec.numKvHeads, spec.headDim, spec.headDim, 1);
      const pairs: RotPair[] = rope.pairs.map((p) => ({ re: p.re, im: p.im, theta: invFreq[p.freq] }));
      const dims = { hidden: spec.hiddenSize, heads: spec.numHeads, kvHeads: spec.numKvHeads, headDim: spec.headDim };
      const xd = Float64Array.from(x);
      const ref = gqaAttentionRef(xd, T, dims, gw, invFreq);
      const rot = rotatedAttentionRef(xd, T, dims, gw, rope.rot.data, pairs);
      expect(relErr(rot, ref)).toBeLessThan(1e-10);
    }
  } finally {
    await ck.close();
  }
});

test('(c) tiny-qwen2-gqa lossless setting (qkRopeDim 128, kvLoraRank 128, freqfold 1) equals the original', async () => {
  const out = join(tmp, 'qwen-lossless');
  const report = await convert({ modelDir: QWEN, outDir: out, ...small, qkRopeDim: 128, kvLoraRank: 128, freqfold: 1, dtype: 'F32', method: 'transmla', target: 'transformers' });
  expect(report.kvValuesPerToken.perLayerAfter).toBe(256);
  for (const l of report.layers) expect(l.attnRelError).toBeLessThan(LOSSLESS_REL_TOL);
  // the query bias lives in the stock parameter set: q_a_proj's bias channel -> q_b_proj
  const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
  expect(cfg.q_lora_rank).toBe(257); // lossless: min(hidden 256, heads x qk_head_dim 512) + 1
  expect(cfg.attention_bias).toBe(true);
  expect(cfg.gqa2mla_q_bias).toBeUndefined();
  const ck = await Checkpoint.open(out);
  try {
    expect(ck.has('model.layers.0.self_attn.q_proj.weight')).toBe(false);
    expect(ck.has('model.layers.0.self_attn.q_proj.bias')).toBe(false);
    const qab = await ck.read('model.layers.0.self_attn.q_a_proj.bias');
    expect(Array.from(qab).filter((v) => v !== 0)).toHaveLength(1);
    expect(qab[256]).toBeGreaterThan(0);
    const ob = await ck.read('model.layers.0.self_attn.o_proj.bias');
    expect(ob.every((v) => v === 0)).toBe(true);
    expect(ck.has('model.layers.0.self_attn.q_a_layernorm.weight')).toBe(true);
  } finally {
    await ck.close();
  }
  for (const l of report.layers) {
    expect(l.queryCompression!.lossless).toBe(true);
    expect(l.queryCompression!.norm!.boundWithMargin).toBeLessThanOrEqual(1e-4);
  }
  const a = await evalPpl({ modelDir: QWEN, textFile: EVAL, seq: 128, windows: 4 });
  const b = await evalPpl({ modelDir: out, textFile: EVAL, seq: 128, windows: 4 });
  expect(Math.abs(b.ppl - a.ppl) / a.ppl).toBeLessThan(LOSSLESS_REL_TOL);
  let maxDiff = 0;
  for (let i = 0; i < a.window0Nll.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a.window0Nll[i] - b.window0Nll[i]));
  expect(maxDiff).toBeLessThan(1e-4);
}, 300000);

test('(b) full rank (kvLoraRank = 2L - qkRopeDim) gives the same ppl whatever the factorization', async () => {
  const ppls: number[] = [];
  for (const [i, o] of [
    { method: 'transmla' as const, freqfold: 4 },
    { method: 'gqa2mla' as const, freqfold: 4, kvMetric: 'objective' as const, ropeSelection: 'key' as const, balanceKv: 3, nopeShrink: false, valueRefit: false },
  ].entries()) {
    const out = join(tmp, `llama-full-${i}`);
    await convert({ modelDir: LLAMA, outDir: out, ...small, qkRopeDim: 32, kvLoraRank: 2 * 128 - 32, dtype: 'F32', ...o });
    ppls.push((await evalPpl({ modelDir: out, textFile: EVAL, seq: 256, windows: 4 })).ppl);
  }
  expect(Math.abs(ppls[1] - ppls[0]) / ppls[0]).toBeLessThan(1e-4);
}, 300000);

test('impossible settings fail before any work, naming the limit', async () => {
  const out = join(tmp, 'bad');
  await expect(convert({ modelDir: LLAMA, outDir: out, ...small, qkRopeDim: 32, kvLoraRank: 300 })).rejects.toThrow(/kvLoraRank 300 exceeds the maximum .* = 224/);
  await expect(convert({ modelDir: LLAMA, outDir: out, ...small, qkRopeDim: 24 })).rejects.toThrow(/qkRopeDim 24 must be even and divide head_dim 64/);
  await expect(convert({ modelDir: LLAMA, outDir: out, ...small, qkRopeDim: 32, freqfold: 3 })).rejects.toThrow(/freqfold 3 must be a multiple of head_dim \/ qkRopeDim = 2/);
  await expect(convert({ modelDir: LLAMA, outDir: out, ...small, qkRopeDim: 32, freqfold: 64 })).rejects.toThrow(/freqfold 64/);
  expect(existsSync(out)).toBe(false);
  expect(existsSync(`${out}.partial`)).toBe(false);
});

test('abort after layer 2 of 4, then --resume: byte-identical to an uninterrupted run', async () => {
  const opts = { modelDir: LLAMA, ...small, qkRopeDim: 32, kvLoraRank: 96, calibInputs: 'converted' as const, method: 'transmla' as const, freqfold: 'auto' as const, checkpointSeconds: 0 };
  const full = join(tmp, 'full');
  await convert({ ...opts, outDir: full });
  const part = join(tmp, 'resumed');
  const ac = new AbortController();
  await expect(
    convert({
      ...opts,
      outDir: part,
      signal: ac.signal,
      onProgress: (p) => {
        if (p.stage === 'statistics' && p.layer === 2) ac.abort();
      },
    }),
  ).rejects.toThrow(/aborted/);
  expect(existsSync(part)).toBe(false);
  expect(existsSync(`${part}.partial`)).toBe(true);
  await expect(convert({ ...opts, outDir: part })).rejects.toThrow(/use resume to continue/);
  const report = await convert({ ...opts, outDir: part, resume: true });
  expect(report.resumedFromLayer).toBe(2);
  const files = readdirSync(full).filter((f) => f.endsWith('.safetensors') || f === 'model.safetensors.index.json' || f === 'config.json');
  expect(files.length).toBeGreaterThan(4);
  for (const f of files) expect(Buffer.compare(readFileSync(join(full, f)), readFileSync(join(part, f)))).toBe(0);
  // with no resume state saved yet (a long checkpoint interval), --resume redoes every layer
  const late = join(tmp, 'resumed-late');
  const ac2 = new AbortController();
  await expect(
    convert({ ...opts, checkpointSeconds: 3600, outDir: late, signal: ac2.signal, onProgress: (p) => (p.stage === 'statistics' && p.layer === 2 ? ac2.abort() : undefined) }),
  ).rejects.toThrow(/aborted/);
  expect(existsSync(join(`${late}.partial`, 'hidden.f32'))).toBe(false);
  const report2 = await convert({ ...opts, checkpointSeconds: 3600, outDir: late, resume: true });
  expect(report2.resumedFromLayer).toBeUndefined();
  for (const f of files) expect(Buffer.compare(readFileSync(join(full, f)), readFileSync(join(late, f)))).toBe(0);
}, 300000);
