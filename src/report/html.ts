/**
 * report.html: a self-contained page (inline CSS and SVG, no scripts, no external assets)
 * drawn from a {@link ConversionReport}: KV-cache savings, perplexity when measured,
 * per-layer attention-output error, the RoRoPE and joint K/V PCA spectra with the kept
 * ranks marked, per-layer details, time per stage and the options used.
 */
import { join } from 'node:path';
import type { ConversionReport, LayerReport } from '../report-types.js';
import { esc, fixed, fmt, pct } from './escape.js';
import { BF16_BYTES, contextLabel, kvBytesPerToken, kvCacheRows, maxPositionsOf, REPORT_CONTEXT_LENGTHS } from './kv-cache.js';
import { bytes, card, gib, htmlDocument, mean, seconds, table, valueText, writeFileAtomic } from './page.js';
import { readConversionReport } from './read.js';
import { type BarChart, barChart, COLORS, hbarChart, spectrumChart, stripChart } from './svg.js';
import { checkDirectory } from '../check.js';
import { type EngineCheck, enginesSection, type ReportExtras, samplesSection, verdictSection } from './verdict.js';
import type { WrittenPage } from './written.js';

/** File name of the HTML report inside a converted directory. */
export const REPORT_HTML = 'report.html';

/** The data-chart names a report can contain (per-layer charts also carry data-layer). */
export const CHART_NAMES = ['nll-by-position', 'kv-cache', 'ppl', 'attn-error', 'variance-kept', 'rope-spectrum', 'pca-spectrum', 'stage-times'] as const;

/** The data-chart names present in a rendered page, in page order (per-layer charts once). */
export function chartsIn(html: string): string[] {
  return [...new Set([...html.matchAll(/<svg\b[^>]*\bdata-chart="([^"]+)"/g)].map((m) => m[1]))];
}

/** Context lengths of the KV table: the usual ones up to the model's positions, and that maximum itself (six at most). */
export function kvContexts(maxPositions?: number): number[] {
  if (!maxPositions || !Number.isFinite(maxPositions) || maxPositions <= 0) return [...REPORT_CONTEXT_LENGTHS];
  const base = maxPositions >= REPORT_CONTEXT_LENGTHS[0] ? REPORT_CONTEXT_LENGTHS : [512, 1024, 2048];
  const all = base.filter((t) => t < maxPositions);
  return [...all, maxPositions].slice(-6);
}

/** What {@link renderReportHtml} takes besides the report. */
export interface RenderOptions {
  /** the model's max_position_embeddings: the KV table stops there */
  maxPositions?: number;
}

function summaryCards(r: ConversionReport): string {
  const kv = r.kvValuesPerToken;
  const ratio = kv.perLayerBefore / kv.perLayerAfter;
  let s = '<div class="cards">';
  s += card(
    'KV cache per token',
    `${esc(bytes(kvBytesPerToken(kv.before)))} &rarr; ${esc(bytes(kvBytesPerToken(kv.after)))}`,
    `${esc(fmt(kv.perLayerBefore))} &rarr; ${esc(fmt(kv.perLayerAfter))} values per layer, bf16 (<span class="good">${esc(fixed(ratio, 2))}&times; smaller</span>)`,
  );
  s += card('Mean attention-output error', esc(fmt(r.meanAttnRelError ?? mean(r.layers.map((l) => l.attnRelError)))), 'relative, held-out calibration windows');
  if (r.ppl && (r.ppl.before !== undefined || r.ppl.after !== undefined)) {
    const d = r.ppl.before !== undefined && r.ppl.after !== undefined ? ` (${r.ppl.after >= r.ppl.before ? '+' : ''}${fixed((100 * (r.ppl.after - r.ppl.before)) / r.ppl.before, 1)}%)` : '';
    s += card('Perplexity', `${esc(fixed(r.ppl.before, 3))} &rarr; ${esc(fixed(r.ppl.after, 3))}`, `before &rarr; after${esc(d)}`);
  }
  s += card('Conversion time', esc(seconds(r.times?.total)), `${esc(String(r.source.numLayers))} layers${r.resumedFromLayer !== undefined ? `, resumed from layer ${esc(String(r.resumedFromLayer))}` : ''}`);
  if (r.output && Number.isFinite(r.output.totalBytes))
    s += card('Output size', esc(bytes(r.output.totalBytes)), `${esc(String(r.output.shards?.length ?? 0))} safetensors shard(s)`);
  return `${s}</div>`;
}

function kvSection(r: ConversionReport, maxPositions?: number): string {
  const kv = r.kvValuesPerToken;
  const rows = kvCacheRows(kv.before, kv.after, kvContexts(maxPositions));
  const chart = barChart({
    chart: 'kv-cache',
    title: 'KV cache per sequence (GiB, bf16, all layers) before and after conversion',
    width: 640,
    height: 300,
    groups: rows.map((x) => x.label),
    series: [
      { name: `before (${r.source.modelType || 'GQA'})`, color: COLORS.before, values: rows.map((x) => x.beforeGiB), tips: rows.map((x) => `before, ${x.label} tokens: ${gib(x.beforeGiB)} GiB`) },
      { name: 'after (MLA)', color: COLORS.after, values: rows.map((x) => x.afterGiB), tips: rows.map((x) => `after, ${x.label} tokens: ${gib(x.afterGiB)} GiB`) },
    ],
    valueLabels: true,
    valueFormat: gib,
    xLabel: 'context length (tokens)',
    yLabel: 'GiB per sequence',
  });
  const tbl = table(
    ['context', 'before GiB', 'after GiB', 'saved GiB'],
    rows.map((x) => [x.label, gib(x.beforeGiB), gib(x.afterGiB), gib(x.savedGiB)]),
  );
  return (
    '<section data-section="kv-cache"><h2>KV cache</h2>' +
    `<p class="note">Cached values per token: ${esc(fmt(kv.before))} &rarr; ${esc(fmt(kv.after))} over ${esc(String(r.source.numLayers))} layers ` +
    `(${esc(fmt(kv.perLayerBefore))} = 2 &times; ${esc(String(r.source.numKvHeads))} KV heads &times; ${esc(String(r.source.headDim))} per layer before; ` +
    `${esc(fmt(kv.perLayerAfter))} = kv_lora_rank ${esc(String(r.settings.kvLoraRank))} + qk_rope_head_dim ${esc(String(r.settings.qkRopeDim))} after), ` +
    `${BF16_BYTES} bytes per value: ${esc(bytes(kvBytesPerToken(kv.before)))} &rarr; ${esc(bytes(kvBytesPerToken(kv.after)))} per token.</p>` +
    `<div class="row"><figure>${chart}<figcaption>GiB per sequence for each context length (one sequence, all layers, bf16)` +
    `${maxPositions ? `, up to the model's ${esc(contextLabel(maxPositions))} positions (max_position_embeddings ${esc(String(maxPositions))})` : ''}.</figcaption></figure>` +
    `<div class="side">${tbl}</div></div></section>`
  );
}

function pplSection(r: ConversionReport): string {
  const p = r.ppl;
  if (!p || (p.before === undefined && p.after === undefined)) return '';
  const groups: string[] = [];
  const values: number[] = [];
  const tips: string[] = [];
  const colors: string[] = [];
  if (p.before !== undefined) {
    colors.push(COLORS.before);
    groups.push('before');
    values.push(p.before);
    tips.push(`before: ${fmt(p.before, 5)}`);
  }
  if (p.after !== undefined) {
    colors.push(COLORS.after);
    groups.push('after');
    values.push(p.after);
    tips.push(`after: ${fmt(p.after, 5)}`);
  }
  const chart = barChart({
    chart: 'ppl',
    title: 'Perplexity before and after conversion',
    width: 360,
    height: 220,
    groups,
    series: [{ name: 'perplexity', color: COLORS.after, colors, values, tips }],
    valueLabels: true,
    valueFormat: (v) => fixed(v, 3),
    yLabel: 'perplexity',
  });
  return (
    '<section><h2>Perplexity</h2>' +
    `<p class="note">Protocol: ${esc(p.protocol)}</p>` +
    `<div class="row"><figure style="flex:0 1 380px">${chart}</figure><div class="side">` +
    table(
      ['model', 'perplexity'],
      [
        ['before (source)', fixed(p.before, 4)],
        ['after (MLA)', fixed(p.after, 4)],
        ['change', p.before !== undefined && p.after !== undefined ? `${p.after >= p.before ? '+' : ''}${fixed((100 * (p.after - p.before)) / p.before, 2)}%` : '\u2014'],
      ],
    ) +
    '</div></div></section>'
  );
}

type Candidate = LayerReport['candidates'][number];

/** Whether a candidate is the configuration the layer kept (fields absent on either side are ignored). */
function sameCandidate(c: Candidate, l: LayerReport): boolean {
  const eq = <T>(a: T | undefined, b: T | undefined) => a === undefined || b === undefined || a === b;
  return c.freqfold === l.freqfold && eq(c.balanceKv, l.balanceKv) && eq(c.ropeSelection, l.ropeSelection) && eq(c.kvMetric, l.kvMetric);
}

function describeChoice(c: { freqfold: number; balanceKv?: number; ropeSelection?: string; kvMetric?: string }): string {
  let s = `freqfold ${c.freqfold}`;
  if (c.balanceKv !== undefined) s += `, balance ${fmt(c.balanceKv)}`;
  if (c.ropeSelection !== undefined) s += `, RoPE by ${c.ropeSelection}`;
  if (c.kvMetric !== undefined) s += `, ${c.kvMetric} metric`;
  return s;
}

/** A full-width bar chart with one group of bars per layer (labelled by layer index). */
function layerBarChart(layers: LayerReport[], c: Omit<BarChart, 'width' | 'groups' | 'xLabel'>): string {
  return barChart({ ...c, width: 1100, groups: layers.map((l) => String(l.layer)), xLabel: 'layer' });
}

function errorSection(r: ConversionReport): string {
  const layers = r.layers;
  const dots = layers.flatMap((l, gi) =>
    (l.candidates ?? [])
      .filter((c) => !sameCandidate(c, l))
      .map((c) => ({
        group: gi,
        value: c.attnRelError,
        tip: `layer ${l.layer}, ${describeChoice(c)}: ${fmt(c.attnRelError, 4)} (not chosen)`,
      })),
  );
  const m = r.meanAttnRelError ?? mean(layers.map((l) => l.attnRelError));
  const chart = layerBarChart(layers, {
    chart: 'attn-error',
    title: 'Attention-output relative error per layer (held-out calibration windows)',
    height: 300,
    series: [
      {
        name: 'chosen',
        color: COLORS.after,
        values: layers.map((l) => l.attnRelError),
        tips: layers.map((l) => `layer ${l.layer}: ${fmt(l.attnRelError, 4)} (${describeChoice(l)})`),
      },
    ],
    dots,
    dotLabel: 'other candidates tried',
    refLine: Number.isFinite(m) ? { value: m, label: `mean ${fmt(m, 3)}` } : undefined,
    yLabel: 'relative error',
  });
  return (
    '<section><h2>Attention-output error per layer</h2>' +
    '<p class="note">||attn<sub>MLA</sub>(x) &minus; attn<sub>GQA</sub>(x)|| / ||attn<sub>GQA</sub>(x)|| on held-out calibration windows. ' +
    'Bars: the configuration kept for the layer; circles: the other candidates (freqfold, balance, RoPE selection, K/V metric) evaluated from the same statistics.</p>' +
    `<figure>${chart}</figure></section>`
  );
}

function varianceSection(r: ConversionReport): string {
  const layers = r.layers;
  const chart = layerBarChart(layers, {
    chart: 'variance-kept',
    title: 'Share of variance kept per layer by RoRoPE and by the joint K/V PCA',
    height: 240,
    series: [
      { name: 'RoRoPE criterion kept', color: COLORS.accent, values: layers.map((l) => l.ropeVarianceKept), tips: layers.map((l) => `layer ${l.layer}, RoRoPE: ${pct(l.ropeVarianceKept)}`) },
      { name: 'K/V PCA variance kept', color: COLORS.after, values: layers.map((l) => l.pcaVarianceKept), tips: layers.map((l) => `layer ${l.layer}, PCA: ${pct(l.pcaVarianceKept)}`) },
    ],
    tickFormat: (v) => `${Math.round(v * 100)}%`,
    yLabel: 'share kept',
  });
  return (
    '<section><h2>Variance kept per layer</h2>' +
    `<p class="note">RoRoPE: share of the layer's RoPE selection criterion (key variance with selection 'key', attention-logit energy with 'qk'; setting: ${esc(String(r.settings.ropeSelection))}) in the ${esc(String(r.settings.qkRopeDim))} RoPE dims; ` +
    `PCA: share of E[|z|&sup2;] of the (balanced) [K<sub>nope</sub>, V] latent kept by kv_lora_rank = ${esc(String(r.settings.kvLoraRank))} directions.</p>` +
    `<figure>${chart}</figure></section>`
  );
}

function ropeSection(r: ConversionReport): string {
  const collapse = r.source.headDim / r.settings.qkRopeDim;
  const figs = r.layers
    .map((l) => {
      const keep = Math.floor(l.freqfold / collapse);
      const per = l.ropeSpectrum[0]?.length ?? 0;
      const chart = stripChart({
        chart: 'rope-spectrum',
        attrs: { 'data-layer': l.layer },
        title: `Layer ${l.layer}: RoRoPE eigenvalues per frequency group (freqfold ${l.freqfold}), leading ${keep} of ${per} kept per group`,
        width: 360,
        height: 210,
        groups: l.ropeSpectrum,
        keep,
        groupLabel: (i) => String(i * l.freqfold),
        xLabel: 'group (first frequency index)',
      });
      return (
        `<figure><figcaption><b>Layer ${esc(String(l.layer))}</b> <span>&middot; freqfold ${esc(String(l.freqfold))} &middot; ` +
        `${esc(String(keep))}/${esc(String(per))} kept per group &middot; ${esc(pct(l.ropeVarianceKept))}</span></figcaption>${chart}</figure>`
      );
    })
    .join('');
  return (
    '<section><h2>RoRoPE spectra</h2>' +
    `<p class="note">Per layer, the eigenvalues of each group of freqfold adjacent RoPE frequencies (all ${esc(String(r.source.numKvHeads))} KV heads together, log scale). ` +
    `With collapse = head_dim / qk_rope_head_dim = ${esc(String(r.source.headDim))} / ${esc(String(r.settings.qkRopeDim))} = ${esc(fmt(collapse))}, ` +
    'the leading freqfold / collapse directions of every group keep RoPE (filled); the others become position-free (hollow). The dashed tick marks each group\u2019s cut.</p>' +
    `<div class="legend-html"><span><i style="background:${COLORS.after}"></i>kept (RoPE)</span><span><i style="border:1px solid ${COLORS.before}"></i>dropped (NoPE)</span>` +
    `<span><i class="line" style="background:${COLORS.accent}"></i>cut</span></div>` +
    `<div class="grid-multiples">${figs}</div></section>`
  );
}

function pcaSection(r: ConversionReport): string {
  const rank = r.settings.kvLoraRank;
  const figs = r.layers
    .map((l) => {
      const chart = spectrumChart({
        chart: 'pca-spectrum',
        attrs: { 'data-layer': l.layer },
        title: `Layer ${l.layer}: joint [K_nope, V] PCA eigenvalues, ${rank} of ${l.pcaSpectrum.length} kept`,
        width: 360,
        height: 210,
        values: l.pcaSpectrum,
        keep: rank,
        keepLabel: `rank ${rank}`,
        xLabel: 'direction',
      });
      return (
        `<figure><figcaption><b>Layer ${esc(String(l.layer))}</b> <span>&middot; ${esc(String(Math.min(rank, l.pcaSpectrum.length)))}/${esc(String(l.pcaSpectrum.length))} kept &middot; ` +
        `${esc(pct(l.pcaVarianceKept))} of the variance</span></figcaption>${chart}</figure>`
      );
    })
    .join('');
  return (
    '<section><h2>Joint K/V PCA spectra</h2>' +
    `<p class="note">Per layer, the eigenvalues of the joint PCA of the position-free keys and the values (log scale); the first kv_lora_rank = ${esc(String(rank))} directions form the cached latent (shaded, blue).</p>` +
    `<div class="legend-html"><span><i class="line" style="background:${COLORS.after}"></i>kept</span><span><i class="line" style="background:${COLORS.before}"></i>dropped</span>` +
    `<span><i class="line" style="background:${COLORS.accent}"></i>kv_lora_rank</span></div>` +
    `<div class="grid-multiples">${figs}</div></section>`
  );
}

function layerTable(r: ConversionReport): string {
  const hasNorm = r.layers.some((l) => l.latentNorm);
  const hasSel = r.layers.some((l) => l.ropeSelection !== undefined || l.kvMetric !== undefined);
  const hasRefit = r.layers.some((l) => l.valueRefit);
  const head = ['layer', 'freqfold', 'balance'];
  if (hasSel) head.push('RoPE sel.', 'K/V metric');
  head.push('attn rel. error', 'best / worst of candidates', 'RoRoPE kept', 'PCA kept', 'balance scale');
  if (hasRefit) head.push('value refit: error before \u2192 after');
  if (hasNorm) head.push('latent-norm \u03b1');
  head.push('seconds');
  const rows = r.layers.map((l) => {
    const errs = (l.candidates ?? []).map((c) => c.attnRelError).filter((v) => Number.isFinite(v));
    const row = [String(l.layer), String(l.freqfold), fmt(l.balanceKv)];
    if (hasSel) row.push(l.ropeSelection ?? '\u2014', l.kvMetric ?? '\u2014');
    row.push(
      fmt(l.attnRelError, 4),
      errs.length ? `${fmt(Math.min(...errs), 4)} / ${fmt(Math.max(...errs), 4)} (${errs.length})` : '\u2014',
      pct(l.ropeVarianceKept),
      pct(l.pcaVarianceKept),
      fmt(l.balanceScale),
    );
    if (hasRefit) {
      const v = l.valueRefit;
      row.push(v ? `${fmt(v.errBefore, 4)} \u2192 ${fmt(v.errAfter, 4)} ${v.kept ? 'kept' : 'dropped'}` : '\u2014');
    }
    if (hasNorm) row.push(l.latentNorm ? fmt(l.latentNorm.alpha) : '\u2014');
    row.push(fixed(l.seconds, 2));
    return row;
  });
  return `<section><h2>Per-layer details</h2>${table(head, rows)}</section>`;
}

const STAGE_ORDER = ['tokenize', 'read', 'forward', 'statistics', 'factorize', 'evaluate', 'write'];

function timeSection(r: ConversionReport): string {
  const t = (r.times ?? {}) as unknown as Record<string, number>;
  const names = [...STAGE_ORDER.filter((k) => typeof t[k] === 'number'), ...Object.keys(t).filter((k) => k !== 'total' && !STAGE_ORDER.includes(k) && typeof t[k] === 'number')];
  const chart = hbarChart({
    chart: 'stage-times',
    title: `Time per stage (total ${seconds(t.total)})`,
    width: 640,
    height: 34 + 30 * names.length,
    labels: names,
    values: names.map((k) => t[k]),
    color: COLORS.after,
    valueFormat: seconds,
    xLabel: 'seconds',
  });
  const sum = names.reduce((a, k) => a + t[k], 0);
  return (
    '<section><h2>Time per stage</h2>' +
    `<p class="note">Total ${esc(seconds(t.total))} wall clock; the stages add up to ${esc(seconds(sum))}.</p>` +
    `<div class="row"><figure>${chart}</figure><div class="side">${table(
      ['stage', 'seconds', 'share'],
      names.map((k) => [k, fixed(t[k], 2), Number.isFinite(t.total) && t.total > 0 ? pct(t[k] / t.total) : '\u2014']).concat([['total', fixed(t.total, 2), '']]),
    )}</div></div></section>`
  );
}

function optionsSection(r: ConversionReport): string {
  const rows: string[][] = Object.entries(r.settings as unknown as Record<string, unknown>).map(([k, v]) => [k, valueText(v)]);
  const src = r.source;
  const info: string[][] = [
    ['source directory', src.dir],
    ['model type', src.modelType],
    ['layers', String(src.numLayers)],
    ['attention heads / KV heads', `${src.numHeads} / ${src.numKvHeads}`],
    ['head_dim', String(src.headDim)],
  ];
  if (r.output) {
    info.push(['output directory', r.output.dir]);
    info.push(['output size', `${bytes(r.output.totalBytes)} in ${r.output.shards?.length ?? 0} shard(s)`]);
  }
  if (r.tool) info.push(['tool', `${r.tool.name} ${r.tool.version}`]);
  if (r.resumedFromLayer !== undefined) info.push(['resumed from layer', String(r.resumedFromLayer)]);
  const cells = (rs: string[][]) => rs.map(([k, v]) => [`<td>${esc(k)}</td>`, `<td class="l mono">${esc(v)}</td>`]);
  return (
    '<section><h2>Options used</h2><div class="row">' +
    `<div class="side">${table(['setting', 'value'], cells(rows), true, 'kv')}</div>` +
    `<div class="side">${table(['model', ''], cells(info), true, 'kv')}</div>` +
    '</div></section>'
  );
}

/** Renders the self-contained report page for `report` (deterministic: same input, same bytes). */
export function renderReportHtml(report: ConversionReport, options: RenderOptions = {}): string {
  const r = report as ConversionReport & ReportExtras;
  const title = `gqa2mla conversion report \u2014 ${r.source.dir}`;
  const kv = r.kvValuesPerToken;
  return htmlDocument(
    title,
    '<header><h1>Conversion report</h1>' +
    `<p><span class="mono">${esc(r.source.dir)}</span> &rarr; <span class="mono">${esc(r.output?.dir ?? '')}</span></p>` +
    `<p>${esc(r.source.modelType)} &middot; ${esc(String(r.source.numLayers))} layers &middot; ${esc(String(r.source.numHeads))} query heads, ` +
    `${esc(String(r.source.numKvHeads))} KV heads &times; ${esc(String(r.source.headDim))} &rarr; MLA with kv_lora_rank ${esc(String(r.settings.kvLoraRank))}, ` +
    `qk_rope_head_dim ${esc(String(r.settings.qkRopeDim))} (${esc(fmt(kv.perLayerBefore))} &rarr; ${esc(fmt(kv.perLayerAfter))} cached values per token per layer)</p></header>` +
    summaryCards(r) +
    verdictSection(r) +
    samplesSection(r) +
    kvSection(r, options.maxPositions) +
    pplSection(r) +
    errorSection(r) +
    varianceSection(r) +
    ropeSection(r) +
    pcaSection(r) +
    layerTable(r) +
    timeSection(r) +
    optionsSection(r) +
    enginesSection(r) +
      `<footer>Generated by ${esc(r.tool?.name ?? 'gqa2mla')} ${esc(r.tool?.version ?? '')} from conversion-report.json. Self-contained: no scripts, no external resources.</footer>`,
  );
}

/**
 * What `gqa2mla check` says of the directory, per engine, in the report's engine section
 * (undefined when the directory cannot be checked, e.g. a report without its checkpoint).
 */
async function engineChecksOf(dir: string): Promise<EngineCheck[] | undefined> {
  try {
    const r = await checkDirectory(dir);
    return r.engines.map((e) => ({
      engine: e.engine,
      loads: e.loads,
      exact: e.computesSame,
      reasons: e.problems.map((p) => p.message),
      fastBackends: e.backends.filter((b) => b.accepts === true).map((b) => b.backend),
    }));
  } catch {
    return undefined;
  }
}

/** Result of {@link writeReportHtml} (`source`: the conversion-report.json). */
export interface WrittenReport extends WrittenPage {
  report: ConversionReport;
}

/**
 * Reads `<dir>/conversion-report.json` and writes `<dir>/report.html` beside it (atomically:
 * a temporary file renamed into place). Throws GqaError (exit 3) naming the file when the
 * directory or report is missing or malformed.
 */
export async function writeReportHtml(dir: string): Promise<WrittenReport> {
  const { file, report } = await readConversionReport(dir);
  const path = join(dir, REPORT_HTML);
  const engines = (report as ReportExtras).engines ?? (await engineChecksOf(dir));
  const n = await writeFileAtomic(path, renderReportHtml({ ...report, ...(engines ? { engines } : {}) } as ConversionReport, { maxPositions: await maxPositionsOf(dir) }));
  return { path, source: file, report, bytes: n };
}
