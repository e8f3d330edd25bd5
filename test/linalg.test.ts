/**
 * Native linear algebra (src/linalg.ts over native/linalg.cc): eigh, svd, gemm and
 * syrkAccumulate against float64 references (naive TS loops, matrices with known spectra)
 * and their defining identities (reconstruction, orthogonality, ordering).
 */
import {
  type FloatArray,
  eigh,
  eighAsync,
  gemm,
  gemmAsync,
  matmul,
  matmulAsync,
  matrixData,
  matrixView,
  singularValues,
  svd,
  svdAsync,
  syrkAccumulate,
  syrkAccumulateAsync,
} from '../src/linalg.js';
import { randn, randSym } from './helpers/random.js';

// ---------- helpers ----------

function fro(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * a[i];
  return Math.sqrt(s);
}

function diffFro(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] - b[i]) ** 2;
  return Math.sqrt(s);
}

const f64 = (a: ArrayLike<number>): Float64Array => Float64Array.from(a);

/** Naive float64 row-major product of op(A) (m x k) and op(B) (k x n). */
function naiveMatmul(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  m: number,
  n: number,
  k: number,
  transA = false,
  transB = false,
): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let p = 0; p < k; p++) s += (transA ? a[p * m + i] : a[i * k + p]) * (transB ? b[j * k + p] : b[p * n + j]);
      c[i * n + j] = s;
    }
  return c;
}

/** ||A - V diag(w) V^T||_F / ||A||_F in float64 (product via dgemm, checked against naiveMatmul below). */
function eighResidual(a: FloatArray, values: FloatArray, vectors: FloatArray, n: number): number {
  const v = f64(vectors);
  const vw = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) vw[i * n + j] = v[i * n + j] * values[j];
  const r = gemm(vw, v, new Float64Array(n * n), n, n, n, { transB: true });
  return diffFro(r, f64(a)) / fro(a);
}

/** ||Q^T Q - I||_F for Q (rows x cols) row-major (orthonormal columns). */
function orthColsErr(q: FloatArray, rows: number, cols: number): number {
  const g = gemm(f64(q), f64(q), new Float64Array(cols * cols), cols, cols, rows, { transA: true });
  for (let i = 0; i < cols; i++) g[i * cols + i] -= 1;
  return fro(g);
}

/** ||Q Q^T - I||_F for Q (rows x cols) row-major (orthonormal rows). */
function orthRowsErr(q: FloatArray, rows: number, cols: number): number {
  const g = gemm(f64(q), f64(q), new Float64Array(rows * rows), rows, rows, cols, { transB: true });
  for (let i = 0; i < rows; i++) g[i * rows + i] -= 1;
  return fro(g);
}

function expectDescending(v: ArrayLike<number>): void {
  for (let i = 1; i < v.length; i++) expect(v[i]).toBeLessThanOrEqual(v[i - 1]);
}

/** Orthogonal n x n matrix as a product of Householder reflections (float64, no LAPACK). */
function randOrthogonal(n: number, seed: number, reflections = 6): Float64Array {
  const q = new Float64Array(n * n);
  for (let i = 0; i < n; i++) q[i * n + i] = 1;
  for (let r = 0; r < reflections; r++) {
    const v = randn(n, seed + 1000 * r);
    const vv = v.reduce((s, x) => s + x * x, 0);
    // Q <- Q (I - 2 v v^T / v^T v)
    for (let i = 0; i < n; i++) {
      let dot = 0;
      for (let j = 0; j < n; j++) dot += q[i * n + j] * v[j];
      const f = (2 * dot) / vv;
      for (let j = 0; j < n; j++) q[i * n + j] -= f * v[j];
    }
  }
  return q;
}

/** Q diag(d) Q^T with a known spectrum d. */
function withSpectrum(d: number[], seed: number): Float64Array {
  const n = d.length;
  const q = randOrthogonal(n, seed);
  const qd = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) qd[i * n + j] = q[i * n + j] * d[j];
  return naiveMatmul(qd, q, n, n, n, false, true);
}

/** Checks an SVD result's identities; returns the relative reconstruction error. */
function checkSvd(a: FloatArray, m: number, n: number, full: boolean, tol: number): number {
  const r = svd(a, m, n, { full });
  const k = Math.min(m, n);
  const ku = full ? m : k;
  const kv = full ? n : k;
  expect(r.u.length).toBe(m * ku);
  expect(r.vt.length).toBe(kv * n);
  expect(r.s.length).toBe(k);
  expect(r.u.constructor).toBe(a.constructor);
  expectDescending(r.s);
  for (const x of r.s) expect(x).toBeGreaterThanOrEqual(0);
  expect(orthColsErr(r.u, m, ku)).toBeLessThan(tol);
  expect(orthRowsErr(r.vt, kv, n)).toBeLessThan(tol);
  // A = U[:, :k] diag(s) Vt[:k, :]
  const us = new Float64Array(m * k);
  for (let i = 0; i < m; i++) for (let j = 0; j < k; j++) us[i * k + j] = r.u[i * ku + j] * r.s[j];
  const rec = gemm(us, f64(r.vt.subarray(0, k * n)), new Float64Array(m * n), m, n, k);
  const err = diffFro(rec, f64(a)) / fro(a);
  expect(err).toBeLessThan(tol);
  return err;
}

function codeOf(fn: () => unknown): { name: string; code: unknown } {
  try {
    fn();
  } catch (e) {
    const err = e as Error & { code?: unknown };
    return { name: err.constructor.name, code: err.code };
  }
  throw new Error('expected a throw');
}

// ---------- gemm (the reference products of later checks go through it) ----------

describe('gemm', () => {
  const m = 37;
  const n = 23;
  const k = 19;
  test.each([
    [false, false],
    [true, false],
    [false, true],
    [true, true],
  ])('float64 and float32 match a naive float64 product (transA=%s, transB=%s)', (transA, transB) => {
    const a = randn(m * k, 1);
    const b = randn(k * n, 2);
    const c0 = randn(m * n, 3);
    const want = naiveMatmul(a, b, m, n, k, transA, transB);
    for (let i = 0; i < want.length; i++) want[i] = 0.75 * want[i] - 0.5 * c0[i];

    const c = Float64Array.from(c0);
    const out = gemm(a, b, c, m, n, k, { transA, transB, alpha: 0.75, beta: -0.5 });
    expect(out).toBe(c);
    expect(diffFro(c, want) / fro(want)).toBeLessThan(1e-14);

    const a32 = Float32Array.from(a);
    const b32 = Float32Array.from(b);
    const c32 = Float32Array.from(c0);
    gemm(a32, b32, c32, m, n, k, { transA, transB, alpha: 0.75, beta: -0.5 });
    const want32 = naiveMatmul(a32, b32, m, n, k, transA, transB);
    for (let i = 0; i < want32.length; i++) want32[i] = 0.75 * want32[i] - 0.5 * Math.fround(c0[i]);
    expect(diffFro(c32, want32) / fro(want32)).toBeLessThan(1e-6);

    const prod = matmul(a, b, m, k, n, { transA, transB });
    expect(diffFro(prod, naiveMatmul(a, b, m, n, k, transA, transB)) / fro(prod)).toBeLessThan(1e-14);
  });

  test('beta = 0 ignores NaN in C; k = 0 scales C by beta; empty products', () => {
    const a = randn(6, 4);
    const b = randn(6, 5);
    const c = new Float64Array(4).fill(NaN);
    gemm(a, b, c, 2, 2, 3);
    expect(diffFro(c, naiveMatmul(a, b, 2, 2, 3))).toBeLessThan(1e-14);
    const c2 = Float64Array.from([1, 2, 3, 4]);
    gemm(new Float64Array(0), new Float64Array(0), c2, 2, 2, 0, { beta: 3 });
    expect(Array.from(c2)).toEqual([3, 6, 9, 12]);
    expect(gemm(new Float64Array(0), new Float64Array(0), new Float64Array(0), 0, 0, 0).length).toBe(0);
  });

  test('async forms resolve with the same product', async () => {
    const a = randn(64 * 48, 5);
    const b = randn(48 * 32, 6);
    const c = await gemmAsync(a, b, new Float64Array(64 * 32), 64, 32, 48);
    expect(diffFro(c, naiveMatmul(a, b, 64, 32, 48)) / fro(c)).toBeLessThan(1e-14);
    const p = await matmulAsync(Float32Array.from(b), Float32Array.from(a), 32, 48, 64, { transA: true, transB: true });
    expect(p).toBeInstanceOf(Float32Array);
    const want = naiveMatmul(Float32Array.from(b), Float32Array.from(a), 32, 64, 48, true, true);
    expect(diffFro(p, want) / fro(want)).toBeLessThan(1e-6);
  });
});

// ---------- eigh ----------

describe('eigh', () => {
  test.each([1, 2, 17, 128, 1024])('float64 n=%i: reconstruction, orthogonality, descending order', (n) => {
    const a = randSym(n, 10 + n);
    const copy = Float64Array.from(a);
    const { values, vectors } = eigh(a, n);
    expect(values).toBeInstanceOf(Float64Array);
    expect(vectors.length).toBe(n * n);
    expect(a).toEqual(copy); // input untouched
    expectDescending(values);
    expect(eighResidual(a, values, vectors, n)).toBeLessThan(1e-10);
    expect(orthColsErr(vectors, n, n)).toBeLessThan(1e-10);
    // column 0 is the eigenvector of the largest eigenvalue: A v = w v
    const v0 = new Float64Array(n);
    for (let i = 0; i < n; i++) v0[i] = vectors[i * n];
    const av = naiveMatmul(a, v0, n, 1, n);
    for (let i = 0; i < n; i++) av[i] -= values[0] * v0[i];
    expect(fro(av) / Math.abs(values[0])).toBeLessThan(1e-10);
  });

  test.each([128, 1024])('float32 n=%i: same identities within 1e-4, eigenvalues close to float64', (n) => {
    const a = randSym(n, 20 + n);
    const a32 = Float32Array.from(a);
    const r = eigh(a32, n);
    expect(r.values).toBeInstanceOf(Float32Array);
    expect(r.vectors).toBeInstanceOf(Float32Array);
    expectDescending(r.values);
    expect(eighResidual(a32, r.values, r.vectors, n)).toBeLessThan(1e-4);
    expect(orthColsErr(r.vectors, n, n)).toBeLessThan(1e-4);
    const ref = eigh(f64(a32), n).values;
    expect(diffFro(r.values, ref) / fro(ref)).toBeLessThan(1e-5);
  });

  test('known spectrum with repeated and negative eigenvalues', () => {
    const d = [5, 5, 5, 2, 2, 0.5, -1, -1, -3, 7, 0, 0];
    const n = d.length;
    const a = withSpectrum(d, 31);
    const { values, vectors } = eigh(a, n);
    const want = [...d].sort((x, y) => y - x);
    for (let i = 0; i < n; i++) expect(Math.abs(values[i] - want[i])).toBeLessThan(1e-12 * 7);
    expect(eighResidual(a, values, vectors, n)).toBeLessThan(1e-12);
    expect(orthColsErr(vectors, n, n)).toBeLessThan(1e-12);
  });

  test('rank-deficient Gram matrix: rank r positive eigenvalues, the rest ~0', () => {
    const n = 64;
    const r = 9;
    const b = randn(n * r, 41);
    const a = naiveMatmul(b, b, n, n, r, false, true);
    const { values, vectors } = eigh(a, n);
    for (let i = 0; i < r; i++) expect(values[i]).toBeGreaterThan(1e-3);
    for (let i = r; i < n; i++) expect(Math.abs(values[i])).toBeLessThan(1e-12 * values[0]);
    expect(eighResidual(a, values, vectors, n)).toBeLessThan(1e-12);
    expect(orthColsErr(vectors, n, n)).toBeLessThan(1e-12);
  });

  test('1x1 and 2x2 by hand', () => {
    const one = eigh(Float64Array.of(-3.5), 1);
    expect(one.values[0]).toBe(-3.5);
    expect(Math.abs(one.vectors[0])).toBe(1);
    // [[2,1],[1,2]]: eigenvalues 3, 1; eigenvector of 3 is (1,1)/sqrt 2
    const two = eigh(Float64Array.of(2, 1, 1, 2), 2);
    expect(two.values[0]).toBeCloseTo(3, 14);
    expect(two.values[1]).toBeCloseTo(1, 14);
    expect(Math.abs(two.vectors[0])).toBeCloseTo(Math.SQRT1_2, 14); // column 0
    expect(two.vectors[0] * two.vectors[2]).toBeGreaterThan(0); // same sign in both rows
  });

  test('reads only the upper triangle; in place into a; preallocated outputs', () => {
    const n = 20;
    const a = randSym(n, 51);
    const skewed = Float64Array.from(a);
    for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) skewed[i * n + j] = 1e6; // junk below the diagonal
    const ref = eigh(a, n);
    const r = eigh(skewed, n);
    expect(diffFro(r.values, ref.values)).toBeLessThan(1e-12 * fro(ref.values));

    const values = new Float64Array(n);
    const work = Float64Array.from(a);
    const inPlace = eigh(work, n, { values, vectors: work });
    expect(inPlace.values).toBe(values);
    expect(inPlace.vectors).toBe(work);
    expect(diffFro(values, ref.values)).toBeLessThan(1e-12 * fro(ref.values));
    expect(eighResidual(a, values, work, n)).toBeLessThan(1e-12);
  });

  test('1024 x 1024 eighAsync keeps the event loop running', async () => {
    const n = 1024;
    const a = randSym(n, 61);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    try {
      const p = eighAsync(a, n);
      expect(ticks).toBe(0);
      const r = await p;
      expect(ticks).toBeGreaterThanOrEqual(1);
      expectDescending(r.values);
      expect(eighResidual(a, r.values, r.vectors, n)).toBeLessThan(1e-10);
    } finally {
      clearInterval(timer);
    }
    const viaOption = await eigh(Float32Array.from(a.subarray(0, 16)), 4, { async: true });
    expect(viaOption.values).toBeInstanceOf(Float32Array);
  });
});

// ---------- svd ----------

describe('svd', () => {
  test.each([
    [300, 120],
    [120, 300],
    [64, 64],
    [1, 7],
    [7, 1],
  ])('float64 %i x %i, thin and full', (m, n) => {
    const a = randn(m * n, 70 + m + n);
    const copy = Float64Array.from(a);
    checkSvd(a, m, n, false, 1e-10);
    checkSvd(a, m, n, true, 1e-10);
    expect(a).toEqual(copy);
  });

  test('float64 1024 x 1024 thin', () => {
    checkSvd(randn(1024 * 1024, 80), 1024, 1024, false, 1e-10);
  });

  test.each([
    [300, 120],
    [120, 300],
    [512, 512],
  ])('float32 %i x %i, thin and full within 1e-4', (m, n) => {
    const a = Float32Array.from(randn(m * n, 90 + m + n));
    checkSvd(a, m, n, false, 1e-4);
    checkSvd(a, m, n, true, 1e-4);
    const s64 = singularValues(f64(a), m, n);
    expect(diffFro(singularValues(a, m, n), s64) / fro(s64)).toBeLessThan(1e-5);
  });

  test('singular values agree with eigh of A^T A; rank-deficient input', () => {
    const m = 90;
    const n = 40;
    const r = 7;
    const a = naiveMatmul(randn(m * r, 101), randn(r * n, 102), m, n, r);
    const { s } = svd(a, m, n);
    const ata = naiveMatmul(a, a, n, n, m, true, false);
    const w = eigh(ata, n).values;
    for (let i = 0; i < r; i++) expect(Math.abs(s[i] * s[i] - w[i]) / w[0]).toBeLessThan(1e-12);
    for (let i = r; i < n; i++) expect(s[i]).toBeLessThan(1e-12 * s[0]);
    checkSvd(a, m, n, true, 1e-12);
  });

  test('1x1, overwrite, preallocated outputs, async', async () => {
    const one = svd(Float64Array.of(-2), 1, 1);
    expect(one.s[0]).toBe(2);
    expect(one.u[0] * one.vt[0]).toBe(-1);

    const m = 30;
    const n = 20;
    const a = randn(m * n, 111);
    const ref = svd(a, m, n);
    const scratch = Float64Array.from(a);
    const u = new Float64Array(m * n);
    const s = new Float64Array(n);
    const vt = new Float64Array(n * n);
    const r = svd(scratch, m, n, { overwrite: true, u, s, vt });
    expect(r.u).toBe(u);
    expect(r.s).toBe(s);
    expect(diffFro(s, ref.s)).toBeLessThan(1e-12 * ref.s[0]);
    expect(scratch).not.toEqual(a); // LAPACK used it as workspace

    const ra = await svdAsync(a, m, n, { full: true });
    expect(ra.u.length).toBe(m * m);
    expect(diffFro(ra.s, ref.s)).toBeLessThan(1e-12 * ref.s[0]);
    const rb = await svd(a, m, n, { async: true });
    expect(rb.k).toBe(n);
  });
});

// ---------- syrkAccumulate ----------

describe('syrkAccumulate', () => {
  test.each(['float64', 'float32'])('%s rows: C += alpha X^T X matches a naive float64 sum', (dtype) => {
    const rows = 150;
    const n = 33;
    const x64 = randn(rows * n, 120);
    const x = dtype === 'float32' ? Float32Array.from(x64) : x64;
    const c0 = randSym(n, 121);
    const c = Float64Array.from(c0);
    syrkAccumulate(c, x, rows, n, 0.5);
    syrkAccumulate(c, x.subarray(0, 40 * n), 40, n);
    const want = naiveMatmul(x, x, n, n, rows, true, false);
    const part = naiveMatmul(x.subarray(0, 40 * n), x.subarray(0, 40 * n), n, n, 40, true, false);
    for (let i = 0; i < want.length; i++) want[i] = c0[i] + 0.5 * want[i] + part[i];
    expect(diffFro(c, want) / fro(want)).toBeLessThan(1e-14);
    for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) expect(c[i * n + j]).toBe(c[j * n + i]);
  });

  test('float32 rows over several conversion blocks (n = 1024, 2100 rows), async', async () => {
    const rows = 2100;
    const n = 1024;
    const x = Float32Array.from(randn(rows * n, 130));
    const c = await syrkAccumulateAsync(new Float64Array(n * n), x, rows, n);
    const want = gemm(f64(x), f64(x), new Float64Array(n * n), n, n, rows, { transA: true });
    expect(diffFro(c, want) / fro(want)).toBeLessThan(1e-13);
    let asym = 0;
    for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) asym = Math.max(asym, Math.abs(c[i * n + j] - c[j * n + i]));
    expect(asym).toBe(0);
  });

  test('zero rows leaves C unchanged', () => {
    const c = randSym(5, 140);
    const copy = Float64Array.from(c);
    syrkAccumulate(c, new Float32Array(0), 0, 5);
    expect(c).toEqual(copy);
  });
});

// ---------- errors ----------

describe('argument and solver errors', () => {
  test('wrong types, dtypes, lengths, dimensions and aliasing', () => {
    const a = randSym(4, 150);
    expect(codeOf(() => eigh(new Int32Array(16) as unknown as Float64Array, 4))).toEqual({
      name: 'TypeError',
      code: 'ERR_INVALID_ARG_TYPE',
    });
    expect(codeOf(() => eigh(a, 3))).toEqual({ name: 'RangeError', code: 'ERR_SHAPE' }); // not 3 x 3
    expect(codeOf(() => eigh(a.subarray(0, 12), 4))).toEqual({ name: 'RangeError', code: 'ERR_SHAPE' }); // 4 x 3
    expect(codeOf(() => eigh(a, 0))).toEqual({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
    expect(codeOf(() => eigh(a, -4))).toEqual({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
    expect(codeOf(() => eigh(a, 2.5))).toEqual({ name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
    expect(codeOf(() => eigh(a, 4, { vectors: new Float32Array(16) as unknown as Float64Array }))).toEqual({
      name: 'TypeError',
      code: 'ERR_DTYPE',
    });
    expect(codeOf(() => eigh(a, 4, { values: a.subarray(0, 4) }))).toEqual({ name: 'RangeError', code: 'ERR_ALIAS' });
    expect(codeOf(() => svd(a, 2, 3))).toEqual({ name: 'RangeError', code: 'ERR_SHAPE' });
    expect(codeOf(() => svd(a, 4, 4, { full: true, u: new Float64Array(8) }))).toEqual({
      name: 'RangeError',
      code: 'ERR_SHAPE',
    });
    const b = new Float32Array(16);
    expect(codeOf(() => gemm(a, b as unknown as Float64Array, new Float64Array(16), 4, 4, 4))).toEqual({
      name: 'TypeError',
      code: 'ERR_DTYPE',
    });
    expect(codeOf(() => gemm(a, a, new Float64Array(15), 4, 4, 4))).toEqual({ name: 'RangeError', code: 'ERR_SHAPE' });
    expect(codeOf(() => gemm(a, a, a, 4, 4, 4))).toEqual({ name: 'RangeError', code: 'ERR_ALIAS' });
    expect(codeOf(() => gemm(a, a, new Float64Array(16), 4, -1, 4))).toEqual({
      name: 'RangeError',
      code: 'ERR_OUT_OF_RANGE',
    });
    expect(codeOf(() => syrkAccumulate(new Float32Array(16) as unknown as Float64Array, a, 4, 4))).toEqual({
      name: 'TypeError',
      code: 'ERR_DTYPE',
    });
    expect(codeOf(() => syrkAccumulate(new Float64Array(16), a, 3, 4))).toEqual({ name: 'RangeError', code: 'ERR_SHAPE' });
    expect(codeOf(() => syrkAccumulate(new Float64Array(16), a, 4, 4, NaN))).toEqual({
      name: 'RangeError',
      code: 'ERR_OUT_OF_RANGE',
    });
  });

  test('NaN / Infinity: ERR_NONFINITE up front, or ERR_LAPACK with info from LAPACKE when the check is off', async () => {
    const a = randSym(6, 160);
    a[2 * 6 + 3] = NaN;
    const e1 = (() => {
      try {
        eigh(a, 6);
      } catch (e) {
        return e as Error & { code?: string; info?: number };
      }
      throw new Error('expected a throw');
    })();
    expect(e1.code).toBe('ERR_NONFINITE');
    expect(e1.message).toContain('index 15');
    await expect(eighAsync(a, 6)).rejects.toMatchObject({ code: 'ERR_NONFINITE' });

    // LAPACKE's own NaN scan rejects argument 5 (a) of ?syevd / ?gesdd: info = -5
    await expect(eighAsync(a, 6, { checkFinite: false })).rejects.toMatchObject({ code: 'ERR_LAPACK', info: -5 });
    expect(() => eigh(Float32Array.from(a), 6, { checkFinite: false })).toThrow(
      expect.objectContaining({ code: 'ERR_LAPACK', info: -5 }),
    );
    const b = randn(12, 161);
    b[7] = Infinity;
    expect(() => svd(b, 3, 4)).toThrow(expect.objectContaining({ code: 'ERR_NONFINITE' }));
    b[7] = NaN;
    await expect(svdAsync(b, 3, 4, { checkFinite: false })).rejects.toMatchObject({ code: 'ERR_LAPACK', info: -5 });

    // LAPACKE scans for NaN only: with the check off, Infinity yields NaN results silently
    const c = randSym(3, 162);
    c[4] = Infinity;
    expect(() => eigh(c, 3)).toThrow(expect.objectContaining({ code: 'ERR_NONFINITE' }));
    expect(Number.isNaN(eigh(c, 3, { checkFinite: false }).values[0])).toBe(true);
  });

  test('async wrappers report argument errors as rejections', async () => {
    await expect(eighAsync(new Float64Array(3), 2)).rejects.toMatchObject({ code: 'ERR_SHAPE' });
    await expect(svdAsync(new Float64Array(6), 2, 3, { s: new Float64Array(3) })).rejects.toMatchObject({
      code: 'ERR_SHAPE',
    });
    await expect(syrkAccumulateAsync(new Float64Array(4), new Float64Array(3), 2, 2)).rejects.toMatchObject({
      code: 'ERR_SHAPE',
    });
  });
});

// ---------- ndarray views ----------

describe('ndarray helpers', () => {
  test('matrixView / matrixData round trip without copying; non-contiguous views are refused', () => {
    const n = 6;
    const a = randSym(n, 170);
    const v = matrixView(a, n, n);
    expect(v.get(2, 3)).toBe(a[2 * n + 3]);
    const back = matrixData(v.lo(2, 0));
    expect(back.rows).toBe(n - 2);
    expect(back.data.buffer).toBe(a.buffer);
    expect(back.data[0]).toBe(a[2 * n]);
    const { vectors } = eigh(matrixData(v).data, n);
    const vv = matrixView(vectors, n, n);
    expect(vv.get(4, 0)).toBe(vectors[4 * n]);
    expect(() => matrixData(v.transpose(1, 0))).toThrow(expect.objectContaining({ code: 'ERR_NOT_CONTIGUOUS' }));
    expect(() => matrixView(a, 5, 5)).toThrow(expect.objectContaining({ code: 'ERR_SHAPE' }));
  });
});
