/**
 * src/convert/held-out-context.ts: the `--context N` length, its held-out windows and the
 * query positions scored there, on the fixture tokenizer and calibration text; and
 * src/convert/sampled-attention.ts against the engine's full forward on the fixtures' layers.
 */
import { readFileSync } from 'node:fs';
import { Checkpoint } from '../src/checkpoint/checkpoint.js';
import { seededRandom } from '../src/convert/calibration.js';
import { drawHeldOutWindows, resolveContext, sampleContextQueries } from '../src/convert/held-out-context.js';
import { relativeError, servedContextWeights } from '../src/convert/layer-ops.js';
import { attentionAtQueries, attentionRowsFull } from '../src/convert/sampled-attention.js';
import { type LayerWeights, loadLayerWeights } from '../src/engine/weights.js';
import type { ModelSpec } from '../src/model/spec-types.js';
import { loadModelSpec } from '../src/model/spec.js';
import { native } from '../src/native/binding.js';
import { loadTokenizer } from '../src/tokenize.js';

/** Layer `layer` of `dir` and its normalised inputs on `nSeq` windows of `seqLen` calibration-text tokens (embeddings). */
async function layerInputs(dir: string, spec: ModelSpec, layer: number, nSeq: number, seqLen: number): Promise<{ w: LayerWeights; x: Float32Array }> {
  const ck = await Checkpoint.open(dir);
  const ids = (await loadTokenizer(dir)).encode(readFileSync('test/fixtures/pydocs-train-3M.txt', 'utf8').slice(0, 20 * nSeq * seqLen)).subarray(0, nSeq * seqLen);
  const h = new Float32Array(nSeq * seqLen * spec.hiddenSize);
  native.embedGather(await ck.read('model.embed_tokens.weight'), ids, h, spec.hiddenSize);
  const w = await loadLayerWeights(ck, spec, layer);
  await ck.close();
  const x = new Float32Array(h.length);
  native.rmsNorm(h, w.tensors['input_layernorm.weight'].data, x, { rows: nSeq * seqLen, dim: spec.hiddenSize, eps: spec.rmsNormEps });
  return { w, x };
}

const LLAMA = 'test/fixtures/tiny-llama-gqa';
let tokens: Int32Array;
let maxPos: number;
beforeAll(async () => {
  const tok = await loadTokenizer(LLAMA);
  tokens = tok.encode(readFileSync('test/fixtures/pydocs-train-3M.txt', 'utf8').slice(0, 60000));
  maxPos = (await loadModelSpec(LLAMA)).maxPositionEmbeddings;
});

test('default: min(max_position_embeddings, 4096), bounded by the calibration text', () => {
  expect(maxPos).toBe(2048);
  expect(resolveContext({}, maxPos, tokens.length)).toEqual({ context: 2048, from: 'max_position_embeddings' });
  expect(resolveContext({}, 131072, tokens.length)).toEqual({ context: 4096, from: 'default-max' });
  expect(resolveContext({}, maxPos, 1000)).toEqual({ context: 1000, from: 'calibration text' });
  expect(resolveContext({ context: 777 }, maxPos, tokens.length)).toEqual({ context: 777, from: 'option' });
});

test('bad or impossible contexts are usage errors naming the limit', () => {
  expect(() => resolveContext({ context: 1 }, maxPos, tokens.length)).toThrow(expect.objectContaining({ kind: 'usage', code: 'ERR_BAD_OPTION' }));
  expect(() => resolveContext({ context: 100.5 }, maxPos, tokens.length)).toThrow(expect.objectContaining({ code: 'ERR_BAD_OPTION' }));
  expect(() => resolveContext({ context: tokens.length + 1 }, maxPos, tokens.length)).toThrow(
    expect.objectContaining({ code: 'ERR_CALIB_TOO_SHORT', message: expect.stringContaining(`context = ${tokens.length + 1}`) }),
  );
  expect(() => drawHeldOutWindows(tokens, 4, tokens.length + 1, 42)).toThrow(expect.objectContaining({ code: 'ERR_CALIB_TOO_SHORT' }));
  expect(() => drawHeldOutWindows(tokens, 0, 64, 42)).toThrow(expect.objectContaining({ code: 'ERR_BAD_OPTION' }));
});

test('windows are the text at their offsets, one per stratum, seeded', () => {
  const ctx = 2048;
  const h = drawHeldOutWindows(tokens, 6, ctx, 42);
  expect(h.ids.length).toBe(6 * ctx);
  const span = tokens.length - ctx + 1;
  h.offsets.forEach((off, s) => {
    expect(off).toBeGreaterThanOrEqual(Math.floor((s * span) / 6));
    expect(off).toBeLessThan(Math.floor(((s + 1) * span) / 6));
    expect(Array.from(h.ids.subarray(s * ctx, (s + 1) * ctx))).toEqual(Array.from(tokens.subarray(off, off + ctx)));
  });
  expect(drawHeldOutWindows(tokens, 6, ctx, 42).offsets).toEqual(h.offsets);
  expect(drawHeldOutWindows(tokens, 6, ctx, 43).offsets).not.toEqual(h.offsets);
  // a text barely longer than the window still gives valid windows
  const tiny = drawHeldOutWindows(tokens.subarray(0, ctx + 2), 6, ctx, 42);
  for (const off of tiny.offsets) expect(off).toBeLessThanOrEqual(2);
});

test('sampled context queries: the big weights always, the rest systematic; every window sums to the total weight', () => {
  const n = 2048;
  const w = servedContextWeights(n);
  const total = w.reduce((a, b) => a + b, 0);
  const q = sampleContextQueries(w, 3, 256);
  expect(q.perWindow).toBe(256);
  expect(q.positions.length).toBe(3 * 256);
  for (let s = 0; s < 3; s++) {
    const pos = Array.from(q.positions.subarray(s * 256, (s + 1) * 256));
    const wts = Array.from(q.weights.subarray(s * 256, (s + 1) * 256));
    for (let i = 1; i < pos.length; i++) expect(pos[i]).toBeGreaterThan(pos[i - 1]);
    expect(pos[0]).toBe(0);
    expect(pos[pos.length - 1]).toBeLessThan(n);
    // the first 64 positions (the largest weights) are always listed with their own weight
    expect(pos.slice(0, 64)).toEqual(Array.from({ length: 64 }, (_, t) => t));
    for (let t = 0; t < 64; t++) expect(wts[t]).toBe(w[t]);
    expect(Math.abs(wts.reduce((a, b) => a + b, 0) / total - 1)).toBeLessThan(1e-12);
  }
  // the windows' points are offset: they list different far positions
  expect(Array.from(q.positions.subarray(200, 256))).not.toEqual(Array.from(q.positions.subarray(256 + 200, 512)));
  // every position when the queries cover the window: the exact weights
  const all = sampleContextQueries(w, 2, n + 5);
  expect(all.perWindow).toBe(n);
  expect(Array.from(all.weights.subarray(n))).toEqual(Array.from(w));
  expect(() => sampleContextQueries(w, 2, 0)).toThrow(expect.objectContaining({ code: 'ERR_BAD_OPTION' }));
});

test('a weighted sum over the sampled queries estimates the sum over every position', () => {
  const n = 4096;
  const w = servedContextWeights(n);
  // per-position values like a layer error growing with distance, plus noise
  const rand = seededRandom(7);
  const e = Float64Array.from({ length: n }, (_, t) => Math.log(t + 2) * (0.8 + 0.4 * rand()));
  let exact = 0;
  for (let t = 0; t < n; t++) exact += w[t] * e[t];
  const q = sampleContextQueries(w, 2, 512);
  let est = 0;
  for (let i = 0; i < q.positions.length; i++) est += q.weights[i] * e[q.positions[i]];
  expect(Math.abs(est / 2 / exact - 1)).toBeLessThan(0.01);
});

test('attention at sampled queries equals the full forward at those rows (GQA with and without biases, sliding window)', async () => {
  for (const dir of [LLAMA, 'test/fixtures/tiny-qwen2-gqa']) {
    const spec = await loadModelSpec(dir);
    const { w, x } = await layerInputs(dir, spec, 1, 2, 320);
    const q = sampleContextQueries(servedContextWeights(320), 2, 64);
    const got = await attentionAtQueries(spec, w, x, 2, 320, q);
    expect(relativeError(got, await attentionRowsFull(spec, w, x, 2, 320, q))).toBeLessThan(1e-5);
    // a sliding window (mistral-style): keys u with t - u < 50 only
    const windowed = { ...spec, modelType: 'mistral', raw: { ...spec.raw, sliding_window: 50 } } as typeof spec;
    const gw = await attentionAtQueries(windowed, w, x, 2, 320, q);
    const ref = await attentionRowsFull(windowed, w, x, 2, 320, q);
    expect(relativeError(gw, ref)).toBeLessThan(1e-5);
    expect(relativeError(gw, got)).toBeGreaterThan(1e-3);
  }
}, 60_000);
