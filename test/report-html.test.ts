/**
 * report.html: structure, escaping, self-containedness, KV-cache arithmetic, read errors,
 * and a real rendering in headless Chromium (each chart laid out with drawn marks; PNG
 * screenshot saved to test/artifacts/report.png).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { GqaError } from '../src/errors.js';
import { CHART_NAMES, renderReportHtml, writeReportHtml } from '../src/report/html.js';
import { kvCacheRows, kvGiBPerSequence } from '../src/report/kv-cache.js';
import { readConversionReport } from '../src/report/read.js';
import { syntheticReport } from './helpers/synthetic-report.js';

const run = promisify(execFile);
const CHROMIUM = '/usr/bin/chromium';
const PPL = { before: 15.925, after: 26.4, protocol: 'eval-ppl: 40 windows x 512 tokens of pydocs-eval.txt' };

/** The svg elements of a page, keyed "chart" or "chart@layer". */
function charts(html: string): Map<string, string> {
  const out = new Map<string, string>();
  const re = /<svg\b[^>]*data-chart="([^"]+)"[^>]*>[\s\S]*?<\/svg>/g;
  for (const m of html.matchAll(re)) {
    const layer = /data-layer="(\d+)"/.exec(m[0].slice(0, m[0].indexOf('>')))?.[1];
    const key = layer === undefined ? m[1] : `${m[1]}@${layer}`;
    expect(out.has(key)).toBe(false);
    out.set(key, m[0]);
  }
  return out;
}

function count(s: string, re: RegExp): number {
  return (s.match(re) ?? []).length;
}

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'gqa2mla-report-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('renderReportHtml', () => {
  test('has every chart, each with a <title> and drawn marks', () => {
    const r = syntheticReport({ ppl: PPL });
    const c = charts(renderReportHtml(r));
    const expected = ['kv-cache', 'ppl', 'attn-error', 'variance-kept', 'stage-times'];
    for (let l = 0; l < 4; l++) expected.push(`rope-spectrum@${l}`, `pca-spectrum@${l}`);
    expect([...c.keys()].sort()).toEqual(expected.sort());
    for (const name of CHART_NAMES) expect([...c.keys()].some((k) => k.split('@')[0] === name)).toBe(true);
    for (const [k, svg] of c) {
      expect(/<title>[^<]+<\/title>/.test(svg)).toBe(true);
      expect(count(svg, /class="mark[ "]/g)).toBeGreaterThan(0);
      if (/NaN|Infinity/.test(svg)) throw new Error(`${k} has non-finite coordinates`);
    }
    // one bar per (context, before/after), per layer, per stage
    expect(count(c.get('kv-cache')!, /<rect class="mark"/g)).toBe(12);
    expect(count(c.get('attn-error')!, /<rect class="mark"/g)).toBe(4);
    expect(count(c.get('variance-kept')!, /<rect class="mark"/g)).toBe(8);
    expect(count(c.get('stage-times')!, /<rect class="mark"/g)).toBe(7);
    expect(count(c.get('ppl')!, /<rect class="mark"/g)).toBe(2);
    // candidates other than the chosen one are drawn as dots
    const others = r.layers.reduce(
      (a, l) =>
        a + l.candidates.filter((x) => !(x.freqfold === l.freqfold && x.balanceKv === l.balanceKv && x.ropeSelection === l.ropeSelection && x.kvMetric === l.kvMetric)).length,
      0,
    );
    expect(others).toBe(r.layers.reduce((a, l) => a + l.candidates.length - 1, 0));
    expect(count(c.get('attn-error')!, /<circle class="mark dot"/g)).toBe(others);
  });

  test('RoRoPE charts mark freqfold/collapse kept directions in every group; PCA charts mark kv_lora_rank', () => {
    const r = syntheticReport({ freqfolds: [4, 2, 8, 16] });
    const c = charts(renderReportHtml(r));
    const collapse = r.source.headDim / r.settings.qkRopeDim;
    for (const l of r.layers) {
      const svg = c.get(`rope-spectrum@${l.layer}`)!;
      const groups = l.ropeSpectrum.length;
      const nv = l.ropeSpectrum[0].length;
      expect(groups).toBe(r.source.headDim / 2 / l.freqfold);
      expect(nv).toBe(r.source.numKvHeads * l.freqfold);
      const keep = l.freqfold / collapse;
      expect(count(svg, /class="mark kept"/g)).toBe(groups * keep);
      expect(count(svg, /class="mark dropped"/g)).toBe(groups * (nv - keep));
      expect(count(svg, /class="cut"/g)).toBe(groups);
      // over all groups, qkRopeDim / 2 complex pairs keep RoPE
      expect(groups * keep).toBe(r.settings.qkRopeDim / 2);
      const pca = c.get(`pca-spectrum@${l.layer}`)!;
      expect(count(pca, /class="cut"/g)).toBe(1);
      expect(pca).toContain(`rank ${r.settings.kvLoraRank}`);
      expect(count(pca, /class="mark line kept"/g)).toBe(1);
      expect(count(pca, /class="mark line dropped"/g)).toBe(1);
    }
  });

  test('edge case: everything kept (1 KV head x 128, qkRopeDim 128, rank 128, freqfold 1), zero and negative eigenvalues', () => {
    const r = syntheticReport({ numKvHeads: 1, headDim: 128, qkRopeDim: 128, kvLoraRank: 128, freqfolds: [1] });
    r.layers[0].pcaSpectrum[5] = 0;
    r.layers[0].pcaSpectrum[r.layers[0].pcaSpectrum.length - 1] = -1e-17;
    r.layers[1].ropeSpectrum[3][0] = 0;
    const html = renderReportHtml(r);
    expect(/NaN|Infinity/.test(html)).toBe(false);
    const c = charts(html);
    for (const l of r.layers) {
      const rope = c.get(`rope-spectrum@${l.layer}`)!;
      expect(count(rope, /class="mark kept"/g)).toBe(64);
      expect(count(rope, /class="mark dropped"/g)).toBe(0);
      expect(count(rope, /class="cut"/g)).toBe(0);
      const pca = c.get(`pca-spectrum@${l.layer}`)!;
      expect(l.pcaSpectrum.length).toBe(128);
      expect(count(pca, /class="cut"/g)).toBe(0);
      expect(count(pca, /class="mark line kept"/g)).toBe(1);
    }
  });

  test('without ppl there is no ppl chart; rendering is deterministic', () => {
    const r = syntheticReport();
    const a = renderReportHtml(r);
    expect(a).not.toContain('data-chart="ppl"');
    expect(renderReportHtml(syntheticReport())).toBe(a);
    const onlyAfter = renderReportHtml({ ...r, ppl: { after: 30.5, protocol: 'x' } });
    expect(count(charts(onlyAfter).get('ppl')!, /<rect class="mark"/g)).toBe(1);
  });

  test('escapes all text and loads nothing from outside', () => {
    const evil = `<script>alert("x")</script>&'</title><img src=x onerror=1>`;
    const r = syntheticReport({ sourceDir: evil, ppl: { ...PPL, protocol: evil } });
    (r.settings as unknown as Record<string, unknown>).calibInputs = evil;
    const html = renderReportHtml(r);
    expect(html).not.toContain('<script');
    expect(html).not.toContain('<img');
    expect(html).toContain('&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;&lt;/title&gt;&lt;img src=x onerror=1&gt;');
    expect(html).not.toMatch(/<link\b|@import|url\(|<[^>]*\s(src|href|srcset)=/i);
    const urls = html.match(/https?:\/\/[^\s"'<>]+/g) ?? [];
    expect(new Set(urls)).toEqual(new Set(['http://www.w3.org/2000/svg']));
  });

  test('KV cache per sequence: values x 2 bytes x tokens / 2^30, e.g. Llama-3-8B 16 GiB at 128K', () => {
    // Llama-3-8B: 32 layers x 2 x 8 KV heads x 128 = 65536 values/token = 128 KiB/token
    expect(kvGiBPerSequence(32 * 2 * 8 * 128, 131072)).toBe(16);
    expect(kvGiBPerSequence(32 * 2 * 8 * 128, 4096)).toBe(0.5);
    const r = syntheticReport();
    const rows = kvCacheRows(r.kvValuesPerToken.before, r.kvValuesPerToken.after);
    expect(rows.map((x) => x.label)).toEqual(['4K', '8K', '16K', '32K', '64K', '128K']);
    for (const row of rows) {
      expect(row.beforeGiB).toBeCloseTo((1024 * 2 * row.tokens) / 2 ** 30, 15);
      expect(row.afterGiB).toBeCloseTo((512 * 2 * row.tokens) / 2 ** 30, 15);
    }
    const html = renderReportHtml(r);
    expect(html).toContain('<td>128K</td><td>0.25</td><td>0.125</td><td>0.125</td>');
    expect(html).toContain('2.00 KiB &rarr; 1.00 KiB');
  });
});

describe('writeReportHtml / readConversionReport', () => {
  test('writes report.html beside conversion-report.json, equal to renderReportHtml of the parsed JSON', async () => {
    const dir = join(tmp, 'ok');
    await mkdir(dir);
    const r = syntheticReport({ ppl: PPL });
    await writeFile(join(dir, 'conversion-report.json'), JSON.stringify(r, null, 2));
    const w = await writeReportHtml(dir);
    expect(w.path).toBe(join(dir, 'report.html'));
    const html = await readFile(w.path, 'utf8');
    expect(html).toBe(renderReportHtml(JSON.parse(JSON.stringify(r))));
    expect(w.bytes).toBe(Buffer.byteLength(html));
    expect(existsSync(`${w.path}.tmp-${process.pid}`)).toBe(false);
  });

  async function expectInputError(dir: string, code: string, mention: string) {
    const e = await readConversionReport(dir).then(
      () => null,
      (x: unknown) => x,
    );
    expect(e).toBeInstanceOf(GqaError);
    expect((e as GqaError).code).toBe(code);
    expect((e as GqaError).exitCode).toBe(3);
    expect((e as GqaError).message).toContain(mention);
    expect((e as GqaError).message).not.toContain('\n');
  }

  test('missing directory, missing report, malformed JSON, missing fields: input errors naming the file', async () => {
    await expectInputError(join(tmp, 'nope'), 'ERR_NOT_FOUND', join(tmp, 'nope'));
    const empty = join(tmp, 'empty');
    await mkdir(empty);
    await expectInputError(empty, 'ERR_REPORT_MISSING', join(empty, 'conversion-report.json'));
    const bad = join(tmp, 'bad');
    await mkdir(bad);
    await writeFile(join(bad, 'conversion-report.json'), '{"layers": [');
    await expectInputError(bad, 'ERR_REPORT_JSON', join(bad, 'conversion-report.json'));
    const shape = join(tmp, 'shape');
    await mkdir(shape);
    const r = syntheticReport() as unknown as { layers: Array<Record<string, unknown>> };
    delete r.layers[2].pcaSpectrum;
    await writeFile(join(shape, 'conversion-report.json'), JSON.stringify(r));
    await expectInputError(shape, 'ERR_REPORT_SHAPE', 'layers[2].pcaSpectrum');
  });
});

const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) {
  // eslint-disable-next-line no-console
  console.warn(`SKIPPED: headless Chromium rendering test (${CHROMIUM} not found; .ci/run installs Debian's chromium)`);
}
const chromiumTest = haveChromium ? test : test.skip;

const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

async function chromium(args: string[]): Promise<string> {
  const profile = await mkdtemp(join(tmpdir(), 'gqa2mla-chromium-'));
  try {
    const { stdout } = await run(CHROMIUM, [...FLAGS, `--user-data-dir=${profile}`, ...args], { timeout: 90_000, maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } finally {
    await rm(profile, { recursive: true, force: true });
  }
}

/** Test-only probe appended to a copy of the page: measures each chart after layout. */
const PROBE = `<script>
(() => {
  const out = [];
  for (const svg of document.querySelectorAll('svg[data-chart]')) {
    const box = svg.getBoundingClientRect();
    let drawn = 0;
    const marks = svg.querySelectorAll('.mark');
    for (const m of marks) { const b = m.getBBox(); if (b.width > 0 || b.height > 0) drawn++; }
    const title = svg.querySelector(':scope > title');
    out.push({ chart: svg.dataset.chart, layer: svg.dataset.layer ?? null, w: box.width, h: box.height,
      marks: marks.length, drawn, title: title ? title.textContent.length : 0 });
  }
  const pre = document.createElement('pre');
  pre.id = 'probe';
  pre.textContent = JSON.stringify({ charts: out, scrollWidth: document.documentElement.scrollWidth,
    height: document.documentElement.scrollHeight });
  document.body.appendChild(pre);
})();
</script>`;

describe('headless Chromium', () => {
  chromiumTest('renders every chart with drawn marks and saves a screenshot', async () => {
    const dir = join(tmp, 'chromium');
    await mkdir(dir);
    const r = syntheticReport({ ppl: PPL });
    await writeFile(join(dir, 'conversion-report.json'), JSON.stringify(r));
    const w = await writeReportHtml(dir);
    const html = await readFile(w.path, 'utf8');
    const probePage = join(dir, 'probe.html');
    await writeFile(probePage, html.replace('</body>', `${PROBE}</body>`));
    const dom = await chromium(['--window-size=1200,2400', '--dump-dom', `file://${probePage}`]);
    const m = /<pre id="probe">([\s\S]*?)<\/pre>/.exec(dom);
    expect(m).not.toBeNull();
    const probe = JSON.parse(m![1].replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&')) as {
      charts: Array<{ chart: string; layer: string | null; w: number; h: number; marks: number; drawn: number; title: number }>;
      scrollWidth: number;
      height: number;
    };
    const keys = probe.charts.map((c) => (c.layer === null ? c.chart : `${c.chart}@${c.layer}`)).sort();
    expect(keys).toEqual([...charts(html).keys()].sort());
    for (const name of CHART_NAMES) expect(probe.charts.some((c) => c.chart === name)).toBe(true);
    for (const c of probe.charts) {
      expect(c.w).toBeGreaterThan(250);
      expect(c.h).toBeGreaterThan(120);
      expect(c.title).toBeGreaterThan(10);
      expect(c.marks).toBeGreaterThan(0);
      expect(c.drawn).toBe(c.marks);
    }
    expect(probe.scrollWidth).toBeLessThanOrEqual(1200);

    const png = join(process.cwd(), 'test', 'artifacts', 'report.png');
    await mkdir(join(process.cwd(), 'test', 'artifacts'), { recursive: true });
    await rm(png, { force: true });
    await chromium([`--window-size=1200,${Math.ceil(probe.height)}`, `--screenshot=${png}`, `file://${w.path}`]);
    const buf = await readFile(png);
    expect(buf.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))).toBe(true);
    expect(buf.readUInt32BE(16)).toBe(1200);
    expect(buf.readUInt32BE(20)).toBe(Math.ceil(probe.height));
    expect((await stat(png)).size).toBeGreaterThan(50_000);
  });
});
