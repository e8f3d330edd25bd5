/**
 * Child process of the memory test: runs eval-ppl on a model directory and prints its
 * result and the process's peak resident set size (process.resourceUsage().maxRSS, KiB),
 * collecting garbage at each progress event (test/helpers/rss-gc.ts).
 * Usage: tsx test/helpers/rss-eval-ppl.ts <model-dir> <text-file> <seq> <windows>
 */
import { evalPpl } from '../../src/eval/ppl.js';
import { collect } from './rss-gc.js';

const [modelDir, textFile, seq, windows] = process.argv.slice(2);
const r = await evalPpl({ modelDir, textFile, seq: Number(seq), windows: Number(windows), onProgress: () => collect() });
process.stdout.write(`${JSON.stringify({ ppl: r.ppl, windows: r.windows, maxRssKiB: process.resourceUsage().maxRSS })}\n`);
