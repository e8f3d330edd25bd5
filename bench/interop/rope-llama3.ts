/**
 * The rope the engines compute for llama3-scaled sources, measured on real models: a copy of the
 * tiny-llama-gqa fixture whose config carries Llama-3.1's llama3 scaling (factor 8, low/high 1/4,
 * original_max_position_embeddings = max_position_embeddings / 8) and bench/zoo's zoo-llama31 (a
 * model trained with llama3 scaling: head_dim 128, original_max_position_embeddings 1024, trained
 * at 2048 tokens). Each source is converted with the portable target; the converted weights are
 * scored on windows of `--seq` tokens of test/fixtures/pydocs-eval.txt (the eval-ppl protocol)
 * with the source's rope at the kept slots (llama3 over qk_rope_head_dim dims: what the
 * conversion fitted, and what `--target transformers` writes) and as vLLM computes the portable
 * directory (deepseek_yarn from the exported rope, src/interop/engine-semantics.ts); the source
 * model is scored too.
 *
 *   npx tsx bench/interop/rope-llama3.ts [--models fixture,zoo-llama31] [--work DIR] [--seq 2048]
 *     [--windows 2] [--calib-samples 16] [--out bench/results/rope-llama3-cpu.json] [--ramp-scan]
 *
 * With --ramp-scan, the portable conversion is also scored as vLLM computes it with the other
 * integer ramps (low, high) around the fitted one (src/export/rope-yarn.ts yarnRopeForRamp).
 */
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Checkpoint } from '../../src/checkpoint/checkpoint.js';
import { convert } from '../../src/convert/convert.js';
import { ModelRunner } from '../../src/engine/model.js';
import { openEngineRunner } from '../../src/interop/engine-runner.js';
import { engineView, ropeDifference } from '../../src/interop/engine-semantics.js';
import { engineYarnFrequencies, keptSourceFrequencies, yarnRopeForRamp } from '../../src/export/rope-yarn.js';
import { loadModelSpec, parseModelSpec } from '../../src/model/spec.js';
import type { ModelSpec } from '../../src/model/spec-types.js';
import type { ConversionReport } from '../../src/report-types.js';
import { loadTokenizer } from '../../src/tokenize.js';

const root = join(import.meta.dirname, '..', '..');
const arg = (n: string, d: string) => (process.argv.includes(n) ? process.argv[process.argv.indexOf(n) + 1] : d);
const work = arg('--work', join(tmpdir(), 'gqa2mla-rope-llama3'));
const seq = Number(arg('--seq', '2048'));
const windows = Number(arg('--windows', '2'));
const calibSamples = Number(arg('--calib-samples', '16'));
const outFile = arg('--out', '');
const models = arg('--models', 'fixture,zoo-llama31').split(',');
const rampScan = process.argv.includes('--ramp-scan');

/** One source model and the budget it is converted at. */
interface Case {
  name: string;
  about: string;
  dir: string;
  qkRopeDim: number;
  kvLoraRank: number;
}

/** The fixture copy with Llama-3.1's llama3 scaling (original = max / 8). */
function fixtureCase(): Case {
  const dir = join(work, 'tiny-llama-llama3');
  cpSync(join(root, 'test', 'fixtures', 'tiny-llama-gqa'), dir, { recursive: true });
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  const maxPos = cfg.max_position_embeddings as number;
  cfg.rope_parameters = { rope_type: 'llama3', rope_theta: 10000.0, factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: maxPos / 8 };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg, null, 2));
  return { name: 'fixture', about: 'tiny-llama-gqa (head_dim 64, 2 KV heads; trained unscaled) with llama3 scaling written into its config', dir, qkRopeDim: 32, kvLoraRank: 96 };
}

const zooCase = (): Case => ({
  name: 'zoo-llama31',
  about: 'bench/zoo/models/zoo-llama31 (head_dim 128, 1 KV head, trained with llama3 scaling, original 1024, at 2048 tokens); half budget 64 + 64',
  dir: join(root, 'bench', 'zoo', 'models', 'zoo-llama31'),
  qkRopeDim: 64,
  kvLoraRank: 64,
});

async function evalIds(dir: string): Promise<{ ids: Int32Array; n: number }> {
  const tok = await loadTokenizer(dir);
  const all = tok.encode(readFileSync(join(root, 'test', 'fixtures', 'pydocs-eval.txt'), 'utf8'));
  const n = Math.min(windows, Math.floor(all.length / seq));
  return { ids: Int32Array.from(all.slice(0, n * seq)), n };
}

async function score(runner: ModelRunner, ids: Int32Array, n: number): Promise<number> {
  try {
    const nll = await runner.nll(ids, n, seq);
    return Math.exp(nll.reduce((s, v) => s + v, 0) / nll.length);
  } finally {
    await runner.close();
  }
}

const runnerWith = async (dir: string, config: Record<string, unknown>) => new ModelRunner(await Checkpoint.open(dir), parseModelSpec(config));
const readConfig = (dir: string) => JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;

/** `config` with the rope (and max_position_embeddings) of `from`. */
function withRope(config: Record<string, unknown>, from: Record<string, unknown>): Record<string, unknown> {
  const rope = (from.rope_parameters ?? { ...(from.rope_scaling as object), rope_theta: from.rope_theta }) as Record<string, unknown>;
  const c: Record<string, unknown> = { ...config, max_position_embeddings: from.max_position_embeddings, rope_parameters: rope };
  delete c.rope_scaling;
  delete c.rope_theta;
  return c;
}

async function convertPortable(c: Case): Promise<{ dir: string; report: ConversionReport }> {
  const dir = join(work, `${c.name}-portable`);
  const report = await convert({
    modelDir: c.dir, outDir: dir, target: 'portable', calibFile: join(root, 'test', 'fixtures', 'pydocs-train-3M.txt'), calibSamples, calibSeqlen: 256,
    qkRopeDim: c.qkRopeDim, kvLoraRank: c.kvLoraRank, overwrite: true,
  });
  return { dir, report };
}

/** The three engines compute the same rope from the portable config as gqa2mla's engine reads it. */
function enginesAgree(config: Record<string, unknown>): number {
  const ours = parseModelSpec(config);
  let worst = 0;
  for (const e of ['vllm', 'sglang', 'transformers'] as const) {
    const d = ropeDifference(ours, engineView(e, config, FACTS).spec!);
    worst = Math.max(worst, d.freq, d.cosSin, d.softmax);
  }
  return worst;
}

const FACTS = { names: new Set(['lm_head.weight']), zero: new Set<string>() };

/** The portable conversion as vLLM computes it with the ramp (low, high) instead of the fitted one. */
async function scoreRamps(c: Case, dir: string, pCfg: Record<string, unknown>, fit: { low: number; high: number }, eval_: { ids: Int32Array; n: number }) {
  const src: ModelSpec = await loadModelSpec(c.dir);
  const { inv: kept } = keptSourceFrequencies(src, c.qkRopeDim);
  const out: Record<string, unknown>[] = [];
  for (let low = Math.max(0, fit.low - 1); low <= fit.low + 1; low++)
    for (let high = low + 1; high <= fit.high + 1; high++) {
      const p = yarnRopeForRamp(src, c.qkRopeDim, low, high);
      const e = engineYarnFrequencies(p, c.qkRopeDim);
      const rel = Array.from(kept, (v, i) => (e[i] - v) / v);
      const phase = Math.max(...Array.from(kept, (v, i) => Math.abs(e[i] - v) * (seq - 1)));
      const view = engineView('vllm', withRope(pCfg, { max_position_embeddings: pCfg.max_position_embeddings, rope_parameters: p }), FACTS);
      const ppl = await score(new ModelRunner(await Checkpoint.open(dir), view.spec!), eval_.ids, eval_.n);
      out.push({ low, high, fitted: low === fit.low && high === fit.high, maxAbsRelError: Math.max(...rel.map(Math.abs)), signedRelErrors: rel.filter((v) => Math.abs(v) > 1e-6).map((v) => Number(v.toFixed(3))), phaseErrorAtSeq: phase, ppl });
      console.log(JSON.stringify(out[out.length - 1]));
    }
  return out;
}

async function runCase(c: Case): Promise<Record<string, unknown>> {
  const portable = await convertPortable(c);
  const { ids, n } = await evalIds(c.dir);
  const pCfg = readConfig(portable.dir);
  const source = readConfig(c.dir);
  const pplSource = await score(new ModelRunner(await Checkpoint.open(c.dir), await loadModelSpec(c.dir)), ids, n);
  const pplSourceRope = await score(await runnerWith(portable.dir, withRope(pCfg, source)), ids, n);
  const pplEngine = await score((await openEngineRunner(portable.dir, 'vllm')).runner, ids, n);
  const rope = portable.report.portable!.rope;
  return {
    name: c.name,
    about: c.about,
    qkRopeDim: c.qkRopeDim,
    kvLoraRank: c.kvLoraRank,
    windows: n,
    seq,
    rope: { ...rope, perFrequencyRelError: rope.perFrequencyRelError.map((v) => Number(v.toPrecision(4))) },
    enginesRopeMaxRelDiff: enginesAgree(pCfg),
    pplSource,
    pplSourceRope,
    pplEngine,
    pplEngineRelDiff: pplEngine / pplSourceRope - 1,
    meanAttnRelError: portable.report.meanAttnRelError,
    ...(rampScan && rope.ramp ? { rampScan: await scoreRamps(c, portable.dir, pCfg, rope.ramp, { ids, n }) } : {}),
  };
}

rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });
const results: Record<string, unknown>[] = [];
for (const m of models) {
  const r = await runCase(m === 'fixture' ? fixtureCase() : zooCase());
  console.log(JSON.stringify({ ...r, rope: { ...(r.rope as object), perFrequencyRelError: undefined } }, null, 2));
  results.push(r);
}
const result = {
  about: 'bench/interop/rope-llama3.ts: ppl with the source rope (transformers target) against what vLLM computes from the portable export, per llama3-scaled source',
  eval: { file: 'test/fixtures/pydocs-eval.txt', seq, windows },
  calib: { file: 'test/fixtures/pydocs-train-3M.txt', samples: calibSamples, seqlen: 256 },
    results,
};
writeFileSync(join(work, 'result.json'), JSON.stringify(result, null, 2));
if (outFile) writeFileSync(join(root, outFile), `${JSON.stringify(result, null, 2)}\n`);
