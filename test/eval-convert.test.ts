/**
 * `convert --eval-text --eval-seq a,b`: conversion-report.json's `eval` field (one context per
 * length, source and converted ppl and buckets) equals eval-ppl run on each directory.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ConversionEval } from '../src/eval/conversion-eval.js';
import { evalPpl } from '../src/eval/ppl.js';
import { runCli } from './helpers/run-cli.js';

const LLAMA = 'test/fixtures/tiny-llama-gqa';
const EVAL = 'test/fixtures/pydocs-eval.txt';
// --context = --calib-seqlen (the held-out windows of 64 tokens): the eval field does not depend on the
// held-out window length, and the serving-context default's longer windows only add CPU time
const fast = ['--calib', 'test/fixtures/pydocs-train-3M.txt', '--calib-samples', '8', '--calib-seqlen', '64', '--held-out', '2', '--context', '64', '--method', 'transmla', '--freqfold', '2'];
const evalArgs = ['--eval-text', EVAL, '--eval-seq', '64,300', '--eval-windows', '2', '--qk-rope-dim', '32'];

interface Report {
  ppl: { before: number; after: number; protocol: string };
  eval: ConversionEval;
}
const read = (dir: string) => JSON.parse(readFileSync(join(dir, 'conversion-report.json'), 'utf8')) as Report;

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'gqa2mla-eval-conv-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

test('single conversion: eval.contexts per --eval-seq length equal eval-ppl on source and output', async () => {
  const out = join(tmp, 'one');
  const r = await runCli('convert', LLAMA, out, ...fast, ...evalArgs, '--kv-lora-rank', '64', '--quiet');
  expect(r.code).toBe(0);
  const rep = read(out);
  const src = await evalPpl({ modelDir: LLAMA, textFile: EVAL, seqs: [64, 300], windows: 2 });
  const conv = await evalPpl({ modelDir: out, textFile: EVAL, seqs: [64, 300], windows: 2 });
  expect(rep.eval.version).toBe(1);
  expect(rep.eval.windowsRequested).toBe(2);
  expect(rep.eval.contexts.map((c) => [c.seq, c.windows, c.tokensScored, c.beyondMaxPosition])).toEqual([
    [64, 2, 126, false],
    [300, 2, 598, false],
  ]);
  rep.eval.contexts.forEach((c, i) => {
    expect(c.source.ppl).toBe(src.contexts[i].ppl);
    expect(c.converted.ppl).toBe(conv.contexts[i].ppl);
    expect(c.converted.buckets).toEqual(conv.contexts[i].buckets);
    expect(c.pplRatio).toBeCloseTo(conv.contexts[i].ppl / src.contexts[i].ppl, 12);
  });
  // the older field keeps the first length
  expect(rep.ppl.before).toBe(src.contexts[0].ppl);
  expect(rep.ppl.after).toBe(conv.contexts[0].ppl);
  expect(rep.ppl.protocol).toContain('windows of 64 tokens');
  expect(rep.eval.warnings).toEqual([]);
});

test('sweep: every budget gets eval.contexts, the source evaluated once and shared', async () => {
  const out = join(tmp, 'sweep');
  const r = await runCli('convert', LLAMA, out, ...fast, ...evalArgs, '--kv-lora-rank', '32,64', '--quiet');
  expect(r.code).toBe(0);
  const a = read(join(out, 'r32-p32'));
  const b = read(join(out, 'r64-p32'));
  expect(a.eval.contexts.map((c) => c.source)).toEqual(b.eval.contexts.map((c) => c.source));
  const conv = await evalPpl({ modelDir: join(out, 'r32-p32'), textFile: EVAL, seqs: [64, 300], windows: 2 });
  expect(a.eval.contexts.map((c) => c.converted.ppl)).toEqual(conv.contexts.map((c) => c.ppl));
  const sweep = JSON.parse(readFileSync(join(out, 'sweep.json'), 'utf8')) as { pplBefore: number; budgets: Array<{ ppl: number }> };
  expect(sweep.pplBefore).toBe(a.eval.contexts[0].source.ppl);
  expect(sweep.budgets[0].ppl).toBe(a.eval.contexts[0].converted.ppl);
});

test('a bad --eval-seq list is a usage error', async () => {
  const r = await runCli('convert', LLAMA, join(tmp, 'never'), ...fast, '--eval-text', EVAL, '--eval-seq', '64,,300');
  expect(r.code).toBe(2);
  expect(r.err).toContain('--eval-seq');
});
