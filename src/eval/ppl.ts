/**
 * Perplexity with a fixed, documented protocol (also in the README):
 * tokenize the whole text without special tokens; cut non-overlapping windows of `seq`
 * tokens from offset 0; take the first `windows` (fewer when the text is shorter); feed each
 * window and score its tokens 1..seq-1 from their prefixes; ppl = exp(mean NLL over all
 * scored tokens). The model runs layer-streamed on the CPU (float32 compute).
 */
import { readFile } from 'node:fs/promises';
import { ModelRunner, type RunStep } from '../engine/model.js';
import { GqaError, usageError } from '../errors.js';
import { loadTokenizer } from '../tokenize.js';
import { encodeParallel } from '../tokenize-parallel.js';

/** Progress of an evaluation. */
export interface PplProgress {
  stage: 'tokenize' | 'embed' | 'layer' | 'head' | 'done';
  /** decoder layer just applied (stage 'layer') */
  layer?: number;
  /** steps done / total over all passes (a pass = embed + every layer + head) */
  done: number;
  total: number;
  /** windows fully scored so far */
  windowsDone: number;
  windows: number;
}

/** Options of {@link evalPpl}. */
export interface EvalPplOptions {
  /** checkpoint directory (config.json, safetensors, tokenizer.json) */
  modelDir: string;
  /** the evaluation text (exactly one of text / textFile) */
  text?: string;
  /** a UTF-8 file holding the evaluation text */
  textFile?: string;
  /** tokens per window (default 512, >= 2) */
  seq?: number;
  /** windows to score (default 40, >= 1) */
  windows?: number;
  /**
   * Windows per layer-streamed pass (each pass reads every layer once). Default: all
   * windows, capped so the pass's hidden states stay under 512 MiB.
   */
  batch?: number;
  /** tokens per micro-batch inside a layer (bounds activation memory; default 4096) */
  microBatchTokens?: number;
  onProgress?(p: PplProgress): void;
  signal?: AbortSignal;
}

/** Result of {@link evalPpl}. */
export interface PplResult {
  ppl: number;
  /** windows scored */
  windows: number;
  /** windows asked for */
  windowsRequested: number;
  seq: number;
  /** windows x (seq - 1) */
  tokensScored: number;
  /** mean NLL (nats) over the scored tokens */
  meanNll: number;
  /** sum of the NLL of each window's seq-1 scored tokens */
  windowNll: number[];
  /** per-position NLL of window 0 (token t+1 given tokens 0..t), seq-1 entries */
  window0Nll: Float64Array;
  /** tokens of the whole text */
  textTokens: number;
  /** wall time of the whole evaluation, seconds */
  seconds: number;
}

const HIDDEN_BUDGET_BYTES = 512 * 2 ** 20;

function checkInt(v: number, name: string, min: number): number {
  if (!Number.isInteger(v) || v < min) throw usageError('ERR_BAD_OPTION', `${name} must be an integer >= ${min} (got ${v})`);
  return v;
}

/** Scores `options.windows` windows of `options.seq` tokens of a text; see the module doc. */
export async function evalPpl(options: EvalPplOptions): Promise<PplResult> {
  const t0 = performance.now();
  const seq = checkInt(options.seq ?? 512, 'seq', 2);
  const windowsRequested = checkInt(options.windows ?? 40, 'windows', 1);
  if (options.batch !== undefined) checkInt(options.batch, 'batch', 1);
  if ((options.text === undefined) === (options.textFile === undefined))
    throw usageError('ERR_BAD_OPTION', 'give exactly one of text or textFile');
  let text = options.text;
  if (text === undefined) {
    try {
      text = await readFile(options.textFile!, 'utf8');
    } catch (e) {
      throw new GqaError('ERR_TEXT_READ', `cannot read text file ${options.textFile}: ${(e as Error).message}`, 'input', { cause: e });
    }
  }
  const report = (p: Omit<PplProgress, 'windows'>, windows: number) => options.onProgress?.({ ...p, windows });
  report({ stage: 'tokenize', done: 0, total: 0, windowsDone: 0 }, 0);
  const tokenizer = await loadTokenizer(options.modelDir);
  const { ids: tokens } = await encodeParallel(tokenizer, text); // same ids as one encode
  const available = Math.floor(tokens.length / seq);
  if (available < 1)
    throw usageError(
      'ERR_TEXT_TOO_SHORT',
      `the text has ${tokens.length} tokens, fewer than one window of seq = ${seq}${options.textFile ? ` (${options.textFile})` : ''}`,
    );
  const windows = Math.min(windowsRequested, available);

  const runner = await ModelRunner.open(options.modelDir, { microBatchTokens: options.microBatchTokens });
  try {
    const spec = runner.spec;
    if (tokenizer.vocabSize > spec.vocabSize) {
      // ids beyond the embedding would fail later; only a problem when the text uses them
      let max = 0;
      for (let i = 0; i < windows * seq; i++) if (tokens[i] > max) max = tokens[i];
      if (max >= spec.vocabSize)
        throw new GqaError('ERR_TOKEN_ID', `token id ${max} of ${tokenizer.path} is >= vocab_size ${spec.vocabSize} of the model`);
    }
    const cap = Math.max(1, Math.floor(HIDDEN_BUDGET_BYTES / (seq * spec.hiddenSize * 4)));
    const batch = Math.min(windows, options.batch ?? cap);
    const passes = Math.ceil(windows / batch);
    const perPass = spec.numLayers + 2;
    const total = passes * perPass;
    const windowNll: number[] = [];
    let window0Nll = new Float64Array(0);
    let sum = 0;
    for (let p = 0; p < passes; p++) {
      const w0 = p * batch;
      const n = Math.min(batch, windows - w0);
      const ids = tokens.slice(w0 * seq, (w0 + n) * seq);
      const nll = await runner.nll(ids, n, seq, {
        signal: options.signal,
        onStep: (s: RunStep) => report({ stage: s.stage, layer: s.layer, done: p * perPass + s.done, total, windowsDone: w0 }, windows),
      });
      for (let s = 0; s < n; s++) {
        let ws = 0;
        for (let t = 0; t < seq - 1; t++) ws += nll[s * (seq - 1) + t];
        windowNll.push(ws);
        sum += ws;
      }
      if (p === 0) window0Nll = nll.slice(0, seq - 1);
    }
    const tokensScored = windows * (seq - 1);
    const meanNll = sum / tokensScored;
    report({ stage: 'done', done: total, total, windowsDone: windows }, windows);
    return {
      ppl: Math.exp(meanNll),
      windows,
      windowsRequested,
      seq,
      tokensScored,
      meanNll,
      windowNll,
      window0Nll,
      textTokens: tokens.length,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    await runner.close();
  }
}
