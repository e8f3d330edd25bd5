/**
 * `context` (issue 14): the per-layer choices are judged on held-out windows at the serving
 * context. Checks the report records the windows, that the choices really move with the
 * judge windows, that the sampled query positions score the candidates as every position does
 * (and the MLA attention at those queries is the full forward's), that an interrupted run resumes to the same bytes with the context windows'
 * hidden states in its resume state, and the option's errors (before any work).
 */
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Checkpoint } from '../src/checkpoint/checkpoint.js';
import { convert } from '../src/convert/convert.js';
import { sampleContextQueries } from '../src/convert/held-out-context.js';
import { relativeError, servedContextWeights } from '../src/convert/layer-ops.js';
import { attentionAtQueries, attentionRowsFull } from '../src/convert/sampled-attention.js';
import { loadLayerWeights } from '../src/engine/weights.js';
import { loadModelSpec } from '../src/model/spec.js';
import type { ConvertOptions } from '../src/convert/options.js';
import { hashOutputs } from './helpers/pin-outputs.js';

const FIX = join(new URL('.', import.meta.url).pathname, 'fixtures');
const LLAMA = join(FIX, 'tiny-llama-gqa');
const text = readFileSync(join(FIX, 'pydocs-train-3M.txt'), 'utf8').slice(0, 300_000);

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'gqa2mla-context-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function small(outDir: string, extra: Partial<ConvertOptions> = {}): ConvertOptions {
  return { modelDir: LLAMA, outDir, calibText: text, calibSamples: 12, calibSeqlen: 64, heldOutSamples: 4, qkRopeDim: 32, kvLoraRank: 64, device: 'cpu', ...extra };
}

test('the report names the context windows; the choices are judged there, not on the short windows; sampled queries score as every position does', async () => {
  // freqfold searched; no refits (they are judged the same way, and would only add time)
  const search: Partial<ConvertOptions> = { balanceKv: 1, ropeSelection: 'qk', kvMetric: 'plain', valueRefit: false, outputRefit: false };
  const long = await convert(small(join(tmp, 'long'), { ...search, context: 512, contextWindows: 2, contextQueries: 128 }));
  expect(long.settings.context).toEqual({ tokens: 512, windows: 2, from: 'option', queries: 128 });
  // the same candidates, measured on other windows: the short-window and the context errors
  // differ, and each layer keeps the candidate with the lowest context error
  for (const layer of long.layers) {
    const judged = layer.candidates!.filter((c) => c.contextRelError !== undefined);
    expect(judged.length).toBeGreaterThan(1);
    for (const c of judged) {
      expect(c.contextRelError).toBeGreaterThan(0);
      expect(c.contextRelError).not.toBeCloseTo(c.attnRelError, 4);
    }
    const best = judged.reduce((a, b) => (b.contextRelError! < a.contextRelError! ? b : a));
    expect(layer.attnRelError).toBe(best.contextRelError);
    expect(layer.freqfold).toBe(best.freqfold);
  }
  // (a context at most calib-seqlen keeps the short windows, and the default context, are checked in convert-stages.test.ts)
  // every position of the context windows (the default 512 queries cover them): each candidate's
  // context error within a few percent of the sampled one, the same freqfold chosen
  const full = await convert(small(join(tmp, 'full'), { ...search, context: 512, contextWindows: 2 }));
  expect(full.settings.context?.queries).toBe(512);
  const diffs: number[] = [];
  for (const [l, layer] of long.layers.entries()) {
    expect(layer.freqfold).toBe(full.layers[l].freqfold);
    for (const [i, c] of layer.candidates!.entries()) {
      const o = full.layers[l].candidates![i];
      expect(o.freqfold).toBe(c.freqfold);
      if (c.contextRelError !== undefined) diffs.push(Math.abs(c.contextRelError / o.contextRelError! - 1));
    }
  }
  expect(diffs.length).toBeGreaterThanOrEqual(2 * long.layers.length);
  expect(Math.max(...diffs)).toBeLessThan(0.05);
  expect(Math.max(...diffs)).toBeGreaterThan(0); // a real sample, not every position
  // the written MLA layer: attention at sampled queries equals the engine's full forward there
  const spec = await loadModelSpec(join(tmp, 'long'));
  const ck = await Checkpoint.open(join(tmp, 'long'));
  const w = await loadLayerWeights(ck, spec, 1);
  await ck.close();
  const x = Float32Array.from({ length: 2 * 300 * spec.hiddenSize }, (_, i) => Math.sin(i * 0.37) + 0.3 * Math.cos(i * 0.011));
  const q = sampleContextQueries(servedContextWeights(300), 2, 48);
  expect(relativeError(await attentionAtQueries(spec, w, x, 2, 300, q), await attentionRowsFull(spec, w, x, 2, 300, q))).toBeLessThan(1e-5);
}, 600_000);

test('an interrupted run with context windows resumes to the bytes of an uninterrupted one', async () => {
  const o = small(join(tmp, 'resume'), { context: 256, contextWindows: 2, calibInputs: 'converted', checkpointSeconds: 0, freqfold: 2, kvMetric: 'plain', balanceKv: 1 });
  const ref = small(join(tmp, 'straight'), { ...o, outDir: join(tmp, 'straight') });
  await convert(ref);
  const ac = new AbortController();
  const aborted = await convert({ ...o, signal: ac.signal, onProgress: (p) => p.stage === 'statistics' && p.layer === 2 && ac.abort() }).then(
    () => false,
    (e: Error) => /aborted/.test(e.message),
  );
  expect(aborted).toBe(true);
  expect(existsSync(`${o.outDir}.partial`)).toBe(true);
  const resumed = await convert({ ...o, resume: true });
  expect(resumed.resumedFromLayer).toBe(2);
  const strip = (h: Record<string, string>) => Object.fromEntries(Object.entries(h).filter(([k]) => k !== 'conversion-report.json'));
  expect(strip(hashOutputs(o.outDir))).toEqual(strip(hashOutputs(ref.outDir)));
}, 600_000);

test('context errors are usage errors raised before anything is written', async () => {
  const out = join(tmp, 'bad');
  await expect(convert(small(out, { context: 1 }))).rejects.toMatchObject({ code: 'ERR_BAD_OPTION', message: expect.stringMatching(/context must be/) });
  await expect(convert(small(out, { contextWindows: 0 }))).rejects.toMatchObject({ code: 'ERR_BAD_OPTION' });
  // longer than the calibration text: found when the text is tokenized, before any layer
  await expect(convert(small(out, { calibText: text.slice(0, 3000), context: 100_000, calibSamples: 2, heldOutSamples: 1, calibSeqlen: 32 }))).rejects.toMatchObject({
    code: 'ERR_CALIB_TOO_SHORT',
  });
  expect(existsSync(out) ? readdirSync(out) : []).toEqual([]);
  expect(existsSync(`${out}.partial`)).toBe(false);
}, 120_000);
