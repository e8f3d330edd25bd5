/**
 * Fidelity regression guard: the default conversion (`--method gqa2mla`, every default
 * setting) of both bundled fixtures at one lossy budget each, scored by the eval-ppl
 * protocol of the README's Fidelity table (40 windows of 512 tokens of the eval text;
 * calibration: the first 3,000,000 characters of the training text, 128 x 256 tokens,
 * seed 42). Two bounds, both read from bench/results/fidelity-cpu.json (the committed
 * output of bench/fidelity/run.ts that the README table is made from):
 *  - the fidelity issue's target (perplexity gap to the original at most 0.6 x the gap of
 *    TransMLA's own code, the table's target row);
 *  - a drift guard: at most 2% above the default's perplexity in that file, so that losing
 *    one of the default's steps fails even where the target would still hold (measured
 *    with bench/fidelity/run.ts: no output refit +3.9% / +2.2%, objective instead of
 *    attention metric +5.5% / +2.4%, at these budgets).
 * The budgets are the small ones, where the default's steps matter most: tiny-llama-gqa
 * 32+32 (default 32.67, target 37.18) and tiny-qwen2-gqa 64+32 (27.43, target 28.29).
 * Measured by this test on this project's 2-core machine (default settings, 40 windows):
 * llama 32+32 ppl 32.6664, qwen2 64+32 ppl 27.4338 with the choices on 256-token windows;
 * 30.9579 and 27.4130 with the serving-context default (`--context` 2048, clean-clone CI run of
 * 5418c12; the drift guard still reads the committed table's values). Cost: the conversion (12.7 s / 36.5 s on
 * the idle machine, bench/results/fidelity-cpu.json) plus the 40-window eval (18 s of CPU
 * time measured under load); under the shared machine's load (load average 15-25) a case
 * took 7-20 minutes of wall time, hence the 40-minute timeout.
 * A deliberately broken build fails it (scratch branches, llama case): the output refit off
 * by default gives 33.9272 (> the 2% guard 33.32, target still met); TransMLA's method as
 * the default gives 55.7740 (> the target 37.18).
 *
 * The table was measured with the exact bias construction, which is `--target transformers`
 * since the portable export became the default; these two cases convert with it (for the
 * bias-free llama fixture the portable output computes the same). The portable default of the
 * biased qwen2 fixture folds its biases approximately: measured 32.4585 at 64+32 (clean-clone
 * CI run of 5418c12, 2026-12-01, serving-context default; 31.3731 before it), worse than the
 * table's target; its own case asserts that it stays
 * better than TransMLA's own code at that budget (35.735, bench/results/fidelity-cpu.json)
 * and within 2% of that measurement.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convert } from '../src/convert/convert.js';
import { evalPpl } from '../src/eval/ppl.js';

const root = new URL('..', import.meta.url).pathname;
const FIX = join(root, 'test', 'fixtures');
const bench = JSON.parse(readFileSync(join(root, 'bench', 'results', 'fidelity-cpu.json'), 'utf8')) as {
  targets: Array<{ fixture: string; qkRopeDim: number; kvLoraRank: number; maxPpl: number }>;
  rows: Array<{ fixture: string; qkRopeDim: number; kvLoraRank: number; config: string; ppl: number }>;
};

/** Drift allowed above the committed default's perplexity. */
const DRIFT = 0.02;

const cases = [
  { fixture: 'tiny-llama-gqa', qkRopeDim: 32, kvLoraRank: 32 },
  { fixture: 'tiny-qwen2-gqa', qkRopeDim: 64, kvLoraRank: 32 },
].map((c) => {
  const same = (r: { fixture: string; qkRopeDim: number; kvLoraRank: number }) =>
    r.fixture === c.fixture && r.qkRopeDim === c.qkRopeDim && r.kvLoraRank === c.kvLoraRank;
  const target = bench.targets.find(same)!.maxPpl;
  const committed = bench.rows.find((r) => same(r) && r.config === 'gqa2mla default')!.ppl;
  return { ...c, name: `${c.fixture} ${c.qkRopeDim}+${c.kvLoraRank}`, target, committed, bounds: `<= ${target.toFixed(2)}, <= ${(committed * (1 + DRIFT)).toFixed(2)}` };
});

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'g2m-fid-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

test.each(cases)(
  '$name: default settings with --target transformers (the export of the table), ppl within the fidelity target and 2% of the committed default ($bounds)',
  async (c) => {
    const out = join(tmp, c.name.replace(/[ +]/g, '-'));
    await convert({
      modelDir: join(FIX, c.fixture),
      outDir: out,
      calibFile: join(FIX, 'pydocs-train-3M.txt'),
      calibSamples: 128,
      calibSeqlen: 256,
      seed: 42,
      qkRopeDim: c.qkRopeDim,
      kvLoraRank: c.kvLoraRank,
      target: 'transformers',
      overwrite: true,
    });
    const { ppl, windows } = await evalPpl({ modelDir: out, textFile: join(FIX, 'pydocs-eval.txt'), seq: 512, windows: 40 });
    console.log(`${c.name}: ppl ${ppl.toFixed(4)} (target <= ${c.target.toFixed(2)}, committed ${c.committed.toFixed(4)})`);
    expect(windows).toBe(40);
    expect(ppl).toBeLessThanOrEqual(c.target);
    expect(ppl).toBeLessThanOrEqual(c.committed * (1 + DRIFT));
    rmSync(out, { recursive: true, force: true });
  },
  2_400_000,
);

/**
 * The portable default of the biased fixture: measured 32.4585 by this test in a clean-clone
 * `.ci/run` of 5418c12 (2026-12-01), the first with the serving-context default (`--context`
 * = 2048 here; 31.3731 before, with the choices on 256-token windows).
 */
const PORTABLE_QWEN2_MEASURED = 32.4585;

test('tiny-qwen2-gqa 64+32, portable default (biases folded): better than TransMLA\'s own code and within 2% of its measurement', async () => {
  const transmla = (JSON.parse(readFileSync(join(root, 'bench', 'results', 'fidelity-cpu.json'), 'utf8')) as { transmlaCode: Array<{ fixture: string; qkRopeDim: number; kvLoraRank: number; transmla: number }> }).transmlaCode.find(
    (r) => r.fixture === 'tiny-qwen2-gqa' && r.qkRopeDim === 64 && r.kvLoraRank === 32,
  )!.transmla;
  const out = join(tmp, 'qwen2-portable');
  await convert({ modelDir: join(FIX, 'tiny-qwen2-gqa'), outDir: out, calibFile: join(FIX, 'pydocs-train-3M.txt'), calibSamples: 128, calibSeqlen: 256, seed: 42, qkRopeDim: 64, kvLoraRank: 32 });
  const { ppl } = await evalPpl({ modelDir: out, textFile: join(FIX, 'pydocs-eval.txt'), seq: 512, windows: 40 });
  console.log(`tiny-qwen2-gqa 64+32 portable: ppl ${ppl.toFixed(4)} (TransMLA's own code ${transmla}, measured ${PORTABLE_QWEN2_MEASURED})`);
  expect(ppl).toBeLessThan(transmla);
  expect(ppl).toBeLessThanOrEqual(PORTABLE_QWEN2_MEASURED * (1 + DRIFT));
  rmSync(out, { recursive: true, force: true });
}, 2_400_000);
