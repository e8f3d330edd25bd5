/**
 * Budget sweeps: one calibration pass for several budgets; each output equals the
 * single-budget conversion byte for byte, and the sweep costs well under the sum of runs.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convert, convertSweep } from '../src/convert/convert.js';
import { summarizeSweep } from '../src/convert/sweep.js';

const FIX = join(new URL('.', import.meta.url).pathname, 'fixtures');
const LLAMA = join(FIX, 'tiny-llama-gqa');
const calibFile = join(FIX, 'pydocs-train-3M.txt');
// context = calibSeqlen: the held-out windows of calibSeqlen tokens (as the pinned llama-sweep case);
// the sweep's byte identity and sharing do not depend on the held-out window length, and the
// serving-context default's long windows cost several times the CPU time of these transmla runs
// (4.7x for one tiny-llama-gqa transmla conversion of 16 x 128 tokens, 27.4 s vs 5.8 s)
const base = { modelDir: LLAMA, calibFile, calibSamples: 32, calibSeqlen: 128, heldOutSamples: 4, context: 128, method: 'transmla' as const, freqfold: 2 };

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'gqa2mla-sweep-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

test('a sweep of 3 budgets: < 1.6x one conversion, outputs byte-identical to single runs', async () => {
  // CPU time of this process (all its threads): stable when other jobs share the machine,
  // unlike wall time; best of two of each, interleaved
  const cpu = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  };
  let single = Infinity;
  let sweepMs = Infinity;
  let sweep: Awaited<ReturnType<typeof convertSweep>> | null = null;
  for (let rep = 0; rep < 2; rep++) {
    const t0 = cpu();
    await convert({ ...base, outDir: join(tmp, 'single-64'), kvLoraRank: 64, qkRopeDim: 32, overwrite: true });
    single = Math.min(single, cpu() - t0);
    const t1 = cpu();
    sweep = await convertSweep({ ...base, outDir: join(tmp, 'sweep'), kvLoraRanks: [32, 64, 128], qkRopeDims: [32], overwrite: true });
    sweepMs = Math.min(sweepMs, cpu() - t1);
  }
  if (!sweep) throw new Error('no sweep ran');
  console.log(`CPU time: single ${(single / 1000).toFixed(1)} s, sweep of 3 ${(sweepMs / 1000).toFixed(1)} s (${(sweepMs / single).toFixed(2)}x)`);
  expect(sweep.budgets.map((b) => b.dir.split('/').pop())).toEqual(['r32-p32', 'r64-p32', 'r128-p32']);
  expect(sweepMs / single).toBeLessThan(1.6);
  for (const r of [32, 128]) await convert({ ...base, outDir: join(tmp, `single-${r}`), kvLoraRank: r, qkRopeDim: 32 });
  for (const r of [32, 64, 128]) {
    const a = join(tmp, `single-${r}`);
    const b = join(tmp, 'sweep', `r${r}-p32`);
    const files = readdirSync(a).filter((f) => f.endsWith('.safetensors') || f === 'model.safetensors.index.json' || f === 'config.json');
    expect(files.length).toBeGreaterThan(4);
    for (const f of files) expect(Buffer.compare(readFileSync(join(a, f)), readFileSync(join(b, f)))).toBe(0);
    expect(existsSync(join(b, 'report.html'))).toBe(true);
  }
  // sweep.json and the sweep's report.html, linking every budget's own report
  const summary = await summarizeSweep(sweep, LLAMA, null);
  expect(summary.budgets.map((b) => b.kvValuesPerTokenPerLayer)).toEqual([64, 96, 160]);
  expect(summary.budgets.map((b) => b.meanAttnRelError)).toEqual(sweep.budgets.map((b) => b.report.meanAttnRelError));
  const page = readFileSync(join(tmp, 'sweep', 'report.html'), 'utf8');
  for (const r of [32, 64, 128]) expect(page).toContain(`<a href="r${r}-p32/report.html">r${r}-p32</a>`);
  for (const c of ['sweep-tradeoff', 'sweep-kv-cache', 'sweep-attn-error']) expect(page).toContain(`data-chart="${c}"`);
}, 600000);

test('a sweep needs original calibration inputs', async () => {
  await expect(convertSweep({ ...base, outDir: join(tmp, 'bad'), kvLoraRanks: [32, 64], qkRopeDims: [32], calibInputs: 'converted' })).rejects.toThrow(
    /calibInputs 'original'/,
  );
});
