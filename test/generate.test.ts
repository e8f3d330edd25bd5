/**
 * Text generation: GqaDecoder (KV cache) equals the prefill engine on both fixtures;
 * generate() greedy is deterministic and picks the prefill engine's argmax at every step,
 * for a GQA source (GqaDecoder) and a converted model (MlaDecoder); sampling is seeded and
 * follows the softmax; the `generate` command streams, --compare runs both models, --json
 * has its shape and every flag has its usage error.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convert } from '../src/convert/convert.js';
import { GqaDecoder } from '../src/engine/gqa-decoder.js';
import { ModelRunner, NORM_NAME, readLmHead } from '../src/engine/model.js';
import { firstDivergence, generate } from '../src/generate.js';
import { greedySamples, residentBytes } from '../src/generate-samples.js';
import { Checkpoint } from '../src/checkpoint/checkpoint.js';
import { argmax, pickToken, seededRandom } from '../src/generate-sampling.js';
import { native } from '../src/native/binding.js';
import { loadTokenizer } from '../src/tokenize.js';
import { relErr } from './helpers/ref-attention.js';
import { runCli } from './helpers/run-cli.js';

const FIX = join(new URL('.', import.meta.url).pathname, 'fixtures');
const LLAMA = join(FIX, 'tiny-llama-gqa');
const QWEN = join(FIX, 'tiny-qwen2-gqa');
const CALIB = readFileSync(join(FIX, 'pydocs-train-3M.txt'), 'utf8').slice(0, 200_000);
const EVAL = readFileSync(join(FIX, 'pydocs-eval.txt'), 'utf8');
const PROMPT = 'The json module';
let tmp: string;
let mla: string;

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'gqa2mla-gen-'));
  mla = join(tmp, 'mla');
  // context = calibSeqlen (the short held-out windows): generation is checked against the converted
  // weights, whatever they are; the serving-context default's long windows only add CPU time
  await convert({ modelDir: LLAMA, outDir: mla, calibText: CALIB, calibSamples: 8, calibSeqlen: 128, heldOutSamples: 2, context: 128, qkRopeDim: 32, kvLoraRank: 96, method: 'transmla', freqfold: 2, balanceKv: 1 });
}, 600000);
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Prefill logits of every position (ModelRunner, the layer-streamed engine). */
async function prefillLogits(dir: string, ids: Int32Array): Promise<Float32Array> {
  const runner = await ModelRunner.open(dir);
  try {
    const spec = runner.spec;
    const h = await runner.forward(ids, 1, ids.length);
    const H = spec.hiddenSize;
    const xn = new Float32Array(ids.length * H);
    await native.rmsNormAsync(h, await runner.source.read(NORM_NAME), xn, { rows: ids.length, dim: H, eps: spec.rmsNormEps });
    const logits = new Float32Array(ids.length * spec.vocabSize);
    await native.linearAsync(xn, await readLmHead(runner.source, spec), logits, { rows: ids.length, inDim: H, outDim: spec.vocabSize });
    return logits;
  } finally {
    await runner.close();
  }
}

test.each([
  ['tiny-llama-gqa', LLAMA],
  ['tiny-qwen2-gqa (biases)', QWEN],
])('GqaDecoder equals the prefill engine: %s, 100-token prompt then 40 single-token steps', async (_name, dir) => {
  const tok = await loadTokenizer(dir);
  const ids = tok.encode(EVAL).subarray(0, 140);
  const ref = await prefillLogits(dir, ids);
  const dec = await GqaDecoder.open(dir);
  try {
    const V = dec.spec.vocabSize;
    const p = await dec.append(ids.subarray(0, 100));
    let worstPrompt = 0;
    for (let t = 0; t < 100; t++) worstPrompt = Math.max(worstPrompt, relErr(p.subarray(t * V, (t + 1) * V), ref.subarray(t * V, (t + 1) * V)));
    let worst = 0;
    for (let t = 100; t < 140; t++) worst = Math.max(worst, relErr(await dec.append(ids.subarray(t, t + 1)), ref.subarray(t * V, (t + 1) * V)));
    if (process.env.GQA2MLA_TEST_VERBOSE) console.log(`${dir}: prompt ${worstPrompt.toExponential(2)}, decode ${worst.toExponential(2)}`);
    expect(worstPrompt).toBeLessThan(1e-5);
    expect(worst).toBeLessThan(1e-5);
    expect(worst).toBeGreaterThan(0); // float64 softmax over the cache: a different summation, not a copy of the prefill
    expect(dec.length).toBe(140);
    await expect(dec.append(Int32Array.of(V))).rejects.toMatchObject({ code: 'ERR_TOKEN_ID' });
  } finally {
    await dec.close();
  }
}, 300000);

/** Every generated token is the prefill engine's argmax after its prefix. */
async function expectPrefillArgmax(dir: string, promptIds: number[], tokens: number[]): Promise<void> {
  const all = Int32Array.from([...promptIds, ...tokens]);
  const logits = await prefillLogits(dir, all);
  const V = logits.length / all.length;
  const picks = tokens.map((_, i) => argmax(logits.subarray((promptIds.length - 1 + i) * V, (promptIds.length + i) * V)));
  expect(tokens).toEqual(picks);
}

test.each([
  ['GQA source (GqaDecoder)', () => LLAMA, 'gqa'],
  ['converted model (MlaDecoder)', () => mla, 'mla'],
])('greedy generate() on %s is deterministic and matches the engine argmax at every step', async (_n, dirOf, engine) => {
  const dir = dirOf();
  const streamed: string[] = [];
  const a = await generate({ modelDir: dir, prompt: PROMPT, maxNewTokens: 24, stopAtEos: false, onToken: (t) => streamed.push(t.text) });
  const b = await generate({ modelDir: dir, prompt: PROMPT, maxNewTokens: 24, stopAtEos: false });
  expect(a.engine).toBe(engine);
  expect(a.tokens).toHaveLength(24);
  expect(b.tokens).toEqual(a.tokens);
  expect(a.stop).toBe('length');
  expect(streamed.join('')).toBe(a.text);
  expect(a.text.length).toBeGreaterThan(0);
  const tok = await loadTokenizer(dir);
  expect(a.promptIds).toEqual(Array.from(tok.encode(PROMPT)));
  expect(tok.decode([...a.promptIds, ...a.tokens])).toBe(tok.decode(a.promptIds) + a.text);
  await expectPrefillArgmax(dir, a.promptIds, a.tokens);
}, 300000);

test('sampling: seeded (same seed, same tokens), tiny top-p is greedy, frequencies follow the softmax', async () => {
  const s1 = await generate({ modelDir: LLAMA, prompt: PROMPT, maxNewTokens: 16, temperature: 1, seed: 1, stopAtEos: false });
  const s1b = await generate({ modelDir: LLAMA, prompt: PROMPT, maxNewTokens: 16, temperature: 1, seed: 1, stopAtEos: false });
  const s2 = await generate({ modelDir: LLAMA, prompt: PROMPT, maxNewTokens: 16, temperature: 1, seed: 2, stopAtEos: false });
  const greedy = await generate({ modelDir: LLAMA, prompt: PROMPT, maxNewTokens: 16, stopAtEos: false });
  const nucleus = await generate({ modelDir: LLAMA, prompt: PROMPT, maxNewTokens: 16, temperature: 1, topP: 1e-9, seed: 3, stopAtEos: false });
  expect(s1b.tokens).toEqual(s1.tokens);
  expect(s2.tokens).not.toEqual(s1.tokens);
  expect(nucleus.tokens).toEqual(greedy.tokens);
  expect(s1.sampling).toEqual({ temperature: 1, topP: 1, seed: 1 });
  // random logits: empirical frequencies of 40000 draws vs softmax(logits / T), and top-p keeps the nucleus only
  const rnd = seededRandom(11);
  const logits = Float32Array.from({ length: 12 }, () => 4 * rnd() - 2);
  const T = 0.7;
  const e = Array.from(logits, (l) => Math.exp(l / T));
  const Z = e.reduce((x, y) => x + y, 0);
  const counts = new Array(12).fill(0);
  const draw = seededRandom(5);
  for (let i = 0; i < 40000; i++) counts[pickToken(logits, { temperature: T, topP: 1, random: draw })]++;
  for (let j = 0; j < 12; j++) expect(Math.abs(counts[j] / 40000 - e[j] / Z)).toBeLessThan(0.01);
  const order = Array.from(e.keys()).sort((x, y) => e[y] - e[x]);
  const kept = new Set<number>();
  for (let i = 0; i < 2000; i++) kept.add(pickToken(logits, { temperature: T, topP: (e[order[0]] + 0.5 * e[order[1]]) / Z, random: draw }));
  expect([...kept].sort()).toEqual([order[0], order[1]].sort());
}, 300000);

test('API option errors name the API options', async () => {
  const bad = async (o: object, mention: string) => {
    await expect(generate(o as never)).rejects.toMatchObject({ code: 'ERR_BAD_OPTION', exitCode: 2, message: expect.stringContaining(mention) });
  };
  await bad({ prompt: 'x' }, 'modelDir');
  await bad({ modelDir: LLAMA }, 'prompt');
  await bad({ modelDir: LLAMA, prompt: 'x', promptIds: [1] }, 'promptIds');
  await bad({ modelDir: LLAMA, prompt: 'x', maxNewTokens: 0 }, 'maxNewTokens');
  await bad({ modelDir: LLAMA, prompt: 'x', temperature: -1 }, 'temperature');
  await bad({ modelDir: LLAMA, prompt: 'x', topP: 1.5 }, 'topP');
  await bad({ modelDir: LLAMA, prompt: 'x', seed: 0.5 }, 'seed');
  await bad({ modelDir: LLAMA, prompt: 'x', maxNewTokens: 5000 }, "2048 positions");
});

test('report samples: three calibration prompts, both models greedy, equal to generate(); skipped (with the reason) when the weights would not fit', async () => {
  const calibFile = join(FIX, 'pydocs-train-3M.txt');
  const s = await greedySamples({ sourceDir: LLAMA, convertedDir: mla, calibFile, maxNewTokens: 12 });
  expect(s.items).toHaveLength(3);
  expect(s.skipped).toBeUndefined();
  const text = readFileSync(calibFile, 'utf8');
  for (const it of s.items) {
    expect(it.promptIds).toHaveLength(24);
    expect(text.slice(it.offset, it.offset + 400).startsWith(it.prompt.slice(0, 20))).toBe(true);
    const a = await generate({ modelDir: LLAMA, promptIds: it.promptIds, maxNewTokens: 12 });
    const b = await generate({ modelDir: mla, promptIds: it.promptIds, maxNewTokens: 12 });
    expect(it.source.tokens).toEqual(a.tokens);
    expect(it.converted.tokens).toEqual(b.tokens);
    expect(it.firstDivergence).toBe(firstDivergence(a.tokens, b.tokens));
  }
  expect(new Set(s.items.map((i) => i.offset)).size).toBe(3);
  // the bf16 fixture: float32 resident weights are twice the stored bytes
  const ck = await Checkpoint.open(LLAMA);
  const stored = ck.totalBytes;
  await ck.close();
  expect(await residentBytes(LLAMA)).toBe(2 * stored);
  const skipped = await greedySamples({ sourceDir: LLAMA, convertedDir: mla, calibFile, freeBytes: 1024 ** 2 });
  expect(skipped.items).toEqual([]);
  expect(skipped.skipped).toMatch(/need [\d.]+ GiB of float32 weights in memory, 0\.0 GiB is free/);
}, 300000);

describe('gqa2mla generate', () => {
  test('streams the prompt and continuation to stdout, a summary to stderr', async () => {
    const r = await runCli('generate', LLAMA, '--prompt', PROMPT, '--max-new-tokens', '12');
    expect(r.code).toBe(0);
    const api = await generate({ modelDir: LLAMA, prompt: PROMPT, maxNewTokens: 12 });
    expect(r.out).toBe(`${PROMPT}${api.text}\n`);
    expect(r.err).toMatch(/^gqa2mla: .*tiny-llama-gqa: \d+ tokens .* GqaDecoder \(KV cache\)\n$/);
  }, 120000);

  test('--compare runs both models: both streams, side by side, the divergence line', async () => {
    const r = await runCli('generate', mla, '--prompt', PROMPT, '--max-new-tokens', '16', '--compare', LLAMA);
    expect(r.code).toBe(0);
    expect(r.out).toContain(`== ${mla}\n${PROMPT}`);
    expect(r.out).toContain(`== ${LLAMA}\n${PROMPT}`);
    expect(r.out).toMatch(/ \| /);
    expect(r.out).toMatch(/(identical tokens|tokens agree up to position \d+ of 16)\n$/);
    expect(r.err).toContain('MlaDecoder (latent cache)');
    expect(r.err).toContain('GqaDecoder (KV cache)');
  }, 120000);

  test('--json shape (with --compare, sampling flags)', async () => {
    const r = await runCli('generate', mla, '--prompt', PROMPT, '--max-new-tokens', '8', '--temperature', '0.8', '--top-p', '0.9', '--seed', '7', '--compare', LLAMA, '--json');
    expect(r.code).toBe(0);
    expect(r.err).toBe('');
    const j = JSON.parse(r.out);
    expect(Object.keys(j).sort()).toEqual(['firstDivergence', 'maxNewTokens', 'prompt', 'promptIds', 'results', 'sampling']);
    expect(j.sampling).toEqual({ temperature: 0.8, topP: 0.9, seed: 7 });
    expect(j.maxNewTokens).toBe(8);
    expect(j.results.map((x: { engine: string }) => x.engine)).toEqual(['mla', 'gqa']);
    for (const x of j.results) {
      expect(Object.keys(x).sort()).toEqual(['engine', 'modelDir', 'seconds', 'stop', 'text', 'tokens', 'tokensPerSecond']);
      expect(x.tokens.length).toBeGreaterThan(0);
      expect(x.tokens.length).toBeLessThanOrEqual(8);
    }
    expect(j.firstDivergence === null || Number.isInteger(j.firstDivergence)).toBe(true);
    const single = JSON.parse((await runCli('generate', LLAMA, '--prompt', PROMPT, '--max-new-tokens', '4', '--json')).out);
    expect(Object.keys(single).sort()).toEqual(['maxNewTokens', 'prompt', 'promptIds', 'results', 'sampling']);
  }, 120000);

  test('usage errors (exit 2, one line naming the flag) for every flag; a missing model is exit 3', async () => {
    const cases: Array<[string[], string]> = [
      [['--max-new-tokens', '0'], '--max-new-tokens'],
      [['--max-new-tokens', 'x'], '--max-new-tokens'],
      [['--temperature', '-1'], '--temperature'],
      [['--temperature', 'hot'], '--temperature'],
      [['--top-p', '0', '--temperature', '1'], '--top-p'],
      [['--top-p', '1.5', '--temperature', '1'], '--top-p'],
      [['--top-p', '0.5'], '--top-p needs --temperature'],
      [['--seed', '1.5'], '--seed'],
      [['--max-new-tokens', '4000'], '--max-new-tokens (4000)'],
    ];
    for (const [flags, mention] of cases) {
      const r = await runCli('generate', LLAMA, '--prompt', PROMPT, ...flags);
      expect([flags, r.code]).toEqual([flags, 2]);
      expect(r.err).toContain(mention);
      expect(r.out).toBe(r.out.startsWith(PROMPT) ? r.out : '');
    }
    const noPrompt = await runCli('generate', LLAMA);
    expect(noPrompt.code).toBe(2);
    expect(noPrompt.err).toContain('--prompt');
    const missing = await runCli('generate', LLAMA, '--prompt', PROMPT, '--compare', join(tmp, 'nope'), '--json');
    expect(missing.code).toBe(3);
    expect(missing.err).toContain(join(tmp, 'nope'));
  }, 120000);
});

test('--version prints the package version', async () => {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  const r = await runCli('--version');
  expect(r.code).toBe(0);
  expect(r.out).toBe(`${pkg.version}\n`);
});
