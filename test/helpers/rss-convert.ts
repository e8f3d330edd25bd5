/**
 * Child process of the conversion memory test: converts a model directory and prints the
 * process's peak resident set size (process.resourceUsage().maxRSS, KiB), collecting
 * garbage at each progress event (test/helpers/rss-gc.ts).
 * Usage: tsx test/helpers/rss-convert.ts <model-dir> <out-dir> <calib-text-file>
 */
import { convert } from '../../src/convert/convert.js';
import { collect } from './rss-gc.js';

const [modelDir, outDir, calibFile] = process.argv.slice(2);
const r = await convert({
  modelDir,
  outDir,
  calibFile,
  calibSamples: 16,
  calibSeqlen: 128,
  heldOutSamples: 4,
  // serving-context windows kept in the run (context > calibSeqlen, so their hidden states are part of
  // the measured peak) but at 256 tokens: the default here, 1024 (2 x the held-out tokens), costs
  // several times the CPU time and does not change what grows with depth
  context: 256,
  qkRopeDim: 32,
  kvLoraRank: 64,
  freqfold: 2,
  method: 'transmla',
  onProgress: () => collect(),
});
process.stdout.write(`${JSON.stringify({ layers: r.layers.length, maxRssKiB: process.resourceUsage().maxRSS })}\n`);
