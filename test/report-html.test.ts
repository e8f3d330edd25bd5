/**
 * report.html of a conversion and of a budget sweep: structure, escaping,
 * self-containedness, KV-cache arithmetic, read errors, and a real rendering in headless
 * Chromium (each chart laid out with drawn marks; PNG screenshots saved to
 * test/artifacts/report.png and test/artifacts/sweep-report.png).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { summarizeSweep, type SweepSummary } from '../src/convert/sweep.js';
import { convert } from '../src/convert/convert.js';
import { GqaError } from '../src/errors.js';
import { esc, fmt } from '../src/report/escape.js';
import { CHART_NAMES, kvContexts, renderReportHtml, writeReportHtml } from '../src/report/html.js';
import { PPL_RULES, pplRule, type ReportExtras } from '../src/report/verdict.js';
import { kvCacheRows, kvGiBPerSequence } from '../src/report/kv-cache.js';
import { readConversionReport, readSweepSummary } from '../src/report/read.js';
import { renderSweepHtml, SWEEP_CHART_NAMES, writeSweepReportHtml } from '../src/report/sweep-html.js';
import { syntheticReport, syntheticSweep, syntheticSweepResult } from './helpers/synthetic-report.js';

const run = promisify(execFile);
const CHROMIUM = '/usr/bin/chromium';
const PPL = { before: 15.925, after: 26.4, protocol: 'eval-ppl: 40 windows x 512 tokens of pydocs-eval.txt' };
/** One context of the report's `eval` field (src/eval/conversion-eval.ts), buckets at the real edges. */
function ctx(seq: number, before: number, after: number, nllBefore: number[], nllAfter: number[]) {
  const edges = [0, 64, 256, 1024, 2048];
  const side = (ppl: number, nll: number[]) => ({
    ppl,
    meanNll: Math.log(ppl),
    buckets: nll.map((m, i) => ({ from: edges[i], to: Math.min(edges[i + 1], seq) - 1, count: 40 * (Math.min(edges[i + 1], seq) - Math.max(edges[i], 1)), meanNll: m, ppl: Math.exp(m) })),
  });
  return { seq, windows: 40, tokensScored: 40 * (seq - 1), beyondMaxPosition: false, source: side(before, nllBefore), converted: side(after, nllAfter), pplRatio: after / before };
}
/** Synthetic optional report fields (multi-length eval, samples, engine checks), for rendering only. */
const EXTRAS: ReportExtras = {
  eval: {
    version: 1,
    textFile: 'pydocs-eval.txt',
    windowsRequested: 40,
    protocol: 'eval-ppl: at each length of [2048, 512, 1024] tokens, the first 40 windows',
    warnings: [],
    contexts: [
      ctx(2048, 14.1, 21.0, [3.2, 3.0, 2.8, 2.7], [3.3, 3.2, 3.15, 3.2]),
      ctx(512, 15.925, 26.4, [3.2, 3.0, 2.8], [3.3, 3.2, 3.15]),
      ctx(1024, 15.0, 17.0, [3.2, 3.0, 2.8], [3.3, 3.2, 3.15]),
    ],
  },
  samples: {
    from: 'pydocs-train-3M.txt',
    promptTokens: 24,
    maxNewTokens: 32,
    items: [
      { prompt: 'The json module <b>', source: { text: ' provides dumps() and loads().\n\n   Example::', tokens: [1, 2, 3] }, converted: { text: ' provides dumps() and <i>x</i>', tokens: [1, 2, 4] }, firstDivergence: 2 },
      { prompt: 'def f(x):', source: { text: '\n    return x', tokens: [5, 6] }, converted: { text: '\n    return x', tokens: [5, 6] }, firstDivergence: null },
      { prompt: 'A'.repeat(300), source: { text: 'B'.repeat(300), tokens: [7] }, converted: { text: 'C'.repeat(300), tokens: [8] }, firstDivergence: 0 },
    ],
  },
  engines: [
    { engine: 'transformers', loads: true, exact: true, reasons: [], fastBackends: ['sdpa'] },
    { engine: 'vllm', loads: true, exact: false, reasons: ['kv_a_layernorm <weight> not identity'], fastBackends: ['FlashMLA'] },
  ],
};

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


/** `read(dir)` rejects with an input error (exit 3) of `code`, one line mentioning `mention`. */
async function expectReadError(read: (dir: string) => Promise<unknown>, dir: string, code: string, mention: string): Promise<void> {
  const e = await read(dir).then(
    () => null,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(GqaError);
  expect((e as GqaError).code).toBe(code);
  expect((e as GqaError).exitCode).toBe(3);
  expect((e as GqaError).message).toContain(mention);
  expect((e as GqaError).message).not.toContain('\n');
}

describe('renderReportHtml', () => {
  test('has every chart, each with a <title> and drawn marks', () => {
    const r = syntheticReport({ ppl: PPL });
    const c = charts(renderReportHtml(r));
    const expected = ['kv-cache', 'ppl', 'attn-error', 'variance-kept', 'stage-times'];
    for (let l = 0; l < 4; l++) expected.push(`rope-spectrum@${l}`, `pca-spectrum@${l}`);
    expect([...c.keys()].sort()).toEqual(expected.sort());
    // every chart but the NLL-by-position one (drawn only from multi-length eval data, tested below)
    for (const name of CHART_NAMES.filter((n) => n !== 'nll-by-position')) expect([...c.keys()].some((k) => k.split('@')[0] === name)).toBe(true);
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

describe('verdict, samples, engines sections', () => {
  test('absent data: each section says so and how to get it', () => {
    const html = renderReportHtml(syntheticReport());
    expect(html).toContain('data-absent="ppl"');
    expect(html).toContain('--eval-text');
    expect(html).toContain('data-absent="samples"');
    expect(html).toContain('data-absent="engines"');
    expect(html).toContain('gqa2mla check');
    for (const r of PPL_RULES) expect(html).toContain(esc(r.advice));
    expect(html).not.toContain('data-chart="nll-by-position"');
    const skipped = renderReportHtml({ ...syntheticReport(), samples: { items: [], skipped: 'the decoders need 29.9 GiB <of> float32 weights' } } as never);
    expect(skipped).toContain('Samples were skipped: the decoders need 29.9 GiB &lt;of&gt; float32 weights.');
  });

  test('one measured length (ppl only): verdict from its change, marked single-length', () => {
    const html = renderReportHtml(syntheticReport({ ppl: PPL }));
    const change = (PPL.after - PPL.before) / PPL.before; // +65.8%
    expect(pplRule(change).verdict).toBe('much worse');
    expect(html).toContain(`<strong class="bad">much worse</strong>: perplexity +${(100 * change).toFixed(1)}% at worst over 1 context length`);
    expect(html).toContain('<td>512</td><td>15.925</td><td>26.400</td>');
    expect(html).toContain('data-absent="contexts"');
    expect(html).toContain('data-absent="nll-by-position"');
  });

  test('multi-length eval, NLL by position, samples (escaped), engines', () => {
    const html = renderReportHtml({ ...syntheticReport({ ppl: PPL }), ...EXTRAS } as never);
    // contexts sorted by length, each with its change and rule
    const rows = [...html.matchAll(/<tr><td>(\d+)<\/td><td>([\d.]+)<\/td><td>([\d.]+)<\/td><td>([+-][\d.]+%)<\/td><td>([a-z ]+)<\/td><\/tr>/g)].map((m) => [m[1], m[4], m[5]]);
    expect(rows).toEqual([
      ['512', '+65.8%', 'much worse'],
      ['1024', '+13.3%', 'noticeably worse'],
      ['2048', '+48.9%', 'much worse'],
    ]);
    expect(html).not.toContain('data-absent="contexts"');
    const nll = charts(html).get('nll-by-position')!;
    expect(count(nll, /<circle class="mark point"/g)).toBe(8); // 4 buckets of the longest (2048) context, before and after
    expect(count(nll, /<path class="mark line"/g)).toBe(2);
    expect(html).toContain('(grows with position)');
    expect(html).toContain('<td class="sample">The json module &lt;b&gt;</td>');
    expect(html).toContain('provides dumps() and &lt;i&gt;x&lt;/i&gt;');
    expect(html).not.toContain('<i>x</i>');
    expect(html).toContain('<td>same for 2 of 3 tokens</td>');
    expect(html).toContain('<td>identical</td>');
    expect(html).toContain('<td class="good">yes</td><td class="good">yes</td><td>sdpa</td>');
    expect(html).toContain('<td class="good">yes</td><td class="bad">no</td><td>FlashMLA</td><td class="sample">kv_a_layernorm &lt;weight&gt; not identity</td>');
  });

  test('KV sizes stop at the model positions: config.json max_position_embeddings 2048 -> 512, 1K, 2K', async () => {
    expect(kvContexts(2048)).toEqual([512, 1024, 2048]);
    expect(kvContexts(131072)).toEqual([4096, 8192, 16384, 32768, 65536, 131072]);
    expect(kvContexts(40960)).toEqual([4096, 8192, 16384, 32768, 40960]);
    expect(kvContexts(undefined)).toEqual([4096, 8192, 16384, 32768, 65536, 131072]);
    const dir = join(tmp, 'maxpos');
    await mkdir(dir);
    await writeFile(join(dir, 'conversion-report.json'), JSON.stringify(syntheticReport()));
    await writeFile(join(dir, 'config.json'), JSON.stringify({ model_type: 'deepseek_v3', max_position_embeddings: 2048 }));
    const html = await readFile((await writeReportHtml(dir)).path, 'utf8');
    expect(count(charts(html).get('kv-cache')!, /<rect class="mark"/g)).toBe(6);
    expect(html).not.toContain('<td>4K</td>');
    expect(html).toContain('<td>2K</td>');
    expect(html).toContain("up to the model's 2K positions (max_position_embeddings 2048)");
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

  const expectInputError = (dir: string, code: string, mention: string) => expectReadError(readConversionReport, dir, code, mention);

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

/** The rows of the idx-th table of a page, each as its cells' inner HTML. */
function tableRows(html: string, idx: number): string[][] {
  const t = [...html.matchAll(/<table\b[\s\S]*?<\/table>/g)][idx]?.[0];
  if (!t) throw new Error(`no table ${idx}`);
  const body = t.slice(t.indexOf('<tbody>'));
  return [...body.matchAll(/<tr>([\s\S]*?)<\/tr>/g)].map((m) => [...m[1].matchAll(/<td[^>]*>([\s\S]*?)<\/td>/g)].map((c) => c[1]));
}

describe('renderSweepHtml', () => {
  test('has the three sweep charts, each with a <title> and one mark per budget/point', () => {
    const s = syntheticSweep({ ppl: true });
    expect(s.budgets.map((b) => `r${b.kvLoraRank}-p${b.qkRopeDim}`)).toEqual(['r64-p16', 'r96-p16', 'r128-p16', 'r64-p32', 'r96-p32', 'r128-p32']);
    const html = renderSweepHtml(s);
    const c = charts(html);
    expect([...c.keys()].sort()).toEqual([...SWEEP_CHART_NAMES].sort());
    for (const [k, svg] of c) {
      expect(/<title>[^<]+<\/title>/.test(svg)).toBe(true);
      expect(count(svg, /class="mark[ "]/g)).toBeGreaterThan(0);
      if (/NaN|Infinity/.test(svg)) throw new Error(`${k} has non-finite coordinates`);
    }
    // per-layer error: one line of 4 points per budget, legend names every budget
    const err = c.get('sweep-attn-error')!;
    expect(count(err, /<path class="mark line"/g)).toBe(6);
    expect(count(err, /<circle class="mark point"/g)).toBe(6 * 4);
    for (const b of s.budgets) expect(err).toContain(`data-series="r${b.kvLoraRank}-p${b.qkRopeDim}"`);
    for (const b of s.budgets) for (const [l, e] of b.attnRelError.entries()) expect(err).toContain(`<title>r${b.kvLoraRank}-p${b.qkRopeDim}, layer ${l}: ${fmt(e, 4)}</title>`);
    // ppl vs KV values: one line per qk_rope_head_dim, the source ppl as reference line
    const tr = c.get('sweep-tradeoff')!;
    expect(count(tr, /<path class="mark line"/g)).toBe(2);
    expect(count(tr, /<circle class="mark point"/g)).toBe(6);
    expect(tr).toContain('source ppl 15.925');
    expect(tr).toContain('Perplexity against KV values');
    // GiB per 32K sequence: the source and each budget
    expect(count(c.get('sweep-kv-cache')!, /<rect class="mark"/g)).toBe(7);
  });

  test('budget table: links, KV values, compression, GiB per 32K sequence, errors and ppl of every budget', () => {
    const s = syntheticSweep({ ppl: true });
    const html = renderSweepHtml(s);
    const rows = tableRows(html, 0);
    expect(rows).toHaveLength(1 + s.budgets.length);
    // source: 4 layers x 2 x 2 KV heads x 64 = 1024 values/token; x 2 bytes x 32768 tokens
    expect(rows[0].slice(3, 7)).toEqual(['256', '1024', '1.00\u00d7', fmt((1024 * 2 * 32768) / 2 ** 30)]);
    expect(rows[0][9]).toBe('15.925');
    s.budgets.forEach((b, i) => {
      const r = rows[i + 1];
      const name = `r${b.kvLoraRank}-p${b.qkRopeDim}`;
      expect(r[0]).toBe(`<a href="${name}/report.html">${name}</a>`);
      const per = b.kvLoraRank + b.qkRopeDim;
      expect(r.slice(1, 7)).toEqual([String(b.kvLoraRank), String(b.qkRopeDim), String(per), String(4 * per), `${(256 / per).toFixed(2)}\u00d7`, fmt((4 * per * 2 * 32768) / 2 ** 30)]);
      expect(r[7]).toBe(fmt(b.meanAttnRelError, 4));
      const worst = b.attnRelError.indexOf(Math.max(...b.attnRelError));
      expect(r[8]).toBe(`${fmt(b.attnRelError[worst], 4)} (layer ${worst})`);
      expect(r[10]).toBe(b.ppl!.toFixed(3));
      expect(r[11]).toBe(`+${((100 * (b.ppl! - 15.925)) / 15.925).toFixed(2)}%`);
    });
    // the best budget (largest here: errors shrink with the budget) is highlighted
    const best = s.budgets.reduce((a, b, i) => (b.meanAttnRelError < s.budgets[a].meanAttnRelError ? i : a), 0);
    expect(best).toBe(5);
    expect(html).toContain(`<td class="good">${fmt(s.budgets[best].meanAttnRelError, 4)}</td>`);
    // per-layer table: layers as rows, budgets as columns, then the mean
    const per = tableRows(html, 1);
    expect(per).toHaveLength(5);
    for (let l = 0; l < 4; l++) expect(per[l]).toEqual([String(l)].concat(s.budgets.map((b) => fmt(b.attnRelError[l], 4))));
    expect(per[4]).toEqual(['mean'].concat(s.budgets.map((b) => fmt(b.meanAttnRelError, 4))));
    // options used: the swept lists, the shared settings, the ppl protocol
    const opts = tableRows(html, 2).map((r) => r.join('='));
    expect(opts).toEqual(expect.arrayContaining(['kvLoraRank (swept)=64, 96, 128', 'qkRopeDim (swept)=16, 32', 'method=gqa2mla', 'calibSamples=128', `perplexity=${s.protocol}`]));
    expect(opts.some((o) => o.startsWith('kvLoraRank='))).toBe(false);
  });

  test('without ppl: mean error against KV values, no ppl columns or reference line', () => {
    const s = syntheticSweep();
    expect(s.pplBefore).toBeUndefined();
    const html = renderSweepHtml(s);
    const tr = charts(html).get('sweep-tradeoff')!;
    expect(tr).toContain('Mean attention-output error against KV values');
    expect(tr).not.toContain('class="ref"');
    for (const b of s.budgets) expect(tr).toContain(`mean attn error ${fmt(b.meanAttnRelError, 4)}`);
    expect(html).not.toContain('ppl after');
    expect(html).toContain('Perplexity was not measured');
    expect(tableRows(html, 0)[1]).toHaveLength(9);
    expect(renderSweepHtml(syntheticSweep())).toBe(html);
  });

  test('edge cases: one budget of one layer; a sweep.json without model, settings and per-token totals', () => {
    const one = syntheticSweep({ ranks: [96], ropes: [32], layers: 1 });
    const h1 = renderSweepHtml(one);
    expect(/NaN|Infinity/.test(h1)).toBe(false);
    const c1 = charts(h1);
    expect(count(c1.get('sweep-attn-error')!, /<path class="mark line"/g)).toBe(0);
    expect(count(c1.get('sweep-attn-error')!, /<circle class="mark point"/g)).toBe(1);
    expect(count(c1.get('sweep-tradeoff')!, /<circle class="mark point"/g)).toBe(1);
    expect(count(c1.get('sweep-kv-cache')!, /<rect class="mark"/g)).toBe(2);

    const old = syntheticSweep() as unknown as Record<string, unknown> & { budgets: Array<Record<string, unknown>> };
    delete old.model;
    delete old.settings;
    delete old.tool;
    for (const b of old.budgets) delete b.kvValuesPerToken;
    const h2 = renderSweepHtml(old as unknown as SweepSummary);
    expect(/NaN|Infinity|undefined/.test(h2)).toBe(false);
    expect(h2).toContain('not recorded in this sweep.json');
    // layers from the per-layer error lists: the same KV totals as with the model recorded
    expect(tableRows(h2, 0).map((r) => r.slice(3, 7))).toEqual(tableRows(renderSweepHtml(syntheticSweep()), 0).map((r) => r.slice(3, 7)));
  });

  test('escapes all text; links only to the budgets\' own pages; loads nothing from outside', () => {
    const evil = `<script>alert("x")</script>&'</title><img src=x onerror=1>`;
    const s = syntheticSweep({ ppl: true, sourceDir: evil });
    s.protocol = evil;
    (s.settings as unknown as Record<string, unknown>).calibInputs = evil;
    const oddDir = `r64-p16 "<b>&'`;
    s.budgets[0].dir = `/tmp/${oddDir}`;
    const html = renderSweepHtml(s);
    expect(html).not.toContain('<script');
    expect(html).not.toContain('<img');
    expect(html).toContain('&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;&lt;/title&gt;&lt;img src=x onerror=1&gt;');
    expect(html).not.toMatch(/<link\b|@import|url\(|<[^>]*\s(src|srcset)=/i);
    const hrefs = [...html.matchAll(/\shref="([^"]*)"/g)].map((m) => m[1]);
    expect(hrefs).toHaveLength(6);
    expect(hrefs.slice(1)).toEqual(['r96-p16', 'r128-p16', 'r64-p32', 'r96-p32', 'r128-p32'].map((d) => `${d}/report.html`));
    expect(hrefs[0]).toBe(`${encodeURIComponent(oddDir).replace(/'/g, '&#39;')}/report.html`);
    expect(hrefs[0]).toBe('r64-p16%20%22%3Cb%3E%26&#39;/report.html');
    const urls = html.match(/https?:\/\/[^\s"'<>]+/g) ?? [];
    expect(new Set(urls)).toEqual(new Set(['http://www.w3.org/2000/svg']));
  });
});

describe('summarizeSweep / writeSweepReportHtml / readSweepSummary', () => {
  test('summarizeSweep writes sweep.json and the sweep report.html drawn from it', async () => {
    const outDir = join(tmp, 'sweep-ok');
    await mkdir(outDir);
    const res = syntheticSweepResult({ outDir });
    const summary = await summarizeSweep(res, 'test/fixtures/tiny-llama-gqa', null);
    const json = JSON.parse(await readFile(join(outDir, 'sweep.json'), 'utf8'));
    expect(json).toEqual(JSON.parse(JSON.stringify(summary)));
    expect(Object.keys(json)).toEqual(['source', 'outDir', 'seconds', 'model', 'settings', 'tool', 'kvValuesPerTokenPerLayerBefore', 'budgets']);
    expect(json.model).toEqual({ modelType: 'llama', numLayers: 4, numHeads: 4, numKvHeads: 2, headDim: 64 });
    expect(json.settings.kvLoraRank).toBeUndefined();
    expect(json.budgets[3]).toMatchObject({ dir: join(outDir, 'r64-p32'), kvLoraRank: 64, qkRopeDim: 32, kvValuesPerTokenPerLayer: 96, kvValuesPerToken: 384, compression: 256 / 96 });
    expect(json.budgets[3].attnRelError).toEqual(res.budgets[3].report.layers.map((l) => l.attnRelError));
    const html = await readFile(join(outDir, 'report.html'), 'utf8');
    expect(html).toBe(renderSweepHtml(json));
    // regenerating gives the same bytes
    const w = await writeSweepReportHtml(outDir);
    expect(w.path).toBe(join(outDir, 'report.html'));
    expect(w.source).toBe(join(outDir, 'sweep.json'));
    expect(await readFile(w.path, 'utf8')).toBe(html);
    expect(w.bytes).toBe(Buffer.byteLength(html));
    expect(existsSync(`${w.path}.tmp-${process.pid}`)).toBe(false);
  });

  const expectSweepError = (dir: string, code: string, mention: string) => expectReadError(readSweepSummary, dir, code, mention);

  test('missing directory, missing sweep.json, malformed JSON, missing fields: input errors naming the file', async () => {
    await expectSweepError(join(tmp, 'nope-sweep'), 'ERR_NOT_FOUND', join(tmp, 'nope-sweep'));
    const empty = join(tmp, 'empty-sweep');
    await mkdir(empty);
    await expectSweepError(empty, 'ERR_SWEEP_MISSING', join(empty, 'sweep.json'));
    const bad = join(tmp, 'bad-sweep');
    await mkdir(bad);
    await writeFile(join(bad, 'sweep.json'), '{"budgets": [');
    await expectSweepError(bad, 'ERR_REPORT_JSON', join(bad, 'sweep.json'));
    const s = syntheticSweep() as unknown as { budgets: Array<Record<string, unknown>> };
    s.budgets[1].attnRelError = [0.1, 'x'];
    await writeFile(join(bad, 'sweep.json'), JSON.stringify(s));
    await expectSweepError(bad, 'ERR_REPORT_SHAPE', 'budgets[1].attnRelError');
    await writeFile(join(bad, 'sweep.json'), JSON.stringify({ ...s, budgets: [] }));
    await expectSweepError(bad, 'ERR_REPORT_SHAPE', 'budgets is missing, not an array or empty');
    expect(existsSync(join(bad, 'report.html'))).toBe(false);
  });
});

const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) {
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

interface Probe {
  charts: Array<{ chart: string; layer: string | null; w: number; h: number; marks: number; drawn: number; title: number }>;
  scrollWidth: number;
  height: number;
}

/** Lays out `page` (a written report.html) in Chromium and measures each chart after layout. */
async function probeInChromium(page: string): Promise<Probe> {
  const html = await readFile(page, 'utf8');
  const probePage = page.replace(/\.html$/, '.probe.html');
  await writeFile(probePage, html.replace('</body>', `${PROBE}</body>`));
  const dom = await chromium(['--window-size=1200,2400', '--dump-dom', `file://${probePage}`]);
  await rm(probePage, { force: true });
  const m = /<pre id="probe">([\s\S]*?)<\/pre>/.exec(dom);
  expect(m).not.toBeNull();
  const probe = JSON.parse(m![1].replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&')) as Probe;
  const keys = probe.charts.map((c) => (c.layer === null ? c.chart : `${c.chart}@${c.layer}`)).sort();
  expect(keys).toEqual([...charts(html).keys()].sort());
  for (const c of probe.charts) {
    expect(c.w).toBeGreaterThan(250);
    expect(c.h).toBeGreaterThan(120);
    expect(c.title).toBeGreaterThan(10);
    expect(c.marks).toBeGreaterThan(0);
    expect(c.drawn).toBe(c.marks);
  }
  expect(probe.scrollWidth).toBeLessThanOrEqual(1200);
  return probe;
}

/** Saves a full-page PNG of `page` as test/artifacts/<name> and checks it is a real 1200-wide image. */
async function screenshot(page: string, height: number, name: string, minBytes: number): Promise<void> {
  const png = join(process.cwd(), 'test', 'artifacts', name);
  await mkdir(join(process.cwd(), 'test', 'artifacts'), { recursive: true });
  await rm(png, { force: true });
  await chromium([`--window-size=1200,${Math.ceil(height)}`, `--screenshot=${png}`, `file://${page}`]);
  const buf = await readFile(png);
  expect(buf.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))).toBe(true);
  expect(buf.readUInt32BE(16)).toBe(1200);
  expect(buf.readUInt32BE(20)).toBe(Math.ceil(height));
  expect((await stat(png)).size).toBeGreaterThan(minBytes);
}

/** Lays out `page` and reports the verdict/samples/engines sections' boxes and contents. */
async function sectionsInChromium(page: string): Promise<{ sections: Record<string, { w: number; h: number }>; verdictText: string; sampleCells: number; widestSampleCell: number; engineRows: number; kvHeaders: string[] }> {
  const html = await readFile(page, 'utf8');
  const probePage = page.replace(/\.html$/, '.sections.html');
  const script = `<script>(() => {
    const sections = {};
    for (const el of document.querySelectorAll('section[data-section]')) { const b = el.getBoundingClientRect(); sections[el.dataset.section] = { w: b.width, h: b.height }; }
    const cells = [...document.querySelectorAll('table.samples td.sample')];
    const kv = [...document.querySelectorAll('section[data-section="kv-cache"] tbody tr td:first-child')].map((t) => t.textContent);
    const out = { sections, verdictText: document.querySelector('p.verdict')?.textContent ?? '', sampleCells: cells.length,
      widestSampleCell: Math.max(...cells.map((c) => c.getBoundingClientRect().width)),
      engineRows: document.querySelectorAll('section[data-section="engines"] tbody tr').length, kvHeaders: kv };
    const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
  })();</script>`;
  await writeFile(probePage, html.replace('</body>', `${script}</body>`));
  const dom = await chromium(['--window-size=1200,2400', '--dump-dom', `file://${probePage}`]);
  await rm(probePage, { force: true });
  const m = /<pre id="probe">([\s\S]*?)<\/pre>/.exec(dom);
  expect(m).not.toBeNull();
  return JSON.parse(m![1].replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&'));
}

describe('headless Chromium', () => {
  chromiumTest('renders every chart of a conversion report with drawn marks and saves a screenshot', async () => {
    const dir = join(tmp, 'chromium');
    await mkdir(dir);
    await writeFile(join(dir, 'conversion-report.json'), JSON.stringify({ ...syntheticReport({ ppl: PPL }), ...EXTRAS }));
    await writeFile(join(dir, 'config.json'), JSON.stringify({ model_type: 'deepseek_v3', max_position_embeddings: 2048 }));
    const w = await writeReportHtml(dir);
    const probe = await probeInChromium(w.path);
    for (const name of CHART_NAMES) expect(probe.charts.some((c) => c.chart === name)).toBe(true);
    // the new sections are laid out, visible, within the page width; the sample cells wrap
    const s = await sectionsInChromium(w.path);
    for (const name of ['verdict', 'samples', 'engines']) {
      expect(s.sections[name].h).toBeGreaterThan(80);
      expect(s.sections[name].w).toBeLessThanOrEqual(1200);
    }
    expect(s.verdictText).toContain('much worse');
    expect(s.sampleCells).toBe(9);
    expect(s.widestSampleCell).toBeLessThanOrEqual(420);
    expect(s.engineRows).toBe(2);
    expect(s.kvHeaders).toEqual(['512', '1K', '2K']);
    await screenshot(w.path, probe.height, 'report.png', 50_000);
  });

  chromiumTest('renders every chart of a sweep report with drawn marks and saves a screenshot', async () => {
    const dir = join(tmp, 'chromium-sweep');
    await mkdir(dir);
    await writeFile(join(dir, 'sweep.json'), JSON.stringify(syntheticSweep({ ppl: true, outDir: dir })));
    const w = await writeSweepReportHtml(dir);
    const probe = await probeInChromium(w.path);
    expect(probe.charts.map((c) => c.chart).sort()).toEqual([...SWEEP_CHART_NAMES].sort());
    // every line and point of the per-layer chart is laid out: 6 budgets x (1 line + 4 points)
    expect(probe.charts.find((c) => c.chart === 'sweep-attn-error')!.drawn).toBe(30);
    await screenshot(w.path, probe.height, 'sweep-report.png', 50_000);
  });
});

test('the sweep KV chart stops at the model positions (max_position_embeddings 2048: one 2K sequence, not 32K)', async () => {
  const dir = join(tmp, 'sweep-maxpos');
  const sweep = syntheticSweep();
  await mkdir(join(dir, `r${sweep.budgets[0].kvLoraRank}-p${sweep.budgets[0].qkRopeDim}`), { recursive: true });
  await writeFile(join(dir, 'sweep.json'), JSON.stringify(sweep));
  await writeFile(join(dir, `r${sweep.budgets[0].kvLoraRank}-p${sweep.budgets[0].qkRopeDim}`, 'config.json'), JSON.stringify({ model_type: 'deepseek_v3', max_position_embeddings: 2048 }));
  const html = await readFile((await writeSweepReportHtml(dir)).path, 'utf8');
  expect(html).toContain('KV GiB / 2K sequence');
  expect(html).not.toContain('32K');
  expect(renderSweepHtml(sweep)).toContain('KV GiB / 32K sequence');
});

test('a conversion report shows what gqa2mla check says of its directory (portable default: every engine loads and computes it)', async () => {
  const dir = join(tmp, 'engines-conv');
  await convert({
    modelDir: 'test/fixtures/tiny-llama-gqa',
    outDir: dir,
    calibFile: 'test/fixtures/pydocs-eval.txt',
    calibSamples: 8,
    calibSeqlen: 64,
    heldOutSamples: 2,
    context: 64, // the short held-out windows: the engines section reads the output, not the window length
    method: 'transmla',
    freqfold: 2,
    qkRopeDim: 32,
    kvLoraRank: 64,
    device: 'cpu',
  });
  const html = await readFile(join(dir, 'report.html'), 'utf8');
  expect(html).toContain('data-section="engines"');
  expect(html).not.toContain('data-absent="engines"');
  for (const e of ['vllm', 'sglang', 'transformers']) expect(html).toMatch(new RegExp(`<tr><td>${e}</td><td class="good">yes</td><td class="good">yes</td>`));
}, 120000);
