/**
 * The rope the engines compute for llama3-scaled sources, measured on real models: a copy of the
 * tiny-llama-gqa fixture whose config carries Llama-3.1's llama3 scaling (factor 8, low/high 1/4,
 * original_max_position_embeddings = max_position_embeddings / 8) and bench/zoo's zoo-llama31 (a
 * model trained with llama3 scaling: head_dim 128, original_max_position_embeddings 1024, trained
 * at 2048 tokens) at the half (64 + 64) and quarter (32 + 32) budgets. Each source is converted
 * twice: with `--target transformers` (llama3 over qk_rope_head_dim dims: the source's own rope
 * at the default slots, exact) and with the portable target (deepseek_yarn, with the blend-band
 * slots carrying the source frequencies nearest the engine's: src/export/rope-slots.ts). Both
 * are scored on windows of `--seq` tokens of test/fixtures/pydocs-eval.txt (the eval-ppl
 * protocol): the transformers target with its config, the portable directory as vLLM computes
 * it (deepseek_yarn from the exported rope, src/interop/engine-semantics.ts); the source model
 * is scored too.
 *
 *   npx tsx bench/interop/rope-llama3.ts [--models fixture,zoo-llama31,zoo-llama31-quarter]
 *     [--work DIR] [--seq 2048] [--windows 2] [--calib-samples 16] [--out bench/results/FILE.json]
 *     [--reuse-transformers]
 *
 * --reuse-transformers keeps the work directory and a finished transformers-target conversion in
 * it, and the source's and the transformers target's ppl of its earlier result.json (the portable
 * target is always converted and scored again).
 */
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Checkpoint } from '../../src/checkpoint/checkpoint.js';
import { convert } from '../../src/convert/convert.js';
import { ModelRunner } from '../../src/engine/model.js';
import { openEngineRunner } from '../../src/interop/engine-runner.js';
import { engineView, ropeDifference } from '../../src/interop/engine-semantics.js';
import { loadModelSpec, parseModelSpec } from '../../src/model/spec.js';
import type { ConversionReport } from '../../src/report-types.js';
import { loadTokenizer } from '../../src/tokenize.js';

const root = join(import.meta.dirname, '..', '..');
const arg = (n: string, d: string) => (process.argv.includes(n) ? process.argv[process.argv.indexOf(n) + 1] : d);
const work = arg('--work', join(tmpdir(), 'gqa2mla-rope-llama3'));
const seq = Number(arg('--seq', '2048'));
const windows = Number(arg('--windows', '2'));
const calibSamples = Number(arg('--calib-samples', '16'));
const outFile = arg('--out', '');
const reuse = process.argv.includes('--reuse-transformers');
const models = arg('--models', 'fixture,zoo-llama31,zoo-llama31-quarter').split(',');

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

const zooCase = (quarter: boolean): Case => ({
  name: quarter ? 'zoo-llama31-quarter' : 'zoo-llama31',
  about: `bench/zoo/models/zoo-llama31 (head_dim 128, 1 KV head, trained with llama3 scaling, original 1024, at 2048 tokens); ${quarter ? 'quarter budget 32 + 32' : 'half budget 64 + 64'}`,
  dir: join(root, 'bench', 'zoo', 'models', 'zoo-llama31'),
  qkRopeDim: quarter ? 32 : 64,
  kvLoraRank: quarter ? 32 : 64,
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

const readConfig = (dir: string) => JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;

async function convertTarget(c: Case, target: 'portable' | 'transformers'): Promise<{ dir: string; report: ConversionReport }> {
  const dir = join(work, `${c.name}-${target}`);
  const done = join(dir, 'conversion-report.json');
  if (reuse && target === 'transformers' && existsSync(done)) return { dir, report: JSON.parse(readFileSync(done, 'utf8')) as ConversionReport };
  const report = await convert({
    modelDir: c.dir, outDir: dir, target, calibFile: join(root, 'test', 'fixtures', 'pydocs-train-3M.txt'), calibSamples, calibSeqlen: 256,
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

/** --reuse-transformers: the source and transformers-target ppl of case `name` from the work directory's earlier result (same windows). */
function earlier(name: string, n: number): { pplSource: number; pplSourceRope: number } | null {
  const f = join(work, 'result.json');
  if (!existsSync(f)) return null;
  const prev = JSON.parse(readFileSync(f, 'utf8')) as { eval: { seq: number }; results: Array<{ name: string; windows: number; pplSource: number; pplSourceRope: number }> };
  const r = prev.results.find((x) => x.name === name && x.windows === n);
  return r && prev.eval.seq === seq ? { pplSource: r.pplSource, pplSourceRope: r.pplSourceRope } : null;
}

async function runCase(c: Case): Promise<Record<string, unknown>> {
  const t0 = Date.now();
  const portable = await convertTarget(c, 'portable');
  const transformers = await convertTarget(c, 'transformers');
  const { ids, n } = await evalIds(c.dir);
  const pCfg = readConfig(portable.dir);
  const prev = reuse ? earlier(c.name, n) : null;
  const pplSource = prev?.pplSource ?? (await score(new ModelRunner(await Checkpoint.open(c.dir), await loadModelSpec(c.dir)), ids, n));
  const pplSourceRope = prev?.pplSourceRope ?? (await score(new ModelRunner(await Checkpoint.open(transformers.dir), await loadModelSpec(transformers.dir)), ids, n));
  const pplEngine = await score((await openEngineRunner(portable.dir, 'vllm')).runner, ids, n);
  const rope = portable.report.portable!.rope;
  const round = (xs: number[]) => xs.map((v) => Number(v.toPrecision(4)));
  return {
    name: c.name,
    about: c.about,
    qkRopeDim: c.qkRopeDim,
    kvLoraRank: c.kvLoraRank,
    windows: n,
    seq,
    rope: { ...rope, perFrequencyRelError: round(rope.perFrequencyRelError), perFrequencyPhaseError: round(rope.perFrequencyPhaseError) },
    enginesRopeMaxRelDiff: enginesAgree(pCfg),
    freqfolds: { portable: portable.report.layers.map((l) => l.freqfold), transformers: transformers.report.layers.map((l) => l.freqfold) },
    pplSource,
    pplSourceRope,
    pplEngine,
    pplEngineRelDiff: pplEngine / pplSourceRope - 1,
    meanAttnRelError: { portable: portable.report.meanAttnRelError, transformers: transformers.report.meanAttnRelError },
    seconds: (Date.now() - t0) / 1000,
  };
}

if (!reuse) rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });
const results: Record<string, unknown>[] = [];
for (const m of models) {
  const r = await runCase(m === 'fixture' ? fixtureCase() : zooCase(m === 'zoo-llama31-quarter'));
  console.log(JSON.stringify({ ...r, rope: { ...(r.rope as object), perFrequencyRelError: undefined, perFrequencyPhaseError: undefined } }, null, 2));
  results.push(r);
}
const result = {
  about: 'bench/interop/rope-llama3.ts: ppl of the transformers-target conversion (the source rope) against what vLLM computes from the portable conversion, per llama3-scaled source',
  command: `npx tsx bench/interop/rope-llama3.ts ${process.argv.slice(2).join(' ')}`,
  eval: { file: 'test/fixtures/pydocs-eval.txt', seq, windows },
  calib: { file: 'test/fixtures/pydocs-train-3M.txt', samples: calibSamples, seqlen: 256 },
    results,
};
writeFileSync(join(work, 'result.json'), JSON.stringify(result, null, 2));
if (outFile) writeFileSync(join(root, outFile), `${JSON.stringify(result, null, 2)}\n`);
