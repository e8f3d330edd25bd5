/**
 * `gqa2mla convert` through the CLI entry point (stderr is not a TTY here): one progress line
 * per layer with elapsed time and ETA, the warning for float16 subnormal weights, and with
 * --eval-text the greedy samples (source beside converted) stored in conversion-report.json
 * and shown in report.html.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GqaDecoder } from '../src/engine/gqa-decoder.js';
import { MlaDecoder } from '../src/engine/mla-decoder.js';
import { decodeLoop } from '../src/generate.js';
import { loadTokenizer } from '../src/tokenize.js';
import { runCli } from './helpers/run-cli.js';

const FIX = join(new URL('.', import.meta.url).pathname, 'fixtures');
const LLAMA = join(FIX, 'tiny-llama-gqa');
// --context = --calib-seqlen (held-out windows of 64 tokens): progress lines, warnings, samples and
// --quiet/--json do not depend on the held-out window length; the default's longer windows only add CPU time
const CHEAP = ['--qk-rope-dim', '32', '--kv-lora-rank', '96', '--calib-samples', '8', '--calib-seqlen', '64', '--held-out', '2', '--context', '64', '--method', 'transmla', '--freqfold', '2', '--balance-kv', '1'];
let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'gqa2mla-cli-x-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

test('--dtype F16 --eval-text: per-layer progress lines, the subnormal warning, greedy samples in the report', async () => {
  const out = join(tmp, 'f16');
  const r = await runCli('convert', LLAMA, out, '--calib', join(FIX, 'pydocs-train-3M.txt'), ...CHEAP, '--dtype', 'F16', '--eval-text', join(FIX, 'pydocs-eval.txt'), '--eval-seq', '128', '--eval-windows', '2');
  expect(r.code).toBe(0);
  const lines = r.err.trimEnd().split('\n');
  const layerLines = lines.filter((l) => /^gqa2mla: layers \d\/4 done, elapsed [\d.]+ s, ETA ([\d.]+ s|--)$/.test(l));
  expect(layerLines.map((l) => l.split(' ')[2])).toEqual(['1/4', '2/4', '3/4', '4/4']);
  expect(layerLines[1]).not.toContain('ETA --'); // a finite ETA once a layer is done
  expect(lines).toContain('gqa2mla: tokenizing the calibration text');
  const report = JSON.parse(readFileSync(join(out, 'conversion-report.json'), 'utf8'));
  const total = report.layers.reduce((s: number, l: { latentNorm: { subnormalWeights: number } | null }) => s + (l.latentNorm?.subnormalWeights ?? 0), 0);
  expect(total).toBeGreaterThan(0);
  expect(lines.filter((l) => l.startsWith('gqa2mla: warning: '))).toEqual([expect.stringContaining(`${total} stored attention weights are F16 subnormals`)]);
  // samples: 3 prompts of 24 tokens, 32 greedy tokens each, equal to running the decoders directly
  const s = report.samples;
  expect(s.items).toHaveLength(3);
  expect(s.promptTokens).toBe(24);
  const tok = await loadTokenizer(LLAMA);
  const src = await GqaDecoder.open(LLAMA);
  const cvt = await MlaDecoder.open(out);
  try {
    for (const it of s.items) {
      expect(it.promptIds).toHaveLength(24);
      expect(it.prompt).toBe(tok.decode(it.promptIds));
      const eos = new Set<number>([0]);
      const a = await decodeLoop({ decoder: src, vocabSize: src.spec.vocabSize, tok, prompt: it.promptIds, maxNewTokens: 32, eos, sampling: { temperature: 0, topP: 1, random: Math.random } });
      const b = await decodeLoop({ decoder: cvt, vocabSize: cvt.spec.vocabSize, tok, prompt: it.promptIds, maxNewTokens: 32, eos, sampling: { temperature: 0, topP: 1, random: Math.random } });
      expect(it.source.tokens).toEqual(a.tokens);
      expect(it.converted.tokens).toEqual(b.tokens);
    }
  } finally {
    await src.close();
    await cvt.close();
  }
  const html = readFileSync(join(out, 'report.html'), 'utf8');
  expect(html).toContain('<section data-section="samples">');
  expect(html).not.toContain('data-absent="samples"');
  expect(html).not.toContain('data-absent="ppl"');
  expect(html).toContain("up to the model's 2K positions");
}, 900000);

test('--quiet and --json: no progress lines', async () => {
  const out = join(tmp, 'quiet');
  const r = await runCli('convert', LLAMA, out, '--calib', join(FIX, 'pydocs-train-3M.txt'), ...CHEAP, '--json');
  expect(r.code).toBe(0);
  expect(r.err).toBe('');
  expect(JSON.parse(r.out).layers).toHaveLength(4);
}, 900000);
