/** src/convert/held-out-context.ts: the `--context N` length and its held-out windows, on the fixture tokenizer and calibration text. */
import { readFileSync } from 'node:fs';
import { drawHeldOutWindows, resolveContext } from '../src/convert/held-out-context.js';
import { loadModelSpec } from '../src/model/spec.js';
import { loadTokenizer } from '../src/tokenize.js';

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
