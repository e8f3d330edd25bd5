/**
 * `gqa2mla report <converted-dir> [--json]`: (re)writes report.html from conversion-report.json.
 */
import type { Command } from 'commander';
import { CHART_NAMES, writeReportHtml } from '../report/html.js';

/** Registers the command. */
export function register(program: Command): void {
  program
    .command('report')
    .description('write report.html (self-contained charts) from the conversion-report.json of a converted directory')
    .argument('<converted-dir>', 'output directory of `gqa2mla convert`')
    .option('--json', 'print {reportHtml, layers, charts, ...} as JSON')
    .addHelpText(
      'after',
      '\nThe page has no scripts and loads nothing from the network: open it in any browser.\n\n' +
        'Examples:\n' +
        '  gqa2mla report /tmp/tiny-mla\n' +
        '  gqa2mla report ./Llama-3.1-8B-MLA --json',
    )
    .action(async (dir: string, o: { json?: boolean }) => {
      const w = await writeReportHtml(dir);
      const r = w.report;
      if (o.json) {
        const charts = CHART_NAMES.filter((c) => c !== 'ppl' || (r.ppl && (r.ppl.before !== undefined || r.ppl.after !== undefined)));
        process.stdout.write(
          `${JSON.stringify({
            reportHtml: w.path,
            source: w.source,
            layers: r.layers.length,
            bytes: w.bytes,
            charts,
            kvValuesPerToken: r.kvValuesPerToken,
            meanAttnRelError: r.meanAttnRelError ?? null,
            ppl: r.ppl ?? null,
          })}\n`,
        );
      } else {
        process.stdout.write(`wrote ${w.path} (${r.layers.length} layers, ${(w.bytes / 1024).toFixed(1)} KiB)\n`);
      }
    });
}
