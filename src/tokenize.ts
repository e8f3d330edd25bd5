/**
 * Tokenization with @huggingface/tokenizers from a checkpoint's own tokenizer.json (and
 * tokenizer_config.json when present), used exactly as stored — no pre-tokenizer is
 * re-derived from the model type — and fully offline: both files are read from disk and
 * handed to the library as objects, so it never touches the network.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { GqaError } from './errors.js';

/** A loaded tokenizer. */
export interface ModelTokenizer {
  /** Token ids of `text` without special tokens (no BOS/EOS added). */
  encode(text: string): Int32Array;
  /** Text of `ids` (special tokens kept). */
  decode(ids: ArrayLike<number>): string;
  /** Largest token id + 1 over the vocabulary and added tokens. */
  readonly vocabSize: number;
  /** The tokenizer.json path it was loaded from. */
  readonly path: string;
  /** The parsed tokenizer.json and tokenizer_config.json ({} when absent) it was built from. */
  readonly files: { json: Record<string, unknown>; config: Record<string, unknown> };
}

async function readJson(path: string, required: boolean): Promise<Record<string, unknown> | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (!required && code === 'ENOENT') return null;
    throw new GqaError(code === 'ENOENT' ? 'ERR_TOKENIZER_MISSING' : 'ERR_TOKENIZER_READ', `cannot read ${path}: ${(e as Error).message}`, 'input', {
      cause: e,
    });
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('not a JSON object');
    return v as Record<string, unknown>;
  } catch (e) {
    throw new GqaError('ERR_TOKENIZER_JSON', `${path} is not valid tokenizer JSON: ${(e as Error).message}`, 'input', { cause: e });
  }
}

/** The parsed `tokenizer.json` and `tokenizer_config.json` (empty when absent) of a model directory. */
async function readTokenizerFiles(modelDir: string): Promise<{ path: string; json: Record<string, unknown>; config: Record<string, unknown> }> {
  const path = join(modelDir, 'tokenizer.json');
  const json = (await readJson(path, true))!;
  const config = (await readJson(join(modelDir, 'tokenizer_config.json'), false)) ?? {};
  return { path, json, config };
}

/** Loads `<modelDir>/tokenizer.json` (+ tokenizer_config.json when present). */
export async function loadTokenizer(modelDir: string): Promise<ModelTokenizer> {
  const { path, json, config } = await readTokenizerFiles(modelDir);
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(json, config);
  } catch (e) {
    throw new GqaError('ERR_TOKENIZER_JSON', `${path}: unsupported tokenizer: ${(e as Error).message}`, 'input', { cause: e });
  }
  let maxId = -1;
  for (const id of tok.get_vocab(true).values()) if (id > maxId) maxId = id;
  return {
    path,
    files: { json, config },
    vocabSize: maxId + 1,
    encode(text: string): Int32Array {
      return Int32Array.from(tok.encode(text, { add_special_tokens: false }).ids);
    },
    decode(ids: ArrayLike<number>): string {
      return tok.decode(Array.from(ids));
    },
  };
}
