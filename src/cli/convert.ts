/**
 * `gqa2mla convert <model-dir> <out-dir> --calib <file> [...]`
 */
import type { Command } from 'commander';
import { convert, convertSweep } from '../convert/convert.js';
import type { ConvertOptions, ConvertProgress } from '../convert/options.js';
import { DEFAULT_QK_NORM, QK_NORM_METHODS, type QkNormMethod } from '../convert/qk-norm.js';
import type { ConversionReport } from '../report-types.js';
import { attachPpl, type EvalSettings, formatSweep, summarizeSweep } from '../convert/sweep.js';
import { existsSync } from 'node:fs';
import { checkOutputTarget } from '../checkpoint/output-guard.js';
import { GqaError, usageError } from '../errors.js';
import { checkSeqs } from '../eval/ppl.js';
import { attachSamples } from '../generate-samples.js';
import { createProgress, type Progress } from './progress.js';
import { subnormalWarning } from './warnings.js';

function int(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n)) throw usageError('ERR_BAD_OPTION', `${name} must be an integer (got '${v}')`);
    return n;
  };
}

function floatArg(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n < 0) throw usageError('ERR_BAD_OPTION', `${name} must be a number >= 0 (got '${v}')`);
    return n;
  };
}

function intList(name: string) {
  return (v: string): number[] => {
    const parts = v.split(',').map((p) => p.trim());
    return parts.map((p) => {
      const n = Number(p);
      if (p === '' || !Number.isInteger(n)) throw usageError('ERR_BAD_OPTION', `${name} must be an integer or a comma-separated list of integers (got '${v}')`);
      return n;
    });
  };
}

function onOff(name: string) {
  return (v: string): boolean => {
    if (v !== 'on' && v !== 'off') throw usageError('ERR_BAD_OPTION', `${name} must be 'on' or 'off' (got '${v}')`);
    return v === 'on';
  };
}

/** Feeds conversion events to `bar`: tokenize/embed as notes, then one step per decoder layer. */
function layerProgress(bar: Progress): (p: ConvertProgress) => void {
  let started = false;
  return (p) => {
    if (p.layer === undefined && p.stage !== 'done') {
      bar.note(p.stage === 'tokenize' ? 'tokenizing the calibration text' : p.stage === 'embed' ? 'embedding the calibration windows' : p.stage);
      return;
    }
    if (!started) {
      bar.start(p.layers, 'layers');
      started = true;
    }
    bar.update(p.stage === 'done' ? p.layers : (p.layer ?? 0), `layer ${p.layer ?? p.layers} ${p.stage}${p.message ? ` ${p.message}` : ''}`);
  };
}

/** The command and its options. */
function convertCommand(program: Command): Command {
  return program
    .command('convert')
    .description('convert a GQA/MHA checkpoint to MLA in the DeepSeek-V3 format (layer by layer)')
    .argument('<model-dir>', 'source checkpoint (llama, qwen2, qwen3, qwen3_moe, mistral, mixtral)')
    .argument('<out-dir>', 'output directory (DeepSeek-V3 layout)')
    .requiredOption('--calib <file>', 'calibration text (UTF-8)')
    .option('--calib-samples <n>', 'calibration windows for statistics', int('--calib-samples'), 128)
    .option('--calib-seqlen <n>', 'tokens per calibration window', int('--calib-seqlen'), 256)
    .option('--held-out <n>', 'extra calibration windows for errors and per-layer choices', int('--held-out'))
    .option('--context <n>', 'tokens per held-out window that judges the per-layer choices: the serving context (default min(max_position_embeddings, 4096), bounded by the calibration text; <= --calib-seqlen: the --held-out windows)', int('--context'))
    .option('--context-windows <n>', 'held-out windows of --context tokens (default max(2, held-out x calib-seqlen / context))', int('--context-windows'))
    .option('--context-queries <n>', 'query positions scored per --context window, every key before each kept (default 512; >= --context: every position)', int('--context-queries'))
    .option('--seed <n>', 'seed of the calibration offsets', int('--seed'), 42)
    .option('--qk-rope-dim <n[,n...]>', 'RoPE dims per head (qk_rope_head_dim; default 64, at most head_dim); a list makes a sweep', intList('--qk-rope-dim'))
    .option('--kv-lora-rank <n[,n...]>', 'latent rank (kv_lora_rank; default 512, at most the lossless rank); a list makes a sweep into <out-dir>/r<rank>-p<rope>/', intList('--kv-lora-rank'))
    .option('--kv-budget <n>', 'cached values per token and layer (kv_lora_rank + qk_rope_head_dim), split by the tool: the most RoPE dims that leave a latent of at least min(32, n/2) (instead of --qk-rope-dim / --kv-lora-rank)', int('--kv-budget'))
    .option('--eval-text <file>', 'after converting, measure ppl of the source and of each output on this text (eval-ppl protocol), and store greedy samples of both models on three calibration-text prompts in the report')
    .option('--eval-seq <n[,n...]>', 'tokens per evaluation window; a list evaluates each length (report: eval.contexts)', intList('--eval-seq'), [512])
    .option('--eval-windows <n>', 'evaluation windows', int('--eval-windows'), 40)
    .option('--freqfold <n|auto>', "frequencies per RoRoPE group, or 'auto' (per layer)", 'auto')
    .option('--balance-kv <x|auto>', "norm ratio of NoPE keys to values before the joint PCA, or 'auto' (searched per layer)")
    .option('--method <name>', "defaults of the factorization: 'gqa2mla' (query-aware, objective-aware) or 'transmla' (TransMLA's PCA)", 'gqa2mla')
    .option('--rope-selection <key|qk|auto>', "RoPE directions by key PCA ('key', TransMLA) or attention-logit energy ('qk')")
    .option('--kv-metric <plain|objective|attention|auto>', "joint K/V compression metric: plain PCA, the model's error metrics, or those under attention-aware statistics")
    .option('--nope-rotation <on|off>', 'position-free key pairs take their expected rotation (on) or only its cosine (off)', onOff('--nope-rotation'))
    .option('--output-refit <on|off>', 'refit o_proj and the kv_b value rows jointly across heads (kept when it helps)', onOff('--output-refit'))
    .option('--latent-norm <exact|off>', "'exact': stock engines' kv_a_layernorm becomes an exact identity; 'off': qk_latent_layernorm=false", 'exact')
    .option('--q-lora-rank <n>', 'compress the queries too (q_a_proj/q_b_proj, q_lora_rank); default: none, or lossless when the source has a query bias', int('--q-lora-rank'))
    .option('--qk-norm <method>', `qwen3 sources: how the per-head q_norm / k_norm become linear maps (${QK_NORM_METHODS.join(', ')}; default ${DEFAULT_QK_NORM})`)
    .option('--calib-inputs <mode>', "'original' or 'converted' layer inputs for calibration", 'original')
    .option('--target <portable|transformers>', "'portable': computes the same in stock vLLM, SGLang and transformers (biases folded); 'transformers': exact bias construction, transformers only", 'portable')
    .option('--dtype <auto|BF16|F16|F32>', "stored dtype of the converted attention weights ('auto': the source's)", 'auto')
    .option('--device <auto|cpu|cuda>', "where the per-layer work runs ('auto': CUDA when the addon has it and a GPU is present)", 'auto')
    .option('--force', 'replace an existing output directory')
    .option('--resume', 'continue an interrupted conversion with the same settings')
    .option('--checkpoint-seconds <s>', 'seconds between saves of the resume state (0: after every layer)', floatArg('--checkpoint-seconds'), 60)
    .option('--json', 'print the conversion report as JSON on stdout')
    .option('--quiet', 'no progress output')
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  gqa2mla convert test/fixtures/tiny-llama-gqa /tmp/tiny-mla --calib test/fixtures/pydocs-train-3M.txt --qk-rope-dim 32 --kv-lora-rank 96\n' +
        '  gqa2mla convert ./Llama-3.1-8B ./Llama-3.1-8B-MLA --calib calib.txt --kv-lora-rank 512 --qk-rope-dim 64 --json\n' +
        '  gqa2mla convert ./model ./model-mla-transmla --calib calib.txt --method transmla --freqfold 2 --balance-kv 1',
    );
}

/** Registers the command. */
export function register(program: Command): void {
  convertCommand(program).action(runConvert);
}

/** The numeric options commander leaves as strings, checked ('auto' or a number). */
function parseChoices(o: Record<string, unknown>): { freqfold: number | 'auto'; balanceKv: number | 'auto' | undefined } {
  let freqfold: number | 'auto' = 'auto';
  if (o.freqfold !== 'auto') {
    freqfold = Number(o.freqfold);
    if (!Number.isInteger(freqfold)) throw usageError('ERR_BAD_OPTION', `--freqfold must be an integer or 'auto' (got '${String(o.freqfold)}')`);
  }
  let balanceKv: number | 'auto' | undefined;
  if (o.balanceKv !== undefined && o.balanceKv !== 'auto') {
    balanceKv = Number(o.balanceKv);
    if (!Number.isFinite(balanceKv)) throw usageError('ERR_BAD_OPTION', `--balance-kv must be a number or 'auto' (got '${String(o.balanceKv)}')`);
  } else if (o.balanceKv === 'auto') balanceKv = 'auto';
  if (o.method !== 'gqa2mla' && o.method !== 'transmla') throw usageError('ERR_BAD_OPTION', `--method must be 'gqa2mla' or 'transmla' (got '${String(o.method)}')`);
  return { freqfold, balanceKv };
}

/** The API options of the command line's (budgets aside). */
function apiOptions(modelDir: string, o: Record<string, unknown>, signal: AbortSignal, bar: Progress): Omit<ConvertOptions, 'outDir' | 'kvLoraRank' | 'qkRopeDim'> {
  return {
    modelDir,
    calibFile: o.calib as string,
    calibSamples: o.calibSamples as number,
    calibSeqlen: o.calibSeqlen as number,
    heldOutSamples: o.heldOut as number | undefined,
    context: o.context as number | undefined,
    contextWindows: o.contextWindows as number | undefined,
    contextQueries: o.contextQueries as number | undefined,
    seed: o.seed as number,
    ...parseChoices(o),
    method: o.method as 'gqa2mla' | 'transmla',
    ropeSelection: o.ropeSelection as 'key' | 'qk' | 'auto' | undefined,
    kvMetric: o.kvMetric as 'plain' | 'objective' | 'attention' | 'auto' | undefined,
    nopeRotation: o.nopeRotation as boolean | undefined,
    outputRefit: o.outputRefit as boolean | undefined,
    latentNorm: o.latentNorm as 'exact' | 'off',
    dtype: o.dtype as 'auto' | 'BF16' | 'F16' | 'F32',
    target: o.target as 'portable' | 'transformers',
    device: o.device as 'auto' | 'cpu' | 'cuda',
    qLoraRank: o.qLoraRank as number | undefined,
    calibInputs: o.calibInputs as 'original' | 'converted',
    qkNorm: o.qkNorm as QkNormMethod | undefined,
    overwrite: Boolean(o.force),
    resume: Boolean(o.resume),
    checkpointSeconds: o.checkpointSeconds as number,
    signal,
    onProgress: layerProgress(bar),
  };
}

/** The text summary of one conversion. */
function formatConversion(report: ConversionReport, outDir: string, ppl: { before: number; after: number; protocol: string } | null): string {
  const kv = report.kvValuesPerToken;
  const layers = report.layers.map(
    (l) =>
      `  layer ${String(l.layer).padStart(3)}  freqfold ${String(l.freqfold).padStart(2)}  attn rel err ${l.attnRelError.toFixed(4)}  ` +
      `rope var ${(100 * l.ropeVarianceKept).toFixed(1)}%  pca var ${(100 * l.pcaVarianceKept).toFixed(1)}%`,
  );
  return (
    `converted ${report.source.numLayers} layers in ${report.times.total.toFixed(1)} s -> ${outDir}\n` +
    `KV values per token per layer: ${kv.perLayerBefore} -> ${kv.perLayerAfter} (${kv.ratio.toFixed(2)}x smaller)\n` +
    `${layers.join('\n')}\n` +
    (ppl ? `ppl ${ppl.before.toFixed(3)} -> ${ppl.after.toFixed(3)} (${ppl.protocol})\n` : '') +
    `report: ${outDir}/report.html\n`
  );
}

/** A sweep (several budgets) and its summary on stdout. */
async function runSweep(base: Omit<ConvertOptions, 'outDir' | 'kvLoraRank' | 'qkRopeDim'>, outDir: string, o: Record<string, unknown>, evalOpts: EvalSettings | null, bar: Progress): Promise<void> {
  const sweep = await convertSweep({ ...base, outDir, kvLoraRanks: (o.kvLoraRank as number[] | undefined) ?? [512], qkRopeDims: (o.qkRopeDim as number[] | undefined) ?? [64] });
  for (const b of sweep.budgets) {
    const warning = subnormalWarning(b.report);
    if (warning && !o.quiet) process.stderr.write(`gqa2mla: warning: ${b.dir}: ${warning}\n`);
  }
  const summary = await summarizeSweep(sweep, base.modelDir, evalOpts, (m) => bar.note(m));
  bar.stop();
  if (o.json) process.stdout.write(`${JSON.stringify(summary, null, 2)}\n`);
  else if (!o.quiet) process.stdout.write(formatSweep(summary));
}

/** One conversion, its evaluation and samples, and its report on stdout. */
async function runSingle(base: Omit<ConvertOptions, 'outDir' | 'kvLoraRank' | 'qkRopeDim'>, outDir: string, o: Record<string, unknown>, evalOpts: EvalSettings | null, bar: Progress): Promise<void> {
  const budget = o.kvBudget !== undefined ? { kvBudget: o.kvBudget as number } : { kvLoraRank: (o.kvLoraRank as number[] | undefined)?.[0], qkRopeDim: (o.qkRopeDim as number[] | undefined)?.[0] };
  const report = await convert({ ...base, outDir, ...budget });
  const ppl = evalOpts ? await attachPpl(report, base.modelDir, outDir, evalOpts) : null;
  if (evalOpts) {
    bar.note('greedy samples, source beside converted');
    const samples = await attachSamples({ report, sourceDir: base.modelDir, convertedDir: outDir, calibFile: o.calib as string });
    if (samples.skipped && !o.quiet) process.stderr.write(`gqa2mla: note: no greedy samples in the report: ${samples.skipped}\n`);
  }
  bar.stop();
  const warning = subnormalWarning(report);
  if (warning && !o.quiet) process.stderr.write(`gqa2mla: warning: ${warning}\n`);
  if (o.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  else if (!o.quiet) process.stdout.write(formatConversion(report, outDir, ppl));
}

/** The command's action: checks before any work, then one conversion or a sweep. */
async function runConvert(modelDir: string, outDir: string, o: Record<string, unknown>): Promise<void> {
  parseChoices(o);
  if (o.kvBudget !== undefined && (o.kvLoraRank !== undefined || o.qkRopeDim !== undefined))
    throw usageError('ERR_BAD_OPTION', '--kv-budget chooses --qk-rope-dim and --kv-lora-rank: give either --kv-budget or those two, not both');
  // the output and the inputs, in the CLI's own flag names, before any work
  checkOutputTarget({ modelDir, outDir, overwrite: Boolean(o.force), resume: Boolean(o.resume), inputs: [o.calib as string, o.evalText as string | undefined], names: { overwrite: '--force', resume: '--resume' } });
  if (o.evalText && !existsSync(o.evalText as string)) throw new GqaError('ERR_EVAL_READ', `cannot read evaluation text ${String(o.evalText)}: no such file`, 'input');
  const evalOpts: EvalSettings | null = o.evalText ? { textFile: o.evalText as string, seq: (o.evalSeq as number[])[0], seqs: checkSeqs(undefined, o.evalSeq as number[]), windows: o.evalWindows as number } : null;
  const bar = createProgress(!o.json && !o.quiet);
  const controller = new AbortController();
  const onSig = () => controller.abort();
  process.once('SIGINT', onSig);
  try {
    const base = apiOptions(modelDir, o, controller.signal, bar);
    const sweep = ((o.kvLoraRank as number[] | undefined)?.length ?? 1) > 1 || ((o.qkRopeDim as number[] | undefined)?.length ?? 1) > 1;
    await (sweep ? runSweep : runSingle)(base, outDir, o, evalOpts, bar);
  } finally {
    bar.stop();
    process.off('SIGINT', onSig);
  }
}
