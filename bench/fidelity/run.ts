/**
 * Fidelity grid (issue 14): both fixtures and every zoo model under bench/zoo/models/, at
 * about 1/2 and 1/4 of the original KV values per token, evaluated at 512 and 2048 tokens:
 * the original, `--method transmla` at each fixed freqfold, TransMLA settings plus each
 * component alone, and the default. Writes bench/results/fidelity-zoo-cpu.json (every row
 * with its per-layer choices, plus a summary) and the markdown table next to it after each
 * row. Rows already in the file are skipped, so a run can be stopped and continued, or split.
 *
 *   npx tsx bench/fidelity/run.ts [--model a,b] [--budget half,quarter] [--rows id,id]
 *       [--jobs N] [--zoo DIR] [--out FILE] [--seqs 512,2048] [--windows 40] [--device cpu|cuda]
 *       [--list] [--redo]
 *
 * --device: where the conversions run (default cpu; cuda writes fidelity-zoo-cuda.json by
 * default); evaluation always runs on the CPU engine.
 *
 * --jobs N runs N child processes (each with cores / N compute threads); only the parent
 * writes the file. Row ids: original, transmla-ffN, +freqfold-auto, +rope-qk, +kv-objective,
 * +kv-attention, +nope-shrink, +nope-rotation, +value-refit, +output-refit, +balance-auto,
 * +sequential, default-ffN, default.
 */
import { fork } from 'node:child_process';
import { cpus, tmpdir } from 'node:os';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ropeDimChoices } from '../../src/convert/budget-split.js';
import { budgetsOf, findModels, type Budget, type GridModel } from './models.js';
import { rowsFor, type RowDef } from './rows.js';
import { loadGrid, markdown, saveGrid, type GridFile } from './summary.js';
import { runTask, taskKey, type GridRow, type GridSettings, type GridTask } from './task.js';

const root = join(import.meta.dirname, '..', '..');
/** where conversions are written (each removed after its evaluation) */
const workDir = join(tmpdir(), `gqa2mla-fidelity-zoo-${process.getuid?.() ?? 0}`);

interface Args {
  models?: string[];
  budgets?: string[];
  rows?: string[];
  jobs: number;
  zoo: string;
  out: string;
  seqs: number[];
  windows: number;
  device: 'cpu' | 'cuda';
  list: boolean;
  redo: boolean;
  worker: boolean;
  /** also the default row at every other split of each budget's total (--splits) */
  splits: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { jobs: 1, zoo: join(root, 'bench', 'zoo', 'models'), out: '', device: 'cpu', seqs: [512, 2048], windows: 40, list: false, redo: false, worker: false, splits: false };
  const list = (v: string) => v.split(',').map((s) => s.trim()).filter(Boolean);
  const int = (flag: string, v: string | undefined) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`${flag} needs a positive integer (got ${v})`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i];
    const v = () => {
      if (argv[i + 1] === undefined) throw new Error(`${f} needs a value`);
      return argv[++i];
    };
    if (f === '--model') a.models = list(v());
    else if (f === '--budget') a.budgets = list(v());
    else if (f === '--rows') a.rows = list(v());
    else if (f === '--jobs') a.jobs = int(f, v());
    else if (f === '--zoo') a.zoo = v();
    else if (f === '--out') a.out = v();
    else if (f === '--seqs') a.seqs = list(v()).map((s) => int(f, s));
    else if (f === '--windows') a.windows = int(f, v());
    else if (f === '--device') {
      const d = v();
      if (d !== 'cpu' && d !== 'cuda') throw new Error(`--device must be cpu or cuda (got ${d})`);
      a.device = d;
    } else if (f === '--list') a.list = true;
    else if (f === '--redo') a.redo = true;
    else if (f === '--worker') a.worker = true;
    else if (f === '--splits') a.splits = true;
    else throw new Error(`unknown option ${f}`);
  }
  if (!a.out) a.out = join(root, 'bench', 'results', `fidelity-zoo-${a.device}.json`);
  return a;
}

/** Row definitions of a model over its budgets, each id once, in grid order. */
function rowOrder(m: Pick<GridModel, 'headDim' | 'kvPerLayer'>): RowDef[] {
  const seen = new Map<string, RowDef>();
  for (const b of budgetsOf(m)) for (const r of rowsFor(m.headDim, b.qkRopeDim, b.split.qkRopeDim)) if (!seen.has(r.id)) seen.set(r.id, r);
  return [...seen.values()];
}

/**
 * The other splits of a budget's total (qk_rope_head_dim + kv_lora_rank): every even divisor d
 * of head_dim from 16 up to head_dim that leaves a latent of at least 8, named `<budget>-p<d>`.
 */
export function otherSplits(headDim: number, b: Budget): Budget[] {
  const total = b.qkRopeDim + b.kvLoraRank;
  const out: Budget[] = [];
  for (const d of ropeDimChoices(headDim))
    if (d >= 16 && d !== b.qkRopeDim && total - d >= 8)
      out.push({ name: `${b.name}-p${d}` as Budget['name'], qkRopeDim: d, kvLoraRank: total - d, fraction: b.fraction, split: b.split });
  return out;
}

/** The selected tasks (the original once per model, then every budget x row). */
function tasksOf(models: GridModel[], a: Args): GridTask[] {
  const out: GridTask[] = [];
  for (const m of models) {
    if (a.models && !a.models.includes(m.name)) continue;
    for (const b of budgetsOf(m)) {
      if (a.budgets && !a.budgets.includes(b.name)) continue;
      for (const row of rowsFor(m.headDim, b.qkRopeDim, b.split.qkRopeDim)) {
        if (a.rows && !a.rows.includes(row.id)) continue;
        const budget = row.opts ? b : null;
        const key = taskKey(m.name, budget, row.id);
        if (!out.some((t) => t.key === key)) out.push({ key, model: m.name, modelDir: m.dir, budget, row });
      }
      if (!a.splits) continue;
      // the default method at each explicit split (not the tool's own choice of split)
      const def = { ...rowsFor(m.headDim, b.qkRopeDim, b.split.qkRopeDim).find((r) => r.id === 'default')!, toolSplit: false };
      for (const sb of otherSplits(m.headDim, b)) out.push({ key: taskKey(m.name, sb, def.id), model: m.name, modelDir: m.dir, budget: sb, row: def });
    }
  }
  return out;
}

function settingsOf(a: Args): GridSettings {
  return {
    calibFile: 'test/fixtures/pydocs-train-3M.txt',
    calibSamples: 128,
    calibSeqlen: 256,
    seed: 42,
    evalFile: 'test/fixtures/pydocs-eval.txt',
    seqs: a.seqs,
    windows: a.windows,
    device: a.device,
  };
}

function line(r: GridRow): string {
  const ppl = Object.entries(r.ppl).map(([k, v]) => `${k}: ${v.toFixed(3)}`).join('  ');
  return `${r.key.padEnd(44)} ${ppl}  (convert ${r.convertSeconds.toFixed(0)} s, eval ${r.evalSeconds.toFixed(0)} s)`;
}

/** Runs the tasks on `jobs` child processes; `onRow` gets each result as it arrives. */
async function runPool(tasks: GridTask[], a: Args, s: GridSettings, onRow: (r: GridRow) => void): Promise<number> {
  const threads = Math.max(1, Math.floor(cpus().length / a.jobs));
  const queue = [...tasks];
  let failed = 0;
  const one = () =>
    new Promise<void>((resolve) => {
      const env = { ...process.env, GQA2MLA_THREADS: String(threads), OPENBLAS_NUM_THREADS: String(threads) };
      const child = fork(import.meta.filename, ['--worker', '--windows', String(a.windows), '--seqs', a.seqs.join(',')], { env, execArgv: process.execArgv });
      let inFlight: string | null = null;
      const next = () => {
        const t = queue.shift();
        inFlight = t?.key ?? null;
        if (t) child.send({ task: t, settings: s, threads });
        else child.disconnect();
      };
      child.on('message', (m: { row?: GridRow; error?: string; key: string }) => {
        if (m.row) onRow(m.row);
        else {
          failed++;
          console.error(`${m.key}: FAILED ${m.error}`);
        }
        next();
      });
      child.on('exit', (code, signal) => {
        if (inFlight) {
          failed++;
          console.error(`${inFlight}: FAILED (worker exited with ${signal ?? code})`);
        }
        resolve();
      });
      next();
    });
  await Promise.all(Array.from({ length: Math.min(a.jobs, tasks.length) }, one));
  return failed;
}

function worker(): void {
  // the parent is gone (stopped or killed): drop the task in flight, it is simply not in the file
  process.on('disconnect', () => process.exit(1));
  process.on('message', (m: { task: GridTask; settings: GridSettings; threads: number }) => {
    runTask(m.task, m.settings, workDir, m.threads).then(
      (row) => process.send!({ key: m.task.key, row }),
      (e: Error) => process.send!({ key: m.task.key, error: e.stack ?? String(e) }),
    );
  });
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  if (a.worker) return worker();
  const s = settingsOf(a);
  const models = await findModels(root, a.zoo);
  const g: GridFile = loadGrid(a.out, s);
  for (const m of models) {
    const { dir: _d, ...rest } = m;
    g.models[m.name] = { ...rest, budgets: budgetsOf(m) };
  }
  const all = tasksOf(models, a);
  const todo = all.filter((t) => a.redo || !g.rows[t.key]);
  console.log(`${models.length} models (${models.map((m) => m.name).join(', ')}); ${all.length} tasks selected, ${all.length - todo.length} already in ${a.out}, ${todo.length} to run on ${a.jobs} job(s)`);
  if (a.list) {
    for (const t of all) console.log(`${g.rows[t.key] && !a.redo ? 'done ' : 'todo '} ${t.key}${t.budget ? `  ${t.budget.qkRopeDim}+${t.budget.kvLoraRank}` : ''}  ${t.row.label}`);
    return;
  }
  const md = a.out.replace(/\.json$/, '') + '.md';
  const save = () => {
    saveGrid(a.out, g);
    writeFileSync(md, markdown(g, (name) => rowOrder(g.models[name])));
  };
  const onRow = (r: GridRow) => {
    g.rows[r.key] = r;
    save();
    console.log(line(r));
  };
  let failed = 0;
  if (a.jobs === 1) {
    for (const t of todo)
      try {
        onRow(await runTask(t, s, workDir, cpus().length));
      } catch (e) {
        failed++;
        console.error(`${t.key}: FAILED ${(e as Error).stack}`);
      }
  } else failed = await runPool(todo, a, s, onRow);
  save();
  console.log(`saved ${a.out} and ${md}${failed ? `; ${failed} task(s) failed` : ''}`);
  if (failed) process.exitCode = 1;
}

await main();
