/**
 * `gqa2mla generate <model-dir> --prompt TEXT [--max-new-tokens N] [--temperature T --top-p P --seed S] [--compare <other-dir>] [--json]`
 */
import type { Command } from 'commander';
import { usageError } from '../errors.js';
import { firstDivergence, generate, type GenerateResult } from '../generate.js';

function positiveInt(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isInteger(n) || n <= 0) throw usageError('ERR_BAD_OPTION', `${name} must be a positive integer (got '${v}')`);
    return n;
  };
}

function int(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isInteger(n)) throw usageError('ERR_BAD_OPTION', `${name} must be an integer (got '${v}')`);
    return n;
  };
}

function number(name: string, ok: (n: number) => boolean, range: string) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || !ok(n)) throw usageError('ERR_BAD_OPTION', `${name} must be a number ${range} (got '${v}')`);
    return n;
  };
}

interface GenerateFlags {
  prompt: string;
  maxNewTokens: number;
  temperature: number;
  topP: number;
  seed: number;
  compare?: string;
  json?: boolean;
}

/** Two texts in columns of `width` characters, 'left | right' per line. */
export function sideBySide(left: string, right: string, width: number): string {
  const wrap = (s: string) => {
    const lines: string[] = [];
    for (const para of s.replace(/\t/g, '    ').split('\n')) {
      if (para.length === 0) lines.push('');
      for (let i = 0; i < para.length; i += width) lines.push(para.slice(i, i + width));
    }
    return lines;
  };
  const a = wrap(left);
  const b = wrap(right);
  const out: string[] = [];
  for (let i = 0; i < Math.max(a.length, b.length); i++) out.push(`${(a[i] ?? '').padEnd(width)} | ${b[i] ?? ''}`.trimEnd());
  return `${out.join('\n')}\n`;
}

function summary(r: GenerateResult): string {
  return `${r.tokens.length} tokens (${r.stop === 'eos' ? 'stopped at eos' : 'max-new-tokens'}) in ${r.seconds.toFixed(2)} s, ${r.tokensPerSecond.toFixed(1)} tokens/s, ${r.engine === 'mla' ? 'MlaDecoder (latent cache)' : 'GqaDecoder (KV cache)'}`;
}

function jsonOf(r: GenerateResult) {
  return { modelDir: r.modelDir, engine: r.engine, tokens: r.tokens, text: r.text, stop: r.stop, seconds: r.seconds, tokensPerSecond: r.tokensPerSecond };
}

async function runOne(dir: string, o: GenerateFlags, stream: boolean): Promise<GenerateResult> {
  return generate({
    modelDir: dir,
    prompt: o.prompt,
    maxNewTokens: o.maxNewTokens,
    temperature: o.temperature,
    topP: o.topP,
    seed: o.seed,
    onToken: stream ? (t) => process.stdout.write(t.text) : undefined,
  });
}

async function action(modelDir: string, o: GenerateFlags): Promise<void> {
  const dirs = o.compare ? [modelDir, o.compare] : [modelDir];
  const results: GenerateResult[] = [];
  for (const dir of dirs) {
    if (!o.json) process.stdout.write(o.compare ? `== ${dir}\n${o.prompt}` : o.prompt);
    const r = await runOne(dir, o, !o.json);
    results.push(r);
    if (!o.json) {
      process.stdout.write('\n');
      process.stderr.write(`gqa2mla: ${dir}: ${summary(r)}\n`);
    }
  }
  const div = results.length === 2 ? firstDivergence(results[0].tokens, results[1].tokens) : null;
  if (o.json) {
    const sampling = results[0].sampling;
    const out = { prompt: o.prompt, promptIds: results[0].promptIds, maxNewTokens: o.maxNewTokens, sampling, results: results.map(jsonOf), ...(o.compare ? { firstDivergence: div } : {}) };
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
    return;
  }
  if (results.length === 2) {
    const width = Math.max(20, Math.floor(((process.stdout.columns ?? 120) - 3) / 2));
    process.stdout.write(`\n${sideBySide(`${modelDir}\n${o.prompt}${results[0].text}`, `${o.compare}\n${o.prompt}${results[1].text}`, width)}`);
    process.stdout.write(div === null ? 'identical tokens\n' : `tokens agree up to position ${div} of ${Math.max(results[0].tokens.length, results[1].tokens.length)}\n`);
  }
}

/** Registers the command. */
export function register(program: Command): void {
  program
    .command('generate')
    .description('continue a prompt with a converted (MLA) model or a GQA/MHA source, streamed to stdout; --compare runs a second model beside it')
    .argument('<model-dir>', 'converted deepseek_v3 checkpoint (MlaDecoder) or GQA/MHA source (KV-cached engine)')
    .requiredOption('--prompt <text>', 'prompt text (encoded with the model directory\'s tokenizer, no special tokens unless its config adds BOS)')
    .option('--max-new-tokens <n>', 'tokens to generate at most', positiveInt('--max-new-tokens'), 32)
    .option('--temperature <t>', '0: greedy (argmax); > 0: sample from softmax(logits / t)', number('--temperature', (n) => n >= 0, '>= 0'), 0)
    .option('--top-p <p>', 'nucleus sampling mass in (0, 1] (with --temperature > 0)', number('--top-p', (n) => n > 0 && n <= 1, 'in (0, 1]'), 1)
    .option('--seed <n>', 'seed of the sampler (same seed, same tokens)', int('--seed'), 0)
    .option('--compare <other-dir>', 'run the same prompt and settings through a second model and show both side by side')
    .option('--json', 'print {prompt, promptIds, maxNewTokens, sampling, results: [{modelDir, engine, tokens, text, stop, seconds, tokensPerSecond}], firstDivergence?} instead of streaming')
    .addHelpText(
      'after',
      '\nExamples:\n' +
        "  gqa2mla generate /tmp/tiny-mla --prompt 'The json module' --max-new-tokens 24\n" +
        "  gqa2mla generate /tmp/tiny-mla --prompt 'The json module' --compare test/fixtures/tiny-llama-gqa\n" +
        "  gqa2mla generate ./model-mla --prompt 'Once upon a time' --temperature 0.8 --top-p 0.95 --seed 7 --json",
    )
    .action(async (modelDir: string, o: GenerateFlags) => {
      if ((o.temperature === 0) && o.topP !== 1) throw usageError('ERR_BAD_OPTION', '--top-p needs --temperature > 0 (greedy decoding ignores it)');
      await action(modelDir, o);
    });
}
