/**
 * Perplexity with a fixed, documented protocol (also in the README):
 * tokenize the whole text without special tokens; cut non-overlapping windows of `seq`
 * tokens from offset 0; take the first `windows` (fewer when the text is shorter); feed each
 * window and score its tokens 1..seq-1 from their prefixes; ppl = exp(mean NLL over all
 * scored tokens). The model runs layer-streamed on the CPU (float32 compute).
 *
 * Several lengths (`seqs`) share one tokenization and one opened model; each length cuts
 * its own windows from offset 0 and is scored exactly as a single-length call would score
 * it. Each length also reports the NLL by position bucket (see ./buckets.ts).
 */
import { readFile } from 'node:fs/promises';
import { ModelRunner, type RunStep } from '../engine/model.js';
import { GqaError, usageError } from '../errors.js';
import { loadTokenizer } from '../tokenize.js';
import { encodeParallel } from '../tokenize-parallel.js';
import { BucketAccumulator, type NllBucket } from './buckets.js';

/** Progress of an evaluation. */
export interface PplProgress {
  stage: 'tokenize' | 'embed' | 'layer' | 'head' | 'done';
  /** decoder layer just applied (stage 'layer') */
  layer?: number;
  /** steps done / total over all passes of all lengths (a pass = embed + every layer + head) */
  done: number;
  total: number;
  /** windows of the current length fully scored so far */
  windowsDone: number;
  /** windows scored at the current length */
  windows: number;
  /** the length being scored (absent while tokenizing) */
  seq?: number;
}

/** Options of {@link evalPpl}. */
export interface EvalPplOptions {
  /** checkpoint directory (config.json, safetensors, tokenizer.json) */
  modelDir: string;
  /** the evaluation text (exactly one of text / textFile) */
  text?: string;
  /** a UTF-8 file holding the evaluation text */
  textFile?: string;
  /** tokens per window (default 512, >= 2); give `seq` or `seqs`, not both */
  seq?: number;
  /** several window lengths scored in one call (distinct integers >= 2, in the order given) */
  seqs?: number[];
  /** windows to score at each length (default 40, >= 1) */
  windows?: number;
  /**
   * Windows per layer-streamed pass (each pass reads every layer once). Default: all
   * windows, capped so the pass's hidden states stay under 512 MiB.
   */
  batch?: number;
  /** tokens per micro-batch inside a layer (bounds activation memory; default 4096) */
  microBatchTokens?: number;
  onProgress?(p: PplProgress): void;
  /** called with each warning as soon as it is known (they are also returned in `warnings`) */
  onWarning?(message: string): void;
  signal?: AbortSignal;
}

/** The result at one window length. */
export interface PplContextResult {
  seq: number;
  ppl: number;
  /** windows scored */
  windows: number;
  /** windows asked for */
  windowsRequested: number;
  /** windows x (seq - 1) */
  tokensScored: number;
  /** mean NLL (nats) over the scored tokens */
  meanNll: number;
  /** sum of the NLL of each window's seq-1 scored tokens */
  windowNll: number[];
  /** per-position NLL of window 0 (token t+1 given tokens 0..t), seq-1 entries */
  window0Nll: Float64Array;
  /** NLL by position bucket; sum(meanNll x count) / sum(count) = meanNll */
  buckets: NllBucket[];
  /** wall time of this length's passes, seconds */
  seconds: number;
}

/**
 * Result of {@link evalPpl}: the first length's fields at the top level (the single-length
 * shape), every length in `contexts`.
 */
export interface PplResult extends Omit<PplContextResult, 'seconds'> {
  /** one entry per requested length, in the order requested */
  contexts: PplContextResult[];
  /** lengths beyond max_position_embeddings, lengths the text holds fewer windows of than requested */
  warnings: string[];
  /** tokens of the whole text */
  textTokens: number;
  /** the model's max_position_embeddings */
  maxPositionEmbeddings: number;
  /** wall time of the whole evaluation (tokenization included), seconds */
  seconds: number;
}

const HIDDEN_BUDGET_BYTES = 512 * 2 ** 20;

function checkInt(v: number, name: string, min: number): number {
  if (!Number.isInteger(v) || v < min) throw usageError('ERR_BAD_OPTION', `${name} must be an integer >= ${min} (got ${v})`);
  return v;
}

/** The lengths asked for, checked: `seq` alone, `seqs`, or the default 512. */
export function checkSeqs(seq: number | undefined, seqs: number[] | undefined): number[] {
  if (seq !== undefined && seqs !== undefined) throw usageError('ERR_BAD_OPTION', 'give seq or seqs, not both');
  if (seqs === undefined) return [checkInt(seq ?? 512, 'seq', 2)];
  if (!Array.isArray(seqs) || seqs.length === 0) throw usageError('ERR_BAD_OPTION', 'seqs must be a non-empty list of window lengths');
  seqs.forEach((s) => checkInt(s, 'seq', 2));
  const dup = seqs.find((s, i) => seqs.indexOf(s) !== i);
  if (dup !== undefined) throw usageError('ERR_BAD_OPTION', `seq ${dup} is listed twice`);
  return [...seqs];
}

async function readText(options: EvalPplOptions): Promise<string> {
  if ((options.text === undefined) === (options.textFile === undefined))
    throw usageError('ERR_BAD_OPTION', 'give exactly one of text or textFile');
  if (options.text !== undefined) return options.text;
  try {
    return await readFile(options.textFile!, 'utf8');
  } catch (e) {
    throw new GqaError('ERR_TEXT_READ', `cannot read text file ${options.textFile}: ${(e as Error).message}`, 'input', { cause: e });
  }
}

/** Windows scored at each length; a length the text cannot fill once is a usage error. */
function planWindows(tokens: number, seqs: number[], requested: number, textFile?: string): { windows: number[]; warnings: string[] } {
  const warnings: string[] = [];
  const windows = seqs.map((seq) => {
    const available = Math.floor(tokens / seq);
    if (available < 1)
      throw usageError('ERR_TEXT_TOO_SHORT', `the text has ${tokens} tokens, fewer than one window of seq = ${seq}${textFile ? ` (${textFile})` : ''}`);
    if (available < requested)
      warnings.push(`seq ${seq}: the text holds ${available} windows of ${seq} tokens (${tokens} tokens), fewer than the ${requested} requested; ${available} scored`);
    return Math.min(requested, available);
  });
  return { windows, warnings };
}

/** Scores `options.windows` windows at each length of `options.seqs` (or `options.seq`); see the module doc. */
export async function evalPpl(options: EvalPplOptions): Promise<PplResult> {
  const t0 = performance.now();
  const seqs = checkSeqs(options.seq, options.seqs);
  const windowsRequested = checkInt(options.windows ?? 40, 'windows', 1);
  if (options.batch !== undefined) checkInt(options.batch, 'batch', 1);
  const text = await readText(options);
  options.onProgress?.({ stage: 'tokenize', done: 0, total: 0, windowsDone: 0, windows: 0 });
  const tokenizer = await loadTokenizer(options.modelDir);
  const { ids: tokens } = await encodeParallel(tokenizer, text); // same ids as one encode
  const plan = planWindows(tokens.length, seqs, windowsRequested, options.textFile);
  const warnings: string[] = [];
  const warn = (m: string) => {
    warnings.push(m);
    options.onWarning?.(m);
  };

  const runner = await ModelRunner.open(options.modelDir, { microBatchTokens: options.microBatchTokens });
  try {
    const spec = runner.spec;
    for (const seq of seqs)
      if (seq > spec.maxPositionEmbeddings)
        warn(`seq ${seq} exceeds the model's max_position_embeddings ${spec.maxPositionEmbeddings}; positions beyond it were not trained`);
    plan.warnings.forEach(warn);
    if (tokenizer.vocabSize > spec.vocabSize) {
      // ids beyond the embedding would fail later; only a problem when the text uses them
      const used = Math.max(...seqs.map((s, i) => s * plan.windows[i]));
      let max = 0;
      for (let i = 0; i < used; i++) if (tokens[i] > max) max = tokens[i];
      if (max >= spec.vocabSize)
        throw new GqaError('ERR_TOKEN_ID', `token id ${max} of ${tokenizer.path} is >= vocab_size ${spec.vocabSize} of the model`);
    }
    const batches = seqs.map((seq, i) => Math.min(plan.windows[i], options.batch ?? Math.max(1, Math.floor(HIDDEN_BUDGET_BYTES / (seq * spec.hiddenSize * 4)))));
    const perPass = spec.numLayers + 2;
    const total = seqs.reduce((a, _s, i) => a + Math.ceil(plan.windows[i] / batches[i]) * perPass, 0);
    let doneBefore = 0;
    const contexts: PplContextResult[] = [];
    for (let i = 0; i < seqs.length; i++) {
      const steps = { doneBefore, total, perPass };
      contexts.push(await scoreLength(runner, tokens, { seq: seqs[i], windows: plan.windows[i], windowsRequested, batch: batches[i] }, steps, options));
      doneBefore += Math.ceil(plan.windows[i] / batches[i]) * perPass;
    }
    const last = contexts[contexts.length - 1];
    options.onProgress?.({ stage: 'done', done: total, total, windowsDone: last.windows, windows: last.windows, seq: last.seq });
    const { seconds: _s, ...first } = contexts[0];
    return { ...first, contexts, warnings, textTokens: tokens.length, maxPositionEmbeddings: spec.maxPositionEmbeddings, seconds: (performance.now() - t0) / 1000 };
  } finally {
    await runner.close();
  }
}

interface LengthPlan {
  seq: number;
  windows: number;
  windowsRequested: number;
  batch: number;
}

/** Scores the first `plan.windows` windows of `plan.seq` tokens (layer-streamed passes of `plan.batch` windows). */
async function scoreLength(
  runner: ModelRunner,
  tokens: Int32Array,
  plan: LengthPlan,
  steps: { doneBefore: number; total: number; perPass: number },
  options: EvalPplOptions,
): Promise<PplContextResult> {
  const t0 = performance.now();
  const { seq, windows, batch } = plan;
  const passes = Math.ceil(windows / batch);
  const buckets = new BucketAccumulator(seq);
  const windowNll: number[] = [];
  let window0Nll = new Float64Array(0);
  let sum = 0;
  for (let p = 0; p < passes; p++) {
    const w0 = p * batch;
    const n = Math.min(batch, windows - w0);
    const ids = tokens.slice(w0 * seq, (w0 + n) * seq);
    const nll = await runner.nll(ids, n, seq, {
      signal: options.signal,
      onStep: (s: RunStep) =>
        options.onProgress?.({ stage: s.stage, layer: s.layer, done: steps.doneBefore + p * steps.perPass + s.done, total: steps.total, windowsDone: w0, windows, seq }),
    });
    for (let s = 0; s < n; s++) {
      let ws = 0;
      for (let t = 0; t < seq - 1; t++) ws += nll[s * (seq - 1) + t];
      windowNll.push(ws);
      sum += ws;
    }
    buckets.add(nll, n);
    if (p === 0) window0Nll = nll.slice(0, seq - 1);
  }
  const tokensScored = windows * (seq - 1);
  const meanNll = sum / tokensScored;
  return {
    seq,
    ppl: Math.exp(meanNll),
    windows,
    windowsRequested: plan.windowsRequested,
    tokensScored,
    meanNll,
    windowNll,
    window0Nll,
    buckets: buckets.result(),
    seconds: (performance.now() - t0) / 1000,
  };
}
