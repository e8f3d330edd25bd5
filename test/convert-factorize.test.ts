import { factorizeLayer, type GqaAttention } from '../src/convert/factorize.js';
import { roropeRotation } from '../src/convert/rorope.js';
import { MomentAccumulator, secondMoment } from '../src/convert/statistics.js';
import { fromArray } from '../src/convert/mat.js';
import { queryMetric } from '../src/convert/factorize.js';
import type { ModelSpec } from '../src/model/spec-types.js';
import { gqaAttentionRef, mlaAttentionRef, relErr, rotatedAttentionRef, type RotPair } from './helpers/ref-attention.js';

function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s ^ (s >>> 15), 2246822507) + 0x6d2b79f5) >>> 0;
    s = Math.imul(s ^ (s >>> 13), 3266489909) >>> 0;
    return ((s ^ (s >>> 16)) >>> 0) / 4294967296;
  };
}
function gaussian(n: number, rand: () => number, scale = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = scale * Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  return out;
}

interface Case {
  spec: ModelSpec;
  w: GqaAttention;
  x: Float32Array;
  T: number;
  invFreq: Float64Array;
}

function makeCase(seed: number, heads: number, kvHeads: number, headDim: number, bias: boolean, T = 24): Case {
  const rand = rng(seed);
  const hidden = 32;
  const spec = {
    modelType: 'llama',
    numLayers: 1,
    hiddenSize: hidden,
    numHeads: heads,
    numKvHeads: kvHeads,
    headDim,
    intermediateSize: 64,
    vocabSize: 16,
    rmsNormEps: 1e-6,
    tieWordEmbeddings: false,
    attentionBias: bias,
    oBias: false,
    maxPositionEmbeddings: 256,
    rope: { type: 'default', theta: 10000, factor: 1, partialRotaryFactor: 1 },
    raw: {},
  } as ModelSpec;
  const s = 1 / Math.sqrt(hidden);
  const w: GqaAttention = {
    wq: gaussian(heads * headDim * hidden, rand, s),
    wk: gaussian(kvHeads * headDim * hidden, rand, s),
    wv: gaussian(kvHeads * headDim * hidden, rand, s),
    wo: gaussian(hidden * heads * headDim, rand, s),
    bq: bias ? gaussian(heads * headDim, rand, 0.3) : null,
    bk: bias ? gaussian(kvHeads * headDim, rand, 0.3) : null,
    bv: bias ? gaussian(kvHeads * headDim, rand, 0.3) : null,
  };
  // correlated inputs: x = z A with a decaying spectrum, so PCA has structure
  const A = gaussian(hidden * hidden, rand);
  for (let i = 0; i < hidden; i++) for (let j = 0; j < hidden; j++) A[i * hidden + j] *= Math.exp(-i / 8);
  const z = gaussian(T * hidden, rand);
  const x = new Float32Array(T * hidden);
  for (let t = 0; t < T; t++)
    for (let j = 0; j < hidden; j++) {
      let v = 0.1;
      for (let i = 0; i < hidden; i++) v += z[t * hidden + i] * A[i * hidden + j];
      x[t * hidden + j] = v;
    }
  const invFreq = new Float64Array(headDim / 2);
  for (let i = 0; i < headDim / 2; i++) invFreq[i] = Math.pow(10000, (-2 * i) / headDim);
  return { spec, w, x, T, invFreq };
}

function moments(c: Case) {
  const acc = new MomentAccumulator(c.spec.hiddenSize);
  acc.add(c.x, c.T);
  return acc.moments();
}

const dims = (c: Case) => ({ hidden: c.spec.hiddenSize, heads: c.spec.numHeads, kvHeads: c.spec.numKvHeads, headDim: c.spec.headDim });

describe('RoRoPE rotation', () => {
  test.each([
    [4, 2, 16, false],
    [4, 4, 16, true],
    [8, 2, 32, true],
  ])('rotation alone (freqfold 1, nothing cut) reproduces attention exactly: H=%i G=%i d=%i bias=%s', (H, G, d, bias) => {
    const c = makeCase(7 + H + G + d, H, G, d, bias);
    const m = moments(c);
    const L = G * d;
    const ck = secondMoment({ w: fromArray(c.w.wk, L, c.spec.hiddenSize), b: c.w.bk ? Float64Array.from(c.w.bk) : null }, m);
    const rope = roropeRotation(ck, G, d, d, 1);
    // orthogonality
    const R = rope.rot.data;
    let maxDev = 0;
    for (let i = 0; i < L; i++)
      for (let j = 0; j < L; j++) {
        let s = 0;
        for (let k = 0; k < L; k++) s += R[i * L + k] * R[j * L + k];
        maxDev = Math.max(maxDev, Math.abs(s - (i === j ? 1 : 0)));
      }
    expect(maxDev).toBeLessThan(1e-10);
    const pairs: RotPair[] = rope.pairs.map((p) => ({ re: p.re, im: p.im, theta: c.invFreq[p.freq] }));
    expect(pairs.length).toBe(L / 2);
    const x = Float64Array.from(c.x);
    const ref = gqaAttentionRef(x, c.T, dims(c), c.w, c.invFreq);
    const rot = rotatedAttentionRef(x, c.T, dims(c), c.w, R, pairs);
    expect(relErr(rot, ref)).toBeLessThan(1e-10);
    expect(rope.varianceKept).toBeGreaterThan(0);
    expect(rope.varianceKept).toBeLessThan(1);
  });

  test('kept RoPE directions carry more key energy than an even share', () => {
    const c = makeCase(3, 4, 2, 16, false);
    const m = moments(c);
    const ck = secondMoment({ w: fromArray(c.w.wk, 32, 32), b: null }, m);
    for (const ff of [2, 4, 8]) {
      const rope = roropeRotation(ck, 2, 16, 8, ff); // 4 of 16 pairs keep RoPE
      expect(rope.varianceKept).toBeGreaterThan(0.25); // 8 of 32 dims kept: more than an even share
      for (const g of rope.spectrum) for (let i = 1; i < g.length; i++) expect(g[i]).toBeLessThanOrEqual(g[i - 1] + 1e-12);
    }
  });
});

describe('factorizeLayer', () => {
  test.each([false, true])('lossless setting (1 KV head, ropeDim = headDim, full rank) reproduces attention, bias=%s', (bias) => {
    const c = makeCase(11, 2, 1, 16, bias);
    const f = factorizeLayer(c.spec, c.w, moments(c), { qkRopeDim: 16, kvLoraRank: 16, freqfold: 1, balanceKv: 1 });
    const x = Float64Array.from(c.x);
    const ref = gqaAttentionRef(x, c.T, dims(c), c.w, c.invFreq);
    const mla = mlaAttentionRef(
      x,
      c.T,
      { hidden: 32, heads: 2, kvLoraRank: 16, ropeDim: 16, nopeDim: 16, vDim: 16 },
      f.attention,
      c.invFreq,
    );
    expect(relErr(mla, ref)).toBeLessThan(1e-5);
    expect(f.pcaVarianceKept).toBeCloseTo(1, 10);
    expect(f.attention.qProj.length).toBe(2 * 32 * 32);
    expect(f.attention.kvA.length).toBe(32 * 32);
    expect(f.attention.kvB.length).toBe(2 * 32 * 16);
  });

  test.each([4, 8])('full rank (kvLoraRank = 2L - r) equals partial-RoPE attention, freqfold %i', (ff) => {
    const c = makeCase(5, 4, 2, 16, true);
    const r = 4;
    const L = 32;
    const m = moments(c);
    const f = factorizeLayer(c.spec, c.w, m, { qkRopeDim: r, kvLoraRank: 2 * L - r, freqfold: ff, balanceKv: 1 });
    const ck = secondMoment({ w: fromArray(c.w.wk, L, 32), b: Float64Array.from(c.w.bk!) }, m);
    const rope = roropeRotation(ck, 2, 16, r, ff);
    const collapse = 16 / r;
    // partial RoPE: only the kept pairs rotate, with DeepSeek's frequency for rope pair j
    const kept: RotPair[] = [];
    for (let j = 0; j < r / 2; j++) kept.push({ re: j, im: j + r / 2, theta: c.invFreq[j * collapse] });
    const x = Float64Array.from(c.x);
    const partial = rotatedAttentionRef(x, c.T, dims(c), c.w, rope.rot.data, kept);
    const ropeInv = new Float64Array(r / 2).map((_, j) => Math.pow(10000, (-2 * j) / r));
    const mla = mlaAttentionRef(x, c.T, { hidden: 32, heads: 4, kvLoraRank: 2 * L - r, ropeDim: r, nopeDim: 16, vDim: 16 }, f.attention, ropeInv);
    expect(relErr(mla, partial)).toBeLessThan(1e-5);
  });

  test('error falls as the rank grows and variance kept rises', () => {
    const c = makeCase(9, 4, 2, 16, false, 40);
    const m = moments(c);
    const x = Float64Array.from(c.x);
    const ref = gqaAttentionRef(x, c.T, dims(c), c.w, c.invFreq);
    const ropeInv = new Float64Array(4).map((_, j) => Math.pow(10000, (-2 * j) / 8));
    let prevErr = Infinity;
    let prevVar = 0;
    for (const R of [8, 24, 56]) {
      const f = factorizeLayer(c.spec, c.w, m, { qkRopeDim: 8, kvLoraRank: R, freqfold: 2, balanceKv: 1 });
      const mla = mlaAttentionRef(x, c.T, { hidden: 32, heads: 4, kvLoraRank: R, ropeDim: 8, nopeDim: 16, vDim: 16 }, f.attention, ropeInv);
      const e = relErr(mla, ref);
      expect(e).toBeLessThan(prevErr);
      expect(f.pcaVarianceKept).toBeGreaterThan(prevVar);
      prevErr = e;
      prevVar = f.pcaVarianceKept;
    }
    expect(prevVar).toBeCloseTo(1, 8);
  });
});

describe('query-aware variants', () => {
  test('query-aware RoRoPE map alone (freqfold 1, nothing cut) reproduces attention exactly', () => {
    const c = makeCase(21, 4, 2, 16, true);
    const m = moments(c);
    const ck = secondMoment({ w: fromArray(c.w.wk, 32, 32), b: Float64Array.from(c.w.bk!) }, m);
    const rope = roropeRotation(ck, 2, 16, 16, 1, queryMetric(c.spec, c.w, m));
    expect(rope.qrot).not.toBe(rope.rot);
    const pairs: RotPair[] = rope.pairs.map((p) => ({ re: p.re, im: p.im, theta: c.invFreq[p.freq] }));
    const x = Float64Array.from(c.x);
    const ref = gqaAttentionRef(x, c.T, dims(c), c.w, c.invFreq);
    const rot = rotatedAttentionRef(x, c.T, dims(c), c.w, rope.rot.data, pairs, rope.qrot.data);
    expect(relErr(rot, ref)).toBeLessThan(1e-9);
  });

  test.each([
    ['qk', 'plain'],
    ['qk', 'objective'],
    ['key', 'objective'],
  ] as const)('full rank equals partial-RoPE attention with rope=%s, kv metric=%s', (sel, metric) => {
    const c = makeCase(23, 4, 2, 16, true);
    const r = 4;
    const L = 32;
    const m = moments(c);
    const f = factorizeLayer(c.spec, c.w, m, { qkRopeDim: r, kvLoraRank: 2 * L - r, freqfold: 4, balanceKv: 1, ropeSelection: sel, kvMetric: metric });
    const ck = secondMoment({ w: fromArray(c.w.wk, L, 32), b: Float64Array.from(c.w.bk!) }, m);
    const rope = roropeRotation(ck, 2, 16, r, 4, sel === 'qk' ? queryMetric(c.spec, c.w, m) : undefined);
    const kept: RotPair[] = [];
    for (let j = 0; j < r / 2; j++) kept.push({ re: j, im: j + r / 2, theta: c.invFreq[j * 4] });
    const x = Float64Array.from(c.x);
    const partial = rotatedAttentionRef(x, c.T, dims(c), c.w, rope.rot.data, kept, rope.qrot.data);
    const ropeInv = new Float64Array(r / 2).map((_, j) => Math.pow(10000, (-2 * j) / r));
    const mla = mlaAttentionRef(x, c.T, { hidden: 32, heads: 4, kvLoraRank: 2 * L - r, ropeDim: r, nopeDim: 16, vDim: 16 }, f.attention, ropeInv);
    expect(relErr(mla, partial)).toBeLessThan(1e-4);
  });

  test('objective-aware compression beats plain PCA at a tight rank on the attention output', () => {
    const c = makeCase(25, 4, 2, 16, false, 48);
    const m = moments(c);
    const x = Float64Array.from(c.x);
    const ref = gqaAttentionRef(x, c.T, dims(c), c.w, c.invFreq);
    const ropeInv = new Float64Array(4).map((_, j) => Math.pow(10000, (-2 * j) / 8));
    const err = (metric: 'plain' | 'objective') => {
      const f = factorizeLayer(c.spec, c.w, m, { qkRopeDim: 8, kvLoraRank: 16, freqfold: 2, balanceKv: 1, ropeSelection: 'qk', kvMetric: metric });
      return relErr(mlaAttentionRef(x, c.T, { hidden: 32, heads: 4, kvLoraRank: 16, ropeDim: 8, nopeDim: 16, vDim: 16 }, f.attention, ropeInv), ref);
    };
    expect(err('objective')).toBeLessThan(err('plain'));
  });
});
