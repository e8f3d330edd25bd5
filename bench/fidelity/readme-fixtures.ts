/**
 * Fidelity ablation (bench/fidelity): both fixtures at the budgets of the conversion-core
 * table, TransMLA-equivalent settings vs each improvement vs gqa2mla's default, measured
 * with the eval-ppl protocol (40 windows of 512 tokens of the eval text). Calibration:
 * the first 3,000,000 characters of pydocs-train, 128 x 256 tokens, seed 42.
 *
 *   npx tsx bench/fidelity/readme-fixtures.ts [--quick]      (writes bench/results/fidelity-cpu.json)
 *
 * (the README's fixture table; bench/fidelity/run.ts runs the grid over the fixtures and the zoo)
 */
import { cpus } from 'node:os';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { convert, type ConvertOptions } from '../../src/convert/convert.js';
import { evalPpl } from '../../src/eval/ppl.js';
import { layerChoices } from './task.js';

const root = join(import.meta.dirname, '..', '..');
const fx = (n: string) => join(root, 'test', 'fixtures', n);
const quick = process.argv.includes('--quick');

const budgets = [
  { fixture: 'tiny-llama-gqa', qkRopeDim: 32, kvLoraRank: 96, transmla: 28.445, transmlaPartial: 27.044 },
  { fixture: 'tiny-llama-gqa', qkRopeDim: 32, kvLoraRank: 32, transmla: 51.354, transmlaPartial: 27.044 },
  { fixture: 'tiny-qwen2-gqa', qkRopeDim: 64, kvLoraRank: 64, transmla: 23.438, transmlaPartial: 20.303 },
  { fixture: 'tiny-qwen2-gqa', qkRopeDim: 64, kvLoraRank: 32, transmla: 35.735, transmlaPartial: 20.303 },
];
const original: Record<string, number> = { 'tiny-llama-gqa': 15.925, 'tiny-qwen2-gqa': 17.117 };

type Cfg = Partial<ConvertOptions>;
const tm: Cfg = { method: 'transmla' };
const configs: Array<{ name: string; opts: Cfg }> = [
  // TransMLA-equivalent settings plus one improvement at a time
  { name: 'transmla-equivalent', opts: tm },
  { name: '+ query-aware RoPE selection', opts: { ...tm, ropeSelection: 'qk' } },
  { name: '+ objective-aware K/V metric', opts: { ...tm, kvMetric: 'objective' } },
  { name: '+ attention-aware K/V metric', opts: { ...tm, kvMetric: 'attention' } },
  { name: '+ NoPE expected-cosine shrink', opts: { ...tm, nopeShrink: true, nopeRotation: false } },
  { name: '+ NoPE expected rotation', opts: { ...tm, nopeShrink: true, nopeRotation: true } },
  { name: '+ value refit', opts: { ...tm, valueRefit: true } },
  { name: '+ output refit (joint o_proj/kv_b)', opts: { ...tm, outputRefit: true } },
  { name: '+ balance searched per layer', opts: { ...tm, balanceKv: 'auto' } },
  { name: '+ sequential calibration', opts: { ...tm, calibInputs: 'converted' } },
  // the default with one improvement removed at a time
  { name: 'default, objective metric (not attention)', opts: { kvMetric: 'objective' } },
  { name: 'default, expected cosine only', opts: { nopeRotation: false } },
  { name: 'default, no output refit', opts: { outputRefit: false } },
  { name: 'default, rope qk fixed', opts: { ropeSelection: 'qk' } },
  { name: 'gqa2mla default', opts: {} },
  { name: 'gqa2mla default + sequential calibration', opts: { calibInputs: 'converted' } },
];

const rows: Array<Record<string, unknown>> = [];
const tmp = join(root, 'tmpwork', 'fidelity');
mkdirSync(tmp, { recursive: true });
for (const b of budgets) {
  for (const c of quick ? configs.filter((c) => c.name === 'transmla-equivalent' || c.name === 'gqa2mla default') : configs) {
    const out = join(tmp, 'out');
    rmSync(out, { recursive: true, force: true });
    const t0 = performance.now();
    const report = await convert({
      modelDir: fx(b.fixture),
      outDir: out,
      calibFile: join(root, 'test', 'fixtures', 'pydocs-train-3M.txt'),
      calibSamples: 128,
      calibSeqlen: 256,
      seed: 42,
      qkRopeDim: b.qkRopeDim,
      kvLoraRank: b.kvLoraRank,
      overwrite: true,
      ...c.opts,
    });
    const seconds = (performance.now() - t0) / 1000;
    const ppl = (await evalPpl({ modelDir: out, textFile: join(root, 'test', 'fixtures', 'pydocs-eval.txt'), seq: 512, windows: 40 })).ppl;
    const gapTm = b.transmla - original[b.fixture];
    const row = {
      fixture: b.fixture,
      qkRopeDim: b.qkRopeDim,
      kvLoraRank: b.kvLoraRank,
      config: c.name,
      ppl,
      gap: ppl - original[b.fixture],
      gapVsTransmlaCode: (ppl - original[b.fixture]) / gapTm,
      transmlaCodePpl: b.transmla,
      meanAttnRelError: report.meanAttnRelError,
      ...layerChoices(report),
      candidates: report.layers.map((l) => l.candidates.length),
      convertSeconds: seconds,
    };
    rows.push(row);
    console.log(
      `${b.fixture.padEnd(15)} ${String(b.qkRopeDim).padStart(3)}+${String(b.kvLoraRank).padEnd(4)} ${c.name.padEnd(44)} ppl ${ppl.toFixed(3).padStart(7)}  gap/TransMLA ${row.gapVsTransmlaCode.toFixed(2)}  ${seconds.toFixed(1)} s`,
    );
  }
}
rmSync(tmp, { recursive: true, force: true });
// the fidelity target: gap at most 0.6 x the gap of TransMLA's own code
const targets = budgets.map((b) => ({ fixture: b.fixture, qkRopeDim: b.qkRopeDim, kvLoraRank: b.kvLoraRank, maxPpl: original[b.fixture] + 0.6 * (b.transmla - original[b.fixture]) }));
const head = budgets.map((b) => `${b.fixture} ${b.qkRopeDim}+${b.kvLoraRank}`);
console.log(`\n${'setting'.padEnd(44)} ${head.map((h) => h.padStart(22)).join(' ')}`);
console.log(`${'target (gap <= 0.6 x TransMLA code)'.padEnd(44)} ${targets.map((t) => `<= ${t.maxPpl.toFixed(2)}`.padStart(22)).join(' ')}`);
for (const c of quick ? configs.filter((c) => c.name === 'transmla-equivalent' || c.name === 'gqa2mla default') : configs) {
  const cells = budgets.map((b) => {
    const r = rows.find((x) => x.config === c.name && x.fixture === b.fixture && x.kvLoraRank === b.kvLoraRank && x.qkRopeDim === b.qkRopeDim)!;
    return `${(r.ppl as number).toFixed(2)} (${(r.gapVsTransmlaCode as number).toFixed(2)}) ${(r.convertSeconds as number).toFixed(0)}s`.padStart(22);
  });
  console.log(`${c.name.padEnd(44)} ${cells.join(' ')}`);
}
console.log(`machine: ${cpus()[0]?.model}, ${cpus().length} cores`);
const result = {
  machine: { cpu: cpus()[0]?.model, cores: cpus().length },
  protocol:
    'calibration: first 3,000,000 characters of pydocs-train, 128 x 256 tokens, seed 42 (+16 held-out windows); evaluation: eval-ppl, 40 windows of 512 tokens of pydocs-eval',
  original,
  transmlaCode: budgets,
  targets,
  rows,
};
const file = join(root, 'bench', 'results', quick ? 'fidelity-cpu-quick.json' : 'fidelity-cpu.json');
writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
console.log(`saved ${file}`);
