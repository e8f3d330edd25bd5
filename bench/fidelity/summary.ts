/**
 * The fidelity grid's results file (bench/results/fidelity-zoo-cpu.json) and its summary:
 * per model, budget and length, the original's ppl, the best fixed freqfold of
 * `--method transmla`, every row's gap (ppl - original) as a fraction of that best TransMLA
 * gap, and the issue's acceptance checks; plus the markdown table drawn from it.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { Budget, GridModel } from './models.js';
import type { GridRow, GridSettings } from './task.js';

/** The results file. */
export interface GridFile {
  version: 1;
  settings: GridSettings;
  models: Record<string, Omit<GridModel, 'dir'> & { budgets: Budget[] }>;
  rows: Record<string, GridRow>;
  summary: SummaryCell[];
}

/** One model x budget x length. */
export interface SummaryCell {
  model: string;
  budget: Budget['name'];
  qkRopeDim: number;
  kvLoraRank: number;
  seq: number;
  original: number | null;
  /** the best `--method transmla --freqfold N` at this length (over TransMLA's split and the tool's) */
  transmlaBest: { freqfold: number; ppl: number; row: string } | null;
  /** the split the default rows convert at (the tool's, `--kv-budget`) */
  defaultSplit: { qkRopeDim: number; kvLoraRank: number };
  /** row id -> ppl and gap / best TransMLA gap */
  rows: Record<string, { ppl: number; gapRatio: number | null }>;
  /** default gap <= 0.5 x best TransMLA gap (and never larger); null while a row is missing */
  defaultMeetsHalfGap: boolean | null;
  /** default <= 1.6 x original (checked at 2048+ tokens, half budget, on models trained at >= 2048 tokens) */
  defaultWithin1_6x: boolean | null;
}

/** Reads the results file, or starts one; settings must equal the stored ones (rows are not comparable otherwise). */
export function loadGrid(file: string, settings: GridSettings): GridFile {
  if (!existsSync(file)) return { version: 1, settings, models: {}, rows: {}, summary: [] };
  const g = JSON.parse(readFileSync(file, 'utf8')) as GridFile;
  const a = JSON.stringify(g.settings);
  const b = JSON.stringify(settings);
  if (a !== b) throw new Error(`${file} was measured with other settings:\n  stored ${a}\n  now    ${b}\nuse --out for another file`);
  return g;
}

/** Writes the file atomically (temporary file + rename) with a fresh summary. */
export function saveGrid(file: string, g: GridFile): void {
  g.summary = summarize(g);
  writeFileSync(`${file}.tmp`, `${JSON.stringify(g, null, 1)}\n`);
  renameSync(`${file}.tmp`, file);
}

function summarize(g: GridFile): SummaryCell[] {
  const cells: SummaryCell[] = [];
  for (const [name, m] of Object.entries(g.models))
    for (const b of m.budgets)
      for (const seq of g.settings.seqs) {
        const k = String(seq);
        const original = g.rows[`${name}/original`]?.ppl[k] ?? null;
        const inBudget = Object.values(g.rows).filter((r) => r.model === name && r.budget === b.name && r.ppl[k] !== undefined);
        let transmlaBest: SummaryCell['transmlaBest'] = null;
        for (const r of inBudget)
          if (r.group === 'transmla' && (transmlaBest === null || r.ppl[k] < transmlaBest.ppl)) transmlaBest = { freqfold: r.opts!.freqfold as number, ppl: r.ppl[k], row: r.row };
        const tmGap = original !== null && transmlaBest ? transmlaBest.ppl - original : null;
        const rows: SummaryCell['rows'] = {};
        for (const r of inBudget) rows[r.row] = { ppl: r.ppl[k], gapRatio: tmGap !== null && original !== null ? (r.ppl[k] - original) / tmGap : null };
        const d = rows.default;
        cells.push({
          model: name,
          budget: b.name,
          qkRopeDim: b.qkRopeDim,
          kvLoraRank: b.kvLoraRank,
          defaultSplit: b.split ?? { qkRopeDim: b.qkRopeDim, kvLoraRank: b.kvLoraRank },
          seq,
          original,
          transmlaBest,
          rows,
          defaultMeetsHalfGap: d && d.gapRatio !== null ? d.gapRatio <= 0.5 : null,
          defaultWithin1_6x: d && original !== null && seq >= 2048 && b.name === 'half' && (m.trainSeq ?? 0) >= 2048 ? d.ppl <= 1.6 * original : null,
        });
      }
  return cells;
}

const f2 = (x: number) => x.toFixed(2);

/** The markdown table: one per model, a column per budget and length, cells "ppl (gap / best TransMLA gap)". */
export function markdown(g: GridFile, rowOrder: (model: string) => Array<{ id: string; label: string }>): string {
  const out: string[] = [
    '# Fidelity grid (CPU)',
    '',
    `Calibration: ${g.settings.calibFile}, ${g.settings.calibSamples} x ${g.settings.calibSeqlen} tokens, seed ${g.settings.seed}. ` +
      `Evaluation: eval-ppl, ${g.settings.windows} windows at each length of ${g.settings.seqs.join(', ')} tokens of ${g.settings.evalFile}. ` +
      'Cells: ppl (gap to the original as a fraction of the gap of `--method transmla` at its best fixed freqfold for that budget and length). Regenerate: `npx tsx bench/fidelity/run.ts`.',
    '',
  ];
  for (const [name, m] of Object.entries(g.models)) {
    if (!Object.values(g.rows).some((r) => r.model === name)) continue;
    const cols = m.budgets.flatMap((b) => g.settings.seqs.map((seq) => ({ b, seq })));
    const cell = (b: Budget, seq: number) => g.summary.find((c) => c.model === name && c.budget === b.name && c.seq === seq);
    out.push(`## ${name}`, '', `head_dim ${m.headDim}, ${m.numKvHeads} KV heads, ${m.numLayers} layers, max_position_embeddings ${m.maxPositionEmbeddings}, trained at ${m.trainSeq ?? '?'} tokens, ${m.kvPerLayer} KV values per token and layer`, '');
    out.push(`| row | ${cols.map(({ b, seq }) => `${b.qkRopeDim}+${b.kvLoraRank} (${b.name}), ${seq}`).join(' | ')} |`);
    out.push(`|---|${cols.map(() => '---|').join('')}`);
    const orig = cols.map(({ b, seq }) => cell(b, seq)?.original);
    out.push(`| original | ${orig.map((x) => (x == null ? '' : f2(x))).join(' | ')} |`);
    const best = cols.map(({ b, seq }) => cell(b, seq)?.transmlaBest);
    out.push(`| best fixed-freqfold TransMLA | ${best.map((x) => (x ? `${f2(x.ppl)} (ff ${x.freqfold})` : '')).join(' | ')} |`);
    for (const r of rowOrder(name).filter((r) => r.id !== 'original')) {
      const vals = cols.map(({ b, seq }) => cell(b, seq)?.rows[r.id]);
      if (vals.every((v) => !v)) continue;
      const txt = vals.map((v) => (v ? `${f2(v.ppl)}${v.gapRatio !== null ? ` (${f2(v.gapRatio)})` : ''}` : ''));
      out.push(`| ${r.id === 'default' ? `**${r.label}**` : r.label} | ${txt.join(' | ')} |`);
    }
    out.push('');
  }
  return `${out.join('\n')}\n`;
}
