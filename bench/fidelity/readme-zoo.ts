/**
 * The README's zoo fidelity table, generated from a grid file (default
 * bench/results/fidelity-zoo-cpu.json): per zoo model and budget, at each length, the
 * original ppl, the best fixed-freqfold `--method transmla`, the default with its choices on
 * 256-token windows (`--context 256`, the default before the serving context) and the
 * default, each with its gap as a fraction of TransMLA's (the fidelity issue's target:
 * <= 0.5); "not run" where the grid has no such row.
 *
 *   npx tsx bench/fidelity/readme-zoo.ts [grid.json]
 */
import { readFileSync } from 'node:fs';

interface Cell {
  model: string;
  budget: string;
  qkRopeDim: number;
  kvLoraRank: number;
  seq: number;
  original: number;
  transmlaBest: { freqfold: number; ppl: number; row?: string };
  defaultSplit?: { qkRopeDim: number; kvLoraRank: number };
  rows: Partial<Record<string, { ppl: number; gapRatio: number }>>;
}

const file = process.argv[2] ?? 'bench/results/fidelity-zoo-cpu.json';
const cells = (JSON.parse(readFileSync(file, 'utf8')) as { summary: Cell[] }).summary.filter((c) => c.model.startsWith('zoo-'));
const seqs = [...new Set(cells.map((c) => c.seq))].sort((a, b) => a - b);
const f = (x: number) => x.toFixed(2);
const head = ['model', 'budget', ...seqs.flatMap((s) => [`original @${s}`, `TransMLA best @${s}`, `--context 256 @${s}`, `default @${s} (gap ratio)`])];
const cell = (d: { ppl: number; gapRatio: number } | undefined) => (d ? `${f(d.ppl)} (${d.gapRatio.toFixed(2)})` : 'not run');
const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
const keys = [...new Set(cells.map((c) => `${c.model}|${c.budget}`))];
for (const k of keys) {
  const [model, budget] = k.split('|');
  const row = [model, ''];
  for (const s of seqs) {
    const c = cells.find((x) => x.model === model && x.budget === budget && x.seq === s)!;
    const d = c.defaultSplit ?? { qkRopeDim: c.qkRopeDim, kvLoraRank: c.kvLoraRank };
    const other = d.qkRopeDim !== c.qkRopeDim;
    row[1] = `${c.qkRopeDim}+${c.kvLoraRank}${other ? ` / ${d.qkRopeDim}+${d.kvLoraRank}` : ''} (${budget})`;
    const tmSplit = c.transmlaBest.row?.startsWith('transmla-split') ? `, ${d.qkRopeDim}+${d.kvLoraRank}` : '';
    row.push(f(c.original), `${f(c.transmlaBest.ppl)} (ff ${c.transmlaBest.freqfold}${tmSplit})`, cell(c.rows['default-ctx256']), cell(c.rows.default));
  }
  lines.push(`| ${row.join(' | ')} |`);
}
console.log(lines.join('\n'));
