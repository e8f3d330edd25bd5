/**
 * Output safety: --force replaces only an empty directory or a previous gqa2mla output; an
 * output that is, contains or lies inside the source (or an input) is refused with exit 2;
 * nothing outside the output is deleted; every check runs before any work.
 */
import { createHash } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { convert } from '../src/convert/convert.js';
import { OUTPUT_MARKER, readOutputMarker } from '../src/checkpoint/output-guard.js';
import { checkConversionMemory } from '../src/convert/memory-estimate.js';
import { loadModelSpec } from '../src/model/spec.js';
import { expectOneLineError, runCli } from './helpers/run-cli.js';

const FIXTURE = 'test/fixtures/tiny-llama-gqa';
const CALIB = 'test/fixtures/pydocs-eval.txt';
// --context / context = the calibration seqlen (held-out windows of 64 tokens): output safety does not
// depend on the held-out window length, and the serving-context default's longer windows only add CPU time
const fast = ['--calib', CALIB, '--calib-samples', '8', '--calib-seqlen', '64', '--held-out', '2', '--context', '64', '--method', 'transmla', '--freqfold', '2', '--qk-rope-dim', '32', '--kv-lora-rank', '64'];
const fastApi = { calibFile: CALIB, calibSamples: 8, calibSeqlen: 64, heldOutSamples: 2, context: 64, method: 'transmla' as const, freqfold: 2, qkRopeDim: 32, kvLoraRank: 64, device: 'cpu' as const };

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'gqa2mla-safety-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** sha256 of every file under `dir`, by relative path. */
function tree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of readdirSync(d)) {
      const p = join(d, e);
      if (statSync(p).isDirectory()) walk(p);
      else out[relative(dir, p)] = createHash('sha256').update(readFileSync(p)).digest('hex');
    }
  };
  walk(dir);
  return out;
}

/** A private copy of the fixture (a refusal that failed would delete only this). */
function sourceCopy(name: string): string {
  const dir = join(tmp, name);
  cpSync(FIXTURE, dir, { recursive: true });
  return dir;
}

test('convert src src --force: exit 2, the source intact byte for byte', async () => {
  const src = sourceCopy('same');
  const before = tree(src);
  const r = await runCli('convert', src, src, ...fast, '--force');
  expect(r.code).toBe(2);
  expectOneLineError(r, 'is the source model');
  expect(tree(src)).toEqual(before);
  expect(existsSync(`${src}.partial`)).toBe(false);
});

test('convert parent/model parent --force: exit 2, the source and unrelated files intact', async () => {
  const parent = join(tmp, 'parent');
  mkdirSync(parent);
  const src = join(parent, 'model');
  cpSync(FIXTURE, src, { recursive: true });
  writeFileSync(join(parent, 'notes.txt'), 'mine\n');
  const before = tree(parent);
  const r = await runCli('convert', src, parent, ...fast, '--force');
  expect(r.code).toBe(2);
  expectOneLineError(r, 'contains the source model');
  expect(tree(parent)).toEqual(before);
  // the same through a trailing slash and a relative path
  const r2 = await runCli('convert', src, `${relative(process.cwd(), parent)}/`, ...fast, '--force');
  expect(r2.code).toBe(2);
  expect(tree(parent)).toEqual(before);
});

test('an output inside the source is refused', async () => {
  const src = sourceCopy('inside');
  const before = tree(src);
  const r = await runCli('convert', src, join(src, 'mla'), ...fast, '--force');
  expect(r.code).toBe(2);
  expectOneLineError(r, 'lies inside the source model');
  expect(tree(src)).toEqual(before);
});

test('a folder with foreign files is refused with --force, naming them', async () => {
  const out = join(tmp, 'foreign');
  mkdirSync(out);
  writeFileSync(join(out, 'thesis.tex'), 'x');
  writeFileSync(join(out, 'data.bin'), 'y');
  const before = tree(out);
  const r = await runCli('convert', FIXTURE, out, ...fast, '--force');
  expect(r.code).toBe(2);
  expectOneLineError(r, 'thesis.tex');
  expect(r.err).toContain('data.bin');
  expect(tree(out)).toEqual(before);
  // without --force: exists
  const r2 = await runCli('convert', FIXTURE, out, ...fast);
  expect(r2.code).toBe(2);
  expectOneLineError(r2, '--force');
});

test('an input file inside the output is refused', async () => {
  const out = join(tmp, 'holds-calib');
  mkdirSync(out);
  cpSync(CALIB, join(out, 'calib.txt'));
  const r = await runCli('convert', FIXTURE, out, ...fast.slice(2), '--calib', join(out, 'calib.txt'), '--force');
  expect(r.code).toBe(2);
  expectOneLineError(r, 'lies inside the output directory');
  expect(existsSync(join(out, 'calib.txt'))).toBe(true);
});

test('an empty directory is used; a previous output is replaced with --force; a foreign file added to it blocks that', async () => {
  const out = join(tmp, 'empty');
  mkdirSync(out);
  const r = await runCli('convert', FIXTURE, out, ...fast, '--quiet');
  expect(r.code).toBe(0);
  const marker = readOutputMarker(out);
  expect(marker).toMatchObject({ tool: 'gqa2mla', kind: 'conversion' });
  expect(marker!.files).toEqual(expect.arrayContaining(['config.json', 'conversion-report.json', 'report.html', 'model.safetensors.index.json']));
  expect(readdirSync(out).filter((f) => f !== OUTPUT_MARKER).every((f) => marker!.files.includes(f))).toBe(true);
  const again = await runCli('convert', FIXTURE, out, ...fast, '--force', '--quiet');
  expect(again.code).toBe(0);
  writeFileSync(join(out, 'notes.txt'), 'mine\n');
  const before = tree(out);
  const r3 = await runCli('convert', FIXTURE, out, ...fast, '--force');
  expect(r3.code).toBe(2);
  expectOneLineError(r3, 'notes.txt');
  expect(tree(out)).toEqual(before);
});

test('a sweep over a previous conversion output with --force leaves only the sweep', async () => {
  const out = join(tmp, 'sweep-over');
  expect((await runCli('convert', FIXTURE, out, ...fast, '--quiet')).code).toBe(0);
  const r = await runCli('convert', FIXTURE, out, ...fast.slice(0, -2), '--kv-lora-rank', '32,64', '--force', '--quiet');
  expect(r.code).toBe(0);
  expect(readdirSync(out).sort()).toEqual([OUTPUT_MARKER, 'r32-p32', 'r64-p32', 'report.html', 'sweep.json'].sort());
  expect(readOutputMarker(out)).toMatchObject({ kind: 'sweep' });
  expect(readOutputMarker(join(out, 'r32-p32'))).toMatchObject({ kind: 'conversion' });
});

test('a foreign .partial directory is never removed', async () => {
  const out = join(tmp, 'fp');
  mkdirSync(`${out}.partial`);
  writeFileSync(join(`${out}.partial`, 'keep.txt'), 'k');
  const r = await runCli('convert', FIXTURE, out, ...fast, '--force');
  expect(r.code).toBe(2);
  expectOneLineError(r, 'not an interrupted gqa2mla conversion');
  expect(readFileSync(join(`${out}.partial`, 'keep.txt'), 'utf8')).toBe('k');
});

test('an already aborted signal fails before any work and leaves nothing', async () => {
  const out = join(tmp, 'aborted');
  const c = new AbortController();
  c.abort();
  const stages: string[] = [];
  await expect(convert({ ...fastApi, modelDir: FIXTURE, outDir: out, signal: c.signal, onProgress: (p) => stages.push(p.stage) })).rejects.toMatchObject({ code: 'ERR_ABORTED' });
  expect(stages).toEqual([]);
  expect(existsSync(out) || existsSync(`${out}.partial`)).toBe(false);
});

test('a run stopped before its first layer leaves no partial directory to block the next', async () => {
  const out = join(tmp, 'stopped');
  const c = new AbortController();
  await expect(
    convert({ ...fastApi, modelDir: FIXTURE, outDir: out, signal: c.signal, onProgress: (p) => p.stage === 'embed' && c.abort() }),
  ).rejects.toMatchObject({ code: 'ERR_ABORTED' });
  expect(existsSync(`${out}.partial`)).toBe(false);
  await expect(convert({ ...fastApi, modelDir: FIXTURE, outDir: out })).resolves.toBeDefined();
});

test('a calibration set that cannot fit fails up front, saying what fits, and leaves nothing', async () => {
  const out = join(tmp, 'huge');
  const t0 = performance.now();
  const r = await runCli('convert', FIXTURE, out, ...fast.slice(0, 2), '--calib-samples', '100000', '--calib-seqlen', '256', '--qk-rope-dim', '32', '--kv-lora-rank', '64');
  expect(r.code).toBe(2);
  expectOneLineError(r, 'calibration windows of 256 tokens fit');
  expect(performance.now() - t0).toBeLessThan(3000); // before tokenizing
  expect(existsSync(out) || existsSync(`${out}.partial`)).toBe(false);
});

test('the memory estimate: what fits is the largest count that passes', async () => {
  const spec = await loadModelSpec(FIXTURE);
  const free = 64 * 2 ** 20; // 64 MiB
  const req = { calibSamples: 1000, heldOutSamples: 100, calibSeqlen: 256 };
  let msg = '';
  try {
    checkConversionMemory(spec, req, free);
  } catch (e) {
    msg = (e as Error).message;
  }
  const fit = Number(/at most (\d+) calibration windows/.exec(msg)?.[1]);
  expect(fit).toBeGreaterThan(0);
  expect(() => checkConversionMemory(spec, { ...req, calibSamples: fit - 100 }, free)).not.toThrow();
  expect(() => checkConversionMemory(spec, { ...req, calibSamples: fit - 99 }, free)).toThrow(/at most/);
});
