/**
 * Budget sweeps (sweep.json and the sweep's report.html) and perplexity attached to
 * conversion reports.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildConversionEval, type ConversionEval } from '../eval/conversion-eval.js';
import { evalPpl, type PplResult } from '../eval/ppl.js';
import { writeReportHtml } from '../report/html.js';
import { writeSweepReportHtml } from '../report/sweep-html.js';
import type { SweepResult } from './convert.js';
import type { ConversionReport, SweepRow, SweepSummary } from '../report-types.js';

export type { SweepRow, SweepSettings, SweepSummary } from '../report-types.js';

/** Evaluation settings (the eval-ppl protocol). */
export interface EvalSettings {
  textFile: string;
  /** tokens per window; with `seqs`, ignored in favour of them */
  seq: number;
  /** several lengths (the report's `eval.contexts`; `ppl` holds the first) */
  seqs?: number[];
  windows: number;
}

function evalAt(modelDir: string, e: EvalSettings): Promise<PplResult> {
  return evalPpl({ modelDir, textFile: e.textFile, seqs: e.seqs ?? [e.seq], windows: e.windows });
}

/** Perplexity before/after, as stored in conversion-report.json. */
export interface PplSummary {
  before: number;
  after: number;
  protocol: string;
}

function protocol(e: EvalSettings): string {
  const seq = e.seqs?.[0] ?? e.seq;
  return `eval-ppl: ${e.windows} non-overlapping windows of ${seq} tokens from offset 0 of ${e.textFile}, tokens 1..${seq - 1} scored`;
}

/**
 * Measures ppl of the source (unless `before`, its evaluation, is given) and of the converted
 * directory at every length of `e`, and records it in the report (file and object): `ppl` for
 * the first length, `eval` (src/eval/conversion-eval.ts) for all of them.
 */
export async function attachPpl(report: ConversionReport, sourceDir: string, outDir: string, e: EvalSettings, before?: PplResult): Promise<PplSummary> {
  const b = before ?? (await evalAt(sourceDir, e));
  const a = await evalAt(outDir, e);
  const ppl = { before: b.ppl, after: a.ppl, protocol: protocol(e) };
  const r = report as ConversionReport & { ppl?: PplSummary; eval?: ConversionEval };
  r.ppl = ppl;
  r.eval = buildConversionEval(e.textFile, b, a);
  await writeFile(join(outDir, 'conversion-report.json'), `${JSON.stringify(report, null, 2)}\n`);
  await writeReportHtml(outDir);
  return ppl;
}

/** Perplexity measured for a sweep: the source's, and each budget's in the sweep's order. */
export interface SweepPpl {
  before: number;
  after: number[];
  protocol: string;
}

/**
 * The content of sweep.json for `s` (no I/O): one row per budget from its conversion report,
 * the source model and the settings the budgets share (from the first budget's report),
 * and perplexity when `ppl` is given.
 */
export function buildSweepSummary(s: SweepResult, sourceDir: string, ppl?: SweepPpl): SweepSummary {
  const rows: SweepRow[] = s.budgets.map((b, i) => {
    const row: SweepRow = {
      dir: b.dir,
      kvLoraRank: b.kvLoraRank,
      qkRopeDim: b.qkRopeDim,
      kvValuesPerTokenPerLayer: b.report.kvValuesPerToken.perLayerAfter,
      kvValuesPerToken: b.report.kvValuesPerToken.after,
      compression: b.report.kvValuesPerToken.ratio,
      meanAttnRelError: b.report.meanAttnRelError,
      attnRelError: b.report.layers.map((l) => l.attnRelError),
    };
    if (ppl) row.ppl = ppl.after[i];
    return row;
  });
  const first = s.budgets[0]?.report;
  const shared: Pick<SweepSummary, 'model' | 'settings' | 'tool'> = {};
  if (first) {
    const { dir: _dir, ...model } = first.source;
    const { kvLoraRank: _r, qkRopeDim: _p, ...settings } = first.settings;
    Object.assign(shared, { model, settings, tool: first.tool });
  }
  const summary: SweepSummary = {
    source: sourceDir,
    outDir: s.outDir,
    seconds: s.seconds,
    ...shared,
    kvValuesPerTokenPerLayerBefore: first?.kvValuesPerToken.perLayerBefore ?? 0,
    ...(ppl ? { pplBefore: ppl.before, protocol: ppl.protocol } : {}),
    budgets: rows,
  };
  return summary;
}

/**
 * Measures ppl when `e` is given (the source once, then each budget, recorded in its report),
 * writes `<out>/sweep.json` and the sweep's `<out>/report.html` drawn from it, and returns
 * the summary.
 */
export async function summarizeSweep(s: SweepResult, sourceDir: string, e: EvalSettings | null, onStatus?: (m: string) => void): Promise<SweepSummary> {
  let ppl: SweepPpl | undefined;
  if (e) {
    onStatus?.('eval source');
    const source = await evalAt(sourceDir, e);
    const after: number[] = [];
    for (const b of s.budgets) {
      onStatus?.(`eval r${b.kvLoraRank}-p${b.qkRopeDim}`);
      after.push((await attachPpl(b.report, sourceDir, b.dir, e, source)).after);
    }
    ppl = { before: source.ppl, after, protocol: protocol(e) };
  }
  const summary = buildSweepSummary(s, sourceDir, ppl);
  await writeFile(join(s.outDir, 'sweep.json'), `${JSON.stringify(summary, null, 2)}\n`);
  await writeSweepReportHtml(s.outDir);
  return summary;
}

/** A plain-text table of a sweep. */
export function formatSweep(s: SweepSummary): string {
  const head = `budget          KV/token/layer  compression  mean attn err${s.pplBefore !== undefined ? '   ppl' : ''}`;
  const lines = s.budgets.map(
    (b) =>
      `${`r${b.kvLoraRank}-p${b.qkRopeDim}`.padEnd(16)}${String(b.kvValuesPerTokenPerLayer).padStart(14)}  ${b.compression.toFixed(2).padStart(10)}x  ${b.meanAttnRelError
        .toFixed(4)
        .padStart(13)}${b.ppl !== undefined ? b.ppl.toFixed(3).padStart(8) : ''}`,
  );
  const pre = s.pplBefore !== undefined ? `source ppl ${s.pplBefore.toFixed(3)} (${s.protocol})\n` : '';
  return `${pre}${head}\n${lines.join('\n')}\nsweep of ${s.budgets.length} budgets in ${s.seconds.toFixed(1)} s -> ${s.outDir}/sweep.json\nreport: ${s.outDir}/report.html\n`;
}
