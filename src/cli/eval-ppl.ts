/**
 * `gqa2mla eval-ppl <model-dir> --text <file> [--seq 512] [--windows 40] [--batch N] [--json]`
 */
import type { Command } from 'commander';
import { usageError } from '../errors.js';
import { evalPpl } from '../eval/ppl.js';
import { createProgress } from './progress.js';

function int(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n)) throw usageError('ERR_BAD_OPTION', `${name} must be an integer (got '${v}')`);
    return n;
  };
}

/** Registers the command. */
export function register(program: Command): void {
  program
    .command('eval-ppl')
    .description('perplexity of a checkpoint on a text (CPU, layer-streamed, float32)')
    .argument('<model-dir>', 'checkpoint directory (llama, qwen2, mistral or deepseek_v3)')
    .requiredOption('--text <file>', 'evaluation text (UTF-8)')
    .option('--seq <n>', 'tokens per window', int('--seq'), 512)
    .option('--windows <n>', 'windows to score (the first ones of the text)', int('--windows'), 40)
    .option('--batch <n>', 'windows per layer-streamed pass (default: all, within 512 MiB of hidden states)', int('--batch'))
    .option('--json', 'print {"ppl","windows","seq","tokensScored","seconds"} on stdout')
    .addHelpText(
      'after',
      '\nProtocol: tokenize the whole text without special tokens; cut non-overlapping windows of\n' +
        '--seq tokens from offset 0; take the first --windows; score tokens 1..seq-1 of each window from\n' +
        'their prefixes; ppl = exp(mean NLL over all scored tokens).\n\n' +
        'Examples:\n' +
        '  gqa2mla eval-ppl test/fixtures/tiny-llama-gqa --text test/fixtures/pydocs-eval.txt\n' +
        '  gqa2mla eval-ppl ./model-mla --text eval.txt --seq 1024 --windows 20 --json',
    )
    .action(async (modelDir: string, o: { text: string; seq: number; windows: number; batch?: number; json?: boolean }) => {
      const bar = createProgress(!o.json);
      const controller = new AbortController();
      const onSig = () => controller.abort();
      process.once('SIGINT', onSig);
      let started = false;
      try {
        const r = await evalPpl({
          modelDir,
          textFile: o.text,
          seq: o.seq,
          windows: o.windows,
          batch: o.batch,
          signal: controller.signal,
          onProgress: (p) => {
            if (p.total === 0) return;
            if (!started) {
              bar.start(p.total, 'eval-ppl');
              started = true;
            }
            bar.update(p.done, p.stage === 'layer' ? `layer ${p.layer}` : p.stage);
          },
        });
        bar.stop();
        if (o.json) {
          process.stdout.write(
            `${JSON.stringify({ ppl: r.ppl, windows: r.windows, seq: r.seq, tokensScored: r.tokensScored, seconds: r.seconds })}\n`,
          );
        } else {
          const short = r.windows < r.windowsRequested ? ` (text holds only ${r.windows} of the ${r.windowsRequested} requested)` : '';
          process.stdout.write(
            `ppl ${r.ppl.toFixed(4)}  (${r.windows} windows x ${r.seq} tokens${short}, ${r.tokensScored} tokens scored, ` +
              `mean NLL ${r.meanNll.toFixed(5)}, ${r.seconds.toFixed(2)} s)\n`,
          );
        }
      } finally {
        bar.stop();
        process.off('SIGINT', onSig);
      }
    });
}
