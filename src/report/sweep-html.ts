/**
 * A budget sweep's report.html: one self-contained page (inline CSS and SVG, no scripts,
 * no external assets) drawn from sweep.json: the table of all budgets with links to their
 * own report.html, KV-cache size per 32K-token sequence, quality (ppl, or the mean
 * attention-output error when ppl was not measured) against cached values per token, the
 * per-layer attention-output error of every budget, and the options used.
 */
import { basename, join } from 'node:path';
import type { SweepRow, SweepSummary } from '../report-types.js';
import { esc, fixed, fmt } from './escape.js';
import { BF16_BYTES, contextLabel, kvBytesPerToken, kvGiBPerSequence, maxPositionsOf } from './kv-cache.js';
import { bytes, card, gib, htmlDocument, seconds, table, valueText, writeFileAtomic } from './page.js';
import { readSweepSummary } from './read.js';
import { barChart, COLORS, lineChart, seriesColor, type LineSeries } from './svg.js';
import type { WrittenPage } from './written.js';

/** File name of the sweep's HTML report inside the sweep's output directory. */
export const SWEEP_REPORT_HTML = 'report.html';

/** The data-chart names of a sweep page (always all three). */
export const SWEEP_CHART_NAMES = ['sweep-tradeoff', 'sweep-kv-cache', 'sweep-attn-error'] as const;

/** Context length of the sweep page's KV-cache comparison (tokens). */
export const SWEEP_CONTEXT = 32768;

/** `r<rank>-p<rope>`, the name of a budget and of its directory. */
export function budgetName(b: Pick<SweepRow, 'kvLoraRank' | 'qkRopeDim'>): string {
  return `r${b.kvLoraRank}-p${b.qkRopeDim}`;
}

/** Directory of a budget relative to the sweep's output directory (its dir's last component). */
export function budgetDir(b: SweepRow): string {
  return basename(b.dir) || budgetName(b);
}

/** Number of decoder layers of a sweep (the model's, else the longest per-layer error list). */
export function sweepLayers(s: SweepSummary): number {
  return s.model?.numLayers ?? Math.max(0, ...s.budgets.map((b) => b.attnRelError.length));
}

/** KV values per token over all layers for a budget. */
function valuesPerToken(s: SweepSummary, b: SweepRow): number {
  return b.kvValuesPerToken ?? b.kvValuesPerTokenPerLayer * sweepLayers(s);
}

function hasPpl(s: SweepSummary): boolean {
  return s.budgets.some((b) => Number.isFinite(b.ppl));
}

function argmin(xs: Array<number | undefined>): number {
  let best = -1;
  xs.forEach((x, i) => {
    if (x !== undefined && Number.isFinite(x) && (best < 0 || x < (xs[best] as number))) best = i;
  });
  return best;
}

function signedPct(after: number | undefined, before: number | undefined, decimals = 1): string {
  if (after === undefined || before === undefined || !Number.isFinite(after) || !Number.isFinite(before) || before === 0) return '\u2014';
  const d = (100 * (after - before)) / before;
  return `${d >= 0 ? '+' : ''}${d.toFixed(decimals)}%`;
}

function summaryCards(s: SweepSummary): string {
  const L = sweepLayers(s);
  const rows = s.budgets;
  const ranks = [...new Set(rows.map((b) => b.kvLoraRank))];
  const ropes = [...new Set(rows.map((b) => b.qkRopeDim))];
  const vals = rows.map((b) => valuesPerToken(s, b));
  const lo = Math.min(...vals);
  const hi = Math.max(...vals);
  const before = s.kvValuesPerTokenPerLayerBefore * L;
  let h = '<div class="cards">';
  h += card('Budgets', esc(String(rows.length)), `kv_lora_rank ${esc(ranks.join(', '))} &times; qk_rope_head_dim ${esc(ropes.join(', '))}`);
  h += card(
    'KV cache per token',
    `${esc(bytes(kvBytesPerToken(lo)))} &ndash; ${esc(bytes(kvBytesPerToken(hi)))}`,
    `source ${esc(bytes(kvBytesPerToken(before)))}, bf16 (<span class="good">${esc(fixed(before / hi, 2))}&ndash;${esc(fixed(before / lo, 2))}&times; smaller</span>)`,
  );
  const e = argmin(rows.map((b) => b.meanAttnRelError));
  if (e >= 0) h += card('Lowest mean attention error', esc(fmt(rows[e].meanAttnRelError)), `${esc(budgetName(rows[e]))}, held-out calibration windows`);
  if (hasPpl(s)) {
    const p = argmin(rows.map((b) => b.ppl));
    h += card(
      'Best perplexity',
      `${esc(fixed(s.pplBefore, 3))} &rarr; ${esc(fixed(rows[p].ppl, 3))}`,
      `source &rarr; ${esc(budgetName(rows[p]))} (${esc(signedPct(rows[p].ppl, s.pplBefore))})`,
    );
  }
  h += card('Sweep time', esc(seconds(s.seconds)), `${esc(String(rows.length))} budgets from one calibration pass, ${esc(String(L))} layers`);
  return `${h}</div>`;
}

function budgetTable(s: SweepSummary, ctx: number): string {
  const L = sweepLayers(s);
  const ppl = hasPpl(s);
  const beforeVals = s.kvValuesPerTokenPerLayerBefore * L;
  const head = ['budget', 'kv_lora_rank', 'qk_rope_head_dim', 'KV values / token / layer', 'KV values / token', 'compression', `KV GiB / ${contextLabel(ctx)} sequence`, 'mean attn error', 'worst layer'];
  if (ppl) head.push('ppl before', 'ppl after', 'ppl change');
  const bestErr = argmin(s.budgets.map((b) => b.meanAttnRelError));
  const bestPpl = ppl ? argmin(s.budgets.map((b) => b.ppl)) : -1;
  const td = (v: string, cls = '') => `<td${cls ? ` class="${cls}"` : ''}>${esc(v)}</td>`;
  const src = [
    `<td>source (${esc(s.model?.modelType || 'GQA')})</td>`,
    td('\u2014'),
    td('\u2014'),
    td(fmt(s.kvValuesPerTokenPerLayerBefore)),
    td(fmt(beforeVals)),
    td('1.00\u00d7'),
    td(gib(kvGiBPerSequence(beforeVals, ctx))),
    td('\u2014'),
    td('\u2014'),
  ];
  if (ppl) src.push(td(fixed(s.pplBefore, 3)), td('\u2014'), td('\u2014'));
  const rows = [src].concat(
    s.budgets.map((b, i) => {
      const errs = b.attnRelError;
      const w = errs.length ? errs.indexOf(Math.max(...errs)) : -1;
      const name = budgetName(b);
      const row = [
        `<td><a href="${esc(encodeURIComponent(budgetDir(b)))}/report.html">${esc(name)}</a></td>`,
        td(String(b.kvLoraRank)),
        td(String(b.qkRopeDim)),
        td(fmt(b.kvValuesPerTokenPerLayer)),
        td(fmt(valuesPerToken(s, b))),
        td(`${fixed(b.compression, 2)}\u00d7`),
        td(gib(kvGiBPerSequence(valuesPerToken(s, b), ctx))),
        td(fmt(b.meanAttnRelError, 4), i === bestErr ? 'good' : ''),
        td(w >= 0 ? `${fmt(errs[w], 4)} (layer ${w})` : '\u2014'),
      ];
      if (ppl) row.push(td(fixed(s.pplBefore, 3)), td(fixed(b.ppl, 3), i === bestPpl ? 'good' : ''), td(signedPct(b.ppl, s.pplBefore, 2)));
      return row;
    }),
  );
  return (
    '<section><h2>Budgets</h2>' +
    `<p class="note">One row per output directory (<span class="mono">r&lt;kv_lora_rank&gt;-p&lt;qk_rope_head_dim&gt;/</span>, linked to its own report). ` +
    `KV values per token per layer: 2 &times; KV heads &times; head_dim for the source, kv_lora_rank + qk_rope_head_dim after; ${BF16_BYTES} bytes per value (bf16). ` +
    'Attention error: ||attn<sub>MLA</sub>(x) &minus; attn<sub>GQA</sub>(x)|| / ||attn<sub>GQA</sub>(x)|| on held-out calibration windows.' +
    (ppl ? ` Perplexity: ${esc(s.protocol ?? 'eval-ppl protocol')}.` : ' Perplexity was not measured (convert with --eval-text to add it).') +
    '</p>' +
    table(head, rows, true) +
    '</section>'
  );
}

function tradeoffSection(s: SweepSummary): string {
  const ppl = hasPpl(s);
  const ropes = [...new Set(s.budgets.map((b) => b.qkRopeDim))];
  const series: LineSeries[] = ropes.map((p, i) => ({
    name: `qk_rope_head_dim ${p}`,
    color: seriesColor(i),
    points: s.budgets
      .filter((b) => b.qkRopeDim === p)
      .map((b) => {
        const y = ppl ? (b.ppl ?? NaN) : b.meanAttnRelError;
        return {
          x: b.kvValuesPerTokenPerLayer,
          y,
          label: `r${b.kvLoraRank}`,
          tip: `${budgetName(b)}: ${fmt(b.kvValuesPerTokenPerLayer)} KV values/token/layer, ${ppl ? `ppl ${fixed(y, 3)}` : `mean attn error ${fmt(y, 4)}`}`,
        };
      })
      .sort((a, b) => a.x - b.x),
  }));
  const chart = lineChart({
    chart: 'sweep-tradeoff',
    title: ppl ? 'Perplexity against KV values per token per layer, one line per qk_rope_head_dim' : 'Mean attention-output error against KV values per token per layer, one line per qk_rope_head_dim',
    width: 1100,
    height: 340,
    series,
    yFromZero: !ppl,
    pointLabels: true,
    refLine: ppl && s.pplBefore !== undefined && Number.isFinite(s.pplBefore) ? { value: s.pplBefore, label: `source ppl ${fixed(s.pplBefore, 3)}` } : undefined,
    xLabel: 'KV values per token per layer (kv_lora_rank + qk_rope_head_dim)',
    yLabel: ppl ? 'perplexity' : 'mean attn error',
  });
  return (
    `<section><h2>${ppl ? 'Perplexity' : 'Mean attention-output error'} against KV cache</h2>` +
    `<p class="note">${ppl ? 'Perplexity of each converted model (dashed: the source model)' : 'Mean over layers of the held-out attention-output error (perplexity not measured)'}; ` +
    'points are labelled with their kv_lora_rank. Lower and further left is better.</p>' +
    `<figure>${chart}</figure></section>`
  );
}

function kvSection(s: SweepSummary, ctx: number): string {
  const L = sweepLayers(s);
  const before = s.kvValuesPerTokenPerLayerBefore * L;
  const groups = ['source'].concat(s.budgets.map(budgetName));
  const values = [kvGiBPerSequence(before, ctx)].concat(s.budgets.map((b) => kvGiBPerSequence(valuesPerToken(s, b), ctx)));
  const label = contextLabel(ctx);
  const chart = barChart({
    chart: 'sweep-kv-cache',
    title: `KV cache per ${label}-token sequence (GiB, bf16, all layers): source and each budget`,
    width: 1100,
    height: 300,
    groups,
    series: [
      {
        name: `GiB per ${label} sequence`,
        color: COLORS.after,
        colors: [COLORS.before].concat(s.budgets.map(() => COLORS.after)),
        values,
        tips: groups.map((g, i) => `${g}: ${gib(values[i])} GiB per ${label}-token sequence`),
      },
    ],
    valueLabels: true,
    valueFormat: gib,
    xLabel: 'budget',
    yLabel: `GiB per ${label} sequence`,
  });
  return (
    `<section><h2>KV cache per ${esc(label)}-token sequence</h2>` +
    `<p class="note">One sequence of ${esc(String(ctx))} tokens${ctx < SWEEP_CONTEXT ? ' (the model\u2019s max_position_embeddings)' : ''}, all ${esc(String(L))} layers, ${BF16_BYTES} bytes per value (grey: the source model).</p>` +
    `<figure>${chart}</figure></section>`
  );
}

function errorSection(s: SweepSummary): string {
  const L = sweepLayers(s);
  const series: LineSeries[] = s.budgets.map((b, i) => ({
    name: budgetName(b),
    color: seriesColor(i),
    dashed: i >= 10,
    points: b.attnRelError.map((e, l) => ({ x: l, y: e, tip: `${budgetName(b)}, layer ${l}: ${fmt(e, 4)}` })),
  }));
  const chart = lineChart({
    chart: 'sweep-attn-error',
    title: 'Attention-output relative error per layer, one line per budget (held-out calibration windows)',
    width: 1100,
    height: 360,
    series,
    xInteger: true,
    xLabel: 'layer',
    yLabel: 'relative error',
  });
  const head = ['layer'].concat(s.budgets.map(budgetName));
  const rows: string[][] = [];
  for (let l = 0; l < L; l++) rows.push([String(l)].concat(s.budgets.map((b) => fmt(b.attnRelError[l], 4))));
  rows.push(['mean'].concat(s.budgets.map((b) => fmt(b.meanAttnRelError, 4))));
  return (
    '<section><h2>Attention-output error per layer</h2>' +
    '<p class="note">||attn<sub>MLA</sub>(x) &minus; attn<sub>GQA</sub>(x)|| / ||attn<sub>GQA</sub>(x)|| per layer on held-out calibration windows, for every budget.</p>' +
    `<figure>${chart}</figure>${table(head, rows)}</section>`
  );
}

function optionsSection(s: SweepSummary): string {
  const cells = (rs: string[][]) => rs.map(([k, v]) => [`<td>${esc(k)}</td>`, `<td class="l mono">${esc(v)}</td>`]);
  const ranks = [...new Set(s.budgets.map((b) => b.kvLoraRank))];
  const ropes = [...new Set(s.budgets.map((b) => b.qkRopeDim))];
  const settings: string[][] = [
    ['kvLoraRank (swept)', ranks.join(', ')],
    ['qkRopeDim (swept)', ropes.join(', ')],
  ];
  if (s.settings) for (const [k, v] of Object.entries(s.settings as unknown as Record<string, unknown>)) settings.push([k, valueText(v)]);
  else settings.push(['other settings', 'not recorded in this sweep.json; see each budget\u2019s report']);
  if (s.protocol) settings.push(['perplexity', s.protocol]);
  const info: string[][] = [['source directory', s.source]];
  if (s.model) {
    info.push(['model type', s.model.modelType]);
    info.push(['layers', String(s.model.numLayers)]);
    info.push(['attention heads / KV heads', `${s.model.numHeads} / ${s.model.numKvHeads}`]);
    info.push(['head_dim', String(s.model.headDim)]);
  }
  info.push(['output directory', s.outDir]);
  info.push(['sweep time', seconds(s.seconds)]);
  if (s.tool) info.push(['tool', `${s.tool.name} ${s.tool.version}`]);
  return (
    '<section><h2>Options used</h2><div class="row">' +
    `<div class="side">${table(['setting', 'value'], cells(settings), true, 'kv')}</div>` +
    `<div class="side">${table(['model', ''], cells(info), true, 'kv')}</div>` +
    '</div></section>'
  );
}

/** Renders the self-contained page of a sweep (deterministic: same input, same bytes). */
export function renderSweepHtml(sweep: SweepSummary, options: { maxPositions?: number } = {}): string {
  const s = sweep;
  // KV sizes for one sequence of 32K tokens, or of the model's positions when it has fewer
  const ctx = options.maxPositions && options.maxPositions > 0 ? Math.min(SWEEP_CONTEXT, options.maxPositions) : SWEEP_CONTEXT;
  const m = s.model;
  return htmlDocument(
    `gqa2mla budget sweep \u2014 ${s.source}`,
    '<header><h1>Budget sweep</h1>' +
      `<p><span class="mono">${esc(s.source)}</span> &rarr; <span class="mono">${esc(s.outDir)}</span></p>` +
      (m
        ? `<p>${esc(m.modelType)} &middot; ${esc(String(m.numLayers))} layers &middot; ${esc(String(m.numHeads))} query heads, ` +
          `${esc(String(m.numKvHeads))} KV heads &times; ${esc(String(m.headDim))} (${esc(fmt(s.kvValuesPerTokenPerLayerBefore))} cached values per token per layer) ` +
          `&rarr; MLA at ${esc(String(s.budgets.length))} budgets</p>`
        : `<p>${esc(String(s.budgets.length))} budgets; source ${esc(fmt(s.kvValuesPerTokenPerLayerBefore))} cached values per token per layer</p>`) +
      '</header>' +
      summaryCards(s) +
      budgetTable(s, ctx) +
      tradeoffSection(s) +
      kvSection(s, ctx) +
      errorSection(s) +
      optionsSection(s) +
      `<footer>Generated by ${esc(s.tool?.name ?? 'gqa2mla')} ${esc(s.tool?.version ?? '')} from sweep.json. Self-contained: no scripts, no external resources; ` +
      'the budget links open each output directory\u2019s own report.html.</footer>',
  );
}

/** Result of {@link writeSweepReportHtml} (`source`: the sweep.json). */
export interface WrittenSweepReport extends WrittenPage {
  sweep: SweepSummary;
}

/**
 * Reads `<dir>/sweep.json` and writes the sweep's `<dir>/report.html` beside it (atomically).
 * The budgets' own report.html files are not touched. Throws GqaError (exit 3) naming the
 * file when the directory or sweep.json is missing or malformed.
 */
export async function writeSweepReportHtml(dir: string): Promise<WrittenSweepReport> {
  const { file, sweep } = await readSweepSummary(dir);
  const path = join(dir, SWEEP_REPORT_HTML);
  const first = sweep.budgets[0];
  const maxPositions = first ? await maxPositionsOf(join(dir, budgetDir(first))) : undefined;
  const n = await writeFileAtomic(path, renderSweepHtml(sweep, { maxPositions }));
  return { path, source: file, sweep, bytes: n };
}
