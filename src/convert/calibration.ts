/**
 * Calibration data: `samples + heldOut` windows of `seqlen` consecutive tokens whose
 * start offsets are drawn from a seeded generator over the tokenized calibration text.
 * The first `samples` windows feed the statistics; the held-out ones only measure the
 * attention-output error and drive per-layer choices (never the evaluation text).
 */
import { usageError } from '../errors.js';

/** A small, fast, seedable generator (SplitMix32 variant); returns floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    z = (z ^ (z >>> 16)) >>> 0;
    return z / 4294967296;
  };
}

/** Token windows for calibration. */
export interface CalibrationSet {
  /** [count, seqlen] token ids, statistics windows first, then held-out ones */
  ids: Int32Array;
  samples: number;
  heldOut: number;
  seqlen: number;
  offsets: number[];
}

/** Draws the calibration windows from a tokenized text. */
export function drawCalibration(tokens: ArrayLike<number>, samples: number, heldOut: number, seqlen: number, seed: number): CalibrationSet {
  const n = tokens.length;
  if (n < seqlen)
    throw usageError('ERR_CALIB_TOO_SHORT', `calibration text has ${n} tokens, fewer than one window of calibSeqlen = ${seqlen}`);
  const rand = seededRandom(seed);
  const count = samples + heldOut;
  const ids = new Int32Array(count * seqlen);
  const offsets: number[] = [];
  for (let s = 0; s < count; s++) {
    const off = Math.floor(rand() * (n - seqlen + 1));
    offsets.push(off);
    for (let t = 0; t < seqlen; t++) ids[s * seqlen + t] = tokens[off + t];
  }
  return { ids, samples, heldOut, seqlen, offsets };
}
