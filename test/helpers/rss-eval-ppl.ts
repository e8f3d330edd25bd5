/**
 * Child process of the memory test: runs eval-ppl on a model directory and prints its
 * result and the process's peak resident set size (process.resourceUsage().maxRSS, KiB).
 * Usage: tsx test/helpers/rss-eval-ppl.ts <model-dir> <text-file> <seq> <windows>
 */
import { evalPpl } from '../../src/eval/ppl.js';

const [modelDir, textFile, seq, windows] = process.argv.slice(2);
const r = await evalPpl({ modelDir, textFile, seq: Number(seq), windows: Number(windows) });
process.stdout.write(`${JSON.stringify({ ppl: r.ppl, windows: r.windows, maxRssKiB: process.resourceUsage().maxRSS })}\n`);
