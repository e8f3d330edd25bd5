/**
 * Does the sampled-query serving-context criterion (`--context-queries`, default 512 query
 * positions per context window) judge the candidates as the full one (every position of
 * every context window) does? Compares two conversions of one model on the same calibration,
 * one per criterion, from their conversion-report.json: per layer, the serving-context errors
 * of the candidates both re-judged (relative difference, Kendall's tau, same best), the
 * choices, the refits kept, which written shards differ (none: the same model, so the same
 * ppl), and optionally the eval-ppl results of both outputs.
 *
 *   npx tsx bench/fidelity/context-queries.ts --out bench/results/context-queries-cpu.json \
 *     name=<sampled-dir>,<full-dir>[,<sampled-ppl.json>,<full-ppl.json>] ...
 *
 * The ppl files are `gqa2mla eval-ppl --json` outputs. The commands that made the
 * directories are recorded by the caller (bench/results/context-queries-cpu.json "commands").
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ConversionReport, LayerReport } from '../../src/report-types.js';
import { kendallTau } from './rank.js';

type Cand = NonNullable<LayerReport['candidates']>[number];

const key = (c: Cand) => `ff${c.freqfold}/b${c.balanceKv}/${c.ropeSelection}/${c.kvMetric}`;
const choice = (l: LayerReport) => ({
  freqfold: l.freqfold,
  balanceKv: l.balanceKv,
  ropeSelection: l.ropeSelection,
  kvMetric: l.kvMetric,
  valueRefitKept: l.valueRefit?.kept ?? null,
  outputRefitKept: l.outputRefit?.kept ?? null,
});

/** Per layer: the candidates both criteria re-judged at the serving context and how the two scores compare. */
function compareLayer(s: LayerReport, f: LayerReport) {
  const full = new Map((f.candidates ?? []).filter((c) => c.contextRelError !== undefined).map((c) => [key(c), c.contextRelError!]));
  const common = (s.candidates ?? []).filter((c) => c.contextRelError !== undefined && full.has(key(c))).map((c) => ({ candidate: key(c), sampled: c.contextRelError!, full: full.get(key(c))! }));
  const a = common.map((c) => c.sampled);
  const b = common.map((c) => c.full);
  const best = (xs: number[]) => xs.indexOf(Math.min(...xs));
  return {
    layer: s.layer,
    common,
    maxRelDiff: Math.max(0, ...common.map((c) => Math.abs(c.sampled / c.full - 1))),
    kendallTau: common.length > 1 ? kendallTau(a, b) : null,
    sameBest: common.length > 0 ? best(a) === best(b) : null,
    choiceSampled: choice(s),
    choiceFull: choice(f),
    sameChoice: JSON.stringify(choice(s)) === JSON.stringify(choice(f)),
    attnRelError: { sampled: s.attnRelError, full: f.attnRelError },
  };
}

function readPpl(file: string | undefined) {
  if (!file) return null;
  const j = JSON.parse(readFileSync(file, 'utf8')) as { contexts?: { seq: number; windows: number; ppl: number }[]; ppl?: number; seq?: number };
  return (j.contexts ?? [{ seq: j.seq!, windows: NaN, ppl: j.ppl! }]).map((c) => ({ seq: c.seq, windows: c.windows, ppl: c.ppl }));
}

/** The safetensors shards of `dir` whose bytes differ from `other`'s. */
function differingShards(dir: string, other: string): string[] {
  const hash = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');
  return readdirSync(dir)
    .filter((f) => f.endsWith('.safetensors'))
    .sort()
    .filter((f) => hash(join(dir, f)) !== hash(join(other, f)));
}

function comparePair(spec: string) {
  const [name, dirs] = spec.split('=');
  const [sDir, fDir, sPpl, fPpl] = dirs.split(',');
  const rep = (d: string) => JSON.parse(readFileSync(join(d, 'conversion-report.json'), 'utf8')) as ConversionReport;
  const s = rep(sDir);
  const f = rep(fDir);
  const layers = s.layers.map((l, i) => compareLayer(l, f.layers[i]));
  return {
    name,
    context: { sampled: s.settings.context, full: f.settings.context },
    budget: { qkRopeDim: s.settings.qkRopeDim, kvLoraRank: s.settings.kvLoraRank },
    layers,
    summary: {
      layersSameChoice: layers.filter((l) => l.sameChoice).length,
      layersSameBest: layers.filter((l) => l.sameBest).length,
      layers: layers.length,
      maxRelDiff: Math.max(...layers.map((l) => l.maxRelDiff)),
      minKendallTau: Math.min(...layers.map((l) => l.kendallTau ?? 1)),
      meanAttnRelError: { sampled: s.meanAttnRelError, full: f.meanAttnRelError },
      convertWallSeconds: { sampled: s.times.total, full: f.times.total },
      differingShards: differingShards(sDir, fDir),
      ppl: { sampled: readPpl(sPpl), full: readPpl(fPpl) },
    },
  };
}

const args = process.argv.slice(2);
const oi = args.indexOf('--out');
const out = oi >= 0 ? args[oi + 1] : null;
const pairs = args.filter((a, i) => a.includes('=') && (oi < 0 || i !== oi + 1)).map(comparePair);
const result = { pairs };
if (out) {
  const prev = (() => {
    try {
      return JSON.parse(readFileSync(out, 'utf8')) as Record<string, unknown>;
    } catch {
      return {};
    }
  })();
  writeFileSync(out, `${JSON.stringify({ ...prev, ...result }, null, 1)}\n`);
}
for (const p of pairs) console.log(p.name, JSON.stringify(p.summary));
