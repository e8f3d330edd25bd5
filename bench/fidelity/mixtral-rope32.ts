/**
 * zoo-mixtral's default conversion at the other split of the half budget: qk_rope_head_dim 32
 * (the whole head_dim) + kv_lora_rank 32 = 64 of 128 values per token and layer, where the
 * grid's rule (bench/fidelity/models.ts ropeDimFor) gives 16 + 48. Same calibration as the grid
 * (128 x 256 tokens of pydocs-train-3M, seed 42); eval-ppl at 512 tokens, 40 windows.
 *
 *   npx tsx bench/fidelity/mixtral-rope32.ts [--out bench/results/fidelity-zoo-mixtral-rope32-cpu.json]
 */
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convert } from '../../src/convert/convert.js';
import { evalPpl } from '../../src/eval/ppl.js';

const root = join(import.meta.dirname, '..', '..');
const arg = (n: string, d: string) => (process.argv.includes(n) ? process.argv[process.argv.indexOf(n) + 1] : d);
const outFile = arg('--out', '');
const dir = join(tmpdir(), 'gqa2mla-mixtral-rope32');
const settings = { calibFile: 'test/fixtures/pydocs-train-3M.txt', calibSamples: 128, calibSeqlen: 256, seed: 42, qkRopeDim: 32, kvLoraRank: 32 };
const t0 = performance.now();
const report = await convert({ modelDir: join(root, 'bench/zoo/models/zoo-mixtral'), outDir: dir, ...settings, calibFile: join(root, settings.calibFile), overwrite: true, device: 'cpu' });
const convertSeconds = (performance.now() - t0) / 1000;
const converted = await evalPpl({ modelDir: dir, textFile: join(root, 'test/fixtures/pydocs-eval.txt'), seq: 512, windows: 40 });
const original = await evalPpl({ modelDir: join(root, 'bench/zoo/models/zoo-mixtral'), textFile: join(root, 'test/fixtures/pydocs-eval.txt'), seq: 512, windows: 40 });
const result = {
  model: 'zoo-mixtral',
  row: 'gqa2mla default',
  settings,
  eval: { file: 'test/fixtures/pydocs-eval.txt', seq: 512, windows: converted.windows },
  ppl: { original: original.ppl, converted: converted.ppl, ratio: converted.ppl / original.ppl },
  meanAttnRelError: report.meanAttnRelError,
  convertSeconds,
};
console.log(JSON.stringify(result));
if (outFile) writeFileSync(outFile, `${JSON.stringify(result, null, 2)}\n`);
