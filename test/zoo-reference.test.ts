/**
 * The development zoo (bench/zoo/models) through our engine: eval-ppl equals transformers'
 * float32 reference (reference.json, computed on the GPU machine by bench/zoo/train.py) on
 * the first windows at 512 and 2048 tokens. Covers llama3 rope scaling with head_dim 128,
 * MHA, Qwen2 biases with an explicit head_dim, a 12-layer Mistral, GQA 8:1, Qwen3's per-head
 * q/k RMSNorm and Mixtral's sparse mixture-of-experts MLP (4 experts, top-2 routing).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { evalPpl } from '../src/eval/ppl.js';

const ZOO = 'bench/zoo/models';
const EVAL = 'test/fixtures/pydocs-eval.txt';
const names = readdirSync(ZOO).filter((n) => n.startsWith('zoo-'));

interface Ref {
  contexts: Array<{ seq: number; ppl_per_window_first8: number[] }>;
}

test('the zoo has its seven models', () => {
  expect(names.sort()).toEqual(['zoo-gqa8-h64', 'zoo-llama2-mha', 'zoo-llama31', 'zoo-mistral-deep', 'zoo-mixtral', 'zoo-qwen25', 'zoo-qwen3']);
});

// 2048 tokens for the two whose rope or biases matter most there (CPU time in CI)
const LONG = ['zoo-llama31', 'zoo-qwen25'];

test.each(names.flatMap((n) => [[n, 512, 4] as const, ...(LONG.includes(n) ? [[n, 2048, 1] as const] : [])]))('%s at %i tokens (%i windows) equals transformers float32', async (name, seq, windows) => {
  const ref = JSON.parse(readFileSync(join(ZOO, name, 'reference.json'), 'utf8')) as Ref;
  const perWindow = ref.contexts.find((c) => c.seq === seq)!.ppl_per_window_first8.slice(0, windows);
  const expected = Math.exp(perWindow.reduce((s, p) => s + Math.log(p), 0) / windows);
  const r = await evalPpl({ modelDir: join(ZOO, name), textFile: EVAL, seq, windows });
  expect(r.windows).toBe(windows);
  expect(Math.abs(r.ppl - expected) / expected).toBeLessThan(1e-5);
}, 120000);
