/**
 * Interop round trip, Node side (bench/interop): converts both fixtures at the budgets of
 * the conversion-core table plus the lossless tiny-qwen2-gqa setting, scores the eval
 * windows with gqa2mla's own engine (converted dirs and, as a harness check, the original
 * fixtures), and writes per case a safetensors file with the token ids and our per-position
 * NLL, plus manifest.json for bench/interop/hf_check.py.
 *
 *   npx tsx bench/interop/ours.ts [--work DIR] [--windows 8] [--seq 512] [--calib-samples 128] [--zoo] [--fixtures a,b]
 * (--zoo: also every model under bench/zoo/models/, portable, at the fidelity grid's half and quarter
 *  budgets; --zoo-models a,b: only these zoo models)
 *
 * Output under DIR (default tmpwork/interop):
 *   <case>/                     converted DeepSeek-V3 directory (sweeps: <case> = sweep dir + r<rank>-p<rope>)
 *   <case>.ours.safetensors     input_ids I64 [windows, seq]; nll F64 [windows, seq-1]
 *   manifest.json               cases, options, our ppl, timings, machine
 *
 * Eval protocol (as eval-ppl): tokenize the eval text without special tokens, the first
 * `windows` non-overlapping windows of `seq` tokens from offset 0, token t+1 scored from
 * tokens 0..t. Calibration: the conversion-core protocol (first 3M characters of the
 * training text, 256-token windows, seed 42), `calibSamples` sequences (default 128).
 */
import { cpus, hostname } from 'node:os';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { convert, convertSweep, type ConvertOptions } from '../../src/convert/convert.js';
import { ModelRunner } from '../../src/engine/model.js';
import { loadTokenizer } from '../../src/tokenize.js';
import { native } from '../../src/native/binding.js';
import { budgetsOf, findModels } from '../fidelity/models.js';

const root = join(import.meta.dirname, '..', '..');
const fx = (n: string) => join(root, 'test', 'fixtures', n);

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}
const work = arg('--work', join(root, 'tmpwork', 'interop'));
const windows = Number(arg('--windows', '8'));
const seq = Number(arg('--seq', '512'));
const calibSamples = Number(arg('--calib-samples', '128'));
/** --fixtures a,b: only these fixtures (and zoo models with --zoo); default both */
const only = arg('--fixtures', 'tiny-llama-gqa,tiny-qwen2-gqa').split(',');
/** --zoo-models a,b: only these zoo models (default every one) */
const zooOnly = arg('--zoo-models', '').split(',').filter(Boolean);
const evalFile = fx('pydocs-eval.txt');
const calibFile = fx('pydocs-train-3M.txt');

/** One tensor for {@link writeSafetensors}. */
interface StTensor {
  name: string;
  dtype: 'I64' | 'F64' | 'F32';
  shape: number[];
  data: BigInt64Array | Float64Array | Float32Array;
}

/** Minimal safetensors writer: 8-byte little-endian header length, JSON header (space-padded to 8), raw data. */
function writeSafetensors(path: string, tensors: StTensor[], metadata: Record<string, string>): void {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (n !== t.data.length) throw new Error(`${t.name}: shape ${t.shape} has ${n} elements, data ${t.data.length}`);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const hb = Buffer.from(json, 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(hb.length));
  const parts = [len, hb, ...tensors.map((t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength))];
  writeFileSync(path, Buffer.concat(parts));
}

interface Case {
  name: string;
  kind: 'converted' | 'original';
  fixture: string;
  dir: string;
  /** the source model of a converted dir (for the lossless logits comparison) */
  sourceDir?: string;
  lossless?: boolean;
  options?: Record<string, unknown>;
  convertSeconds?: number;
  meanAttnRelError?: number;
  latentNorm?: Array<{ layer: number; alpha: number; weight: number; boundCalibration: number } | null>;
  qBias?: boolean;
  /** q_lora_rank of the written config (null: q_proj) */
  qLoraRank?: number | null;
  /** --target of the conversion */
  target?: 'portable' | 'transformers';
  /** portable: per-layer bias fold (errors with biases / folded / dropped) and the exported rope report */
  biasFold?: Array<{ layer: number; chosen: string; errWithBiases: number; errFolded: number; errDropped: number } | null>;
  rope?: unknown;
  ours?: { file: string; ppl: number; meanNll: number; windows: number; seq: number; evalSeconds: number };
}

/** Scores the eval windows with our engine and writes `<dir>.ours.safetensors`. */
async function scoreCase(c: Case): Promise<void> {
  const t0 = performance.now();
  const tokenizer = await loadTokenizer(c.dir);
  const tokens = tokenizer.encode(readFileSync(evalFile, 'utf8'));
  const w = Math.min(windows, Math.floor(tokens.length / seq));
  if (w < 1) throw new Error(`eval text has ${tokens.length} tokens, fewer than one window of ${seq}`);
  const ids = tokens.slice(0, w * seq);
  const runner = await ModelRunner.open(c.dir);
  let nll: Float64Array;
  try {
    nll = await runner.nll(ids, w, seq);
  } finally {
    await runner.close();
  }
  let sum = 0;
  for (const v of nll) sum += v;
  const meanNll = sum / nll.length;
  const file = `${c.name}.ours.safetensors`;
  const ids64 = new BigInt64Array(ids.length);
  for (let i = 0; i < ids.length; i++) ids64[i] = BigInt(ids[i]);
  writeSafetensors(
    join(work, file),
    [
      { name: 'input_ids', dtype: 'I64', shape: [w, seq], data: ids64 },
      { name: 'nll', dtype: 'F64', shape: [w, seq - 1], data: nll },
    ],
    { case: c.name, model_dir: relative(work, c.dir), eval_text: 'test/fixtures/pydocs-eval.txt' },
  );
  c.ours = { file, ppl: Math.exp(meanNll), meanNll, windows: w, seq, evalSeconds: (performance.now() - t0) / 1000 };
  console.log(`${c.name.padEnd(34)} ours ppl ${c.ours.ppl.toFixed(4)} (${w}x${seq}, ${c.ours.evalSeconds.toFixed(1)} s)`);
}

function summarize(c: Case, report: Awaited<ReturnType<typeof convert>>): void {
  c.meanAttnRelError = report.meanAttnRelError;
  c.latentNorm = report.layers.map((l) =>
    l.latentNorm ? { layer: l.layer, alpha: l.latentNorm.alpha, weight: l.latentNorm.weight, boundCalibration: l.latentNorm.boundCalibration } : null,
  );
  const cfg = JSON.parse(readFileSync(join(c.dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  c.qBias = cfg.gqa2mla_q_bias === true;
  c.qLoraRank = (cfg.q_lora_rank as number | null) ?? null;
  c.biasFold = report.layers.map((l) =>
    l.biasFold ? { layer: l.layer, chosen: l.biasFold.chosen, errWithBiases: l.biasFold.errWithBiases, errFolded: l.biasFold.errFolded, errDropped: l.biasFold.errDropped } : null,
  );
  c.rope = report.portable?.rope ?? null;
}

rmSync(work, { recursive: true, force: true });
mkdirSync(work, { recursive: true });
const tStart = performance.now();
const base: Partial<ConvertOptions> = { calibFile, calibSamples, calibSeqlen: 256, seed: 42, overwrite: true };
const cases: Case[] = [];

// the budgets of the conversion-core table: one calibration pass per fixture (a sweep
// equals the single-budget conversions), with query compression off and on. Default target
// portable (what stock vLLM / SGLang / transformers compute alike); tiny-qwen2-gqa also with
// --target transformers, whose lossless q_lora_rank carries the query bias exactly.
const sweeps = [
  { fixture: 'tiny-llama-gqa', qkRopeDims: [32], kvLoraRanks: [96, 32], qLoraRank: undefined as number | undefined, tag: '', target: 'portable' as const },
  { fixture: 'tiny-llama-gqa', qkRopeDims: [32], kvLoraRanks: [96, 32], qLoraRank: 128, tag: '-q128', target: 'portable' as const },
  { fixture: 'tiny-qwen2-gqa', qkRopeDims: [64], kvLoraRanks: [64, 32], qLoraRank: undefined, tag: '', target: 'portable' as const },
  { fixture: 'tiny-qwen2-gqa', qkRopeDims: [64], kvLoraRanks: [64, 32], qLoraRank: 128, tag: '-q128', target: 'portable' as const },
  { fixture: 'tiny-qwen2-gqa', qkRopeDims: [64], kvLoraRanks: [64, 32], qLoraRank: undefined, tag: '-hf-qlossless', target: 'transformers' as const },
];
// zoo models (bench/zoo/models/<name>/ with a config.json), when present: the fidelity grid's
// two budgets of each (about 1/2 and 1/4 of its KV values per token, bench/fidelity/models.ts),
// split as the default (`--kv-budget`) splits them
const zooDir = join(root, 'bench', 'zoo', 'models');
if (process.argv.includes('--zoo'))
  for (const m of (await findModels(root, zooDir)).filter((x) => x.kind === 'zoo' && (zooOnly.length === 0 || zooOnly.includes(x.name))))
    for (const b of budgetsOf(m))
      // the default output: the tool's split of the budget (--kv-budget), as the grid's default rows
      sweeps.push({ fixture: `zoo:${m.name}`, qkRopeDims: [b.split.qkRopeDim], kvLoraRanks: [b.split.kvLoraRank], qLoraRank: undefined, tag: `-${b.name}`, target: 'portable' as const });
for (let i = sweeps.length - 1; i >= 0; i--) if (!sweeps[i].fixture.startsWith('zoo:') && !only.includes(sweeps[i].fixture)) sweeps.splice(i, 1);
const modelDirOf = (f: string) => (f.startsWith('zoo:') ? join(zooDir, f.slice(4)) : fx(f));
for (const s of sweeps) {
  const t0 = performance.now();
  const outDir = join(work, s.fixture.replace(':', '-') + s.tag);
  const res = await convertSweep({ ...base, modelDir: modelDirOf(s.fixture), outDir, qkRopeDims: s.qkRopeDims, kvLoraRanks: s.kvLoraRanks, qLoraRank: s.qLoraRank, target: s.target });
  const seconds = (performance.now() - t0) / 1000;
  for (const b of res.budgets) {
    const c: Case = {
      name: `${s.fixture.replace(':', '-')}-p${b.qkRopeDim}-r${b.kvLoraRank}${s.tag}`,
      kind: 'converted',
      fixture: s.fixture,
      dir: b.dir,
      sourceDir: modelDirOf(s.fixture),
      target: s.target,
      options: { qkRopeDim: b.qkRopeDim, kvLoraRank: b.kvLoraRank, qLoraRank: b.report.settings.qLoraRank ?? null, method: b.report.settings.method, calibSamples, calibSeqlen: 256, seed: 42, dtype: b.report.settings.dtype, target: s.target },
      convertSeconds: seconds / res.budgets.length,
    };
    summarize(c, b.report);
    cases.push(c);
  }
  console.log(`converted ${s.fixture} (${res.budgets.length} budgets, target ${s.target}) in ${seconds.toFixed(1)} s`);
}

// lossless tiny-qwen2-gqa: every RoPE dim kept, full latent rank, float32 weights
if (only.includes('tiny-qwen2-gqa')) {
  const t0 = performance.now();
  // --target transformers: the exact bias construction (portable folds the biases, not lossless)
  const opts = { qkRopeDim: 128, kvLoraRank: 128, freqfold: 1, dtype: 'F32' as const, target: 'transformers' as const };
  const c: Case = { name: 'tiny-qwen2-gqa-p128-r128-f32-lossless', kind: 'converted', fixture: 'tiny-qwen2-gqa', dir: '', sourceDir: fx('tiny-qwen2-gqa'), lossless: true, target: 'transformers' };
  c.dir = join(work, c.name);
  const report = await convert({ ...base, modelDir: fx('tiny-qwen2-gqa'), outDir: c.dir, ...opts });
  c.convertSeconds = (performance.now() - t0) / 1000;
  c.options = { ...opts, qLoraRank: report.settings.qLoraRank ?? null, method: report.settings.method, calibSamples, calibSeqlen: 256, seed: 42 };
  summarize(c, report);
  cases.push(c);
  console.log(`converted ${c.name} in ${c.convertSeconds.toFixed(1)} s`);
}

// the original fixtures: checks the harness (our engine vs transformers on the source models)
for (const f of ['tiny-llama-gqa', 'tiny-qwen2-gqa'].filter((x) => only.includes(x))) cases.push({ name: `${f}-original`, kind: 'original', fixture: f, dir: fx(f) });

for (const c of cases) await scoreCase(c);

const info = native.buildInfo();
const manifest = {
  protocol: {
    evalText: 'test/fixtures/pydocs-eval.txt',
    windows,
    seq,
    scoring: 'non-overlapping windows from offset 0, no special tokens; token t+1 scored from tokens 0..t',
    calibration: `test/fixtures/pydocs-train-3M.txt, ${calibSamples} x 256 tokens, seed 42, method default (gqa2mla)`,
    oursNllDtype: 'F64 (engine computes float32, log-softmax accumulated in float64)',
  },
  machine: { hostname: hostname(), cpus: cpus().length, cpuModel: cpus()[0]?.model, node: process.version, blas: info.blas, threads: info.threads },
  seconds: (performance.now() - tStart) / 1000,
  cases: cases.map((c) => ({ ...c, dir: relative(work, c.dir), sourceDir: c.sourceDir ? relative(work, c.sourceDir) : undefined })),
};
writeFileSync(join(work, 'manifest.json'), JSON.stringify(manifest, null, 2));
console.log(`wrote ${join(work, 'manifest.json')} (${cases.length} cases, ${manifest.seconds.toFixed(1)} s)`);
