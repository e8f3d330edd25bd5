/**
 * KV-cache sizes: bytes per token and GiB per sequence for a number of cached values per
 * token (all layers), as served in bf16 unless told otherwise.
 */

/** Bytes per cached value in bf16. */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
export const BF16_BYTES = 2;

/** Context lengths of the report's KV-cache table (tokens). */
export const REPORT_CONTEXT_LENGTHS = [4096, 8192, 16384, 32768, 65536, 131072] as const;

const GIB = 1024 ** 3;

/** Bytes per token for `valuesPerToken` cached values (all layers). */
export function kvBytesPerToken(valuesPerToken: number, bytesPerValue = BF16_BYTES): number {
  return valuesPerToken * bytesPerValue;
}

/** GiB (2^30 bytes) of KV cache for one sequence of `tokens` tokens. */
export function kvGiBPerSequence(valuesPerToken: number, tokens: number, bytesPerValue = BF16_BYTES): number {
  return (valuesPerToken * bytesPerValue * tokens) / GIB;
}

/** `4096` -> `4K`, `131072` -> `128K`, `1000` -> `1000`. */
export function contextLabel(tokens: number): string {
  if (tokens >= 1024 * 1024 && tokens % (1024 * 1024) === 0) return `${tokens / (1024 * 1024)}M`;
  if (tokens >= 1024 && tokens % 1024 === 0) return `${tokens / 1024}K`;
  return String(tokens);
}

/** One row of a KV-cache table. */
export interface KvCacheRow {
  tokens: number;
  label: string;
  beforeGiB: number;
  afterGiB: number;
  savedGiB: number;
}

/** GiB per sequence before and after for each context length. */
export function kvCacheRows(
  valuesBefore: number,
  valuesAfter: number,
  contexts: readonly number[] = REPORT_CONTEXT_LENGTHS,
  bytesPerValue = BF16_BYTES,
): KvCacheRow[] {
  return contexts.map((tokens) => {
    const beforeGiB = kvGiBPerSequence(valuesBefore, tokens, bytesPerValue);
    const afterGiB = kvGiBPerSequence(valuesAfter, tokens, bytesPerValue);
    return { tokens, label: contextLabel(tokens), beforeGiB, afterGiB, savedGiB: beforeGiB - afterGiB };
  });
}

/** max_position_embeddings from `<dir>/config.json`, undefined when unreadable. */
export async function maxPositionsOf(dir: string): Promise<number | undefined> {
  try {
    const v = (JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as { max_position_embeddings?: unknown }).max_position_embeddings;
    return typeof v === 'number' && Number.isInteger(v) && v > 0 ? v : undefined;
  } catch {
    return undefined;
  }
}
