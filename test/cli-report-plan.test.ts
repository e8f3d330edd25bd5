/**
 * `gqa2mla report` (one conversion, and a budget sweep's directory) and `gqa2mla plan`
 * through the real CLI entry point (in-process): --json output shape, text output, --help,
 * usage errors (2) and input errors (3).
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expectOneLineError, runCli } from './helpers/run-cli.js';
import { renderSweepHtml } from '../src/report/sweep-html.js';
import { syntheticReport, syntheticSweep } from './helpers/synthetic-report.js';

const LLAMA = 'test/fixtures/tiny-llama-gqa';

const cli = runCli;
const oneLine = expectOneLineError;

let tmp: string;
let converted: string;
let sweepDir: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'gqa2mla-cli-rp-'));
  converted = join(tmp, 'converted');
  await mkdir(converted);
  await writeFile(
    join(converted, 'conversion-report.json'),
    JSON.stringify(syntheticReport({ ppl: { before: 15.9, after: 27.1, protocol: 'eval-ppl 40 x 512' } }), null, 2),
  );
  sweepDir = join(tmp, 'sweep');
  await mkdir(sweepDir);
  await writeFile(join(sweepDir, 'sweep.json'), JSON.stringify(syntheticSweep({ outDir: sweepDir, ppl: true }), null, 2));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('gqa2mla report', () => {
  test('--json shape; writes report.html', async () => {
    await rm(join(converted, 'report.html'), { force: true });
    const r = await cli('report', converted, '--json');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    expect(Object.keys(j).sort()).toEqual(['bytes', 'charts', 'kind', 'kvValuesPerToken', 'layers', 'meanAttnRelError', 'ppl', 'reportHtml', 'sections', 'source'].sort());
    expect(j.sections).toEqual({ verdict: true, samples: false, engines: false });
    expect(j.kind).toBe('conversion');
    expect(j.reportHtml).toBe(join(converted, 'report.html'));
    expect(j.source).toBe(join(converted, 'conversion-report.json'));
    expect(j.layers).toBe(4);
    expect(j.charts).toEqual(['kv-cache', 'ppl', 'attn-error', 'variance-kept', 'rope-spectrum', 'pca-spectrum', 'stage-times']);
    expect(j.kvValuesPerToken).toEqual({ before: 1024, after: 512, perLayerBefore: 256, perLayerAfter: 128, ratio: 2 });
    expect(typeof j.meanAttnRelError).toBe('number');
    expect(j.ppl.after).toBe(27.1);
    const html = await readFile(j.reportHtml, 'utf8');
    expect(j.bytes).toBe(Buffer.byteLength(html));
    for (const c of j.charts) expect(html).toContain(`data-chart="${c}"`);
  });

  test('text output', async () => {
    const r = await cli('report', converted);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(new RegExp(`^wrote ${join(converted, 'report.html').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(4 layers, [0-9.]+ KiB\\)\\n$`));
  });

  test('a sweep directory (sweep.json): --json shape; writes the sweep report.html', async () => {
    await rm(join(sweepDir, 'report.html'), { force: true });
    const r = await cli('report', sweepDir, '--json');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    expect(Object.keys(j).sort()).toEqual(['budgets', 'bytes', 'charts', 'kind', 'kvValuesPerTokenPerLayerBefore', 'layers', 'pplBefore', 'reportHtml', 'source'].sort());
    expect(j.kind).toBe('sweep');
    expect(j.reportHtml).toBe(join(sweepDir, 'report.html'));
    expect(j.source).toBe(join(sweepDir, 'sweep.json'));
    expect(j.layers).toBe(4);
    expect(j.charts).toEqual(['sweep-tradeoff', 'sweep-kv-cache', 'sweep-attn-error']);
    expect(j.kvValuesPerTokenPerLayerBefore).toBe(256);
    expect(j.pplBefore).toBe(15.925);
    expect(j.budgets).toHaveLength(6);
    const sweep = JSON.parse(await readFile(join(sweepDir, 'sweep.json'), 'utf8'));
    j.budgets.forEach((b: Record<string, unknown>, i: number) => {
      expect(Object.keys(b).sort()).toEqual(['compression', 'kvLoraRank', 'kvValuesPerTokenPerLayer', 'meanAttnRelError', 'name', 'ppl', 'qkRopeDim', 'reportHtml'].sort());
      const s = sweep.budgets[i];
      expect(b.name).toBe(`r${s.kvLoraRank}-p${s.qkRopeDim}`);
      expect(b.reportHtml).toBe(join(sweepDir, `r${s.kvLoraRank}-p${s.qkRopeDim}`, 'report.html'));
      expect(b).toMatchObject({ kvLoraRank: s.kvLoraRank, qkRopeDim: s.qkRopeDim, kvValuesPerTokenPerLayer: s.kvValuesPerTokenPerLayer, compression: s.compression, meanAttnRelError: s.meanAttnRelError, ppl: s.ppl });
    });
    const html = await readFile(j.reportHtml, 'utf8');
    expect(html).toBe(renderSweepHtml(sweep));
    expect(j.bytes).toBe(Buffer.byteLength(html));
    for (const c of j.charts) expect(html).toContain(`data-chart="${c}"`);
  });

  test('a sweep without ppl: ppl fields are null; text output', async () => {
    const dir = join(tmp, 'sweep-noppl');
    await mkdir(dir);
    await writeFile(join(dir, 'sweep.json'), JSON.stringify(syntheticSweep({ outDir: dir, ranks: [32, 64], ropes: [32] })));
    let r = await cli('report', dir, '--json');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.pplBefore).toBeNull();
    expect(j.budgets.map((b: { name: string; ppl: unknown }) => [b.name, b.ppl])).toEqual([
      ['r32-p32', null],
      ['r64-p32', null],
    ]);
    r = await cli('report', dir);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(new RegExp(`^wrote ${join(dir, 'report.html').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(sweep of 2 budgets, 4 layers, [0-9.]+ KiB\\)\\n$`));
  });

  test('a malformed sweep.json: exit 3, one line naming it, nothing written', async () => {
    const dir = join(tmp, 'sweep-bad');
    await mkdir(dir);
    await writeFile(join(dir, 'sweep.json'), JSON.stringify({ ...syntheticSweep({ outDir: dir }), budgets: [{ dir: 'x' }] }));
    let r = await cli('report', dir, '--json');
    expect(r.code).toBe(3);
    expect(r.out).toBe('');
    oneLine(r, `${join(dir, 'sweep.json')}: budgets[0].kvLoraRank`);
    await writeFile(join(dir, 'sweep.json'), '{"budgets": ');
    r = await cli('report', dir);
    expect(r.code).toBe(3);
    oneLine(r, join(dir, 'sweep.json'));
    expect(existsSync(join(dir, 'report.html'))).toBe(false);
  });

  test('--help has examples', async () => {
    const r = await cli('report', '--help');
    expect(r.code).toBe(0);
    expect(r.out).toContain('Usage: gqa2mla report [options] <converted-dir>');
    expect(r.out).toContain('Examples:');
    expect(r.out).toContain('--json');
    expect(r.out).toContain('sweep.json');
  });

  test('usage errors exit 2', async () => {
    expect((await cli('report')).code).toBe(2);
    expect((await cli('report', converted, '--bogus')).code).toBe(2);
    expect((await cli('report', converted, 'extra')).code).toBe(2);
  });

  test('input errors exit 3 with one line naming the file', async () => {
    const missing = join(tmp, 'missing');
    let r = await cli('report', missing);
    expect(r.code).toBe(3);
    oneLine(r, missing);
    const empty = join(tmp, 'empty');
    await mkdir(empty);
    r = await cli('report', empty, '--json');
    expect(r.code).toBe(3);
    expect(r.out).toBe('');
    oneLine(r, join(empty, 'conversion-report.json'));
    const bad = join(tmp, 'bad');
    await mkdir(bad);
    await writeFile(join(bad, 'conversion-report.json'), '{"source": {');
    r = await cli('report', bad);
    expect(r.code).toBe(3);
    oneLine(r, join(bad, 'conversion-report.json'));
    expect(existsSync(join(bad, 'report.html'))).toBe(false);
  });
});

describe('gqa2mla plan', () => {
  test('--json shape', async () => {
    const r = await cli('plan', LLAMA, '--json');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    expect(Object.keys(j).sort()).toEqual(['budgets', 'bytesPerValue', 'contextTokens', 'limits', 'model', 'original', 'warnings']);
    expect(Object.keys(j.model).sort()).toEqual(['dir', 'headDim', 'hiddenSize', 'maxPositionEmbeddings', 'modelType', 'numHeads', 'numKvHeads', 'numLayers']);
    expect(Object.keys(j.original).sort()).toEqual(['bytesPerToken', 'gibPerSequence', 'valuesPerToken', 'valuesPerTokenPerLayer']);
    expect(j.original.valuesPerTokenPerLayer).toBe(256);
    expect(j.budgets).toHaveLength(6);
    for (const b of j.budgets)
      expect(Object.keys(b).sort()).toEqual(
        [
          'bytesPerToken',
          'collapse',
          'compressionRatio',
          'fastMla',
          'freqfolds',
          'gibPerSequence',
          'kvLoraRank',
          'maxKvLoraRank',
          'qkRopeDim',
          'reasons',
          'savedFraction',
          'valid',
          'valuesPerToken',
          'valuesPerTokenPerLayer',
        ].sort(),
      );
  });

  test('lists and --context; invalid combos shown, not fatal', async () => {
    let r = await cli('plan', LLAMA, '--kv-lora-rank', '96,300', '--qk-rope-dim', '32,48', '--context', '131072', '--json');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out);
    expect(j.contextTokens).toBe(131072);
    expect(j.budgets.map((b: { qkRopeDim: number; kvLoraRank: number; valid: boolean }) => [b.qkRopeDim, b.kvLoraRank, b.valid])).toEqual([
      [32, 96, true],
      [32, 300, false],
      [48, 96, false],
      [48, 300, false],
    ]);
    r = await cli('plan', LLAMA, '--kv-lora-rank', '96,300', '--qk-rope-dim', '32,48');
    expect(r.code).toBe(0);
    expect(r.out).toContain('original 256 KV values/token/layer');
    expect(r.out).toContain('GiB/32K');
    expect(r.out).toMatch(/^32\s+96\s+128\s+512\s+1\.00 KiB\s+0\.0313\s+2\.00x\s+50\.0%\s+2,4,8,16,32\s+ok$/m);
    // the CLI names its flags, not the API's options
    expect(r.out).toContain('invalid: --kv-lora-rank 300 exceeds the maximum 2 x kv_heads x head_dim - --qk-rope-dim = 224');
    expect(r.out).toContain('invalid: --qk-rope-dim 48 must divide head_dim 64');
    expect(r.out).not.toMatch(/kvLoraRank|qkRopeDim/);
    expect(r.out).toMatch(/^48\s+96\s+.*\s-\s+-\s+-\s+invalid/m);
  });

  test('no valid budget: the table, then exit 2 with one line naming the limits as flags (text and --json)', async () => {
    let r = await cli('plan', LLAMA, '--kv-lora-rank', '100000', '--qk-rope-dim', '32,48');
    expect(r.code).toBe(2);
    expect(r.out).toContain('invalid: --kv-lora-rank 100000 exceeds the maximum');
    expect(r.out).not.toContain('%  '); // no negative "saved" percentages for invalid rows
    expect(r.out).not.toMatch(/-\d+\.\d%/);
    oneLine(r, 'no candidate budget is valid');
    expect(r.err).toContain('--kv-lora-rank 100000 exceeds');
    r = await cli('plan', LLAMA, '--kv-lora-rank', '100000', '--json');
    expect(r.code).toBe(2);
    const j = JSON.parse(r.out);
    expect(j.budgets.every((b: { valid: boolean }) => !b.valid)).toBe(true);
    oneLine(r, 'no candidate budget is valid');
  });

  test('--help has examples', async () => {
    const r = await cli('plan', '--help');
    expect(r.code).toBe(0);
    expect(r.out).toContain('Usage: gqa2mla plan [options] <model-dir>');
    expect(r.out).toContain('Examples:');
    expect(r.out).toContain('--kv-lora-rank <list>');
  });

  test('usage errors exit 2', async () => {
    expect((await cli('plan')).code).toBe(2);
    expect((await cli('plan', LLAMA, '--bogus')).code).toBe(2);
    for (const bad of ['abc', '64,,128', '0', '64.5', '-64']) {
      const r = await cli('plan', LLAMA, '--kv-lora-rank', bad);
      expect(r.code).toBe(2);
      expect(r.out).toBe('');
    }
    const r = await cli('plan', LLAMA, '--qk-rope-dim', 'x');
    expect(r.code).toBe(2);
    expect(r.err).toContain('--qk-rope-dim');
    expect((await cli('plan', LLAMA, '--context', '0')).code).toBe(2);
  });

  test('input errors exit 3 with one line naming the file', async () => {
    const missing = join(tmp, 'no-model');
    let r = await cli('plan', missing, '--json');
    expect(r.code).toBe(3);
    expect(r.out).toBe('');
    oneLine(r, join(missing, 'config.json'));
    const broken = join(tmp, 'broken-model');
    await mkdir(broken);
    await writeFile(join(broken, 'config.json'), '{"model_type": "llama",');
    r = await cli('plan', broken);
    expect(r.code).toBe(3);
    oneLine(r, join(broken, 'config.json'));
  });
});
