/**
 * `gqa2mla report <dir> [--json]`: (re)writes report.html, from sweep.json when <dir> is a
 * budget sweep's output directory, else from the conversion-report.json of a converted
 * directory.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { CHART_NAMES, chartsIn, writeReportHtml } from '../report/html.js';
import type { ReportExtras } from '../report/verdict.js';
import { SWEEP_JSON } from '../report/read.js';
import { budgetDir, budgetName, SWEEP_CHART_NAMES, sweepLayers, writeSweepReportHtml } from '../report/sweep-html.js';

async function conversionPage(dir: string, json: boolean): Promise<void> {
  const w = await writeReportHtml(dir);
  const r = w.report;
  if (json) {
    const present = chartsIn(await readFile(w.path, 'utf8'));
    const charts = CHART_NAMES.filter((c) => present.includes(c));
    const x = r as typeof r & ReportExtras;
    const sections = { verdict: Boolean(x.ppl || x.eval?.contexts?.length), samples: Boolean(x.samples?.items?.length), engines: Boolean(x.engines?.length) };
    process.stdout.write(
      `${JSON.stringify({
        kind: 'conversion',
        reportHtml: w.path,
        source: w.source,
        layers: r.layers.length,
        bytes: w.bytes,
        charts,
        sections,
        kvValuesPerToken: r.kvValuesPerToken,
        meanAttnRelError: r.meanAttnRelError ?? null,
        ppl: r.ppl ?? null,
      })}\n`,
    );
  } else {
    process.stdout.write(`wrote ${w.path} (${r.layers.length} layers, ${(w.bytes / 1024).toFixed(1)} KiB)\n`);
  }
}

async function sweepPage(dir: string, json: boolean): Promise<void> {
  const w = await writeSweepReportHtml(dir);
  const s = w.sweep;
  const layers = sweepLayers(s);
  if (json) {
    process.stdout.write(
      `${JSON.stringify({
        kind: 'sweep',
        reportHtml: w.path,
        source: w.source,
        layers,
        bytes: w.bytes,
        charts: [...SWEEP_CHART_NAMES],
        kvValuesPerTokenPerLayerBefore: s.kvValuesPerTokenPerLayerBefore,
        pplBefore: s.pplBefore ?? null,
        budgets: s.budgets.map((b) => ({
          name: budgetName(b),
          reportHtml: join(dir, budgetDir(b), 'report.html'),
          kvLoraRank: b.kvLoraRank,
          qkRopeDim: b.qkRopeDim,
          kvValuesPerTokenPerLayer: b.kvValuesPerTokenPerLayer,
          compression: b.compression,
          meanAttnRelError: b.meanAttnRelError,
          ppl: b.ppl ?? null,
        })),
      })}\n`,
    );
  } else {
    process.stdout.write(`wrote ${w.path} (sweep of ${s.budgets.length} budgets, ${layers} layers, ${(w.bytes / 1024).toFixed(1)} KiB)\n`);
  }
}

/** Registers the command. */
export function register(program: Command): void {
  program
    .command('report')
    .description('write report.html (self-contained charts) from conversion-report.json, or from sweep.json for a budget sweep')
    .argument('<converted-dir>', 'output directory of `gqa2mla convert` (one conversion, or a sweep holding sweep.json)')
    .option('--json', 'print {kind, reportHtml, layers, charts, ...} as JSON')
    .addHelpText(
      'after',
      '\nThe page has no scripts and loads nothing from the network: open it in any browser.\n' +
        "For a sweep's directory the page compares all budgets and links to each budget's own\n" +
        'report.html (regenerate one of those with `gqa2mla report <sweep-dir>/r<rank>-p<rope>`).\n\n' +
        'Examples:\n' +
        '  gqa2mla report /tmp/tiny-mla\n' +
        '  gqa2mla report /tmp/tiny-sweep            # a sweep: writes /tmp/tiny-sweep/report.html\n' +
        '  gqa2mla report ./Llama-3.1-8B-MLA --json',
    )
    .action(async (dir: string, o: { json?: boolean }) => {
      if (existsSync(join(dir, SWEEP_JSON))) await sweepPage(dir, Boolean(o.json));
      else await conversionPage(dir, Boolean(o.json));
    });
}
