/**
 * The absorbed decode path (latent cache, W_UK absorbed into the query, W_UV after
 * attention) equals the non-absorbed prefill path: 200-token prompt, then 64 decode
 * steps, on real converted fixtures (with and without query compression and biases).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convert } from '../src/convert/convert.js';
import { MlaDecoder } from '../src/engine/mla-decoder.js';
import { ModelRunner, NORM_NAME, readLmHead } from '../src/engine/model.js';
import { native } from '../src/native/binding.js';
import { loadTokenizer } from '../src/tokenize.js';
import { relErr } from './helpers/ref-attention.js';

const FIX = join(new URL('.', import.meta.url).pathname, 'fixtures');
const CALIB = readFileSync(join(FIX, 'pydocs-train-3M.txt'), 'utf8').slice(0, 200_000);
const EVAL = readFileSync(join(FIX, 'pydocs-eval.txt'), 'utf8');
const PROMPT = 200;
const STEPS = 64;
let tmp: string;

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'gqa2mla-dec-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Prefill logits of every position (non-absorbed engine path). */
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


const cases = [
  { name: 'tiny-llama-gqa 32+96 (q_proj)', fixture: 'tiny-llama-gqa', qkRopeDim: 32, kvLoraRank: 96, qLoraRank: undefined as number | undefined },
  { name: 'tiny-llama-gqa 32+32, q_lora_rank 96', fixture: 'tiny-llama-gqa', qkRopeDim: 32, kvLoraRank: 32, qLoraRank: 96 },
  { name: 'tiny-qwen2-gqa 64+64 (biases, lossless q_lora)', fixture: 'tiny-qwen2-gqa', qkRopeDim: 64, kvLoraRank: 64, qLoraRank: undefined },
];

test.each(cases)('absorbed decode equals prefill: $name', async (c) => {
  const out = join(tmp, c.fixture + c.kvLoraRank + (c.qLoraRank ?? ''));
  await convert({
    modelDir: join(FIX, c.fixture),
    outDir: out,
    calibText: CALIB,
    calibSamples: 8,
    calibSeqlen: 128,
    heldOutSamples: 2,
    // the held-out windows of calibSeqlen tokens: decode equivalence holds for any converted weights,
    // and the serving-context default's long windows only add CPU time (test/convert-context.test.ts)
    context: 128,
    qkRopeDim: c.qkRopeDim,
    kvLoraRank: c.kvLoraRank,
    qLoraRank: c.qLoraRank,
    freqfold: 'auto',
  });
  const tok = await loadTokenizer(out);
  const ids = tok.encode(EVAL).subarray(0, PROMPT + STEPS);
  const ref = await prefillLogits(out, ids);
  const dec = await MlaDecoder.open(out, { pageSize: 64 });
  try {
    const V = dec.spec.vocabSize;
    // the prompt in one call (causal over the new tokens), then one token per step
    const promptLogits = await dec.append(ids.subarray(0, PROMPT));
    let worstPrompt = 0;
    for (let t = 0; t < PROMPT; t++)
      worstPrompt = Math.max(worstPrompt, relErr(promptLogits.subarray(t * V, (t + 1) * V), ref.subarray(t * V, (t + 1) * V)));
    let worst = 0;
    for (let s = 0; s < STEPS; s++) {
      const t = PROMPT + s;
      const logits = await dec.append(ids.subarray(t, t + 1));
      worst = Math.max(worst, relErr(logits, ref.subarray(t * V, (t + 1) * V)));
    }
    expect(dec.length).toBe(PROMPT + STEPS);
    if (process.env.GQA2MLA_TEST_VERBOSE) console.log(`${c.name}: prompt ${worstPrompt.toExponential(2)}, decode ${worst.toExponential(2)}`);
    expect(worstPrompt).toBeLessThan(1e-5);
    expect(worst).toBeLessThan(1e-5);
    expect(worst).toBeGreaterThan(0); // different summation order: not bit-identical
    await expect(dec.append(Int32Array.of(V))).rejects.toMatchObject({ code: 'ERR_TOKEN_ID' });
    expect(dec.length).toBe(PROMPT + STEPS);
  } finally {
    await dec.close();
  }
}, 300000);

test('absorbed decoding refuses a GQA checkpoint, naming the model type', async () => {
  await expect(MlaDecoder.open(join(FIX, 'tiny-llama-gqa'))).rejects.toMatchObject({ code: 'ERR_MODEL_TYPE', message: expect.stringContaining('llama') });
});
