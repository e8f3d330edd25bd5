/**
 * What each engine's mixture-of-experts gate does to a Mixtral, measured on bench/zoo's
 * zoo-mixtral (4 experts, top-2): ppl on windows of `--seq` tokens of test/fixtures/pydocs-eval.txt
 * (the eval-ppl protocol) of
 *   - the original with Mixtral's gate (softmax over all logits, top-2, renormalised), and with
 *     the gate transformers' DeepseekV3TopkRouter computes from the converted config (sigmoid
 *     scores, same selection, weights sigmoid(l_i) / sum over the selected): the gate alone;
 *   - with `--converted DIR` (a conversion of zoo-mixtral), that directory as gqa2mla's engine,
 *     vLLM, SGLang and transformers compute it (src/interop/engine-semantics.ts).
 *
 *   npx tsx bench/interop/mixtral-routing.ts [--converted DIR] [--seq 512] [--windows 40]
 *     [--out bench/results/mixtral-routing-cpu.json]
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Checkpoint } from '../../src/checkpoint/checkpoint.js';
import { ModelRunner } from '../../src/engine/model.js';
import { ENGINES, engineRouting } from '../../src/interop/engine-semantics.js';
import { openEngineRunner } from '../../src/interop/engine-runner.js';
import { loadModelSpec } from '../../src/model/spec.js';
import { loadTokenizer } from '../../src/tokenize.js';

const root = join(import.meta.dirname, '..', '..');
const arg = (n: string, d: string) => (process.argv.includes(n) ? process.argv[process.argv.indexOf(n) + 1] : d);
const seq = Number(arg('--seq', '512'));
const windows = Number(arg('--windows', '40'));
const converted = arg('--converted', '');
const outFile = arg('--out', '');
const source = join(root, 'bench', 'zoo', 'models', 'zoo-mixtral');

const tok = await loadTokenizer(source);
const all = tok.encode(readFileSync(join(root, 'test', 'fixtures', 'pydocs-eval.txt'), 'utf8'));
const n = Math.min(windows, Math.floor(all.length / seq));
const ids = Int32Array.from(all.slice(0, n * seq));

/** ppl of `runner` on the windows (closes it). */
async function ppl(runner: ModelRunner): Promise<number> {
  try {
    const nll = await runner.nll(ids, n, seq);
    return Math.exp(nll.reduce((s, v) => s + v, 0) / nll.length);
  } finally {
    await runner.close();
  }
}

const spec = await loadModelSpec(source);
const sigmoidGate = { ...spec, moe: { ...spec.moe!, routing: engineRouting('transformers', spec.moe!.routing, false) } };
const rows: Record<string, number> = {};
rows['original, Mixtral gate'] = await ppl(await ModelRunner.open(source));
rows["original, transformers' DeepSeek-V3 gate"] = await ppl(new ModelRunner(await Checkpoint.open(source), sigmoidGate));
if (converted) {
  rows['converted, gqa2mla engine'] = await ppl(await ModelRunner.open(converted));
  for (const e of ENGINES) rows[`converted, as ${e} computes it`] = await ppl((await openEngineRunner(converted, e)).runner);
}
const base = rows['original, Mixtral gate'];
for (const [k, v] of Object.entries(rows)) console.log(`${k.padEnd(44)} ${v.toFixed(4)}  (${((v / base - 1) * 100).toFixed(2)}% vs the original)`);
if (outFile)
  writeFileSync(
    outFile,
    `${JSON.stringify({ model: 'zoo-mixtral', converted: converted ? JSON.parse(readFileSync(join(converted, 'config.json'), 'utf8')).gqa2mla ?? null : null, eval: { file: 'test/fixtures/pydocs-eval.txt', seq, windows: n }, ppl: rows }, null, 2)}\n`,
  );
