/**
 * Tokenizing a long calibration text on several threads, with exactly the ids of one
 * whole-text encode.
 *
 * The text is cut at line starts (after '\n', before a non-space character) into one chunk
 * per worker. A cut is used only when it is transparent to this tokenizer: a window of text
 * around it (itself bounded by line starts) must encode to the concatenation of its two
 * halves' encodings. Pre-tokenizers that split on regular expressions (byte-level BPE:
 * Llama 3, Qwen2, Mistral) pass; tokenizers that prepend a marker to the start of the text
 * (SentencePiece-style Metaspace, add_prefix_space) fail the check and encode the whole text
 * on the calling thread, as do short texts and environments that cannot start the workers.
 */
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { ModelTokenizer } from './tokenize.js';

/** Texts shorter than this are encoded on the calling thread. */
const MIN_PARALLEL_CHARS = 1 << 20;
/** Characters of context on each side of a cut in its transparency check. */
const CHECK_CHARS = 2048;
/** At most this many workers. */
const MAX_WORKERS = 8;

const isSpace = (c: string) => /\s/.test(c);

/** The first line start at or after `from` (before `limit`), or -1. */
function lineStart(text: string, from: number, limit: number): number {
  for (let p = Math.max(1, from); p < limit; p++) if (text[p - 1] === '\n' && !isSpace(text[p])) return p;
  return -1;
}

function sameIds(a: Int32Array, b: Int32Array, c: Int32Array): boolean {
  if (a.length !== b.length + c.length) return false;
  for (let i = 0; i < b.length; i++) if (a[i] !== b[i]) return false;
  for (let i = 0; i < c.length; i++) if (a[b.length + i] !== c[i]) return false;
  return true;
}

/** Whether cutting `text` at `p` leaves the encoding unchanged around it. */
function transparentCut(tok: ModelTokenizer, text: string, p: number): boolean {
  const a = lineStart(text, p - CHECK_CHARS, p);
  const b = lineStart(text, p + CHECK_CHARS, text.length);
  const w0 = a < 0 ? 0 : a;
  const w1 = b < 0 ? text.length : b;
  return sameIds(tok.encode(text.slice(w0, w1)), tok.encode(text.slice(w0, p)), tok.encode(text.slice(p, w1)));
}

/** Cut points splitting `text` into about `parts` chunks, or null when some cut is not transparent. */
export function chooseCuts(tok: ModelTokenizer, text: string, parts: number): number[] | null {
  const cuts: number[] = [];
  for (let i = 1; i < parts; i++) {
    const p = lineStart(text, Math.floor((i * text.length) / parts), text.length);
    if (p < 0 || (cuts.length > 0 && p <= cuts[cuts.length - 1])) continue;
    if (!transparentCut(tok, text, p)) return null;
    cuts.push(p);
  }
  return cuts;
}

/**
 * The worker: plain JavaScript (it runs the same under tsx, jest and the built package),
 * building the tokenizer exactly as loadTokenizer (src/tokenize.ts) does and encoding one
 * chunk the same way; the parity test (test/tokenize.test.ts) compares the two.
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { Tokenizer } = require(workerData.lib);
const tok = new Tokenizer(workerData.json, workerData.config);
const ids = Int32Array.from(tok.encode(workerData.text, { add_special_tokens: false }).ids);
parentPort.postMessage(ids, [ids.buffer]);
`;

function encodeInWorker(lib: string, files: { json: unknown; config: unknown }, text: string): Promise<Int32Array> {
  return new Promise((resolve, reject) => {
    const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { lib, json: files.json, config: files.config, text } });
    w.once('message', (ids: Int32Array) => resolve(ids));
    w.once('error', reject);
    w.once('exit', (code) => (code !== 0 ? reject(new Error(`tokenizer worker exited with code ${code}`)) : undefined));
  });
}

/** The path of @huggingface/tokenizers' CommonJS build (the worker is CommonJS), or null. */
function tokenizersPath(): string | null {
  try {
    return createRequire(import.meta.url).resolve('@huggingface/tokenizers');
  } catch {
    return null;
  }
}

/** Result of {@link encodeParallel}. */
export interface ParallelEncoding {
  /** the token ids, identical to `tok.encode(text)` */
  ids: Int32Array;
  /** chunks encoded on worker threads (1: the whole text on the calling thread) */
  chunks: number;
}

/**
 * Token ids of `text` (no special tokens), identical to `tok.encode(text)`; long texts are
 * encoded in chunks on worker threads when the cuts are transparent (see the module comment).
 * @param tok the tokenizer (each worker builds its own from `tok.files`)
 * @param workers worker threads to use (default: the available parallelism, at most 8)
 * @param minChars shorter texts are encoded on the calling thread (default 1 Mi characters)
 */
export async function encodeParallel(tok: ModelTokenizer, text: string, workers = Math.min(MAX_WORKERS, availableParallelism()), minChars = MIN_PARALLEL_CHARS): Promise<ParallelEncoding> {
  const here = (): ParallelEncoding => ({ ids: tok.encode(text), chunks: 1 });
  if (workers < 2 || text.length < minChars) return here();
  const lib = tokenizersPath();
  if (!lib) return here();
  const cuts = chooseCuts(tok, text, workers);
  if (!cuts || cuts.length === 0) return here();
  const bounds = [0, ...cuts, text.length];
  let parts: Int32Array[];
  try {
    parts = await Promise.all(bounds.slice(0, -1).map((b, i) => encodeInWorker(lib, tok.files, text.slice(b, bounds[i + 1]))));
  } catch {
    return here(); // a worker could not run here: the same ids, on this thread
  }
  const out = new Int32Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return { ids: out, chunks: parts.length };
}
