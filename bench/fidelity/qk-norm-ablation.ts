/**
 * Ablation of the Qwen3 q/k-norm stand-ins (src/convert/qk-norm.ts, option `qkNorm`) on a
 * qwen3 checkpoint, CPU only: every method x {half, quarter, lossless} budget x {512, 2048}
 * tokens, eval-ppl protocol on the first `--windows` windows of the evaluation text, plus
 * the original. Half and quarter are the fidelity grid's zoo-qwen3 budgets (qk_rope 32 +
 * kv_lora 96, 32 + 32: 1/2 and 1/4 of the 256 KV values per token per layer); 'lossless' is
 * qk_rope 64 (all of a head's frequencies) + kv_lora 192 with freqfold 1 (every position-free
 * key dim and every value dim: no PCA truncation), so what is left there is the norm
 * stand-in plus the one loss no budget removes, the two KV heads' RoPE dims shared as one
 * k_pe (RoRoPE keeps the strongest pair of each frequency).
 *
 * Writes `--out` (default bench/results/qk-norm-ablation-cpu.json) after every row; rows
 * already there are kept and skipped (unless --redo), so a run can be stopped and continued.
 *
 *   npx tsx bench/fidelity/qk-norm-ablation.ts [--model DIR] [--out FILE] [--methods a,b]
 *       [--budgets half,quarter,lossless] [--seqs 512,2048] [--windows 40[,40]]
 *       [--calib-samples 32] [--context 256] [--redo]
 *
 * --windows: one count for every length, or one per length of --seqs. The original's row is
 * read from bench/results/fidelity-zoo-cpu.json (its `reference`, the same protocol and
 * engine at 40 windows) when the model is zoo-qwen3 and every count is 40, else measured.
 *
 * Conversion settings: calibration on test/fixtures/pydocs-train-3M.txt, `--calib-samples`
 * windows of 256 tokens, 4 held-out windows, choices judged on `--context`-token windows
 * (256: the short held-out windows), every other option the default. The defaults are
 * smaller than the fidelity grid's (128 samples, 4096-token judge windows) so that the
 * whole table fits a CPU session; rows state their settings.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convert, convertSweep } from '../../src/convert/convert.js';
import { QK_NORM_METHODS, type QkNormMethod } from '../../src/convert/qk-norm.js';
import { evalPpl } from '../../src/eval/ppl.js';

const root = join(import.meta.dirname, '..', '..');
const TRAIN = join(root, 'test/fixtures/pydocs-train-3M.txt');
const EVAL = join(root, 'test/fixtures/pydocs-eval.txt');

/** The budgets: qk_rope_head_dim, kv_lora_rank, freqfold (undefined: the default 'auto'). */
const BUDGETS: Record<string, { qkRopeDim: number; kvLoraRank: number; freqfold?: number }> = {
  half: { qkRopeDim: 32, kvLoraRank: 96 },
  quarter: { qkRopeDim: 32, kvLoraRank: 32 },
  lossless: { qkRopeDim: 64, kvLoraRank: 192, freqfold: 1 },
};

interface Row {
  key: string;
  method: QkNormMethod | 'original';
  budget: string | null;
  qkRopeDim?: number;
  kvLoraRank?: number;
  ppl: Record<string, number>;
  layerAttnRelError?: number[];
  convertSeconds?: number;
  /** where the original's figures come from */
  from?: string;
}

interface AblationFile {
  model: string;
  settings: { calibFile: string; calibSamples: number; calibSeqlen: number; heldOutSamples: number; context: number; evalFile: string; seqs: number[]; windows: number[]; device: 'cpu' };
  rows: Record<string, Row>;
}

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : dflt;
}

const model = arg('--model', join(root, 'bench/zoo/models/zoo-qwen3'));
const out = arg('--out', join(root, 'bench/results/qk-norm-ablation-cpu.json'));
const methods = arg('--methods', QK_NORM_METHODS.join(',')).split(',') as QkNormMethod[];
const budgets = arg('--budgets', 'half,quarter,lossless').split(',');
const seqs = arg('--seqs', '512,2048').split(',').map(Number);
const windowList = arg('--windows', '40').split(',').map(Number);
const windows = seqs.map((_, i) => windowList[Math.min(i, windowList.length - 1)]);
const calibSamples = Number(arg('--calib-samples', '32'));
const context = Number(arg('--context', '256'));
const redo = process.argv.includes('--redo');
for (const m of methods) if (!QK_NORM_METHODS.includes(m)) throw new Error(`unknown method ${m} (${QK_NORM_METHODS.join(', ')})`);
for (const b of budgets) if (!BUDGETS[b]) throw new Error(`unknown budget ${b} (${Object.keys(BUDGETS).join(', ')})`);

const settings: AblationFile['settings'] = { calibFile: 'test/fixtures/pydocs-train-3M.txt', calibSamples, calibSeqlen: 256, heldOutSamples: 4, context, evalFile: 'test/fixtures/pydocs-eval.txt', seqs, windows, device: 'cpu' };
const file: AblationFile = existsSync(out) ? (JSON.parse(readFileSync(out, 'utf8')) as AblationFile) : { model: 'zoo-qwen3', settings, rows: {} };
if (JSON.stringify(file.settings) !== JSON.stringify(settings)) {
  console.error(`${out} has other settings (${JSON.stringify(file.settings)}); rows are replaced`);
  file.settings = settings;
  file.rows = {};
}
const save = () => writeFileSync(out, `${JSON.stringify(file, null, 1)}\n`);

/** ppl at each length of `seqs` with its window count. */
async function ppl(dir: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const [i, seq] of seqs.entries()) out[String(seq)] = (await evalPpl({ modelDir: dir, textFile: EVAL, seq, windows: windows[i] })).ppl;
  return out;
}

/** The original's ppl: fidelity-zoo-cpu.json's reference for zoo-qwen3 at 40 windows, else measured. */
async function originalPpl(): Promise<{ ppl: Record<string, number>; from: string }> {
  const grid = join(root, 'bench/results/fidelity-zoo-cpu.json');
  const ref = existsSync(grid) ? (JSON.parse(readFileSync(grid, 'utf8')) as { models: Record<string, { reference: Record<string, number> }> }).models['zoo-qwen3']?.reference : undefined;
  if (model.endsWith('zoo-qwen3') && ref && windows.every((w) => w === 40) && seqs.every((s) => ref[s] !== undefined))
    return { ppl: Object.fromEntries(seqs.map((s) => [String(s), ref[s]])), from: 'bench/results/fidelity-zoo-cpu.json models.zoo-qwen3.reference' };
  return { ppl: await ppl(model), from: 'measured' };
}

/** Converts `method` at the budgets not yet in the file (half and quarter in one sweep) and evaluates each. */
async function runMethod(method: QkNormMethod, tmp: string): Promise<void> {
  const todo = budgets.filter((b) => redo || !file.rows[`${method}/${b}`]);
  const calib = { modelDir: model, calibFile: TRAIN, calibSamples, calibSeqlen: 256, heldOutSamples: 4, context, device: 'cpu' as const, qkNorm: method };
  const done: { budget: string; dir: string; errs: number[]; seconds: number }[] = [];
  const swept = todo.filter((b) => BUDGETS[b].freqfold === undefined && BUDGETS[b].qkRopeDim === 32);
  if (swept.length > 0) {
    const t0 = Date.now();
    const sw = await convertSweep({ ...calib, outDir: join(tmp, method), kvLoraRanks: swept.map((b) => BUDGETS[b].kvLoraRank), qkRopeDims: [32] });
    const seconds = (Date.now() - t0) / 1000;
    for (const b of swept) {
      const r = sw.budgets.find((x) => x.kvLoraRank === BUDGETS[b].kvLoraRank)!;
      done.push({ budget: b, dir: r.dir, errs: r.report.layers.map((l) => l.attnRelError), seconds });
    }
  }
  for (const b of todo.filter((x) => !swept.includes(x))) {
    const t0 = Date.now();
    const dir = join(tmp, `${method}-${b}`);
    const rep = await convert({ ...calib, outDir: dir, ...BUDGETS[b] });
    done.push({ budget: b, dir, errs: rep.layers.map((l) => l.attnRelError), seconds: (Date.now() - t0) / 1000 });
  }
  for (const d of done) {
    const row: Row = { key: `${method}/${d.budget}`, method, budget: d.budget, ...BUDGETS[d.budget], ppl: await ppl(d.dir), layerAttnRelError: d.errs, convertSeconds: d.seconds };
    file.rows[row.key] = row;
    save();
    console.log(JSON.stringify(row));
    rmSync(d.dir, { recursive: true, force: true });
  }
}

function table(): string {
  const orig = file.rows.original?.ppl ?? {};
  const head = `| method | budget | ${seqs.map((s) => `ppl@${s} (x orig)`).join(' | ')} |\n|---|---|${seqs.map(() => '---:').join('|')}|`;
  const cell = (r: Row) => seqs.map((s) => (r.ppl[s] === undefined ? '-' : `${r.ppl[s].toFixed(2)}${orig[s] ? ` (${(r.ppl[s] / orig[s]).toFixed(2)})` : ''}`)).join(' | ');
  const lines = Object.values(file.rows).map((r) => `| ${r.method} | ${r.budget ?? '-'} | ${cell(r)} |`);
  return `${head}\n${lines.join('\n')}`;
}

if (redo || !file.rows.original) {
  const o = await originalPpl();
  file.rows.original = { key: 'original', method: 'original', budget: null, ppl: o.ppl, from: o.from };
  save();
}
const tmp = mkdtempSync(join(tmpdir(), 'qk-norm-ablation-'));
try {
  for (const m of methods) await runMethod(m, tmp);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
console.log(table());
