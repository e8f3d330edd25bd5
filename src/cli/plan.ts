/**
 * `gqa2mla plan <model-dir> [--kv-lora-rank 64,128,256] [--qk-rope-dim 32,64] [--context N] [--json]`
 */
import type { Command } from 'commander';
import { usageError } from '../errors.js';
import { plan, type PlanResult } from '../plan.js';
import { contextLabel } from '../report/kv-cache.js';
import { toFlagNames } from './flag-names.js';

function intList(name: string) {
  return (v: string): number[] => {
    const parts = v.split(',').map((s) => s.trim());
    const out = parts.map(Number);
    if (parts.some((s) => s === '') || out.some((n) => !Number.isInteger(n) || n <= 0))
      throw usageError('ERR_BAD_OPTION', `${name} must be a comma-separated list of positive integers (got '${v}')`);
    return out;
  };
}

function positiveInt(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0) throw usageError('ERR_BAD_OPTION', `${name} must be a positive integer (got '${v}')`);
    return n;
  };
}

function bytes(n: number): string {
  if (n >= 1024 * 1024) return `${(n / 1024 / 1024).toFixed(2)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(2)} KiB`;
  return `${n} B`;
}

function gib(x: number): string {
  return x >= 100 ? x.toFixed(0) : x >= 1 ? x.toFixed(2) : x.toPrecision(3);
}

function pad(cells: string[][]): string {
  const widths = cells[0].map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  return cells.map((r) => r.map((c, i) => (i === r.length - 1 ? c : i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ').trimEnd()).join('\n');
}

/** The plan as a text table. */
export function formatPlan(p: PlanResult): string {
  const m = p.model;
  const ctx = contextLabel(p.contextTokens);
  const o = p.original;
  let s =
    `model    ${m.dir} (${m.modelType}, ${m.numLayers} layers, ${m.numHeads} heads, ${m.numKvHeads} KV heads x ${m.headDim})\n` +
    `original ${o.valuesPerTokenPerLayer} KV values/token/layer (2 x ${m.numKvHeads} x ${m.headDim}), ${o.valuesPerToken} values = ${bytes(o.bytesPerToken)} per token, ` +
    `${gib(o.gibPerSequence)} GiB per ${ctx}-token sequence (${p.bytesPerValue} bytes/value)\n` +
    `limits   qk-rope-dim: even divisor of ${m.headDim} (${p.limits.validQkRopeDims.join(', ')}); kv-lora-rank <= ${p.limits.maxKvLoraRankPlusRope} - qk-rope-dim\n`;
  for (const w of p.warnings) s += `warning  ${toFlagNames(w, 'plan')}\n`;
  const rows: string[][] = [['rope', 'rank', 'values/tok/layer', 'values/tok', 'bytes/tok', `GiB/${ctx}`, 'ratio', 'saved', 'freqfold', 'status']];
  for (const b of p.budgets) {
    rows.push([
      String(b.qkRopeDim),
      String(b.kvLoraRank),
      String(b.valuesPerTokenPerLayer),
      String(b.valuesPerToken),
      bytes(b.bytesPerToken),
      gib(b.gibPerSequence),
      b.valid ? `${b.compressionRatio.toFixed(2)}x` : '-',
      b.valid ? `${(100 * b.savedFraction).toFixed(1)}%` : '-',
      b.freqfolds.length ? b.freqfolds.join(',') : '-',
      b.valid ? 'ok' : `invalid: ${toFlagNames(b.reasons.join('; '), 'plan')}`,
    ]);
  }
  return `${s}\n${pad(rows)}\n`;
}

/** Registers the command. */
export function register(program: Command): void {
  program
    .command('plan')
    .description('KV-cache size, compression ratio and limits of candidate MLA budgets (reads config.json only)')
    .argument('<model-dir>', 'source checkpoint (llama, qwen2, qwen3, qwen3_moe, mistral, mixtral)')
    .option('--kv-lora-rank <list>', 'candidate latent ranks, comma-separated (default 64,128,256,512 capped to the maximum)', intList('--kv-lora-rank'))
    .option('--qk-rope-dim <list>', 'candidate RoPE dims per head, comma-separated (default 32,64 filtered to valid ones)', intList('--qk-rope-dim'))
    .option('--context <tokens>', 'sequence length for the per-sequence size', positiveInt('--context'), 32768)
    .option('--json', 'print the plan as JSON: {model, original, limits, budgets, ...}')
    .addHelpText(
      'after',
      '\nSizes assume bf16 (2 bytes per cached value) and count all layers. Invalid combinations are\n' +
        'listed with the limit they break; nothing heavy runs (no weights are read). The exit status is\n' +
        '2 when no candidate is valid (the table is still printed).\n\n' +
        'Examples:\n' +
        '  gqa2mla plan test/fixtures/tiny-llama-gqa\n' +
        '  gqa2mla plan ./Llama-3.1-8B --kv-lora-rank 256,512,1024 --qk-rope-dim 32,64\n' +
        '  gqa2mla plan ./Qwen2.5-7B --context 131072 --json',
    )
    .action(async (dir: string, o: { kvLoraRank?: number[]; qkRopeDim?: number[]; context: number; json?: boolean }) => {
      const p = await plan({ modelDir: dir, kvLoraRanks: o.kvLoraRank, qkRopeDims: o.qkRopeDim, contextTokens: o.context });
      process.stdout.write(o.json ? `${JSON.stringify(p)}\n` : formatPlan(p));
      if (!p.budgets.some((b) => b.valid))
        throw usageError('ERR_NO_VALID_BUDGET', toFlagNames(`no candidate budget is valid for ${dir}: ${[...new Set(p.budgets.flatMap((b) => b.reasons))].join('; ')}`, 'plan'));
    });
}
