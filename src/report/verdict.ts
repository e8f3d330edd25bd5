/**
 * report.html's deciding sections: the verdict (perplexity change at each measured context
 * length and the NLL by position, against rules of thumb stated on the page), greedy
 * samples source beside converted, and stock-engine compatibility. Each renders whatever
 * of its data conversion-report.json holds and says plainly when it is absent.
 *
 * The fields it reads (all optional, written by other steps):
 * - `ppl` {before, after, protocol}: convert --eval-text;
 * - `eval.contexts` [{seq, before, after, windows?}] and `eval.nllByPosition`
 *   [{start, end, before, after}] (mean NLL of the tokens at positions start..end-1):
 *   multi-length evaluation;
 * - `samples` (src/generate-samples.ts): greedy continuations of calibration prompts;
 * - `engines` [{engine, loads, exact, reasons, fastBackends}]: `gqa2mla check`.
 */
import type { ConversionReport } from '../report-types.js';
import type { ConversionEval } from '../eval/conversion-eval.js';
import { esc, fixed, fmt } from './escape.js';
import { table } from './page.js';
import { COLORS, lineChart } from './svg.js';

/** Perplexity at one context length (source before, converted after). */
export interface ContextPpl {
  seq: number;
  before?: number;
  after?: number;
  windows?: number;
}

/** Mean NLL of the tokens at positions start..end-1 of the evaluation windows. */
export interface NllBucket {
  start: number;
  end: number;
  before?: number;
  after?: number;
}

/** One engine's verdict from `gqa2mla check`. */
export interface EngineCheck {
  engine: string;
  loads: boolean;
  exact: boolean;
  reasons: string[];
  fastBackends: string[];
}

/** One sample: a prompt and both greedy continuations. */
export interface ReportSample {
  prompt: string;
  source: { text: string; tokens: number[] };
  converted: { text: string; tokens: number[] };
  firstDivergence: number | null;
}

/** The optional report fields these sections read. */
export interface ReportExtras {
  /** written by `convert --eval-text` (src/eval/conversion-eval.ts) */
  eval?: ConversionEval;
  samples?: { from?: string; promptTokens?: number; maxNewTokens?: number; items: ReportSample[]; skipped?: string };
  engines?: EngineCheck[];
}

/** The rules of thumb the verdict applies to a perplexity change (fraction: 0.05 = +5%). */
export const PPL_RULES = [
  { upTo: 0.05, cls: 'good', verdict: 'close to the original', advice: 'fine to serve where the KV saving helps' },
  { upTo: 0.15, cls: 'warn', verdict: 'noticeably worse', advice: 'check it on your own task first; a larger kv_lora_rank narrows the gap' },
  { upTo: 0.4, cls: 'bad', verdict: 'clearly worse', advice: 'serve only where memory matters more than quality; raise kv_lora_rank or fine-tune' },
  { upTo: Infinity, cls: 'bad', verdict: 'much worse', advice: 'do not serve as is: raise kv_lora_rank / qk_rope_dim, or fine-tune after converting' },
] as const;

/** The rule a perplexity change falls under. */
export function pplRule(change: number): (typeof PPL_RULES)[number] {
  return PPL_RULES.find((r) => change <= r.upTo) ?? PPL_RULES[PPL_RULES.length - 1];
}

function change(before?: number, after?: number): number | null {
  return before !== undefined && after !== undefined && before > 0 ? (after - before) / before : null;
}

function pctText(x: number): string {
  return `${x >= 0 ? '+' : ''}${fixed(100 * x, 1)}%`;
}

/** Context lengths with ppl: eval.contexts, else the single-length `ppl` (protocol seq unknown: null). */
function contextRows(r: ConversionReport & ReportExtras): Array<Omit<ContextPpl, 'seq'> & { seq: number | null }> {
  const cs = (r.eval?.contexts ?? []).filter((c) => Number.isFinite(c.seq));
  if (cs.length > 0) return cs.map((c) => ({ seq: c.seq, before: c.source.ppl, after: c.converted.ppl, windows: c.windows })).sort((a, b) => a.seq - b.seq);
  if (r.ppl && (r.ppl.before !== undefined || r.ppl.after !== undefined)) {
    const m = /windows (?:of|x) (\d+) tokens/.exec(r.ppl.protocol ?? '');
    return [{ seq: m ? Number(m[1]) : null, before: r.ppl.before, after: r.ppl.after }];
  }
  return [];
}

/** NLL by position of the longest measured context, source (before) beside converted (after). */
function buckets(r: ReportExtras): NllBucket[] {
  const cs = r.eval?.contexts ?? [];
  if (cs.length === 0) return [];
  const c = cs.reduce((a, b) => (b.seq > a.seq ? b : a));
  return c.source.buckets.map((b, i) => ({ start: b.from, end: b.to + 1, before: b.meanNll, after: c.converted.buckets[i]?.meanNll }));
}

function rulesList(): string {
  return (
    '<ul class="rules">' +
    PPL_RULES.map((x, i) => {
      const lo = i === 0 ? 'up to' : `${pctText(PPL_RULES[i - 1].upTo)} to`;
      const hi = Number.isFinite(x.upTo) ? pctText(x.upTo) : '';
      const range = Number.isFinite(x.upTo) ? `${lo} ${hi}` : `above ${pctText(PPL_RULES[i - 1].upTo)}`;
      return `<li><span class="${x.cls}">${esc(range)}</span>: ${esc(x.verdict)} &mdash; ${esc(x.advice)}.</li>`;
    }).join('') +
    '<li>NLL by position: a gap that grows along the window means longer contexts lose more than the overall perplexity shows.</li>' +
    '</ul>'
  );
}

function nllChart(bs: NllBucket[]): string {
  const mid = (b: NllBucket) => (b.start + b.end - 1) / 2;
  const series = (name: string, color: string, pick: (b: NllBucket) => number | undefined) => ({
    name,
    color,
    points: bs.filter((b) => Number.isFinite(pick(b))).map((b) => ({ x: mid(b), y: pick(b)!, tip: `${name}, positions ${b.start}-${b.end - 1}: NLL ${fmt(pick(b)!, 4)}` })),
  });
  return lineChart({
    chart: 'nll-by-position',
    title: 'Mean NLL by token position in the evaluation window, before and after conversion',
    width: 640,
    height: 280,
    series: [series('before (source)', COLORS.before, (b) => b.before), series('after (MLA)', COLORS.after, (b) => b.after)],
    yFromZero: false,
    xLabel: 'token position in the window',
    yLabel: 'mean NLL (nats)',
  });
}

/** Growth of the NLL gap from the first to the last position bucket (null without both). */
function gapGrowth(bs: NllBucket[]): { first: number; last: number } | null {
  const gaps = bs.filter((b) => b.before !== undefined && b.after !== undefined).map((b) => b.after! - b.before!);
  return gaps.length >= 2 ? { first: gaps[0], last: gaps[gaps.length - 1] } : null;
}

/** The verdict section. */
export function verdictSection(r: ConversionReport & ReportExtras): string {
  const rows = contextRows(r);
  const bs = buckets(r);
  let s = '<section data-section="verdict"><h2>Verdict</h2>';
  if (rows.length === 0) {
    s +=
      '<p class="note" data-absent="ppl">No perplexity was measured for this conversion, so there is no verdict. ' +
      'Convert with <code>--eval-text &lt;file&gt;</code>, or run <code>gqa2mla eval-ppl</code> on the source and on this directory ' +
      'with the same text, then <code>gqa2mla report</code>.</p>';
    return `${s}<p class="note">Rules of thumb used when it is measured:</p>${rulesList()}</section>`;
  }
  const worst = Math.max(...rows.map((x) => change(x.before, x.after) ?? -Infinity));
  if (Number.isFinite(worst)) {
    const rule = pplRule(worst);
    s += `<p class="verdict"><strong class="${rule.cls}">${esc(rule.verdict)}</strong>: perplexity ${esc(pctText(worst))} at worst ` +
      `over ${rows.length} context length${rows.length > 1 ? 's' : ''} &mdash; ${esc(rule.advice)}.</p>`;
  }
  const tbl = table(
    ['context (tokens)', 'ppl before', 'ppl after', 'change', 'rule of thumb'],
    rows.map((x) => {
      const c = change(x.before, x.after);
      return [x.seq === null ? 'as measured' : String(x.seq), fixed(x.before, 3), fixed(x.after, 3), c === null ? '\u2014' : pctText(c), c === null ? '\u2014' : pplRule(c).verdict];
    }),
  );
  const single = rows.length === 1 ? '<p class="note" data-absent="contexts">Measured at one context length only; longer contexts may differ.</p>' : '';
  let fig = '<p class="note" data-absent="nll-by-position">No NLL-by-position data in this report (written by the multi-length evaluation).</p>';
  if (bs.length > 0) {
    const g = gapGrowth(bs);
    const grows = g !== null && g.last > 1.5 * Math.max(g.first, 1e-9) && g.last > 0.02;
    fig =
      `<figure>${nllChart(bs)}<figcaption>Mean NLL per position bucket` +
      (g ? `; the gap (after &minus; before) goes from ${esc(fmt(g.first, 3))} in the first bucket to ${esc(fmt(g.last, 3))} in the last${grows ? ' <span class="bad">(grows with position)</span>' : ''}` : '') +
      '.</figcaption></figure>';
  }
  s += `<div class="row">${bs.length > 0 ? fig : ''}<div class="side">${tbl}${single}${bs.length > 0 ? '' : fig}</div></div>`;
  return `${s}<p class="note">Rules of thumb:</p>${rulesList()}</section>`;
}

/** Greedy samples, source beside converted. */
export function samplesSection(r: ReportExtras): string {
  const sm = r.samples;
  let s = '<section data-section="samples"><h2>Samples</h2>';
  if (sm?.skipped) return `${s}<p class="note" data-absent="samples">Samples were skipped: ${esc(sm.skipped)}. <code>gqa2mla generate</code> on a machine with more memory shows them.</p></section>`;
  if (!sm || !Array.isArray(sm.items) || sm.items.length === 0)
    return `${s}<p class="note" data-absent="samples">No samples in this report. <code>gqa2mla convert --eval-text</code> adds greedy continuations of three calibration-text prompts by both models; <code>gqa2mla generate &lt;dir&gt; --prompt TEXT --compare &lt;source&gt;</code> shows any prompt.</p></section>`;
  s += `<p class="note">Greedy continuations (${esc(String(sm.maxNewTokens ?? '?'))} tokens) of ${sm.items.length} prompt${sm.items.length === 1 ? '' : 's'} of ${esc(String(sm.promptTokens ?? '?'))} tokens cut from ${esc(sm.from ?? 'the calibration text')}; the same token ids go to both models.</p>`;
  const cell = (t: string) => `<td class="sample">${esc(t)}</td>`;
  const agree = (x: ReportSample) => (x.firstDivergence === null ? 'identical' : `same for ${x.firstDivergence} of ${Math.max(x.source.tokens.length, x.converted.tokens.length)} tokens`);
  s += table(['prompt', 'source', 'converted (MLA)', 'agreement'], sm.items.map((x) => [cell(x.prompt), cell(x.source.text), cell(x.converted.text), `<td>${esc(agree(x))}</td>`]), true, 'samples');
  return `${s}</section>`;
}

/** Stock-engine compatibility from `gqa2mla check`. */
export function enginesSection(r: ReportExtras): string {
  const es = r.engines;
  let s = '<section data-section="engines"><h2>Engine compatibility</h2>';
  if (!Array.isArray(es) || es.length === 0)
    return `${s}<p class="note" data-absent="engines">Not checked. <code>gqa2mla check &lt;dir&gt;</code> records which serving engines load this checkpoint, whether they compute it exactly, and which fast attention backends apply.</p></section>`;
  const yn = (b: boolean) => `<td class="${b ? 'good' : 'bad'}">${b ? 'yes' : 'no'}</td>`;
  s += table(
    ['engine', 'loads', 'exact', 'fast backends', 'reasons'],
    es.map((e) => [`<td>${esc(e.engine)}</td>`, yn(e.loads), yn(e.exact), `<td>${esc((e.fastBackends ?? []).join(', ') || '\u2014')}</td>`, `<td class="sample">${esc((e.reasons ?? []).join('; ') || '\u2014')}</td>`]),
    true,
  );
  return `${s}</section>`;
}
