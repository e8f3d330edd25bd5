/**
 * Pieces shared by the report pages (a conversion's report.html and a sweep's): the inline
 * stylesheet, the document shell, cards, tables, number formats for sizes and times, and
 * the atomic write. No scripts and no external resources anywhere.
 */
import { rename, writeFile } from 'node:fs/promises';
import { esc, fmt } from './escape.js';
import { COLORS } from './svg.js';

/** The pages' stylesheet (inline in every page). */
export const CSS = `
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
.bad{color:#b91c1c}
.warn{color:#b45309}
table.samples td,table.samples th{text-align:left;vertical-align:top}
td.sample{text-align:left;white-space:pre-wrap;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px;max-width:360px;vertical-align:top;overflow-wrap:anywhere}
.rules{margin:6px 0 0 18px;padding:0;font-size:13px}
p.verdict{font-size:15px;margin:0 0 10px}
a{color:var(--accent);text-decoration:none}
a:hover{text-decoration:underline}
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
.chart circle.point{stroke:#fff;stroke-width:1}
.chart .line.kept{stroke:${COLORS.after}}
.chart .line.dropped{stroke:${COLORS.before}}
.chart circle.kept{fill:${COLORS.after}}
.chart circle.dropped{fill:#fff;stroke:${COLORS.before};stroke-width:1}
@media print{body{background:#fff}section,.card{break-inside:avoid}}
`;

/** GiB with about 3 significant digits (whole numbers from 100). */
export function gib(x: number): string {
  if (!Number.isFinite(x)) return '\u2014';
  if (x === 0) return '0';
  if (x >= 100) return x.toFixed(0);
  return fmt(x, 3);
}

/** A byte count in B/KiB/MiB/GiB/TiB. */
export function bytes(n: number): string {
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

/** Seconds, as minutes and seconds from 2 minutes. */
export function seconds(s: number): string {
  if (!Number.isFinite(s)) return '\u2014';
  if (s >= 120) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${s >= 10 ? s.toFixed(1) : s.toFixed(2)} s`;
}

/** A summary card; `v` and `sub` are HTML (escape their text), `k` is text. */
export function card(k: string, v: string, sub: string): string {
  return `<div class="card"><div class="k">${esc(k)}</div><div class="v">${v}</div><div class="s">${sub}</div></div>`;
}

/** A table in a horizontal scroller; cells are text unless `rawCells` (then whole `<td>` HTML). */
export function table(head: string[], rows: string[][], rawCells = false, cls = ''): string {
  return (
    `<div class="scroll"><table${cls ? ` class="${cls}"` : ''}><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>` +
    rows.map((row) => `<tr>${row.map((c) => (rawCells ? c : `<td>${esc(c)}</td>`)).join('')}</tr>`).join('') +
    '</tbody></table></div>'
  );
}


/** Arithmetic mean (NaN for none). */
export function mean(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
}

/** A setting's value as text (numbers to 6 significant digits, objects as JSON). */
export function valueText(v: unknown): string {
  if (v === null) return 'null';
  if (typeof v === 'number') return fmt(v, 6);
  if (typeof v === 'string' || typeof v === 'boolean') return String(v);
  return JSON.stringify(v);
}

/** The whole page: doctype, head with the inline stylesheet, `body` inside <main>. */
export function htmlDocument(title: string, body: string): string {
  return (
    '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">' +
    '<meta name="viewport" content="width=device-width, initial-scale=1">' +
    `<title>${esc(title)}</title><style>${CSS}</style></head><body><main>` +
    body +
    '</main></body></html>\n'
  );
}

/** Writes `text` to `path` through a temporary file renamed into place; returns its byte length. */
export async function writeFileAtomic(path: string, text: string): Promise<number> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, text);
  await rename(tmp, path);
  return Buffer.byteLength(text);
}
