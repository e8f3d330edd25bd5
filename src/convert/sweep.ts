/**
 * Budget sweeps and perplexity attached to conversion reports.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { evalPpl } from '../eval/ppl.js';
import { writeReportHtml } from '../report/html.js';
import type { SweepResult } from './convert.js';
import type { ConversionReport } from './report.js';

/** Evaluation settings (the eval-ppl protocol). */
export interface EvalSettings {
  textFile: string;
  seq: number;
  windows: number;
}

/** Perplexity before/after, as stored in conversion-report.json. */
export interface PplSummary {
  before: number;
  after: number;
  protocol: string;
}

function protocol(e: EvalSettings): string {
  return `eval-ppl: ${e.windows} non-overlapping windows of ${e.seq} tokens from offset 0 of ${e.textFile}, tokens 1..${e.seq - 1} scored`;
}

/** Measures ppl of the source and of the converted directory and records it in the report (file and object). */
export async function attachPpl(report: ConversionReport, sourceDir: string, outDir: string, e: EvalSettings, before?: number): Promise<PplSummary> {
  const b = before ?? (await evalPpl({ modelDir: sourceDir, textFile: e.textFile, seq: e.seq, windows: e.windows })).ppl;
  const a = (await evalPpl({ modelDir: outDir, textFile: e.textFile, seq: e.seq, windows: e.windows })).ppl;
  const ppl = { before: b, after: a, protocol: protocol(e) };
  (report as ConversionReport & { ppl?: PplSummary }).ppl = ppl;
  await writeFile(join(outDir, 'conversion-report.json'), `${JSON.stringify(report, null, 2)}\n`);
  await writeReportHtml(outDir);
  return ppl;
}

/** One row of sweep.json. */
export interface SweepRow {
  dir: string;
  kvLoraRank: number;
  qkRopeDim: number;
  kvValuesPerTokenPerLayer: number;
  compression: number;
  meanAttnRelError: number;
  attnRelError: number[];
  ppl?: number;
}

/** sweep.json's content. */
export interface SweepSummary {
  source: string;
  outDir: string;
  seconds: number;
  kvValuesPerTokenPerLayerBefore: number;
  pplBefore?: number;
  protocol?: string;
  budgets: SweepRow[];
}

/** Writes `<out>/sweep.json` (with ppl per budget when `e` is given) and returns it. */
export async function summarizeSweep(s: SweepResult, sourceDir: string, e: EvalSettings | null, onStatus?: (m: string) => void): Promise<SweepSummary> {
  let before: number | undefined;
  if (e) {
    onStatus?.('eval source');
    before = (await evalPpl({ modelDir: sourceDir, textFile: e.textFile, seq: e.seq, windows: e.windows })).ppl;
  }
  const rows: SweepRow[] = [];
  for (const b of s.budgets) {
    const row: SweepRow = {
      dir: b.dir,
      kvLoraRank: b.kvLoraRank,
      qkRopeDim: b.qkRopeDim,
      kvValuesPerTokenPerLayer: b.report.kvValuesPerToken.perLayerAfter,
      compression: b.report.kvValuesPerToken.ratio,
      meanAttnRelError: b.report.meanAttnRelError,
      attnRelError: b.report.layers.map((l) => l.attnRelError),
    };
    if (e) {
      onStatus?.(`eval r${b.kvLoraRank}-p${b.qkRopeDim}`);
      row.ppl = (await attachPpl(b.report, sourceDir, b.dir, e, before)).after;
    }
    rows.push(row);
  }
  const summary: SweepSummary = {
    source: sourceDir,
    outDir: s.outDir,
    seconds: s.seconds,
    kvValuesPerTokenPerLayerBefore: s.budgets[0]?.report.kvValuesPerToken.perLayerBefore ?? 0,
    budgets: rows,
  };
  if (e) {
    summary.pplBefore = before;
    summary.protocol = protocol(e);
  }
  await writeFile(join(s.outDir, 'sweep.json'), `${JSON.stringify(summary, null, 2)}\n`);
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
  return `${pre}${head}\n${lines.join('\n')}\nsweep of ${s.budgets.length} budgets in ${s.seconds.toFixed(1)} s -> ${s.outDir}/sweep.json\n`;
}
