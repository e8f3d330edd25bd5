/**
 * A synthetic ConversionReport shaped like a conversion of tiny-llama-gqa (4 layers,
 * 2 KV heads x 64, qkRopeDim 32, kvLoraRank 96): seeded decaying spectra, per-layer
 * freqfold choices and candidates; and synthetic budget sweeps built from such reports by
 * the real sweep summary code. For rendering tests only: the numbers are made up.
 */
import { join } from 'node:path';
import type { SweepResult } from '../../src/convert/convert.js';
import type { ConversionReport, LayerReport } from '../../src/report-types.js';
import { buildSweepSummary, type SweepSummary } from '../../src/convert/sweep.js';

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Options of {@link syntheticReport}. */
export interface SyntheticOptions {
  layers?: number;
  numKvHeads?: number;
  headDim?: number;
  qkRopeDim?: number;
  kvLoraRank?: number;
  /** freqfold chosen per layer (cycled) */
  freqfolds?: number[];
  ppl?: ConversionReport['ppl'];
  sourceDir?: string;
  seed?: number;
  /** multiplies every attention error (default 1) */
  errorScale?: number;
}

/** Builds the report. */
export function syntheticReport(o: SyntheticOptions = {}): ConversionReport {
  const nl = o.layers ?? 4;
  const nKv = o.numKvHeads ?? 2;
  const d = o.headDim ?? 64;
  const rope = o.qkRopeDim ?? 32;
  const rank = o.kvLoraRank ?? 96;
  const ffs = o.freqfolds ?? [4, 2, 8, 4];
  const rnd = lcg(o.seed ?? 7);
  const L = nKv * d;
  const collapse = d / rope;
  const candidatesFf: number[] = [];
  for (let f = collapse; f <= d / 2; f += collapse) if ((d / 2) % f === 0) candidatesFf.push(f);
  const layers: LayerReport[] = [];
  for (let l = 0; l < nl; l++) {
    const ff = ffs[l % ffs.length];
    const nv = nKv * ff;
    const ropeSpectrum: number[][] = [];
    let ropeKept = 0;
    let ropeTotal = 0;
    for (let g0 = 0; g0 < d / 2; g0 += ff) {
      // low frequencies (large g0) carry more key energy, as in trained models
      const scale = 0.05 * Math.exp((3 * g0) / (d / 2)) * (1 + l * 0.3);
      const vals = Array.from({ length: nv }, (_, k) => scale * Math.exp(-0.9 * k) * (0.8 + 0.4 * rnd())).sort((a, b) => b - a);
      ropeSpectrum.push(vals);
      vals.forEach((v, k) => {
        ropeTotal += v;
        if (k < ff / collapse) ropeKept += v;
      });
    }
    const nz = 2 * L - rope;
    const pcaSpectrum = Array.from({ length: nz }, (_, i) => 4 * (1 + l) * Math.exp(-i / 28) * (0.9 + 0.2 * rnd()) + 1e-6).sort((a, b) => b - a);
    const pcaTotal = pcaSpectrum.reduce((a, b) => a + b, 0);
    const pcaKept = pcaSpectrum.slice(0, rank).reduce((a, b) => a + b, 0);
    const base = (o.errorScale ?? 1) * (0.08 + 0.05 * l + 0.02 * rnd());
    const candidates: LayerReport['candidates'] = candidatesFf.flatMap((f) =>
      [0.5, 1, 2].map((b) => ({
        freqfold: f,
        balanceKv: b,
        ropeSelection: 'qk' as const,
        kvMetric: 'objective' as const,
        attnRelError: f === ff && b === 1 ? base : base * (1.05 + 0.5 * rnd()),
      })),
    );
    // TransMLA's choices at the kept freqfold and balance: same freqfold/balance, other selection and metric
    candidates.push({ freqfold: ff, balanceKv: 1, ropeSelection: 'key', kvMetric: 'plain', attnRelError: base * 1.3 });
    layers.push({
      layer: l,
      freqfold: ff,
      ropeSelection: 'qk',
      kvMetric: 'objective',
      balanceKv: 1,
      candidates,
      attnRelError: base,
      ropeVarianceKept: ropeKept / ropeTotal,
      pcaVarianceKept: pcaKept / pcaTotal,
      balanceScale: 0.7 + 0.2 * rnd(),
      ropeSpectrum,
      pcaSpectrum,
      latentNorm: {
        alpha: 3.1 + rnd(),
        weight: 0.31,
        maxMeanSquare: 0.09,
        boundCalibration: 0.1,
        boundWithMargin: 0.2,
        margin: 2,
        minAbsCachedLatent: 1e-3,
        subnormalWeights: 0,
      },
      valueRefit: { windows: 64, errBefore: base * 1.1, errAfter: base, kept: true },
      seconds: 1.2 + rnd(),
    });
  }
  const perLayerBefore = 2 * L;
  const perLayerAfter = rank + rope;
  return {
    tool: { name: 'gqa2mla', version: '0.1.0' },
    source: { dir: o.sourceDir ?? 'test/fixtures/tiny-llama-gqa', modelType: 'llama', numLayers: nl, numHeads: 2 * nKv, numKvHeads: nKv, headDim: d },
    output: { dir: '/tmp/tiny-mla', shards: ['model.safetensors'], totalBytes: 9_876_543 },
    settings: {
      method: 'gqa2mla',
      dtype: 'BF16',
      qkRopeDim: rope,
      kvLoraRank: rank,
      freqfold: 'auto',
      balanceKv: 'auto',
      ropeSelection: 'qk',
      kvMetric: 'objective',
      nopeShrink: true,
      valueRefit: true,
      latentNorm: 'exact',
      calibInputs: 'original',
      calibSamples: 128,
      calibSeqlen: 256,
      heldOutSamples: 16,
      seed: 42,
      calibTokens: 32768,
      qkLatentLayernorm: true,
    },
    kvValuesPerToken: { before: perLayerBefore * nl, after: perLayerAfter * nl, perLayerBefore, perLayerAfter, ratio: perLayerBefore / perLayerAfter },
    layers,
    meanAttnRelError: layers.reduce((a, x) => a + x.attnRelError, 0) / nl,
    times: { tokenize: 0.41, read: 0.12, forward: 3.8, statistics: 2.2, factorize: 1.6, evaluate: 0.9, write: 0.3, total: 9.5 },
    ...(o.ppl ? { ppl: o.ppl } : {}),
  };
}

/** Options of {@link syntheticSweepResult} and {@link syntheticSweep}. */
export interface SyntheticSweepOptions {
  outDir?: string;
  ranks?: number[];
  ropes?: number[];
  layers?: number;
  sourceDir?: string;
  /** perplexity: the source's and, per budget, a made-up one growing with its mean error */
  ppl?: boolean;
}

/**
 * What convertSweep would return for a tiny-llama-gqa-shaped sweep (rope outer, rank inner,
 * dirs `<outDir>/r<rank>-p<rope>`), each budget a {@link syntheticReport} whose errors shrink
 * as the budget grows.
 */
export function syntheticSweepResult(o: SyntheticSweepOptions = {}): SweepResult {
  const outDir = o.outDir ?? '/tmp/tiny-sweep';
  const budgets: SweepResult['budgets'] = [];
  for (const p of o.ropes ?? [16, 32])
    for (const r of o.ranks ?? [64, 96, 128]) {
      const collapse = 64 / p;
      const report = syntheticReport({
        layers: o.layers,
        qkRopeDim: p,
        kvLoraRank: r,
        freqfolds: [2, 1, 4, 2].map((k) => Math.min(32, k * collapse)),
        sourceDir: o.sourceDir,
        seed: 11 + r + 7 * p,
        errorScale: (96 / r) ** 0.8 * (32 / p) ** 0.25,
      });
      const dir = join(outDir, `r${r}-p${p}`);
      report.output.dir = dir;
      budgets.push({ kvLoraRank: r, qkRopeDim: p, dir, report });
    }
  return { outDir, budgets, seconds: 21.5 };
}

/** The sweep.json content of {@link syntheticSweepResult}, through the real buildSweepSummary. */
export function syntheticSweep(o: SyntheticSweepOptions = {}): SweepSummary {
  const res = syntheticSweepResult(o);
  const ppl = o.ppl
    ? {
        before: 15.925,
        after: res.budgets.map((b) => 15.925 * (1 + 1.5 * b.report.meanAttnRelError)),
        protocol: 'eval-ppl: 40 non-overlapping windows of 512 tokens from offset 0 of test/fixtures/pydocs-eval.txt, tokens 1..511 scored',
      }
    : undefined;
  return buildSweepSummary(res, o.sourceDir ?? 'test/fixtures/tiny-llama-gqa', ppl);
}
