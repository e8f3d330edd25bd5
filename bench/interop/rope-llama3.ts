/**
 * The rope the engines compute for a llama3-scaled source, measured on a real model: a copy of
 * the tiny-llama-gqa fixture whose config carries Llama-3.1's llama3 scaling (factor 8,
 * low/high 1/4) with original_max_position_embeddings = max_position_embeddings / 8, converted
 * with the portable target; then the same converted weights scored with the exported rope
 * (what vLLM / SGLang / transformers compute) and with the source's llama3 rope, on windows of
 * max_position_embeddings tokens.
 *
 *   npx tsx bench/interop/rope-llama3.ts [--work DIR] [--windows 2] [--calib-samples 32]
 */
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { convert } from '../../src/convert/convert.js';
import { ModelRunner } from '../../src/engine/model.js';
import { Checkpoint } from '../../src/checkpoint/checkpoint.js';
import { parseModelSpec } from '../../src/model/spec.js';
import { loadTokenizer } from '../../src/tokenize.js';

const root = join(import.meta.dirname, '..', '..');
const arg = (n: string, d: string) => (process.argv.includes(n) ? process.argv[process.argv.indexOf(n) + 1] : d);
const work = arg('--work', join(root, 'tmpwork', 'rope-llama3'));
const windows = Number(arg('--windows', '2'));
const calibSamples = Number(arg('--calib-samples', '32'));
rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });
const src = join(work, 'tiny-llama-llama3');
cpSync(join(root, 'test', 'fixtures', 'tiny-llama-gqa'), src, { recursive: true });
const cfg = JSON.parse(readFileSync(join(src, 'config.json'), 'utf8'));
const maxPos = cfg.max_position_embeddings as number;
cfg.rope_parameters = { rope_type: 'llama3', rope_theta: 10000.0, factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: maxPos / 8 };
writeFileSync(join(src, 'config.json'), JSON.stringify(cfg, null, 2));
const out = join(work, 'portable');
const report = await convert({
  modelDir: src, outDir: out, calibFile: join(root, 'test', 'fixtures', 'pydocs-train-3M.txt'), calibSamples, calibSeqlen: 256, qkRopeDim: 32, kvLoraRank: 96, overwrite: true,
});
const tok = await loadTokenizer(out);
const ids = Int32Array.from(tok.encode(readFileSync(join(root, 'test', 'fixtures', 'pydocs-eval.txt'), 'utf8')).slice(0, windows * maxPos));
const n = Math.floor(ids.length / maxPos);
async function ppl(config: Record<string, unknown>): Promise<{ ppl: number; nll: Float64Array }> {
  const ck = await Checkpoint.open(out);
  const runner = new ModelRunner(ck, parseModelSpec(config));
  try {
    const nll = await runner.nll(ids.subarray(0, n * maxPos), n, maxPos);
    return { ppl: Math.exp(nll.reduce((s, v) => s + v, 0) / nll.length), nll };
  } finally {
    await runner.close();
  }
}
const exported = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
const sourceRope = { ...exported, rope_parameters: cfg.rope_parameters, rope_scaling: cfg.rope_parameters, max_position_embeddings: maxPos };
const a = await ppl(exported);
const b = await ppl(sourceRope);
let d = 0;
for (let i = 0; i < a.nll.length; i++) d = Math.max(d, Math.abs(a.nll[i] - b.nll[i]));
const result = {
  rope: report.portable?.rope,
  windows: n,
  seq: maxPos,
  pplEngineRope: a.ppl,
  pplSourceRope: b.ppl,
  pplRelDiff: a.ppl / b.ppl - 1,
  nllMaxAbsDiff: d,
};
writeFileSync(join(work, 'result.json'), JSON.stringify(result, null, 2));
console.log(JSON.stringify({ ...result, rope: { ...result.rope, perFrequencyRelError: undefined } }, null, 2));
