/**
 * Static SVG charts for the HTML reports: grouped bar charts (vertical and horizontal), a
 * multi-series line chart, a log-scale line chart with a marked rank, and a log-scale strip
 * chart. No scripts; hover
 * details come from SVG <title> elements. Every data mark carries class "mark" so tests
 * can tell a drawn chart from an empty frame. All text goes through {@link esc}.
 */
import { esc, fmt } from './escape.js';

/** Colours shared by the charts and the page. */
export const COLORS = {
  before: '#9aa5b4',
  after: '#2563eb',
  accent: '#ea580c',
  grid: '#e5e7eb',
  axis: '#6b7280',
  text: '#374151',
  muted: '#9ca3af',
};

/** Distinct series colours (cycled; see {@link seriesColor}). */
export const PALETTE = ['#2563eb', '#ea580c', '#059669', '#9333ea', '#dc2626', '#0891b2', '#ca8a04', '#db2777', '#4b5563', '#65a30d'] as const;

/** Colour of the i-th series (the palette, cycled). */
export function seriesColor(i: number): string {
  return PALETTE[((i % PALETTE.length) + PALETTE.length) % PALETTE.length];
}

/** Common chart settings. */
export interface ChartBase {
  /** value of the svg's data-chart attribute */
  chart: string;
  /** extra attributes (name -> value) on the svg element, e.g. data-layer */
  attrs?: Record<string, string | number>;
  /** the svg's <title> (accessible name, shown on hover) */
  title: string;
  width: number;
  height: number;
  xLabel?: string;
  yLabel?: string;
}

interface Margin {
  top: number;
  right: number;
  bottom: number;
  left: number;
}

type Scale = (v: number) => number;

function linear(d0: number, d1: number, r0: number, r1: number): Scale {
  const k = d1 === d0 ? 0 : (r1 - r0) / (d1 - d0);
  return (v) => r0 + (v - d0) * k;
}

/** Round ticks covering [min, max] (about `count` of them). */
export function niceTicks(min: number, max: number, count = 5): number[] {
  if (!(max > min)) return [min];
  const raw = (max - min) / Math.max(1, count);
  const p = 10 ** Math.floor(Math.log10(raw));
  const m = raw / p;
  const step = (m >= 5 ? 10 : m >= 2 ? 5 : m >= 1 ? 2 : 1) * p;
  const start = Math.ceil(min / step - 1e-9) * step;
  const out: number[] = [];
  for (let v = start; v <= max + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : Number(v.toPrecision(12)));
  return out;
}

/** The upper end of a linear axis starting at 0: the first nice tick at or above `max`. */
function niceMax(max: number): number {
  if (!(max > 0)) return 1;
  const t = niceTicks(0, max, 5);
  const last = t[t.length - 1];
  if (last >= max) return last;
  return last + (t.length > 1 ? t[1] - t[0] : max);
}

function svgOpen(c: ChartBase): string {
  const extra = Object.entries(c.attrs ?? {})
    .map(([k, v]) => ` ${esc(k)}="${esc(v)}"`)
    .join('');
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" class="chart" data-chart="${esc(c.chart)}"${extra} role="img" ` +
    `viewBox="0 0 ${c.width} ${c.height}" width="${c.width}" height="${c.height}"><title>${esc(c.title)}</title>`
  );
}

function text(x: number, y: number, s: string, opts: { anchor?: 'start' | 'middle' | 'end'; cls?: string; rotate?: boolean } = {}): string {
  const tr = opts.rotate ? ` transform="rotate(-90 ${r(x)} ${r(y)})"` : '';
  return `<text x="${r(x)}" y="${r(y)}" text-anchor="${opts.anchor ?? 'middle'}" class="${opts.cls ?? 'tick'}"${tr}>${esc(s)}</text>`;
}

function r(v: number): string {
  return String(Math.round(v * 10) / 10);
}

function axisLabels(c: ChartBase, m: Margin): string {
  let s = '';
  if (c.xLabel) s += text(m.left + (c.width - m.left - m.right) / 2, c.height - 6, c.xLabel, { cls: 'axis-label' });
  if (c.yLabel) s += text(13, m.top + (c.height - m.top - m.bottom) / 2, c.yLabel, { cls: 'axis-label', rotate: true });
  return s;
}

function noData(c: ChartBase, why: string): string {
  return `${svgOpen(c)}${text(c.width / 2, c.height / 2, why, { cls: 'axis-label' })}</svg>`;
}

/** One series of a grouped bar chart. */
export interface BarSeries {
  name: string;
  color: string;
  values: number[];
  /** per-bar colours (default: `color` for all) */
  colors?: string[];
  /** per-bar hover text (defaults to "series, group: value") */
  tips?: string[];
}

/** A point drawn over a bar group (e.g. an alternative candidate). */
export interface BarDot {
  group: number;
  value: number;
  tip: string;
}

/** Vertical grouped bar chart with a linear y axis from 0. */
export interface BarChart extends ChartBase {
  groups: string[];
  series: BarSeries[];
  /** print each bar's value above it */
  valueLabels?: boolean;
  valueFormat?: (v: number) => string;
  tickFormat?: (v: number) => string;
  dots?: BarDot[];
  dotLabel?: string;
  /** dashed horizontal reference line */
  refLine?: { value: number; label: string };
  /** show every n-th group label (default: as many as fit) */
  labelEvery?: number;
}

/** Renders a vertical grouped bar chart. */
export function barChart(c: BarChart): string {
  const legend: LegendItem[] = c.series.length > 1 ? c.series.map((x) => ({ name: x.name, swatch: `<rect width="10" height="10" fill="${x.color}"/>` })) : [];
  if (c.dots?.length && c.dotLabel) legend.push({ name: c.dotLabel, swatch: `<circle cx="5" cy="5" r="3" fill="#fff" stroke="${COLORS.accent}" stroke-width="1.5"/>` });
  const left = c.yLabel ? 62 : 48;
  const leg = legendBlock(legend, left, 8, c.width - left - 14);
  const m: Margin = { top: legend.length ? 14 + leg.height : 16, right: 14, bottom: c.xLabel ? 42 : 26, left };
  const all = c.series.flatMap((s) => s.values).concat((c.dots ?? []).map((d) => d.value), c.refLine ? [c.refLine.value] : []);
  const finite = all.filter((v) => Number.isFinite(v));
  if (c.groups.length === 0 || finite.length === 0) return noData(c, 'no data');
  const vf = c.valueFormat ?? ((v: number) => fmt(v));
  const tf = c.tickFormat ?? ((v: number) => fmt(v));
  const top = niceMax(Math.max(...finite) * (c.valueLabels ? 1.08 : 1));
  const pw = c.width - m.left - m.right;
  const ph = c.height - m.top - m.bottom;
  const y = linear(0, top, m.top + ph, m.top);
  const band = pw / c.groups.length;
  const inner = band * (c.groups.length > 40 ? 0.9 : 0.78);
  const bw = inner / c.series.length;
  let s = svgOpen(c);
  for (const t of niceTicks(0, top, 5)) {
    s += `<path class="grid" d="M${r(m.left)} ${r(y(t))}H${r(m.left + pw)}"/>`;
    s += text(m.left - 6, y(t) + 4, tf(t), { anchor: 'end' });
  }
  const every = c.labelEvery ?? Math.max(1, Math.ceil((c.groups.length * 34) / pw));
  c.groups.forEach((g, gi) => {
    const x0 = m.left + gi * band + (band - inner) / 2;
    c.series.forEach((ser, si) => {
      const v = ser.values[gi];
      if (!Number.isFinite(v)) return;
      const yy = y(Math.max(0, v));
      const h = Math.max(0.5, m.top + ph - yy);
      const tip = ser.tips?.[gi] ?? `${ser.name}, ${g}: ${vf(v)}`;
      s += `<rect class="mark" x="${r(x0 + si * bw)}" y="${r(m.top + ph - h)}" width="${r(Math.max(0.8, bw - (c.series.length > 1 ? 1 : 0)))}" height="${r(h)}" fill="${ser.colors?.[gi] ?? ser.color}"><title>${esc(tip)}</title></rect>`;
      if (c.valueLabels && vf(v).length * 6.2 <= bw + 2) s += text(x0 + si * bw + bw / 2, m.top + ph - h - 4, vf(v), { cls: 'value' });
    });
    if (gi % every === 0) s += text(m.left + gi * band + band / 2, m.top + ph + 16, g);
  });
  for (const d of c.dots ?? []) {
    if (!Number.isFinite(d.value)) continue;
    const cx = m.left + d.group * band + band / 2;
    s += `<circle class="mark dot" cx="${r(cx)}" cy="${r(y(d.value))}" r="3" fill="#fff" stroke="${COLORS.accent}" stroke-width="1.5"><title>${esc(d.tip)}</title></circle>`;
  }
  if (c.refLine && Number.isFinite(c.refLine.value)) {
    const yy = y(c.refLine.value);
    s += `<path class="ref" d="M${r(m.left)} ${r(yy)}H${r(m.left + pw)}"/>`;
    s += text(m.left + pw - 2, yy - 4, c.refLine.label, { anchor: 'end', cls: 'ref-label' });
  }
  s += `<path class="axis" d="M${r(m.left)} ${r(m.top)}V${r(m.top + ph)}H${r(m.left + pw)}"/>`;
  s += leg.svg;
  s += axisLabels(c, m);
  return `${s}</svg>`;
}

interface LegendItem {
  name: string;
  /** svg drawn in a 10 x 10 box at the item's origin */
  swatch: string;
}

/** Legend items left to right from (x, y), wrapping into rows of at most `maxWidth`; returns the svg and the height used. */
function legendBlock(items: LegendItem[], x: number, y: number, maxWidth: number): { svg: string; height: number } {
  if (items.length === 0) return { svg: '', height: 0 };
  const ROW = 16;
  let s = '';
  let xx = x;
  let yy = y;
  for (const it of items) {
    const w = 24 + it.name.length * 6.6;
    if (xx > x && xx + w - 10 > x + maxWidth) {
      xx = x;
      yy += ROW;
    }
    s += `<g transform="translate(${r(xx)} ${r(yy)})">${it.swatch}${text(15, 9, it.name, { anchor: 'start', cls: 'legend' })}</g>`;
    xx += w;
  }
  return { svg: s, height: yy - y + ROW };
}

/** Horizontal bar chart (one series), e.g. time per stage. */
export interface HBarChart extends ChartBase {
  labels: string[];
  values: number[];
  color: string;
  valueFormat?: (v: number) => string;
}

/** Renders a horizontal bar chart with values printed at the bar ends. */
export function hbarChart(c: HBarChart): string {
  const m: Margin = { top: 10, right: 70, bottom: c.xLabel ? 40 : 24, left: 92 };
  const finite = c.values.filter((v) => Number.isFinite(v));
  if (c.labels.length === 0 || finite.length === 0) return noData(c, 'no data');
  const vf = c.valueFormat ?? ((v: number) => fmt(v));
  const top = niceMax(Math.max(...finite));
  const pw = c.width - m.left - m.right;
  const ph = c.height - m.top - m.bottom;
  const x = linear(0, top, m.left, m.left + pw);
  const band = ph / c.labels.length;
  const bh = band * 0.66;
  let s = svgOpen(c);
  for (const t of niceTicks(0, top, 5)) {
    s += `<path class="grid" d="M${r(x(t))} ${r(m.top)}V${r(m.top + ph)}"/>`;
    s += text(x(t), m.top + ph + 15, fmt(t));
  }
  c.labels.forEach((l, i) => {
    const v = c.values[i];
    const yy = m.top + i * band + (band - bh) / 2;
    s += text(m.left - 8, yy + bh / 2 + 4, l, { anchor: 'end', cls: 'cat' });
    if (!Number.isFinite(v)) return;
    const w = Math.max(0.8, x(Math.max(0, v)) - m.left);
    s += `<rect class="mark" x="${r(m.left)}" y="${r(yy)}" width="${r(w)}" height="${r(bh)}" fill="${c.color}"><title>${esc(`${l}: ${vf(v)}`)}</title></rect>`;
    s += text(m.left + w + 5, yy + bh / 2 + 4, vf(v), { anchor: 'start', cls: 'value' });
  });
  s += `<path class="axis" d="M${r(m.left)} ${r(m.top)}V${r(m.top + ph)}H${r(m.left + pw)}"/>`;
  s += axisLabels(c, m);
  return `${s}</svg>`;
}

interface LogDomain {
  lo: number;
  hi: number;
  floor: number;
}

/** A log10 domain covering the positive values; non-positive ones are drawn at the floor. */
function logDomain(values: number[]): LogDomain | null {
  const pos = values.filter((v) => Number.isFinite(v) && v > 0);
  if (pos.length === 0) return null;
  const max = Math.max(...pos);
  const floor = Math.max(Math.min(...pos), max * 1e-12);
  let lo = Math.log10(floor);
  let hi = Math.log10(max);
  if (hi - lo < 1e-9) {
    lo -= 0.5;
    hi += 0.5;
  }
  const pad = (hi - lo) * 0.04;
  return { lo: lo - pad, hi: hi + pad, floor };
}

function logTicks(d: LogDomain): number[] {
  const a = Math.ceil(d.lo);
  const b = Math.floor(d.hi);
  const out: number[] = [];
  const step = Math.max(1, Math.ceil((b - a + 1) / 6));
  for (let e = a; e <= b; e += step) out.push(e);
  if (out.length === 0) out.push(Math.round((d.lo + d.hi) / 2));
  return out;
}

function logTickLabel(e: number): string {
  if (e >= -2 && e <= 3) return fmt(10 ** e);
  return `1e${e}`;
}

function logY(c: ChartBase, m: Margin, d: LogDomain): { y: Scale; grid: string } {
  const ph = c.height - m.top - m.bottom;
  const ly = linear(d.lo, d.hi, m.top + ph, m.top);
  const y: Scale = (v) => ly(Math.log10(Math.max(v, d.floor)));
  let grid = '';
  for (const e of logTicks(d)) {
    const yy = ly(e);
    grid += `<path class="grid" d="M${r(m.left)} ${r(yy)}H${r(c.width - m.right)}"/>`;
    grid += text(m.left - 5, yy + 4, logTickLabel(e), { anchor: 'end' });
  }
  return { y, grid };
}

/** Indices to draw from a long descending series: all when short, else an even stride keeping `must`. */
export function decimate(n: number, maxPoints: number, must: number[] = []): number[] {
  if (n <= maxPoints) return Array.from({ length: n }, (_, i) => i);
  const set = new Set<number>();
  const stride = (n - 1) / (maxPoints - 1);
  for (let k = 0; k < maxPoints; k++) set.add(Math.round(k * stride));
  for (const i of must) if (i >= 0 && i < n) set.add(i);
  return [...set].sort((a, b) => a - b);
}

/** Log-scale line chart of a descending spectrum with the kept rank marked. */
export interface SpectrumChart extends ChartBase {
  values: number[];
  /** leading values kept (a vertical line after the kept-th value; kept part drawn in colour) */
  keep: number;
  keepLabel: string;
  maxPoints?: number;
}

/** Renders a spectrum (eigenvalues by index, log y) with the kept part highlighted. */
export function spectrumChart(c: SpectrumChart): string {
  const m: Margin = { top: 12, right: 12, bottom: c.xLabel ? 36 : 22, left: c.yLabel ? 56 : 46 };
  const d = logDomain(c.values);
  const n = c.values.length;
  if (!d || n === 0) return noData(c, 'no positive eigenvalues');
  const pw = c.width - m.left - m.right;
  const ph = c.height - m.top - m.bottom;
  const x = linear(1, Math.max(2, n), m.left, m.left + pw);
  const { y, grid } = logY(c, m, d);
  const keep = Math.max(0, Math.min(n, c.keep));
  let s = svgOpen(c) + grid;
  if (keep > 0) s += `<rect class="kept-area" x="${r(m.left)}" y="${r(m.top)}" width="${r(x(Math.min(keep + 0.5, n)) - m.left)}" height="${r(ph)}"/>`;
  for (const t of niceTicks(1, n, 4)) if (Number.isInteger(t) && t >= 1) s += text(x(t), m.top + ph + 14, String(t));
  const idx = decimate(n, c.maxPoints ?? 500, [keep - 1, keep]);
  const pt = (i: number) => `${r(x(i + 1))} ${r(y(c.values[i]))}`;
  const keptIdx = idx.filter((i) => i < keep);
  const droppedIdx = idx.filter((i) => i >= Math.max(0, keep - 1));
  if (droppedIdx.length > 0 && keep < n)
    s += `<path class="mark line dropped" d="M${droppedIdx.map(pt).join('L')}"><title>${esc(`dropped: ${n - keep} directions`)}</title></path>`;
  if (keptIdx.length > 0)
    s += `<path class="mark line kept" d="M${keptIdx.map(pt).join('L')}${keptIdx.length === 1 ? `L${pt(keptIdx[0])}` : ''}"><title>${esc(`kept: ${keep} directions`)}</title></path>`;
  if (keep > 0 && keep < n) {
    const xx = x(keep + 0.5);
    s += `<path class="cut" d="M${r(xx)} ${r(m.top)}V${r(m.top + ph)}"/>`;
    s += text(xx + (xx > m.left + pw * 0.7 ? -4 : 4), m.top + 11, c.keepLabel, { anchor: xx > m.left + pw * 0.7 ? 'end' : 'start', cls: 'cut-label' });
  }
  s += `<path class="axis" d="M${r(m.left)} ${r(m.top)}V${r(m.top + ph)}H${r(m.left + pw)}"/>`;
  s += axisLabels(c, m);
  return `${s}</svg>`;
}

/** Log-scale strip chart: per group, its descending eigenvalues, the leading `keep` filled. */
export interface StripChart extends ChartBase {
  /** per group, eigenvalues (descending) */
  groups: number[][];
  /** leading values kept in every group */
  keep: number;
  /** label of group i on the x axis */
  groupLabel: (i: number) => string;
}

/** Renders the per-group spectra as columns of dots with each group's kept/dropped cut marked. */
export function stripChart(c: StripChart): string {
  const m: Margin = { top: 12, right: 10, bottom: c.xLabel ? 36 : 22, left: c.yLabel ? 56 : 46 };
  const d = logDomain(c.groups.flat());
  const G = c.groups.length;
  if (!d || G === 0) return noData(c, 'no positive eigenvalues');
  const pw = c.width - m.left - m.right;
  const ph = c.height - m.top - m.bottom;
  const band = pw / G;
  const { y, grid } = logY(c, m, d);
  let s = svgOpen(c) + grid;
  const every = Math.max(1, Math.ceil((G * 26) / pw));
  const rad = Math.max(1.3, Math.min(3.2, band * 0.32));
  c.groups.forEach((vals, gi) => {
    const cx = m.left + gi * band + band / 2;
    if (gi % every === 0) s += text(cx, m.top + ph + 14, c.groupLabel(gi));
    const keep = Math.min(c.keep, vals.length);
    const tip = `group ${c.groupLabel(gi)}: ${keep} of ${vals.length} kept; eigenvalues ${vals.map((v) => fmt(v)).join(', ')}`;
    let g = `<g><title>${esc(tip)}</title>`;
    for (let k = keep; k < vals.length; k++) g += `<circle class="mark dropped" cx="${r(cx)}" cy="${r(y(vals[k]))}" r="${r(rad * 0.8)}"/>`;
    if (keep > 0 && keep < vals.length) {
      const yy = y(Math.sqrt(Math.max(vals[keep - 1], d.floor) * Math.max(vals[keep], d.floor)));
      const hw = Math.max(2, band * 0.42);
      g += `<path class="cut" d="M${r(cx - hw)} ${r(yy)}H${r(cx + hw)}"/>`;
    }
    for (let k = 0; k < keep; k++) g += `<circle class="mark kept" cx="${r(cx)}" cy="${r(y(vals[k]))}" r="${r(rad)}"/>`;
    s += `${g}</g>`;
  });
  s += `<path class="axis" d="M${r(m.left)} ${r(m.top)}V${r(m.top + ph)}H${r(m.left + pw)}"/>`;
  s += axisLabels(c, m);
  return `${s}</svg>`;
}

/** One point of a {@link LineChart} series. */
export interface LinePoint {
  x: number;
  y: number;
  /** hover text (default "series: x, y") */
  tip?: string;
  /** printed next to the point when the chart has pointLabels */
  label?: string;
}

/** One series of a {@link LineChart}: points joined in the given order. */
export interface LineSeries {
  name: string;
  color: string;
  points: LinePoint[];
  dashed?: boolean;
}

/** Multi-series line chart with linear axes (points marked, one legend entry per series). */
export interface LineChart extends ChartBase {
  series: LineSeries[];
  /** y axis from 0 (default) or fitted to the data */
  yFromZero?: boolean;
  /** x ticks at integers only (e.g. layer indices) */
  xInteger?: boolean;
  xTickFormat?: (v: number) => string;
  yTickFormat?: (v: number) => string;
  /** dashed horizontal reference line */
  refLine?: { value: number; label: string };
  /** print each point's label beside it */
  pointLabels?: boolean;
}

/** Renders a multi-series line chart; a series of one point is drawn as its marker only. */
export function lineChart(c: LineChart): string {
  const legend: LegendItem[] = c.series.map((x) => ({
    name: x.name,
    swatch: `<path d="M0 5H10" stroke="${x.color}" stroke-width="2"${x.dashed ? ' stroke-dasharray="3 2"' : ''}/><circle cx="5" cy="5" r="2.5" fill="${x.color}"/>`,
  }));
  const left = c.yLabel ? 62 : 48;
  const right = c.pointLabels ? 40 : 16;
  const leg = legendBlock(legend, left, 8, c.width - left - right);
  const m: Margin = { top: 14 + leg.height, right, bottom: c.xLabel ? 42 : 26, left };
  const pts = c.series.flatMap((x) => x.points).filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y));
  if (pts.length === 0) return noData(c, 'no data');
  const xs = pts.map((p) => p.x);
  const ys = pts.map((p) => p.y).concat(c.refLine && Number.isFinite(c.refLine.value) ? [c.refLine.value] : []);
  let x0 = Math.min(...xs);
  let x1 = Math.max(...xs);
  const xPad = x1 > x0 ? (x1 - x0) * 0.04 : c.xInteger ? 1 : Math.abs(x0) * 0.1 || 1;
  x0 -= xPad;
  x1 += xPad;
  let y0: number;
  let y1: number;
  const yMin = Math.min(...ys);
  const yMax = Math.max(...ys);
  if (c.yFromZero ?? true) {
    y0 = Math.min(0, yMin);
    y1 = niceMax(yMax);
  } else {
    const span = yMax > yMin ? yMax - yMin : Math.abs(yMax) * 0.1 || 1;
    y0 = yMin - span * 0.1;
    y1 = yMax + span * 0.1;
  }
  const pw = c.width - m.left - m.right;
  const ph = c.height - m.top - m.bottom;
  const x = linear(x0, x1, m.left, m.left + pw);
  const y = linear(y0, y1, m.top + ph, m.top);
  const xf = c.xTickFormat ?? ((v: number) => fmt(v));
  const yf = c.yTickFormat ?? ((v: number) => fmt(v));
  let s = svgOpen(c);
  for (const t of niceTicks(y0, y1, 5)) {
    s += `<path class="grid" d="M${r(m.left)} ${r(y(t))}H${r(m.left + pw)}"/>`;
    s += text(m.left - 6, y(t) + 4, yf(t), { anchor: 'end' });
  }
  let xt = niceTicks(x0, x1, Math.max(2, Math.min(10, Math.floor(pw / 60))));
  if (c.xInteger) xt = xt.filter((t) => Number.isInteger(t));
  for (const t of xt) s += text(x(t), m.top + ph + 16, xf(t));
  if (c.refLine && Number.isFinite(c.refLine.value)) {
    const yy = y(c.refLine.value);
    s += `<path class="ref" d="M${r(m.left)} ${r(yy)}H${r(m.left + pw)}"/>`;
    s += text(m.left + pw - 2, yy - 4, c.refLine.label, { anchor: 'end', cls: 'ref-label' });
  }
  for (const ser of c.series) {
    const p = ser.points.filter((q) => Number.isFinite(q.x) && Number.isFinite(q.y));
    if (p.length === 0) continue;
    let g = `<g class="series" data-series="${esc(ser.name)}">`;
    if (p.length > 1)
      g += `<path class="mark line" d="M${p.map((q) => `${r(x(q.x))} ${r(y(q.y))}`).join('L')}" stroke="${ser.color}"${ser.dashed ? ' stroke-dasharray="5 3"' : ''}><title>${esc(ser.name)}</title></path>`;
    for (const q of p) {
      const tip = q.tip ?? `${ser.name}: ${fmt(q.x)}, ${fmt(q.y, 4)}`;
      g += `<circle class="mark point" cx="${r(x(q.x))}" cy="${r(y(q.y))}" r="3" fill="${ser.color}"><title>${esc(tip)}</title></circle>`;
      if (c.pointLabels && q.label) g += text(x(q.x) + 5, y(q.y) - 6, q.label, { anchor: 'start', cls: 'value' });
    }
    s += `${g}</g>`;
  }
  s += `<path class="axis" d="M${r(m.left)} ${r(m.top)}V${r(m.top + ph)}H${r(m.left + pw)}"/>`;
  s += leg.svg;
  s += axisLabels(c, m);
  return `${s}</svg>`;
}
