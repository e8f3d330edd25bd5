/**
 * Evaluation of a conversion at several context lengths, as stored in
 * conversion-report.json under `eval` (written by `convert --eval-text` with
 * `--eval-seq 512,2048,...`; report.html draws its verdict and NLL-by-position chart from it).
 *
 * Field shape (version 1):
 * ```
 * eval: {
 *   version: 1,
 *   textFile: string,            // the evaluation text
 *   windowsRequested: number,    // windows asked for at each length
 *   protocol: string,            // the eval-ppl protocol in words
 *   contexts: [{                 // one per --eval-seq length, in the order given
 *     seq: number,               // tokens per window
 *     windows: number,           // windows scored (fewer than requested when the text is short)
 *     tokensScored: number,      // windows x (seq - 1)
 *     beyondMaxPosition: boolean,// seq > the source's max_position_embeddings
 *     source:    { ppl, meanNll, buckets: [{ from, to, count, meanNll, ppl }] },
 *     converted: { ppl, meanNll, buckets: [...] },   // same buckets as source
 *     pplRatio: number,          // converted.ppl / source.ppl
 *   }],
 *   warnings: string[],          // as eval-ppl reports them (source first, then converted)
 * }
 * ```
 * Buckets: positions of the scored tokens inside the window, [0, 64), [64, 256),
 * [256, 1024), [1024, 2048), then doubling, the last capped at seq - 1 (src/eval/buckets.ts).
 * The report's older `ppl: { before, after, protocol }` stays, holding the first length.
 */
import { GqaError } from '../errors.js';
import type { NllBucket } from './buckets.js';
import type { PplContextResult, PplResult } from './ppl.js';

/** One model's numbers at one length. */
export interface ContextSide {
  ppl: number;
  meanNll: number;
  buckets: NllBucket[];
}

/** Source and converted model at one length. */
export interface ContextEval {
  seq: number;
  windows: number;
  tokensScored: number;
  beyondMaxPosition: boolean;
  source: ContextSide;
  converted: ContextSide;
  pplRatio: number;
}

/** `conversion-report.json`'s `eval` field. */
export interface ConversionEval {
  version: 1;
  textFile: string;
  windowsRequested: number;
  protocol: string;
  contexts: ContextEval[];
  warnings: string[];
}

/** The protocol in words, for lengths `seqs`. */
export function evalProtocol(textFile: string, seqs: number[], windows: number): string {
  const lens = seqs.join(', ');
  return `eval-ppl: at each length of [${lens}] tokens, the first ${windows} non-overlapping windows from offset 0 of ${textFile}, tokens 1..seq-1 of each scored`;
}

function side(c: PplContextResult): ContextSide {
  return { ppl: c.ppl, meanNll: c.meanNll, buckets: c.buckets };
}

/**
 * Pairs the source's and the converted model's evaluations (same text, lengths and windows)
 * into the report field (`beyondMaxPosition` from the source's max_position_embeddings).
 */
export function buildConversionEval(textFile: string, source: PplResult, converted: PplResult): ConversionEval {
  if (source.contexts.length !== converted.contexts.length || source.contexts.some((c, i) => c.seq !== converted.contexts[i].seq || c.windows !== converted.contexts[i].windows))
    throw new GqaError('ERR_EVAL_MISMATCH', 'source and converted evaluations must cover the same lengths and windows', 'runtime');
  const contexts = source.contexts.map((s, i): ContextEval => {
    const c = converted.contexts[i];
    return {
      seq: s.seq,
      windows: s.windows,
      tokensScored: s.tokensScored,
      beyondMaxPosition: s.seq > source.maxPositionEmbeddings,
      source: side(s),
      converted: side(c),
      pplRatio: c.ppl / s.ppl,
    };
  });
  const seqs = contexts.map((c) => c.seq);
  const windowsRequested = source.contexts[0].windowsRequested;
  return {
    version: 1,
    textFile,
    windowsRequested,
    protocol: evalProtocol(textFile, seqs, windowsRequested),
    contexts,
    warnings: [...source.warnings.map((w) => `source: ${w}`), ...converted.warnings.map((w) => `converted: ${w}`)],
  };
}
