import { jest } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { main } from '../src/cli/main.js';
import { evalPpl } from '../src/eval/ppl.js';

const fixtures = new URL('./fixtures/', import.meta.url).pathname;
const evalFile = join(fixtures, 'pydocs-eval.txt');

interface Reference {
  ppl: number;
  windows: number;
  seq: number;
  ppl_per_window_first8: number[];
  window0: { nll_first64: number[] };
}

// Acceptance: the PyTorch/transformers float32 reference of each fixture (reference.json),
// 40 windows of 512 tokens of the vendored pydocs-eval text.
describe.each(['tiny-llama-gqa', 'tiny-qwen2-gqa'])('eval-ppl on %s vs PyTorch reference', (name) => {
  const dir = join(fixtures, name);
  const ref = JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8')) as Reference;
  let result: Awaited<ReturnType<typeof evalPpl>>;

  beforeAll(async () => {
    result = await evalPpl({ modelDir: dir, textFile: evalFile, seq: ref.seq, windows: ref.windows });
  });

  test('ppl within 0.2%', () => {
    expect(result.windows).toBe(40);
    expect(result.seq).toBe(512);
    expect(result.tokensScored).toBe(40 * 511);
    expect(Math.abs(result.ppl - ref.ppl) / ref.ppl).toBeLessThan(2e-3);
    expect(result.ppl).toBeCloseTo(Math.exp(result.meanNll), 10);
  });

  test('window 0 per-position NLL (first 64) within 2e-3 absolute', () => {
    expect(result.window0Nll.length).toBe(511);
    let worst = 0;
    for (let i = 0; i < 64; i++) worst = Math.max(worst, Math.abs(result.window0Nll[i] - ref.window0.nll_first64[i]));
    expect(worst).toBeLessThan(2e-3);
  });

  test('per-window perplexities of the first 8 windows within 0.2%', () => {
    expect(result.windowNll.length).toBe(40);
    for (let w = 0; w < 8; w++) {
      const pw = Math.exp(result.windowNll[w] / 511);
      expect(Math.abs(pw - ref.ppl_per_window_first8[w]) / ref.ppl_per_window_first8[w]).toBeLessThan(2e-3);
    }
  });
});

describe('eval-ppl options', () => {
  const dir = join(fixtures, 'tiny-llama-gqa');

  test('batching windows into several layer-streamed passes gives the same NLL', async () => {
    const a = await evalPpl({ modelDir: dir, textFile: evalFile, seq: 96, windows: 7 });
    const b = await evalPpl({ modelDir: dir, textFile: evalFile, seq: 96, windows: 7, batch: 3, microBatchTokens: 100 });
    expect(b.windows).toBe(7);
    for (let w = 0; w < 7; w++) expect(Math.abs(b.windowNll[w] - a.windowNll[w]) / a.windowNll[w]).toBeLessThan(1e-6);
    expect(Array.from(b.window0Nll)).toHaveLength(95);
  });

  test('fewer windows than requested when the text is short; too short for one window is a usage error', async () => {
    const text = readFileSync(evalFile, 'utf8').slice(0, 3000);
    const r = await evalPpl({ modelDir: dir, text, seq: 128, windows: 40 });
    expect(r.windows).toBeLessThan(40);
    expect(r.windows).toBeGreaterThan(0);
    expect(r.windowsRequested).toBe(40);
    expect(r.windows).toBe(Math.floor(r.textTokens / 128));
    await expect(evalPpl({ modelDir: dir, text: 'def f(): pass', seq: 512 })).rejects.toMatchObject({
      code: 'ERR_TEXT_TOO_SHORT',
      kind: 'usage',
      message: expect.stringContaining('fewer than one window'),
    });
  });

  test('bad options are usage errors', async () => {
    await expect(evalPpl({ modelDir: dir, text: 'x', seq: 1 })).rejects.toMatchObject({ kind: 'usage', message: expect.stringContaining('seq') });
    await expect(evalPpl({ modelDir: dir, text: 'x', windows: 0 })).rejects.toMatchObject({ kind: 'usage' });
    await expect(evalPpl({ modelDir: dir, text: 'x', textFile: evalFile })).rejects.toMatchObject({ kind: 'usage' });
    await expect(evalPpl({ modelDir: dir })).rejects.toMatchObject({ kind: 'usage' });
    await expect(evalPpl({ modelDir: dir, textFile: join(fixtures, 'no-such.txt') })).rejects.toMatchObject({ code: 'ERR_TEXT_READ' });
  });

  test('abort signal stops the run', async () => {
    const ac = new AbortController();
    let steps = 0;
    const p = evalPpl({
      modelDir: dir,
      textFile: evalFile,
      seq: 64,
      windows: 4,
      signal: ac.signal,
      onProgress: (s) => {
        if (s.stage === 'layer' && ++steps === 2) ac.abort();
      },
    });
    await expect(p).rejects.toMatchObject({ code: 'ERR_ABORTED' });
  });

  test('CLI --json prints ppl, windows, seq, tokensScored, seconds (and the version-2 keys); usage errors exit 2', async () => {
    const chunks: string[] = [];
    const spy = jest.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => {
      chunks.push(String(c));
      return true;
    });
    const errs: string[] = [];
    const espy = jest.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => {
      errs.push(String(c));
      return true;
    });
    try {
      const code = await main(['node', 'gqa2mla', 'eval-ppl', dir, '--text', evalFile, '--seq', '64', '--windows', '3', '--json']);
      expect(code).toBe(0);
      const out = JSON.parse(chunks.join('')) as Record<string, number>;
      expect(Object.keys(out).sort()).toEqual(['contexts', 'ppl', 'seconds', 'seq', 'textTokens', 'tokensScored', 'version', 'warnings', 'windows']);
      expect(out.version).toBe(2);
      expect(out.windows).toBe(3);
      expect(out.seq).toBe(64);
      expect(out.tokensScored).toBe(3 * 63);
      expect(out.ppl).toBeGreaterThan(1);
      const direct = await evalPpl({ modelDir: dir, textFile: evalFile, seq: 64, windows: 3 });
      expect(out.ppl).toBeCloseTo(direct.ppl, 10);
      expect(await main(['node', 'gqa2mla', 'eval-ppl', dir, '--text', evalFile, '--seq', '1'])).toBe(2);
      expect(errs.join('')).toContain('seq');
    } finally {
      spy.mockRestore();
      espy.mockRestore();
    }
  });
});
