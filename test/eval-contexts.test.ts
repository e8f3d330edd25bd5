import { jest } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { main } from '../src/cli/main.js';
import { bucketEdges } from '../src/eval/buckets.js';
import { buildConversionEval } from '../src/eval/conversion-eval.js';
import { evalPpl, type PplContextResult } from '../src/eval/ppl.js';

const fixtures = new URL('./fixtures/', import.meta.url).pathname;
const evalFile = join(fixtures, 'pydocs-eval.txt');
const llama = join(fixtures, 'tiny-llama-gqa');
const qwen = join(fixtures, 'tiny-qwen2-gqa');

/** sum(meanNll x count) / sum(count) over the buckets */
function bucketMean(c: PplContextResult): number {
  let s = 0;
  let n = 0;
  for (const b of c.buckets) {
    s += b.meanNll * b.count;
    n += b.count;
  }
  return s / n;
}

async function captured<T>(fn: () => Promise<T>): Promise<{ value: T; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const so = jest.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => (out.push(String(c)), true));
  const se = jest.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => (err.push(String(c)), true));
  try {
    const value = await fn();
    return { value, out: out.join(''), err: err.join('') };
  } finally {
    so.mockRestore();
    se.mockRestore();
  }
}

describe('bucket edges', () => {
  test('0-63, 64-255, 256-1023, 1024-2047, then doubling, capped at seq - 1', () => {
    expect(bucketEdges(2)).toEqual([0]);
    expect(bucketEdges(64)).toEqual([0]);
    expect(bucketEdges(65)).toEqual([0, 64]);
    expect(bucketEdges(512)).toEqual([0, 64, 256]);
    expect(bucketEdges(2048)).toEqual([0, 64, 256, 1024]);
    expect(bucketEdges(4096)).toEqual([0, 64, 256, 1024, 2048]);
    expect(bucketEdges(16384)).toEqual([0, 64, 256, 1024, 2048, 4096, 8192]);
  });
});

describe.each([
  ['tiny-llama-gqa', llama],
  ['tiny-qwen2-gqa', qwen],
])('several lengths in one call on %s', (_name, dir) => {
  let multi: Awaited<ReturnType<typeof evalPpl>>;
  let single512: Awaited<ReturnType<typeof evalPpl>>;
  let single300: Awaited<ReturnType<typeof evalPpl>>;

  beforeAll(async () => {
    multi = await evalPpl({ modelDir: dir, textFile: evalFile, seqs: [1100, 512, 300], windows: 2 });
    single512 = await evalPpl({ modelDir: dir, textFile: evalFile, seq: 512, windows: 2 });
    single300 = await evalPpl({ modelDir: dir, textFile: evalFile, seq: 300, windows: 2 });
  });

  test('each length equals a single-length call exactly (same windows, same NLL bits)', () => {
    expect(multi.contexts.map((c) => c.seq)).toEqual([1100, 512, 300]);
    for (const [c, s] of [
      [multi.contexts[1], single512],
      [multi.contexts[2], single300],
    ] as const) {
      expect(c.ppl).toBe(s.ppl);
      expect(c.meanNll).toBe(s.meanNll);
      expect(c.windowNll).toEqual(s.windowNll);
      expect(Array.from(c.window0Nll)).toEqual(Array.from(s.window0Nll));
      expect(c.buckets).toEqual(s.buckets);
      expect(c.tokensScored).toBe(s.tokensScored);
    }
    // the top level is the first length
    expect(multi.seq).toBe(1100);
    expect(multi.ppl).toBe(multi.contexts[0].ppl);
    expect(single512.contexts).toHaveLength(1);
    expect(single512.warnings).toEqual([]);
  });

  test('buckets average back to the mean NLL and count every scored token', () => {
    for (const c of [...multi.contexts, ...single512.contexts]) {
      expect(Math.abs(bucketMean(c) - c.meanNll) / c.meanNll).toBeLessThan(1e-12);
      expect(c.buckets.reduce((a, b) => a + b.count, 0)).toBe(c.tokensScored);
      expect(c.buckets[c.buckets.length - 1].to).toBe(c.seq - 1);
    }
    const c = multi.contexts[0];
    expect(c.buckets.map((b) => [b.from, b.to, b.count])).toEqual([
      [0, 63, 2 * 63],
      [64, 255, 2 * 192],
      [256, 1023, 2 * 768],
      [1024, 1099, 2 * 76],
    ]);
  });

  test("buckets equal the positions' NLL averaged directly (window 0 alone)", async () => {
    const one = await evalPpl({ modelDir: dir, textFile: evalFile, seq: 300, windows: 1 });
    const w = one.window0Nll; // entry t scores position t + 1
    const direct = (lo: number, hi: number) => {
      let s = 0;
      for (let p = Math.max(1, lo); p <= hi; p++) s += w[p - 1];
      return s / (hi - Math.max(1, lo) + 1);
    };
    const want = [direct(0, 63), direct(64, 255), direct(256, 299)];
    one.buckets.forEach((b, i) => expect(Math.abs(b.meanNll - want[i]) / want[i]).toBeLessThan(1e-12));
    // later positions see more context: the last bucket beats the first on a trained model
    expect(one.buckets[2].meanNll).toBeLessThan(one.buckets[0].meanNll);
  });
});

describe('warnings and usage', () => {
  test('a length beyond max_position_embeddings (2048) warns; a short text says how many windows were scored', async () => {
    const text = readFileSync(evalFile, 'utf8').slice(0, 12000);
    const seen: string[] = [];
    const r = await evalPpl({ modelDir: llama, text, seqs: [2100, 256], windows: 40, onWarning: (m) => seen.push(m) });
    expect(r.warnings).toEqual(seen);
    expect(r.warnings[0]).toMatch(/seq 2100 exceeds the model's max_position_embeddings 2048/);
    const [c2100, c256] = r.contexts;
    expect(c2100.windows).toBe(Math.floor(r.textTokens / 2100));
    expect(c256.windows).toBe(Math.floor(r.textTokens / 256));
    expect(c256.windows).toBeLessThan(40);
    expect(r.warnings).toContain(
      `seq 256: the text holds ${c256.windows} windows of 256 tokens (${r.textTokens} tokens), fewer than the 40 requested; ${c256.windows} scored`,
    );
    expect(r.maxPositionEmbeddings).toBe(2048);
  });

  test('bad length lists are usage errors, before any work', async () => {
    for (const bad of [{ seqs: [] }, { seqs: [64, 64] }, { seqs: [64, 1] }, { seqs: [64.5] }, { seq: 64, seqs: [128] }])
      await expect(evalPpl({ modelDir: llama, textFile: evalFile, ...bad })).rejects.toMatchObject({ kind: 'usage', code: 'ERR_BAD_OPTION' });
    await expect(evalPpl({ modelDir: llama, text: 'def f(): pass', seqs: [2, 512] })).rejects.toMatchObject({
      code: 'ERR_TEXT_TOO_SHORT',
      message: expect.stringContaining('seq = 512'),
    });
  });

  test('CLI: --seq lists are checked (exit 2 naming --seq)', async () => {
    for (const bad of ['512,,2048', '64,64', '1,64', '64,x']) {
      const { value, err } = await captured(() => main(['node', 'gqa2mla', 'eval-ppl', llama, '--text', evalFile, '--seq', bad]));
      expect(value).toBe(2);
      expect(err).toContain('--seq');
    }
  });
});

describe('CLI --json (version 2)', () => {
  test('first length at the top level with the version-1 keys, every length in contexts; warnings on stderr', async () => {
    const { value, out, err } = await captured(() =>
      main(['node', 'gqa2mla', 'eval-ppl', llama, '--text', evalFile, '--seq', '64,2050', '--windows', '2', '--json']),
    );
    expect(value).toBe(0);
    const o = JSON.parse(out) as Record<string, unknown> & { contexts: Array<Record<string, unknown>> };
    expect(Object.keys(o).sort()).toEqual(['contexts', 'ppl', 'seconds', 'seq', 'textTokens', 'tokensScored', 'version', 'warnings', 'windows']);
    expect(o.version).toBe(2);
    expect(o.seq).toBe(64);
    expect(o.windows).toBe(2);
    expect(o.tokensScored).toBe(2 * 63);
    expect(o.contexts.map((c) => c.seq)).toEqual([64, 2050]);
    expect(Object.keys(o.contexts[1]).sort()).toEqual(['buckets', 'meanNll', 'ppl', 'seconds', 'seq', 'tokensScored', 'windows', 'windowsRequested']);
    expect((o.contexts[1].buckets as Array<{ from: number; to: number }>).map((b) => [b.from, b.to])).toEqual([
      [0, 63],
      [64, 255],
      [256, 1023],
      [1024, 2047],
      [2048, 2049],
    ]);
    expect(o.warnings).toEqual([expect.stringContaining('seq 2050 exceeds')]);
    expect(err).toContain('warning: seq 2050 exceeds');
    const direct = await evalPpl({ modelDir: llama, textFile: evalFile, seq: 64, windows: 2 });
    expect(o.ppl).toBe(direct.ppl);
  });
});

describe('conversion eval field', () => {
  test('pairs source and converted per length; mismatched lengths are refused', async () => {
    const a = await evalPpl({ modelDir: llama, textFile: evalFile, seqs: [128, 2100], windows: 1 });
    const b = await evalPpl({ modelDir: qwen, textFile: evalFile, seqs: [128, 2100], windows: 1 });
    const e = buildConversionEval(evalFile, a, b);
    expect(e.version).toBe(1);
    expect(e.contexts.map((c) => [c.seq, c.windows, c.beyondMaxPosition])).toEqual([
      [128, 1, false],
      [2100, 1, true],
    ]);
    expect(e.contexts[0].source.ppl).toBe(a.contexts[0].ppl);
    expect(e.contexts[1].converted.buckets).toEqual(b.contexts[1].buckets);
    expect(e.contexts[1].pplRatio).toBeCloseTo(b.contexts[1].ppl / a.contexts[1].ppl, 12);
    expect(e.warnings.filter((w) => w.startsWith('source: seq 2100 exceeds'))).toHaveLength(1);
    const c = await evalPpl({ modelDir: qwen, textFile: evalFile, seqs: [128], windows: 1 });
    expect(() => buildConversionEval(evalFile, a, c)).toThrow(expect.objectContaining({ code: 'ERR_EVAL_MISMATCH' }));
  });
});
