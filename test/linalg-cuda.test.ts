/**
 * CUDA float64 linear algebra (native/linalg_cuda.cc: cuSOLVER Xsyevd / Xgesvd, cuBLAS
 * DGEMM) against LAPACK/BLAS on the same inputs, up to n = 4096: eigenvalues and singular
 * values within 1e-10 of LAPACK's (relative to the largest), eigenvectors equal up to sign
 * on a matrix with separated eigenvalues, residuals and orthogonality at 1e-10.
 * Skipped unless the addon was built with CUDA (npm run build:cuda) and a GPU answers.
 */
import { eigh, gemm, svd } from '../src/linalg.js';
import { native } from '../src/native/binding.js';
import { randn, randSym, seedLabel, testSeed } from './helpers/random.js';

const cu = native.convertCuda;
const enabled = native.buildInfo().cuda && cu !== undefined && cu.available();
const suite = enabled ? describe : describe.skip;
const verbose = process.env.GQA2MLA_TEST_VERBOSE === '1';
// Inputs from GQA2MLA_TEST_SEED (fixed default), shown in the suite titles.
const seed0 = (testSeed() ^ 0x5bd1e995) >>> 0;

function fro(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * a[i];
  return Math.sqrt(s);
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** A = Q diag(lambda) Q^T with Q orthogonal (from LAPACK) and eigenvalues spaced 1 / n apart in [-1, 2]. */
function separatedSym(n: number, seed: number): { a: Float64Array; lambda: Float64Array } {
  const q = eigh(randSym(n, seed), n).vectors;
  const lambda = new Float64Array(n);
  for (let i = 0; i < n; i++) lambda[i] = 2 - (3 * i) / n;
  const ql = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) ql[i * n + j] = q[i * n + j] * lambda[j];
  const a = new Float64Array(n * n);
  gemm(ql, q, a, n, n, n, { transB: true });
  for (let i = 0; i < n; i++)
    for (let j = i + 1; j < n; j++) {
      const v = 0.5 * (a[i * n + j] + a[j * n + i]);
      a[i * n + j] = v;
      a[j * n + i] = v;
    }
  return { a, lambda };
}

/** ||A V - V diag(w)||_F / ||A||_F and ||V^T V - I||_F / sqrt(n). */
function eighChecks(a: Float64Array, w: Float64Array, v: Float64Array, n: number): { residual: number; orth: number } {
  const av = new Float64Array(n * n);
  gemm(a, v, av, n, n, n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) av[i * n + j] -= v[i * n + j] * w[j];
  const vtv = new Float64Array(n * n);
  gemm(v, v, vtv, n, n, n, { transA: true });
  for (let i = 0; i < n; i++) vtv[i * n + i] -= 1;
  return { residual: fro(av) / fro(a), orth: fro(vtv) / Math.sqrt(n) };
}

suite(`convertCuda.eigh (cuSOLVER) vs LAPACK (${seedLabel()})`, () => {
  for (const n of [1, 7, 300, 1024, 2048, 4096]) {
    test(`n = ${n}: eigenvalues, eigenvectors (up to sign), residual, orthogonality`, async () => {
      const { a, lambda } = separatedSym(n, seed0 + n);
      const ref = eigh(a, n);
      const t0 = performance.now();
      const got = await cu!.eighAsync(a, n);
      const ms = performance.now() - t0;
      const scale = Math.max(...Array.from(ref.values, Math.abs));
      const valErr = maxAbsDiff(got.values, ref.values) / scale;
      const exactErr = maxAbsDiff(got.values, lambda) / scale;
      let vecErr = 0;
      for (let j = 0; j < n; j++) {
        let dot = 0;
        for (let i = 0; i < n; i++) dot += got.vectors[i * n + j] * ref.vectors[i * n + j];
        vecErr = Math.max(vecErr, 1 - Math.abs(dot));
      }
      const { residual, orth } = eighChecks(a, got.values, got.vectors, n);
      if (verbose)
        console.log(`eigh n=${n}: values ${valErr.toExponential(2)} (exact ${exactErr.toExponential(2)}), vectors 1-|dot| ${vecErr.toExponential(2)}, residual ${residual.toExponential(2)}, orth ${orth.toExponential(2)}, ${ms.toFixed(1)} ms (solver ${(got.seconds * 1e3).toFixed(1)} ms)`);
      expect(valErr).toBeLessThan(1e-10);
      expect(exactErr).toBeLessThan(1e-10);
      expect(vecErr).toBeLessThan(1e-10);
      expect(residual).toBeLessThan(1e-10);
      expect(orth).toBeLessThan(1e-10);
      for (let j = 1; j < n; j++) expect(got.values[j]).toBeLessThanOrEqual(got.values[j - 1]);
    });
  }

  test('random symmetric matrix (clustered spectrum): eigenvalues and residual', () => {
    const n = 512;
    const a = randSym(n, seed0 + 1);
    const ref = eigh(a, n);
    const got = cu!.eigh(a, n);
    const scale = Math.max(...Array.from(ref.values, Math.abs));
    expect(maxAbsDiff(got.values, ref.values) / scale).toBeLessThan(1e-10);
    const { residual, orth } = eighChecks(a, got.values, got.vectors, n);
    expect(residual).toBeLessThan(1e-10);
    expect(orth).toBeLessThan(1e-10);
  });

  test('only the upper triangle is read; preallocated outputs are filled; non-finite input is refused', () => {
    const n = 64;
    const { a } = separatedSym(n, seed0 + 2);
    const b = a.slice();
    for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) b[i * n + j] = 1e6 * (i + j); // garbage below the diagonal
    const values = new Float64Array(n).fill(NaN);
    const vectors = new Float64Array(n * n).fill(NaN);
    const got = cu!.eigh(b, n, { values, vectors });
    expect(got.values).toBe(values);
    expect(got.vectors).toBe(vectors);
    const ref = eigh(a, n);
    expect(maxAbsDiff(values, ref.values) / 2).toBeLessThan(1e-10);
    const bad = a.slice();
    bad[5] = NaN;
    expect(() => cu!.eigh(bad, n)).toThrow(expect.objectContaining({ code: 'ERR_NONFINITE' }));
    expect(() => cu!.eigh(a, n + 1)).toThrow(expect.objectContaining({ code: 'ERR_SHAPE' }));
    expect(() => cu!.eigh(new Float32Array(n * n) as unknown as Float64Array, n)).toThrow(expect.objectContaining({ code: 'ERR_DTYPE' }));
  });
});

suite(`convertCuda.svd (cuSOLVER) vs LAPACK (${seedLabel()})`, () => {
  const shapes: Array<[number, number, boolean]> = [
    [1, 5, false],
    [5, 1, true],
    [300, 200, false],
    [200, 300, false],
    [120, 80, true],
    [80, 120, true],
    [4096, 1024, false],
    [1024, 4096, false],
  ];
  for (const [m, n, full] of shapes) {
    test(`${m} x ${n}${full ? ' full' : ''}: singular values, reconstruction, orthogonality`, async () => {
      const a = randn(m * n, seed0 + 31 * m + n);
      const k = Math.min(m, n);
      const ref = svd(a, m, n);
      const t0 = performance.now();
      const got = await cu!.svdAsync(a, m, n, { full });
      const ms = performance.now() - t0;
      const sErr = maxAbsDiff(got.s, ref.s) / ref.s[0];
      const ku = full ? m : k;
      const kv = full ? n : k;
      // U[:, :k] diag(s) Vt[:k, :]
      const us = new Float64Array(m * k);
      for (let i = 0; i < m; i++) for (let j = 0; j < k; j++) us[i * k + j] = got.u![i * ku + j] * got.s[j];
      const rec = new Float64Array(m * n);
      gemm(us, got.vt!.subarray(0, k * n), rec, m, n, k);
      for (let i = 0; i < m * n; i++) rec[i] -= a[i];
      const recErr = fro(rec) / fro(a);
      const utu = new Float64Array(ku * ku);
      gemm(got.u!, got.u!, utu, ku, ku, m, { transA: true });
      for (let i = 0; i < ku; i++) utu[i * ku + i] -= 1;
      const vvt = new Float64Array(kv * kv);
      gemm(got.vt!, got.vt!, vvt, kv, kv, n, { transB: true });
      for (let i = 0; i < kv; i++) vvt[i * kv + i] -= 1;
      if (verbose)
        console.log(`svd ${m}x${n}${full ? ' full' : ''}: s ${sErr.toExponential(2)}, reconstruction ${recErr.toExponential(2)}, U ${(fro(utu) / Math.sqrt(ku)).toExponential(2)}, V ${(fro(vvt) / Math.sqrt(kv)).toExponential(2)}, ${ms.toFixed(1)} ms`);
      expect(sErr).toBeLessThan(1e-10);
      expect(recErr).toBeLessThan(1e-10);
      expect(fro(utu) / Math.sqrt(ku)).toBeLessThan(1e-10);
      expect(fro(vvt) / Math.sqrt(kv)).toBeLessThan(1e-10);
    });
  }

  test('values only', () => {
    const a = randn(60 * 40, seed0 + 5);
    const got = cu!.svd(a, 60, 40, { computeUV: false });
    expect(got.u).toBeNull();
    expect(got.vt).toBeNull();
    expect(maxAbsDiff(got.s, svd(a, 60, 40).s) / got.s[0]).toBeLessThan(1e-10);
  });
});

suite(`convertCuda.gemm (cuBLAS DGEMM) vs BLAS (${seedLabel()})`, () => {
  test.each([
    [false, false],
    [true, false],
    [false, true],
    [true, true],
  ])('transA %s transB %s, host and device operands, beta', (ta, tb) => {
    const m = 150;
    const n = 70;
    const k = 230;
    const a = randn(m * k, seed0 + 7);
    const b = randn(k * n, seed0 + 8);
    const c0 = randn(m * n, seed0 + 9);
    const ref = c0.slice();
    gemm(a, b, ref, m, n, k, { transA: ta, transB: tb, alpha: 0.5, beta: 2 });
    const got = c0.slice();
    cu!.gemm(a, b, got, m, n, k, { transA: ta, transB: tb, alpha: 0.5, beta: 2 });
    expect(maxAbsDiff(got, ref) / fro(ref)).toBeLessThan(1e-13);
    const da = cu!.alloc(a.byteLength);
    cu!.upload(da, a);
    const got2 = new Float64Array(m * n).fill(NaN);
    cu!.gemm(da, b, got2, m, n, k, { transA: ta, transB: tb });
    const ref2 = new Float64Array(m * n);
    gemm(a, b, ref2, m, n, k, { transA: ta, transB: tb });
    expect(maxAbsDiff(got2, ref2) / fro(ref2)).toBeLessThan(1e-13);
    cu!.free(da);
  });
});
