/**
 * Text generation: greedy or sampled (temperature, top-p, seeded) decoding of a prompt
 * through the incremental decoders — MlaDecoder (absorbed MLA over the latent cache) for
 * converted deepseek_v3 checkpoints, GqaDecoder (key/value cache) for GQA/MHA sources —
 * with the checkpoint's own tokenizer, streamed token by token to a callback.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GqaDecoder } from './engine/gqa-decoder.js';
import { MlaDecoder } from './engine/mla-decoder.js';
import { GqaError, usageError } from './errors.js';
import { loadModelSpec } from './model/spec.js';
import type { ModelSpec } from './model/spec-types.js';
import { loadTokenizer, type ModelTokenizer } from './tokenize.js';
import { pickToken, type SamplingOptions, seededRandom } from './generate-sampling.js';

export { pickToken, seededRandom, type SamplingOptions } from './generate-sampling.js';

/** Options of {@link generate}. */
export interface GenerateOptions {
  /** checkpoint directory: a converted deepseek_v3 model or a GQA/MHA source */
  modelDir: string;
  /** prompt text (encoded without special tokens; BOS prepended when tokenizer_config.json says add_bos_token) */
  prompt?: string;
  /** prompt token ids instead of `prompt` (used as given) */
  promptIds?: ArrayLike<number>;
  /** tokens to generate at most (default 32) */
  maxNewTokens?: number;
  /** 0 (default): greedy (argmax); > 0: sample from softmax(logits / temperature) */
  temperature?: number;
  /** nucleus sampling: keep the most likely tokens up to this probability mass (default 1) */
  topP?: number;
  /** seed of the sampler (default 0); the same seed gives the same tokens */
  seed?: number;
  /** stop at the model's eos_token_id (default true) */
  stopAtEos?: boolean;
  /** called after each generated token with the text it added (may be '' while a character is incomplete) */
  onToken?: (t: GeneratedToken) => void;
  signal?: AbortSignal;
}

/** One streamed token. */
export interface GeneratedToken {
  id: number;
  /** 0-based index among the generated tokens */
  index: number;
  /** text added by this token */
  text: string;
}

/** Result of {@link generate}. */
export interface GenerateResult {
  modelDir: string;
  /** the decoder used: 'mla' (MlaDecoder, converted checkpoints) or 'gqa' (GqaDecoder, sources) */
  engine: 'mla' | 'gqa';
  promptIds: number[];
  /** generated token ids */
  tokens: number[];
  /** decoded text of the generated tokens */
  text: string;
  /** 'eos' when the model produced its end token, 'length' at maxNewTokens */
  stop: 'eos' | 'length';
  /** seconds spent loading the model, and decoding (prompt + generated tokens) */
  loadSeconds: number;
  seconds: number;
  tokensPerSecond: number;
  sampling: { temperature: number; topP: number; seed: number };
}

/** What generation needs of a decoder (MlaDecoder and GqaDecoder). */
export interface Decoder {
  append(ids: Int32Array): Promise<Float32Array>;
  reset(): void;
  close(): Promise<void>;
}

/** Inputs of one decoding run over an open decoder (reset first). */
export interface DecodeLoopInput {
  decoder: Decoder;
  vocabSize: number;
  tok: ModelTokenizer;
  prompt: number[];
  maxNewTokens: number;
  sampling: SamplingOptions;
  /** token ids that end the run (after being emitted) */
  eos: Set<number>;
  onToken?: (t: GeneratedToken) => void;
  signal?: AbortSignal;
}

/** Tokens, text and stop reason of one run. */
export interface DecodeRun {
  tokens: number[];
  text: string;
  stop: 'eos' | 'length';
}

/** Decodes from `prompt` on an open decoder: prompt in one append, then one token per step. */
export async function decodeLoop(a: DecodeLoopInput): Promise<DecodeRun> {
  a.decoder.reset();
  const tokens: number[] = [];
  let emitted = '';
  let stop: DecodeRun['stop'] = 'length';
  const logits = await a.decoder.append(Int32Array.from(a.prompt));
  let row = logits.subarray((a.prompt.length - 1) * a.vocabSize);
  for (let i = 0; i < a.maxNewTokens; i++) {
    if (a.signal?.aborted) throw new GqaError('ERR_ABORTED', 'generation aborted', 'runtime');
    const id = pickToken(row, a.sampling);
    tokens.push(id);
    const text = textSoFar(a.tok, a.prompt, tokens);
    const piece = text.endsWith('\uFFFD') ? '' : text.slice(emitted.length);
    if (piece) emitted = text;
    a.onToken?.({ id, index: i, text: piece });
    if (a.eos.has(id)) {
      stop = 'eos';
      break;
    }
    if (i + 1 < a.maxNewTokens) row = await a.decoder.append(Int32Array.of(id));
  }
  return { tokens, text: textSoFar(a.tok, a.prompt, tokens), stop };
}

function checkOptions(o: GenerateOptions): Required<Pick<GenerateOptions, 'maxNewTokens' | 'temperature' | 'topP' | 'seed' | 'stopAtEos'>> {
  if (!o || typeof o !== 'object') throw usageError('ERR_BAD_OPTION', 'generate() takes one options object: generate({ modelDir, prompt, ... })');
  if (typeof o.modelDir !== 'string' || o.modelDir === '') throw usageError('ERR_BAD_OPTION', `modelDir must be a non-empty string (got ${typeof o.modelDir})`);
  if ((o.prompt === undefined) === (o.promptIds === undefined)) throw usageError('ERR_BAD_OPTION', 'give exactly one of prompt (text) and promptIds (token ids)');
  if (o.prompt !== undefined && (typeof o.prompt !== 'string' || o.prompt === '')) throw usageError('ERR_BAD_OPTION', 'prompt must be a non-empty string');
  if (o.promptIds !== undefined && o.promptIds.length === 0) throw usageError('ERR_BAD_OPTION', 'promptIds must hold at least one token id');
  const maxNewTokens = o.maxNewTokens ?? 32;
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) throw usageError('ERR_BAD_OPTION', `maxNewTokens must be a positive integer (got ${maxNewTokens})`);
  const temperature = o.temperature ?? 0;
  if (typeof temperature !== 'number' || !Number.isFinite(temperature) || temperature < 0)
    throw usageError('ERR_BAD_OPTION', `temperature must be a number >= 0 (got ${temperature})`);
  const topP = o.topP ?? 1;
  if (typeof topP !== 'number' || !(topP > 0 && topP <= 1)) throw usageError('ERR_BAD_OPTION', `topP must be in (0, 1] (got ${topP})`);
  const seed = o.seed ?? 0;
  if (!Number.isInteger(seed)) throw usageError('ERR_BAD_OPTION', `seed must be an integer (got ${seed})`);
  return { maxNewTokens, temperature, topP, seed, stopAtEos: o.stopAtEos ?? true };
}

/** eos_token_id(s) from config.json and generation_config.json. */
export async function eosIds(modelDir: string, spec: ModelSpec): Promise<Set<number>> {
  const ids = new Set<number>();
  const add = (v: unknown) => {
    for (const x of Array.isArray(v) ? v : [v]) if (Number.isInteger(x)) ids.add(x as number);
  };
  add(spec.raw.eos_token_id);
  try {
    add((JSON.parse(await readFile(join(modelDir, 'generation_config.json'), 'utf8')) as Record<string, unknown>).eos_token_id);
  } catch {
    // no generation_config.json: config.json's id only
  }
  return ids;
}

/** Prompt ids: the given ids, or the encoded text with BOS when the tokenizer config asks for it. */
function promptTokens(o: GenerateOptions, tok: ModelTokenizer, spec: ModelSpec): number[] {
  if (o.promptIds) return Array.from(o.promptIds);
  const ids = Array.from(tok.encode(o.prompt!));
  const bos = spec.raw.bos_token_id;
  if (tok.files.config.add_bos_token === true && Number.isInteger(bos)) ids.unshift(bos as number);
  return ids;
}

/** Text added by the newest token: decode(prompt + generated) past decode(prompt), held back while it ends in an incomplete character. */
function textSoFar(tok: ModelTokenizer, prompt: number[], gen: number[]): string {
  const base = tok.decode(prompt);
  const full = tok.decode([...prompt, ...gen]);
  return full.startsWith(base) ? full.slice(base.length) : tok.decode(gen);
}

/** Opens the decoder that fits the checkpoint. */
export async function openDecoder(modelDir: string, spec: ModelSpec): Promise<{ decoder: Decoder; engine: 'mla' | 'gqa' }> {
  if (spec.mla) return { decoder: await MlaDecoder.open(modelDir), engine: 'mla' };
  return { decoder: await GqaDecoder.open(modelDir), engine: 'gqa' };
}

/**
 * Generates text from a prompt, greedy by default. Converted (deepseek_v3) checkpoints run
 * through {@link MlaDecoder}, GQA/MHA sources through {@link GqaDecoder}; both keep every
 * layer's weights in memory. Options errors are usage GqaErrors naming the option.
 *
 * @example
 * const r = await generate({ modelDir: '/tmp/tiny-mla', prompt: 'The json module', maxNewTokens: 24,
 *   onToken: (t) => process.stdout.write(t.text) });
 * console.log(r.tokens, r.stop);
 */
export async function generate(options: GenerateOptions): Promise<GenerateResult> {
  const o = checkOptions(options);
  const spec = await loadModelSpec(options.modelDir);
  const tok = await loadTokenizer(options.modelDir);
  const prompt = promptTokens(options, tok, spec);
  for (const id of prompt)
    if (!Number.isInteger(id) || id < 0 || id >= spec.vocabSize) throw usageError('ERR_TOKEN_ID', `prompt token id ${id} is outside the vocabulary [0, ${spec.vocabSize})`);
  if (prompt.length + o.maxNewTokens > spec.maxPositionEmbeddings)
    throw usageError('ERR_BAD_OPTION', `prompt (${prompt.length} tokens) + maxNewTokens (${o.maxNewTokens}) exceeds the model's ${spec.maxPositionEmbeddings} positions`);
  const eos = o.stopAtEos ? await eosIds(options.modelDir, spec) : new Set<number>();
  const t0 = performance.now();
  const { decoder, engine } = await openDecoder(options.modelDir, spec);
  const t1 = performance.now();
  let run: DecodeRun;
  try {
    run = await decodeLoop({ decoder, vocabSize: spec.vocabSize, tok, prompt, maxNewTokens: o.maxNewTokens, eos, onToken: options.onToken, signal: options.signal,
      sampling: { temperature: o.temperature, topP: o.topP, random: seededRandom(o.seed) } });
  } finally {
    await decoder.close();
  }
  const { tokens, stop } = run;
  const seconds = (performance.now() - t1) / 1000;
  return {
    modelDir: options.modelDir,
    engine,
    promptIds: prompt,
    tokens,
    text: run.text,
    stop,
    loadSeconds: (t1 - t0) / 1000,
    seconds,
    tokensPerSecond: tokens.length / seconds,
    sampling: { temperature: o.temperature, topP: o.topP, seed: o.seed },
  };
}

/** Index of the first position where `a` and `b` differ (null when one is a prefix of the other and equal length). */
export function firstDivergence(a: number[], b: number[]): number | null {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? null : n;
}
