import { native } from '../src/native/binding.js';
import { linearRef, maxRelErr, nllRef, randn, rmsNormRef } from './helpers/forward-ref.js';

describe('embedGather', () => {
  test('copies table rows, rejects ids out of range', async () => {
    const V = 50;
    const H = 24;
    const table = randn(V * H, 1);
    const ids = new Int32Array([3, 0, 49, 3, 17]);
    const out = new Float32Array(ids.length * H);
    native.embedGather(table, ids, out, H);
    for (let r = 0; r < ids.length; r++) expect(Array.from(out.subarray(r * H, (r + 1) * H))).toEqual(Array.from(table.subarray(ids[r] * H, (ids[r] + 1) * H)));
    const out2 = new Float32Array(out.length);
    await native.embedGatherAsync(table, ids, out2, H);
    expect(out2).toEqual(out);
    expect(() => native.embedGather(table, new Int32Array([50]), out, H)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => native.embedGather(table, new Int32Array([-1]), out, H)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
  });
});

describe('rmsNorm', () => {
  test.each([
    [7, 256],
    [33, 576],
    [1, 1000],
  ])('rows=%i dim=%i vs float64', (rows, dim) => {
    const x = randn(rows * dim, rows + dim, 3);
    const w = randn(dim, 2);
    const out = new Float32Array(rows * dim);
    native.rmsNorm(x, w, out, { rows, dim, eps: 1e-6 });
    expect(maxRelErr(out, rmsNormRef(x, w, rows, dim, 1e-6))).toBeLessThan(1e-6);
    native.rmsNorm(x, null, out, { rows, dim, eps: 1e-5 });
    expect(maxRelErr(out, rmsNormRef(x, null, rows, dim, 1e-5))).toBeLessThan(1e-6);
  });
  test('strided rows, in place, and eps dominating tiny inputs', async () => {
    const rows = 5;
    const dim = 16;
    const stride = 20;
    const x = randn(rows * stride, 4);
    const dense = new Float32Array(rows * dim);
    for (let r = 0; r < rows; r++) dense.set(x.subarray(r * stride, r * stride + dim), r * dim);
    const w = randn(dim, 5);
    await native.rmsNormAsync(x, w, x, { rows, dim, eps: 1e-6, xStride: stride, outStride: stride });
    const ref = rmsNormRef(dense, w, rows, dim, 1e-6);
    const got = new Float32Array(rows * dim);
    for (let r = 0; r < rows; r++) got.set(x.subarray(r * stride, r * stride + dim), r * dim);
    expect(maxRelErr(got, ref)).toBeLessThan(1e-6);
    const tiny = randn(dim, 6, 1e-6);
    const o = new Float32Array(dim);
    native.rmsNorm(tiny, null, o, { rows: 1, dim, eps: 1e-2 });
    expect(maxRelErr(o, rmsNormRef(tiny, null, 1, dim, 1e-2))).toBeLessThan(1e-6);
  });
});

describe('linear', () => {
  test.each([
    [1, 16, 8, false],
    [37, 256, 192, true],
    [24, 576, 384, false],
  ])('rows=%i in=%i out=%i bias=%s vs float64', (rows, inDim, outDim, withBias) => {
    const x = randn(rows * inDim, rows, 1);
    const w = randn(outDim * inDim, inDim, 0.05);
    const b = withBias ? randn(outDim, 9) : null;
    const out = new Float32Array(rows * outDim);
    native.linear(x, w, out, { rows, inDim, outDim, bias: b });
    expect(maxRelErr(out, linearRef(x, w, rows, inDim, outDim, b))).toBeLessThan(1e-5);
  });
  test('accumulate, strided input and output', async () => {
    const rows = 9;
    const inDim = 12;
    const outDim = 10;
    const xs = 15;
    const os = 13;
    const x = randn(rows * xs, 1);
    const w = randn(outDim * inDim, 2);
    const b = randn(outDim, 3);
    const out = randn(rows * os, 4);
    const before = out.slice();
    await native.linearAsync(x, w, out, { rows, inDim, outDim, bias: b, xStride: xs, outStride: os, accumulate: true });
    const dense = new Float32Array(rows * inDim);
    for (let r = 0; r < rows; r++) dense.set(x.subarray(r * xs, r * xs + inDim), r * inDim);
    const y = linearRef(dense, w, rows, inDim, outDim, b);
    for (let r = 0; r < rows; r++) {
      for (let o = 0; o < outDim; o++) expect(out[r * os + o]).toBeCloseTo(before[r * os + o] + y[r * outDim + o], 4);
      for (let o = outDim; o < os && r * os + o < out.length; o++) expect(out[r * os + o]).toBe(before[r * os + o]);
    }
  });
  test('wrong weight size is a shape error', () => {
    expect(() => native.linear(new Float32Array(8), new Float32Array(15), new Float32Array(8), { rows: 2, inDim: 4, outDim: 4 })).toThrow(
      expect.objectContaining({ code: 'ERR_SHAPE' }),
    );
  });
});

describe('swiglu', () => {
  test('silu(gate) * up vs float64, including large |gate|', async () => {
    const n = 50000;
    const g = randn(n, 1, 4);
    g[0] = -100;
    g[1] = 100;
    g[2] = -30;
    const u = randn(n, 2);
    const out = new Float32Array(n);
    native.swiglu(g, u, out, n);
    const ref = new Float64Array(n);
    for (let i = 0; i < n; i++) ref[i] = (g[i] / (1 + Math.exp(-g[i]))) * u[i];
    let worst = 0;
    for (let i = 0; i < n; i++) worst = Math.max(worst, Math.abs(out[i] - ref[i]) / Math.max(1e-30, Math.abs(ref[i])));
    expect(worst).toBeLessThan(2e-6);
    await native.swigluAsync(g, u, g, n); // in place
    expect(g).toEqual(out);
  });
});

describe('log-softmax NLL', () => {
  test('logSoftmaxNll and lmHeadNll vs float64', async () => {
    const rows = 70;
    const H = 48;
    const V = 1003;
    const hidden = randn(rows * H, 1);
    const w = randn(V * H, 2, 0.4);
    const targets = new Int32Array(rows);
    for (let r = 0; r < rows; r++) targets[r] = (r * 7919) % V;
    targets[5] = -1;
    const logits64 = linearRef(hidden, w, rows, H, V);
    const ref = nllRef(logits64, targets, rows, V);
    const logits = new Float32Array(rows * V);
    native.linear(hidden, w, logits, { rows, inDim: H, outDim: V });
    const out = new Float64Array(rows);
    native.logSoftmaxNll(logits, targets, out, { rows, vocab: V });
    expect(maxRelErr(out, ref)).toBeLessThan(2e-5);
    expect(out[5]).toBe(0);
    for (const chunkRows of [1, 16, 1000]) {
      const o2 = new Float64Array(rows);
      await native.lmHeadNllAsync(hidden, w, targets, o2, { rows, hiddenDim: H, vocab: V, chunkRows });
      expect(maxRelErr(o2, ref)).toBeLessThan(2e-5);
    }
    const o3 = new Float32Array(rows);
    native.lmHeadNll(hidden, w, targets, o3, { rows, hiddenDim: H, vocab: V });
    expect(maxRelErr(o3, ref)).toBeLessThan(2e-5);
    expect(() => native.logSoftmaxNll(logits, new Int32Array(rows).fill(V), out, { rows, vocab: V })).toThrow(
      expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }),
    );
  });
});
