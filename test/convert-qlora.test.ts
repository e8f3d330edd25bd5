/**
 * Query compression (q_a_proj -> q_a_layernorm -> q_b_proj) and the exact query bias:
 * float64 references on random inputs, the exact-norm bound, the bias channel, limits.
 */
import { checkQLoraRank, compressQuery, losslessQLoraRank } from '../src/convert/q-compress.js';
import { chooseLatentScaling } from '../src/convert/latent-norm.js';
import { MomentAccumulator } from '../src/tensor/moments.js';
import { roundToDtype } from '../src/convert/layer-ops.js';
import { randn } from './helpers/random.js';
import { relErr } from './helpers/ref-attention.js';

/** Random correlated inputs x = z A (so the query covariance has a decaying spectrum). */
function inputs(rows: number, hid: number, seed: number): Float32Array {
  const z = randn(rows * hid, seed);
  const a = randn(hid * hid, seed + 1);
  const x = new Float32Array(rows * hid);
  for (let r = 0; r < rows; r++)
    for (let j = 0; j < hid; j++) {
      let s = 0;
      for (let k = 0; k < hid; k++) s += z[r * hid + k] * a[k * hid + j] * Math.pow(0.93, k);
      x[r * hid + j] = s * 0.3 + 0.05;
    }
  return x;
}

function f32(a: Float64Array, scale = 1): Float32Array {
  const o = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) o[i] = a[i] * scale;
  return o;
}

/** DeepSeek-V3's query path in float64: q_b(RMSNorm(q_a x + b_a) * w). */
function mlaQuery(x: Float32Array, row: number, hid: number, qc: ReturnType<typeof compressQuery>, M: number, eps: number, norm = true): Float64Array {
  const N = qc.qLoraRank;
  const y = new Float64Array(N);
  let ms = 0;
  for (let i = 0; i < N; i++) {
    let s = qc.qABias ? qc.qABias[i] : 0;
    for (let j = 0; j < hid; j++) s += qc.qA[i * hid + j] * x[row * hid + j];
    y[i] = s;
    ms += s * s;
  }
  ms /= N;
  const f = norm ? qc.normWeight / Math.sqrt(ms + eps) : qc.normWeight;
  const q = new Float64Array(M);
  for (let m = 0; m < M; m++) {
    let s = 0;
    for (let i = 0; i < N; i++) s += qc.qB[m * N + i] * y[i] * f;
    q[m] = s;
  }
  return q;
}

function reference(x: Float32Array, row: number, hid: number, w: Float32Array, b: Float32Array | null, M: number): Float64Array {
  const q = new Float64Array(M);
  for (let m = 0; m < M; m++) {
    let s = b ? b[m] : 0;
    for (let j = 0; j < hid; j++) s += w[m * hid + j] * x[row * hid + j];
    q[m] = s;
  }
  return q;
}


const hid = 48;
const M = 80;
const eps = 1e-6;
const rows = 600;
const x = inputs(rows, hid, 11);
const acc = new MomentAccumulator(hid);
acc.add(x, rows);
const moments = acc.moments();
const W = f32(randn(M * hid, 5), 0.2);
const B = f32(randn(M, 6), 0.7);

test('lossless rank with a bias: stock query path equals W x + b within the exact-norm bound', () => {
  const N = losslessQLoraRank(hid, M, true);
  expect(N).toBe(hid + 1);
  const qc = compressQuery(W, B, M, hid, N, moments, x, rows, eps, true);
  expect(qc.biasChannel).toBe(hid);
  expect(qc.pcaRank).toBe(hid);
  expect(qc.varianceKept).toBeCloseTo(1, 12);
  const s = qc.scaling!;
  // q_a_layernorm weight and the bias channel's stored value are powers of two (exact in bf16)
  expect(Number.isInteger(Math.log2(qc.normWeight))).toBe(true);
  expect(Number.isInteger(Math.log2(qc.qABias![hid]))).toBe(true);
  expect(roundToDtype(qc.qABias!, 'BF16')[hid]).toBe(qc.qABias![hid]);
  expect(s.boundCalibration).toBeLessThan(1e-6);
  expect(s.boundWithMargin).toBeLessThanOrEqual(1e-4);
  // the bias channel is the only non-zero q_a bias entry
  for (let i = 0; i < hid; i++) expect(qc.qABias![i]).toBe(0);
  let worst = 0;
  for (let r = 0; r < rows; r += 7) worst = Math.max(worst, relErr(mlaQuery(x, r, hid, qc, M, eps), reference(x, r, hid, W, B, M)));
  // float32 weights: the PCA round-off (~1e-7) plus the norm's factor 1/sqrt(1+u) <= the bound
  expect(worst).toBeLessThan(s.boundCalibration + 2e-6);
  expect(worst).toBeGreaterThan(0);
  // without the norm's factor (a patched engine) the path is exact to float32 round-off
  const unscaled = { ...qc, normWeight: 1 / qc.scaling!.alpha };
  let worstNoNorm = 0;
  for (let r = 0; r < rows; r += 7) worstNoNorm = Math.max(worstNoNorm, relErr(mlaQuery(x, r, hid, unscaled, M, eps, false), reference(x, r, hid, W, B, M)));
  expect(worstNoNorm).toBeLessThan(2e-6);
});

test('tokens with 100x the calibration mean square stay within the stated bound (<= 1e-4)', () => {
  const qc = compressQuery(W, B, M, hid, hid + 1, moments, x, rows, eps, true);
  const big = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) big[i] = x[i] * 10; // mean square x100 (the bias part grows less)
  let worst = 0;
  for (let r = 0; r < rows; r += 13) {
    const refQ = reference(big, r, hid, W, B, M);
    worst = Math.max(worst, relErr(mlaQuery(big, r, hid, qc, M, eps), refQ));
  }
  expect(worst).toBeLessThanOrEqual(qc.scaling!.boundWithMargin + 2e-6);
  expect(worst).toBeGreaterThan(qc.scaling!.boundCalibration);
  // the bound is the norm's 1 - 1/sqrt(1+u): check it against chooseLatentScaling directly
  const sc = chooseLatentScaling(qc.scaling!.maxMeanSquare, 1, eps);
  expect(sc.boundWithMargin).toBeCloseTo(qc.scaling!.boundWithMargin, 15);
});

test('truncated PCA: the residual equals the discarded query variance (float64 moments)', () => {
  const k = 20;
  const qc = compressQuery(W, null, M, hid, k, moments, x, rows, eps, false);
  expect(qc.qABias).toBeNull();
  expect(qc.biasChannel).toBeNull();
  expect(qc.normWeight).toBe(1);
  // E||Wx - U U^T W x||^2 over the calibration tokens = sum of the dropped eigenvalues
  let resid = 0;
  let total = 0;
  for (let r = 0; r < rows; r++) {
    const a = mlaQuery(x, r, hid, qc, M, eps, false);
    const b = reference(x, r, hid, W, null, M);
    for (let i = 0; i < M; i++) {
      resid += (a[i] - b[i]) ** 2;
      total += b[i] ** 2;
    }
  }
  const dropped = 1 - qc.varianceKept;
  expect(dropped).toBeGreaterThan(1e-4);
  expect(Math.abs(resid / total - dropped) / dropped).toBeLessThan(1e-3);
  // the spectrum is descending and its head is what was kept
  for (let i = 1; i < qc.spectrum.length; i++) expect(qc.spectrum[i]).toBeLessThanOrEqual(qc.spectrum[i - 1] * (1 + 1e-12));
});

test('truncated PCA with a bias: the bias is still carried exactly by its channel', () => {
  const k = 20;
  const qc = compressQuery(W, B, M, hid, k + 1, moments, x, rows, eps, true);
  const zero = new Float32Array(hid * 2); // two tokens of x = 0: the query is the bias alone
  for (let r = 0; r < 2; r++) {
    const q = mlaQuery(zero, r, hid, qc, M, eps);
    expect(relErr(q, reference(zero, r, hid, W, B, M))).toBeLessThan(2e-6);
  }
});

test('q_lora_rank limits name the bound', () => {
  expect(() => checkQLoraRank(hid + 2, hid, M, true)).toThrow(/qLoraRank 50 must be an integer in \[2, 49\]/);
  expect(() => checkQLoraRank(1, hid, M, true)).toThrow(/query bias/);
  expect(() => checkQLoraRank(0, hid, M, false)).toThrow(/\[1, 48\]/);
  expect(() => checkQLoraRank(2.5, hid, M, false)).toThrow(/integer/);
  expect(() => checkQLoraRank(48, hid, M, false)).not.toThrow();
});
