/**
 * One cell of the fidelity grid: convert a model at a budget with a row's options (or take
 * the original), score it with eval-ppl at every length, and keep the per-layer choices.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { convert } from '../../src/convert/convert.js';
import type { NllBucket } from '../../src/eval/buckets.js';
import { evalPpl } from '../../src/eval/ppl.js';
import type { Budget } from './models.js';
import type { RowDef } from './rows.js';
import type { ConversionReport } from '../../src/report-types.js';

/** The per-layer errors and choices of a conversion report, one array per field. */
export function layerChoices(report: ConversionReport) {
  return {
    attnRelError: report.layers.map((l) => l.attnRelError),
    freqfold: report.layers.map((l) => l.freqfold),
    balanceKv: report.layers.map((l) => l.balanceKv),
    ropeSelection: report.layers.map((l) => l.ropeSelection),
    kvMetric: report.layers.map((l) => l.kvMetric),
    valueRefitKept: report.layers.map((l) => l.valueRefit?.kept ?? null),
    outputRefitKept: report.layers.map((l) => l.outputRefit?.kept ?? null),
  };
}

/** What every task of a run shares (stored in the results file; rows are only comparable under equal settings). */
export interface GridSettings {
  calibFile: string;
  calibSamples: number;
  calibSeqlen: number;
  seed: number;
  evalFile: string;
  seqs: number[];
  windows: number;
  /** where the conversions run (evaluation is always the CPU engine) */
  device: 'cpu' | 'cuda';
}

/** A task: one row of one model at one budget (null for the original). */
export interface GridTask {
  key: string;
  model: string;
  modelDir: string;
  budget: Budget | null;
  row: RowDef;
}

/** The stored result of a task. */
export interface GridRow {
  key: string;
  model: string;
  budget: Budget['name'] | null;
  qkRopeDim: number | null;
  kvLoraRank: number | null;
  row: string;
  label: string;
  group: RowDef['group'];
  opts: RowDef['opts'];
  /** ppl by length, e.g. { "512": 22.4, "2048": 30.1 } */
  ppl: Record<string, number>;
  contexts: Array<{ seq: number; windows: number; tokensScored: number; ppl: number; meanNll: number; buckets: NllBucket[] }>;
  warnings: string[];
  /** per-layer choices and held-out errors of the conversion (null for the original) */
  perLayer: {
    attnRelError: number[];
    freqfold: number[];
    balanceKv: number[];
    ropeSelection: string[];
    kvMetric: string[];
    valueRefitKept: Array<boolean | null>;
    outputRefitKept: Array<boolean | null>;
    candidates: Array<Array<{ freqfold: number; balanceKv: number; ropeSelection?: string; kvMetric?: string; attnRelError: number }>>;
  } | null;
  meanAttnRelError: number | null;
  convertSeconds: number;
  evalSeconds: number;
  threads: number;
  finishedAt: string;
}

const root = join(import.meta.dirname, '..', '..');
/** A settings path: relative ones are relative to the repository root. */
const fromRoot = (p: string) => (isAbsolute(p) ? p : join(root, p));

/** Key of a task in the results file. */
export function taskKey(model: string, budget: Budget | null, row: string): string {
  return budget ? `${model}/${budget.name}/${row}` : `${model}/${row}`;
}

/** Runs one task; conversions go to `workDir/<key>` and are removed afterwards. */
export async function runTask(t: GridTask, s: GridSettings, workDir: string, threads: number): Promise<GridRow> {
  let dir = t.modelDir;
  let convertSeconds = 0;
  let perLayer: GridRow['perLayer'] = null;
  let meanAttnRelError: number | null = null;
  const out = join(workDir, `${t.key.replace(/[^A-Za-z0-9._-]+/g, '_')}-${process.pid}`);
  try {
    if (t.row.opts && t.budget) {
      mkdirSync(workDir, { recursive: true });
      const t0 = performance.now();
      const report = await convert({
        modelDir: t.modelDir,
        outDir: out,
        calibFile: fromRoot(s.calibFile),
        calibSamples: s.calibSamples,
        calibSeqlen: s.calibSeqlen,
        seed: s.seed,
        ...(t.row.toolSplit ? { kvBudget: t.budget.qkRopeDim + t.budget.kvLoraRank } : { qkRopeDim: t.budget.qkRopeDim, kvLoraRank: t.budget.kvLoraRank }),
        overwrite: true,
        device: s.device,
        ...t.row.opts,
      });
      convertSeconds = (performance.now() - t0) / 1000;
      dir = out;
      meanAttnRelError = report.meanAttnRelError;
      perLayer = { ...layerChoices(report), candidates: report.layers.map((l) => l.candidates) };
    }
    const r = await evalPpl({ modelDir: dir, textFile: fromRoot(s.evalFile), seqs: s.seqs, windows: s.windows });
    return {
      key: t.key,
      model: t.model,
      budget: t.budget?.name ?? null,
      qkRopeDim: t.budget ? (t.row.toolSplit ? t.budget.split.qkRopeDim : t.budget.qkRopeDim) : null,
      kvLoraRank: t.budget ? (t.row.toolSplit ? t.budget.split.kvLoraRank : t.budget.kvLoraRank) : null,
      row: t.row.id,
      label: t.row.label,
      group: t.row.group,
      opts: t.row.opts,
      ppl: Object.fromEntries(r.contexts.map((c) => [String(c.seq), c.ppl])),
      contexts: r.contexts.map((c) => ({ seq: c.seq, windows: c.windows, tokensScored: c.tokensScored, ppl: c.ppl, meanNll: c.meanNll, buckets: c.buckets })),
      warnings: r.warnings,
      perLayer,
      meanAttnRelError,
      convertSeconds,
      evalSeconds: r.seconds,
      threads,
      finishedAt: new Date().toISOString(),
    };
  } finally {
    rmSync(out, { recursive: true, force: true });
    rmSync(`${out}.partial`, { recursive: true, force: true });
  }
}
