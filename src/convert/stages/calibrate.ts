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
import type { ResolvedOptions } from '../options.js';
import type { Windows } from './context.js';

/** Input of {@link calibrate}. */
export interface CalibrateInput {
  modelDir: string;
  calibText?: string;
  calibFile?: string;
  /** the window settings (shared by every target of a run) */
  opt: Pick<ResolvedOptions, 'calibSamples' | 'heldOutSamples' | 'calibSeqlen' | 'seed'>;
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
  return { calib, tokens: tokens.length, seqlen: S, statRows: calib.samples * S, allRows: count * S, count };
}

async function readCalibText(file?: string): Promise<string> {
  if (!file) throw new GqaError('ERR_NO_CALIB', 'a calibration text is required (--calib <file>)', 'usage');
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    throw new GqaError('ERR_CALIB_READ', `cannot read calibration text ${file}: ${(e as Error).message}`, 'input');
  }
}
