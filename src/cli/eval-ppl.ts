/**
 * `gqa2mla eval-ppl <model-dir> --text <file> [--seq 512[,2048,...]] [--windows 40] [--batch N] [--json]`
 *
 * `--json` prints one object, version 2: the first length's `ppl`, `windows`, `seq`,
 * `tokensScored` and the whole call's `seconds` at the top level (the version-1 keys, same
 * meaning), plus `version: 2`, `textTokens`, `warnings` (strings) and `contexts`: one
 * {@link JsonContext} per length in the order given.
 */
import type { Command } from 'commander';
import { usageError } from '../errors.js';
import { evalPpl, type PplContextResult, type PplResult } from '../eval/ppl.js';
import { createProgress } from './progress.js';

function int(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n)) throw usageError('ERR_BAD_OPTION', `${name} must be an integer (got '${v}')`);
    return n;
  };
}

function seqList(v: string): number[] {
  const parts = v.split(',').map((p) => p.trim());
  const out = parts.map((p) => {
    const n = Number(p);
    if (p === '' || !Number.isInteger(n) || n < 2)
      throw usageError('ERR_BAD_OPTION', `--seq must be an integer >= 2 or a comma-separated list of them (got '${v}')`);
    return n;
  });
  const dup = out.find((n, i) => out.indexOf(n) !== i);
  if (dup !== undefined) throw usageError('ERR_BAD_OPTION', `--seq lists ${dup} twice (got '${v}')`);
  return out;
}

/** One length in the `--json` output: the API's result without the per-window arrays. */
export type JsonContext = Omit<PplContextResult, 'windowNll' | 'window0Nll'>;

/** The `--json` object (version 2). */
export function jsonResult(r: PplResult): Record<string, unknown> {
  const ctx = (c: PplContextResult): JsonContext => ({
    seq: c.seq,
    ppl: c.ppl,
    windows: c.windows,
    windowsRequested: c.windowsRequested,
    tokensScored: c.tokensScored,
    meanNll: c.meanNll,
    buckets: c.buckets,
    seconds: c.seconds,
  });
  return {
    version: 2,
    ppl: r.ppl,
    windows: r.windows,
    seq: r.seq,
    tokensScored: r.tokensScored,
    seconds: r.seconds,
    textTokens: r.textTokens,
    warnings: r.warnings,
    contexts: r.contexts.map(ctx),
  };
}

function textResult(r: PplResult): string {
  return r.contexts
    .map((c) => {
      const short = c.windows < c.windowsRequested ? ` (text holds only ${c.windows} of the ${c.windowsRequested} requested)` : '';
      const head =
        `seq ${c.seq}: ppl ${c.ppl.toFixed(4)}  (${c.windows} windows x ${c.seq} tokens${short}, ${c.tokensScored} tokens scored, ` +
        `mean NLL ${c.meanNll.toFixed(5)}, ${c.seconds.toFixed(2)} s)\n`;
      const rows = c.buckets.map(
        (b) => `  positions ${`${b.from}-${b.to}`.padEnd(11)} mean NLL ${b.meanNll.toFixed(5)}  ppl ${b.ppl.toFixed(4).padStart(10)}  (${b.count} tokens)\n`,
      );
      return head + rows.join('');
    })
    .join('');
}

/** Registers the command. */
export function register(program: Command): void {
  program
    .command('eval-ppl')
    .description('perplexity of a checkpoint on a text (CPU, layer-streamed, float32)')
    .argument('<model-dir>', 'checkpoint directory (llama, qwen2, qwen3, qwen3_moe, mistral, mixtral or deepseek_v3)')
    .requiredOption('--text <file>', 'evaluation text (UTF-8)')
    .option('--seq <n[,n...]>', 'tokens per window; a comma-separated list scores each length', seqList, [512])
    .option('--windows <n>', 'windows to score (the first ones of the text)', int('--windows'), 40)
    .option('--batch <n>', 'windows per layer-streamed pass (default: all, within 512 MiB of hidden states)', int('--batch'))
    .option('--json', 'print the result as JSON on stdout (version 2: first length at the top level, every length in "contexts")')
    .addHelpText(
      'after',
      '\nProtocol: tokenize the whole text without special tokens; cut non-overlapping windows of\n' +
        '--seq tokens from offset 0; take the first --windows; score tokens 1..seq-1 of each window from\n' +
        'their prefixes; ppl = exp(mean NLL over all scored tokens). Each length also reports the mean NLL\n' +
        'by position bucket (0-63, 64-255, 256-1023, 1024-2047, then doubling). A length beyond the\n' +
        "model's max_position_embeddings is scored with a warning on stderr.\n\n" +
        'Examples:\n' +
        '  gqa2mla eval-ppl test/fixtures/tiny-llama-gqa --text test/fixtures/pydocs-eval.txt\n' +
        '  gqa2mla eval-ppl ./model-mla --text eval.txt --seq 512,2048,4096 --windows 20 --json',
    )
    .action(async (modelDir: string, o: { text: string; seq: number[]; windows: number; batch?: number; json?: boolean }) => {
      const bar = createProgress(!o.json);
      const controller = new AbortController();
      const onSig = () => controller.abort();
      process.once('SIGINT', onSig);
      let started = false;
      try {
        const r = await evalPpl({
          modelDir,
          textFile: o.text,
          seqs: o.seq,
          windows: o.windows,
          batch: o.batch,
          signal: controller.signal,
          onWarning: (m) => {
            bar.stop();
            started = false;
            process.stderr.write(`warning: ${m}\n`);
          },
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
        process.stdout.write(o.json ? `${JSON.stringify(jsonResult(r))}\n` : textResult(r));
      } finally {
        bar.stop();
        process.off('SIGINT', onSig);
      }
    });
}
