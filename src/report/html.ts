/**
 * report.html: a self-contained page (inline CSS and SVG, no scripts, no external assets)
 * drawn from a {@link ConversionReport}: KV-cache savings, perplexity when measured,
 * per-layer attention-output error, the RoRoPE and joint K/V PCA spectra with the kept
 * ranks marked, per-layer details, time per stage and the options used.
 */
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ConversionReport, LayerReport } from '../convert/report.js';
import { esc, fixed, fmt, pct } from './escape.js';
import { BF16_BYTES, kvBytesPerToken, kvCacheRows } from './kv-cache.js';
import { readConversionReport } from './read.js';
import { barChart, COLORS, hbarChart, spectrumChart, stripChart } from './svg.js';

/** File name of the HTML report inside a converted directory. */
export const REPORT_HTML = 'report.html';

/** The data-chart names a report can contain (per-layer charts also carry data-layer). */
export const CHART_NAMES = ['kv-cache', 'ppl', 'attn-error', 'variance-kept', 'rope-spectrum', 'pca-spectrum', 'stage-times'] as const;

const CSS = `
:root{--fg:#1f2937;--muted:#6b7280;--line:#e5e7eb;--bg:#f8fafc;--card:#fff;--accent:${COLORS.after};--warm:${COLORS.accent}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1160px;margin:0 auto;padding:28px 24px 48px}
header h1{font-size:24px;margin:0 0 4px}
header p{margin:2px 0;color:var(--muted)}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:12px;margin:20px 0 8px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 14px}
.card .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:20px;font-weight:600;margin-top:2px}
.card .s{color:var(--muted);font-size:12.5px}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:16px 18px;margin-top:18px}
section h2{font-size:17px;margin:0 0 4px}
section>p.note{margin:0 0 12px;color:var(--muted);font-size:13px}
.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.row>figure{flex:1 1 560px}
.row>.side{flex:1 1 300px}
figure{margin:0}
figcaption{color:var(--muted);font-size:12.5px;margin-top:2px}
svg.chart{display:block;width:100%;height:auto}
.grid-multiples{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:14px 18px}
.grid-multiples figure{border-top:1px solid var(--line);padding-top:6px}
.grid-multiples figcaption{margin:0 0 2px;color:var(--fg)}
.grid-multiples figcaption span{color:var(--muted)}
.legend-html{display:flex;gap:18px;flex-wrap:wrap;color:var(--muted);font-size:12.5px;margin:0 0 10px}
.legend-html i{display:inline-block;width:10px;height:10px;border-radius:50%;margin-right:5px;vertical-align:-1px}
.legend-html i.bar{border-radius:2px}
.legend-html i.line{height:2px;width:16px;border-radius:0;vertical-align:3px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{padding:5px 7px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th{font-weight:600;color:var(--muted);font-size:12px;white-space:normal;vertical-align:bottom}
th:first-child,td:first-child{text-align:left}
tbody tr:nth-child(even){background:#fafbfc}
table.kv th:last-child{text-align:left}
td.l{text-align:left;white-space:normal;word-break:break-all}
.scroll{overflow-x:auto}
.good{color:#047857}
footer{color:var(--muted);font-size:12px;margin-top:22px;text-align:center}
.chart .tick{font-size:10.5px;fill:${COLORS.axis}}
.chart .cat{font-size:12px;fill:${COLORS.text}}
.chart .value{font-size:10.5px;fill:${COLORS.text}}
.chart .legend{font-size:11.5px;fill:${COLORS.text}}
.chart .axis-label{font-size:11.5px;fill:${COLORS.axis}}
.chart .grid{stroke:${COLORS.grid};stroke-width:1;fill:none}
.chart .axis{stroke:${COLORS.axis};stroke-width:1;fill:none}
.chart .ref{stroke:${COLORS.accent};stroke-width:1.2;stroke-dasharray:5 4;fill:none}
.chart .ref-label{font-size:11px;fill:${COLORS.accent};paint-order:stroke;stroke:#fff;stroke-width:3px;stroke-linejoin:round}
.chart .cut{stroke:${COLORS.accent};stroke-width:1.3;stroke-dasharray:4 3;fill:none}
.chart .cut-label{font-size:10.5px;fill:${COLORS.accent};font-weight:600;paint-order:stroke;stroke:#fff;stroke-width:3px;stroke-linejoin:round}
.chart .kept-area{fill:#2563eb;fill-opacity:.06}
.chart .line{fill:none;stroke-width:1.6;stroke-linejoin:round}
.chart .line.kept{stroke:${COLORS.after}}
.chart .line.dropped{stroke:${COLORS.before}}
.chart circle.kept{fill:${COLORS.after}}
.chart circle.dropped{fill:#fff;stroke:${COLORS.before};stroke-width:1}
@media print{body{background:#fff}section,.card{break-inside:avoid}}
`;

function gib(x: number): string {
  if (!Number.isFinite(x)) return '\u2014';
  if (x === 0) return '0';
  if (x >= 100) return x.toFixed(0);
  return fmt(x, 3);
}

function bytes(n: number): string {
  if (!Number.isFinite(n)) return '\u2014';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v.toFixed(0) : v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[u]}`;
}

function seconds(s: number): string {
  if (!Number.isFinite(s)) return '\u2014';
  if (s >= 120) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${s >= 10 ? s.toFixed(1) : s.toFixed(2)} s`;
}

function card(k: string, v: string, sub: string): string {
  return `<div class="card"><div class="k">${esc(k)}</div><div class="v">${v}</div><div class="s">${sub}</div></div>`;
}

function table(head: string[], rows: string[][], rawCells = false, cls = ''): string {
  return (
    `<div class="scroll"><table${cls ? ` class="${cls}"` : ''}><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>` +
    rows.map((row) => `<tr>${row.map((c) => (rawCells ? c : `<td>${esc(c)}</td>`)).join('')}</tr>`).join('') +
    '</tbody></table></div>'
  );
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

function mean(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
}

function kvSection(r: ConversionReport): string {
  const kv = r.kvValuesPerToken;
  const rows = kvCacheRows(kv.before, kv.after);
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
    '<section><h2>KV cache</h2>' +
    `<p class="note">Cached values per token: ${esc(fmt(kv.before))} &rarr; ${esc(fmt(kv.after))} over ${esc(String(r.source.numLayers))} layers ` +
    `(${esc(fmt(kv.perLayerBefore))} = 2 &times; ${esc(String(r.source.numKvHeads))} KV heads &times; ${esc(String(r.source.headDim))} per layer before; ` +
    `${esc(fmt(kv.perLayerAfter))} = kv_lora_rank ${esc(String(r.settings.kvLoraRank))} + qk_rope_head_dim ${esc(String(r.settings.qkRopeDim))} after), ` +
    `${BF16_BYTES} bytes per value: ${esc(bytes(kvBytesPerToken(kv.before)))} &rarr; ${esc(bytes(kvBytesPerToken(kv.after)))} per token.</p>` +
    `<div class="row"><figure>${chart}<figcaption>GiB per sequence for each context length (one sequence, all layers, bf16).</figcaption></figure>` +
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
  const chart = barChart({
    chart: 'attn-error',
    title: 'Attention-output relative error per layer (held-out calibration windows)',
    width: 1100,
    height: 300,
    groups: layers.map((l) => String(l.layer)),
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
    xLabel: 'layer',
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
  const chart = barChart({
    chart: 'variance-kept',
    title: 'Share of variance kept per layer by RoRoPE and by the joint K/V PCA',
    width: 1100,
    height: 240,
    groups: layers.map((l) => String(l.layer)),
    series: [
      { name: 'RoRoPE criterion kept', color: COLORS.accent, values: layers.map((l) => l.ropeVarianceKept), tips: layers.map((l) => `layer ${l.layer}, RoRoPE: ${pct(l.ropeVarianceKept)}`) },
      { name: 'K/V PCA variance kept', color: COLORS.after, values: layers.map((l) => l.pcaVarianceKept), tips: layers.map((l) => `layer ${l.layer}, PCA: ${pct(l.pcaVarianceKept)}`) },
    ],
    tickFormat: (v) => `${Math.round(v * 100)}%`,
    xLabel: 'layer',
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

function valueText(v: unknown): string {
  if (v === null) return 'null';
  if (typeof v === 'number') return fmt(v, 6);
  if (typeof v === 'string' || typeof v === 'boolean') return String(v);
  return JSON.stringify(v);
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
export function renderReportHtml(report: ConversionReport): string {
  const r = report;
  const title = `gqa2mla conversion report \u2014 ${r.source.dir}`;
  const kv = r.kvValuesPerToken;
  return (
    '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">' +
    '<meta name="viewport" content="width=device-width, initial-scale=1">' +
    `<title>${esc(title)}</title><style>${CSS}</style></head><body><main>` +
    '<header><h1>Conversion report</h1>' +
    `<p><span class="mono">${esc(r.source.dir)}</span> &rarr; <span class="mono">${esc(r.output?.dir ?? '')}</span></p>` +
    `<p>${esc(r.source.modelType)} &middot; ${esc(String(r.source.numLayers))} layers &middot; ${esc(String(r.source.numHeads))} query heads, ` +
    `${esc(String(r.source.numKvHeads))} KV heads &times; ${esc(String(r.source.headDim))} &rarr; MLA with kv_lora_rank ${esc(String(r.settings.kvLoraRank))}, ` +
    `qk_rope_head_dim ${esc(String(r.settings.qkRopeDim))} (${esc(fmt(kv.perLayerBefore))} &rarr; ${esc(fmt(kv.perLayerAfter))} cached values per token per layer)</p></header>` +
    summaryCards(r) +
    kvSection(r) +
    pplSection(r) +
    errorSection(r) +
    varianceSection(r) +
    ropeSection(r) +
    pcaSection(r) +
    layerTable(r) +
    timeSection(r) +
    optionsSection(r) +
    `<footer>Generated by ${esc(r.tool?.name ?? 'gqa2mla')} ${esc(r.tool?.version ?? '')} from conversion-report.json. Self-contained: no scripts, no external resources.</footer>` +
    '</main></body></html>\n'
  );
}

/** Result of {@link writeReportHtml}. */
export interface WrittenReport {
  /** path of the written report.html */
  path: string;
  /** path of the conversion-report.json it was drawn from */
  source: string;
  report: ConversionReport;
  bytes: number;
}

/**
 * Reads `<dir>/conversion-report.json` and writes `<dir>/report.html` beside it (atomically:
 * a temporary file renamed into place). Throws GqaError (exit 3) naming the file when the
 * directory or report is missing or malformed.
 */
export async function writeReportHtml(dir: string): Promise<WrittenReport> {
  const { file, report } = await readConversionReport(dir);
  const html = renderReportHtml(report);
  const path = join(dir, REPORT_HTML);
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, html);
  await rename(tmp, path);
  return { path, source: file, report, bytes: Buffer.byteLength(html) };
}
