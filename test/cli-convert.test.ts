/**
 * `gqa2mla convert` through the real CLI entry point: --json report shape, sweep JSON,
 * usage errors (exit 2) and input errors (exit 3).
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expectOneLineError, runCli } from './helpers/run-cli.js';

const LLAMA = 'test/fixtures/tiny-llama-gqa';
const CALIB = 'test/fixtures/pydocs-eval.txt';
// --context = --calib-seqlen: the held-out windows of 64 tokens; these tests are about the CLI, not the
// held-out window length, and the serving-context default's longer windows only add CPU time
const fast = ['--calib', CALIB, '--calib-samples', '8', '--calib-seqlen', '64', '--held-out', '2', '--context', '64', '--method', 'transmla', '--freqfold', '2'];
let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'gqa2mla-cli-conv-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

test('--json prints the conversion report', async () => {
  const out = join(tmp, 'a');
  const r = await runCli('convert', LLAMA, out, ...fast, '--qk-rope-dim', '32', '--kv-lora-rank', '64', '--json');
  expect(r.code).toBe(0);
  const j = JSON.parse(r.out);
  expect(j.settings).toMatchObject({ qkRopeDim: 32, kvLoraRank: 64, method: 'transmla' });
  expect(j.kvValuesPerToken).toEqual({ before: 1024, after: 384, perLayerBefore: 256, perLayerAfter: 96, ratio: 256 / 96 });
  expect(j.layers).toHaveLength(4);
  for (const l of j.layers) expect(l.attnRelError).toBeGreaterThan(0);
  expect(Object.keys(j.times)).toEqual(expect.arrayContaining(['read', 'forward', 'statistics', 'factorize', 'evaluate', 'write', 'total']));
  expect(existsSync(join(out, 'report.html'))).toBe(true);
  // existing output without --force: usage error, one line
  const again = await runCli('convert', LLAMA, out, ...fast, '--qk-rope-dim', '32', '--kv-lora-rank', '64');
  expect(again.code).toBe(2);
  expectOneLineError(again, '--force');
});

test('a list of ranks makes a sweep with sweep.json', async () => {
  const out = join(tmp, 'sweep');
  const r = await runCli('convert', LLAMA, out, ...fast, '--qk-rope-dim', '32', '--kv-lora-rank', '32,64', '--json');
  expect(r.code).toBe(0);
  const j = JSON.parse(r.out);
  expect(j.budgets.map((b: { kvLoraRank: number }) => b.kvLoraRank)).toEqual([32, 64]);
  expect(existsSync(join(out, 'sweep.json'))).toBe(true);
  expect(existsSync(join(out, 'r64-p32', 'config.json'))).toBe(true);
});

test.each([
  [['--kv-lora-rank', '300', '--qk-rope-dim', '32'], '--kv-lora-rank 300 exceeds the maximum'],
  [['--qk-rope-dim', '24'], '--qk-rope-dim 24 must be even and divide head_dim 64'],
  [['--freqfold', 'x'], '--freqfold must be an integer'],
  [['--kv-lora-rank', '1,a'], '--kv-lora-rank must be an integer'],
  [['--method', 'foo'], "--method must be 'gqa2mla' or 'transmla'"],
  [['--q-lora-rank', '257', '--qk-rope-dim', '32', '--kv-lora-rank', '64'], '--q-lora-rank 257 must be an integer in [1, 256]'],
  [['--q-lora-rank', '0', '--qk-rope-dim', '32', '--kv-lora-rank', '64'], '--q-lora-rank 0 must be an integer'],
])('usage error %j -> exit 2, one line', async (args, msg) => {
  const r = await runCli('convert', LLAMA, join(tmp, 'never'), '--calib', CALIB, ...args);
  expect(r.code).toBe(2);
  expectOneLineError(r, msg);
  expect(existsSync(join(tmp, 'never'))).toBe(false);
});

test('missing --calib is a usage error; a missing model dir an input error', async () => {
  expect((await runCli('convert', LLAMA, join(tmp, 'x'))).code).toBe(2);
  const r = await runCli('convert', join(tmp, 'nope'), join(tmp, 'x'), '--calib', CALIB);
  expect(r.code).toBe(3);
  expectOneLineError(r, 'nope');
});

test('--target: a usage error names the flag; --json shows the portable block only for portable', async () => {
  const bad = await runCli('convert', LLAMA, join(tmp, 'never-target'), ...fast, '--qk-rope-dim', '32', '--kv-lora-rank', '64', '--target', 'vllm');
  expect(bad.code).toBe(2);
  expectOneLineError(bad, '--target');
  expect(existsSync(join(tmp, 'never-target'))).toBe(false);
  const p = JSON.parse((await runCli('convert', LLAMA, join(tmp, 'tp'), ...fast, '--qk-rope-dim', '32', '--kv-lora-rank', '64', '--json')).out);
  expect(p.portable).toMatchObject({ target: 'portable', rope: { exportedType: 'default', exact: true } });
  const t = JSON.parse((await runCli('convert', LLAMA, join(tmp, 'tt'), ...fast, '--qk-rope-dim', '32', '--kv-lora-rank', '64', '--target', 'transformers', '--json')).out);
  expect(t.portable).toBeUndefined();
  expect(Object.keys(t).sort()).toEqual(Object.keys(p).filter((k) => k !== 'portable').sort());
});
