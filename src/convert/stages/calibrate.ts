/**
 * Stage 1, calibrate: the calibration text -> token ids -> statistics and held-out windows.
 *
 * Invariant: the windows depend only on the text, the tokenizer and (samples, held-out,
 * seqlen, seed); the parallel tokenization yields the ids of one encode of the whole text.
 */
import { readFile } from 'node:fs/promises';
import { GqaError } from '../../errors.js';
import { loadTokenizer } from '../../tokenize.js';
import { encodeParallel } from '../../tokenize-parallel.js';
import { drawCalibration } from '../calibration.js';
import { defaultContextWindows, drawHeldOutWindows, resolveContext, sampleContextQueries } from '../held-out-context.js';
import { servedContextWeights } from '../layer-ops.js';
import type { ResolvedOptions } from '../options.js';
import type { ContextWindows, Windows } from './context.js';

/** Input of {@link calibrate}. */
export interface CalibrateInput {
  modelDir: string;
  calibText?: string;
  calibFile?: string;
  /** the model's max_position_embeddings (bounds the default context) */
  maxPositionEmbeddings: number;
  /** the window settings (shared by every target of a run) */
  opt: Pick<ResolvedOptions, 'calibSamples' | 'heldOutSamples' | 'calibSeqlen' | 'seed' | 'context' | 'contextWindows' | 'contextQueries'>;
}

/** Tokenizes the calibration text and draws the windows. */
export async function calibrate(input: CalibrateInput): Promise<Windows> {
  const { opt } = input;
  const text = input.calibText ?? (await readCalibText(input.calibFile));
  const tokenizer = await loadTokenizer(input.modelDir);
  const { ids: tokens } = await encodeParallel(tokenizer, text); // same ids as one encode
  const calib = drawCalibration(tokens, opt.calibSamples, opt.heldOutSamples, opt.calibSeqlen, opt.seed);
  const S = opt.calibSeqlen;
  const count = calib.samples + calib.heldOut;
  const long = contextWindows(input, tokens);
  return { calib, tokens: tokens.length, seqlen: S, statRows: calib.samples * S, allRows: count * S, count, long };
}

/** The held-out windows at the serving context, or null when it is not longer than calibSeqlen. */
function contextWindows(input: CalibrateInput, tokens: ArrayLike<number>): ContextWindows | null {
  const { opt } = input;
  const r = resolveContext({ context: opt.context ?? undefined }, input.maxPositionEmbeddings, tokens.length, opt.heldOutSamples * opt.calibSeqlen);
  if (r.context <= opt.calibSeqlen) return null;
  const n = opt.contextWindows ?? defaultContextWindows(opt.heldOutSamples, opt.calibSeqlen, r.context);
  const w = drawHeldOutWindows(tokens, n, r.context, opt.seed);
  const q = opt.contextQueries;
  const queries = q < r.context ? sampleContextQueries(servedContextWeights(r.context), n, q) : null;
  return { ids: w.ids, count: n, seqlen: r.context, rows: n * r.context, from: r.from, offsets: w.offsets, queries };
}

async function readCalibText(file?: string): Promise<string> {
  if (!file) throw new GqaError('ERR_NO_CALIB', 'a calibration text is required (--calib <file>)', 'usage');
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    throw new GqaError('ERR_CALIB_READ', `cannot read calibration text ${file}: ${(e as Error).message}`, 'input');
  }
}
