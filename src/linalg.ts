/**
 * Dense linear algebra on row-major Float32Array / Float64Array data, backed by the
 * native addon (OpenBLAS + LAPACKE): symmetric eigendecomposition, SVD, matrix products
 * and a float64 rank-k accumulate for covariance sums.
 *
 * Conventions:
 * - Matrices are flat TypedArrays in row-major order with explicit dimensions; every
 *   array of one call has the same dtype (float32 work runs in float32, float64 in
 *   float64; `syrkAccumulate` always accumulates in float64).
 * - Inputs are read in place and never modified, except where an option says otherwise
 *   (`eigh` with `vectors: a`, `svd` with `overwrite: true`).
 * - Bad arguments throw TypeError (`code` ERR_INVALID_ARG_TYPE, ERR_DTYPE) or RangeError
 *   (ERR_SHAPE for wrong lengths, ERR_OUT_OF_RANGE for bad dimensions, ERR_ALIAS for an
 *   output sharing memory with an input). Non-finite eigh/svd input gives an Error with
 *   code ERR_NONFINITE; a LAPACK failure gives code ERR_LAPACK and its `info`. The `*Async`
 *   forms run on the libuv thread pool and report every error as a rejection.
 * - `ndarray` views of results come from {@link matrixView}; {@link matrixData} turns a
 *   contiguous row-major 2-D ndarray back into the flat form these functions take.
 */
import ndarray from 'ndarray';
import { GqaError } from './errors.js';
import { type FloatArray, native, type NativeGemmArgs } from './native/binding.js';

export type { FloatArray };

/** Options of {@link eigh}. */
export interface EighOptions<T extends FloatArray> {
  /** preallocated output for the n eigenvalues (same dtype as `a`) */
  values?: T;
  /** preallocated n x n output for the eigenvectors; may be `a` itself to decompose in place */
  vectors?: T;
  /** reject NaN/Infinity input with ERR_NONFINITE before calling LAPACK (default true) */
  checkFinite?: boolean;
  /** run on the thread pool and return a Promise (same as {@link eighAsync}) */
  async?: boolean;
}

/** Eigendecomposition of a symmetric matrix A = V diag(values) V^T. */
export interface EighResult<T extends FloatArray> {
  /** eigenvalues, descending */
  values: T;
  /**
   * n x n row-major; column j (`vectors[i * n + j]`, i = 0..n-1) is the unit eigenvector
   * of `values[j]`. Its sign is whatever LAPACK produced.
   */
  vectors: T;
  n: number;
}

/**
 * Eigendecomposition of the symmetric n x n row-major matrix `a` (LAPACK ?syevd, divide
 * and conquer). Only the upper triangle (`a[i*n+j]`, j >= i) is read; symmetrize first if
 * the two triangles may differ by rounding. Eigenvalues are sorted descending.
 *
 * @param a - n x n row-major, float32 or float64 (results have the same dtype)
 * @param n - order of the matrix (>= 1)
 * @example `const { values, vectors } = eigh(cov, d); // vectors[i*d + 0]: top eigenvector`
 */
export function eigh<T extends FloatArray>(
  a: T,
  n: number,
  options: EighOptions<T> & { async: true },
): Promise<EighResult<T>>;
export function eigh<T extends FloatArray>(a: T, n: number, options?: EighOptions<T> & { async?: false }): EighResult<T>;
export function eigh<T extends FloatArray>(
  a: T,
  n: number,
  options: EighOptions<T> = {},
): EighResult<T> | Promise<EighResult<T>> {
  if (options.async) return eighAsync(a, n, options);
  const { values, vectors } = native.eigh(a, n, nativeEighOptions(a, n, options));
  return { values, vectors, n };
}

/** {@link eigh} on the libuv thread pool; the event loop keeps running meanwhile. */
export async function eighAsync<T extends FloatArray>(a: T, n: number, options: EighOptions<T> = {}): Promise<EighResult<T>> {
  const { values, vectors } = await native.eighAsync(a, n, nativeEighOptions(a, n, options));
  return { values, vectors, n };
}

function nativeEighOptions<T extends FloatArray>(a: T, n: number, o: EighOptions<T>) {
  return { values: o.values ?? alloc(a, n), vectors: o.vectors ?? alloc(a, n * n), checkFinite: o.checkFinite };
}

/** Options of {@link svd}. */
export interface SvdOptions<T extends FloatArray> {
  /** full U (m x m) and Vt (n x n); default thin: U m x k, Vt k x n, k = min(m, n) */
  full?: boolean;
  /** preallocated outputs of the right lengths (same dtype as `a`) */
  u?: T;
  s?: T;
  vt?: T;
  /** let LAPACK overwrite `a` (saves a scratch copy of m*n values; `a` is garbage afterwards) */
  overwrite?: boolean;
  /** reject NaN/Infinity input with ERR_NONFINITE before calling LAPACK (default true) */
  checkFinite?: boolean;
  /** run on the thread pool and return a Promise (same as {@link svdAsync}) */
  async?: boolean;
}

/** A = U diag(s) Vt for row-major A (m x n). */
export interface SvdResult<T extends FloatArray> {
  /** m x ku row-major (ku = m when full, else k); column j = left singular vector j */
  u: T;
  /** k = min(m, n) singular values, descending, >= 0 */
  s: T;
  /** kv x n row-major (kv = n when full, else k); row j = right singular vector j */
  vt: T;
  m: number;
  n: number;
  k: number;
  full: boolean;
}

/**
 * Singular value decomposition of the row-major m x n matrix `a` (LAPACK ?gesdd), any
 * shape. `a` is left untouched (LAPACK works on a scratch copy) unless `overwrite`.
 *
 * @param a - m x n row-major, float32 or float64 (results have the same dtype)
 */
export function svd<T extends FloatArray>(
  a: T,
  m: number,
  n: number,
  options: SvdOptions<T> & { async: true },
): Promise<SvdResult<T>>;
export function svd<T extends FloatArray>(a: T, m: number, n: number, options?: SvdOptions<T> & { async?: false }): SvdResult<T>;
export function svd<T extends FloatArray>(
  a: T,
  m: number,
  n: number,
  options: SvdOptions<T> = {},
): SvdResult<T> | Promise<SvdResult<T>> {
  if (options.async) return svdAsync(a, m, n, options);
  const r = native.svd(a, m, n, nativeSvdOptions(a, m, n, options));
  return svdResult(r, m, n, options.full === true);
}

/** {@link svd} on the libuv thread pool. */
export async function svdAsync<T extends FloatArray>(
  a: T,
  m: number,
  n: number,
  options: SvdOptions<T> = {},
): Promise<SvdResult<T>> {
  const r = await native.svdAsync(a, m, n, nativeSvdOptions(a, m, n, options));
  return svdResult(r, m, n, options.full === true);
}

/** Singular values only (descending, length min(m, n)) of row-major `a` (m x n); cheaper than {@link svd}. */
export function singularValues<T extends FloatArray>(a: T, m: number, n: number): T {
  return native.svd(a, m, n, { computeUV: false, s: alloc(a, Math.min(m, n)) }).s;
}

function nativeSvdOptions<T extends FloatArray>(a: T, m: number, n: number, o: SvdOptions<T>) {
  const k = Math.min(m, n);
  return {
    full: o.full,
    u: o.u ?? alloc(a, m * (o.full ? m : k)),
    s: o.s ?? alloc(a, k),
    vt: o.vt ?? alloc(a, (o.full ? n : k) * n),
    overwrite: o.overwrite,
    checkFinite: o.checkFinite,
    computeUV: true,
  };
}

function svdResult<T extends FloatArray>(
  r: { u: T | null; s: T; vt: T | null },
  m: number,
  n: number,
  full: boolean,
): SvdResult<T> {
  if (r.u === null || r.vt === null) throw new GqaError('ERR_NATIVE', 'svd: the addon returned no singular vectors', 'runtime');
  return { u: r.u, s: r.s, vt: r.vt, m, n, k: Math.min(m, n), full };
}

/** Options of {@link gemm} and {@link matmul}. */
export interface GemmOptions {
  /** use A^T: `a` is stored k x m */
  transA?: boolean;
  /** use B^T: `b` is stored n x k */
  transB?: boolean;
  /** scale of the product (default 1) */
  alpha?: number;
  /** scale of C's old contents (default 0: C is overwritten and its old values, NaN included, ignored) */
  beta?: number;
}

/**
 * In place C = alpha op(A) op(B) + beta C (BLAS ?gemm), row-major. Note the BLAS order
 * of dimensions: C is m x n and the inner dimension k comes last.
 *
 * @param a - op(A) is m x k (stored m x k, or k x m when `transA`)
 * @param b - op(B) is k x n (stored k x n, or n x k when `transB`)
 * @param c - m x n output (must not share memory with a or b); also returned
 */
export function gemm<T extends FloatArray>(a: T, b: T, c: T, m: number, n: number, k: number, options: GemmOptions = {}): T {
  return native.gemm(a, b, c, m, n, k, options);
}

/** {@link gemm} on the libuv thread pool (same arguments); resolves with `c`. */
export async function gemmAsync<T extends FloatArray>(...args: Parameters<typeof gemm<T>>): Promise<T> {
  return native.gemmAsync(...args);
}

/**
 * A new m x n row-major matrix op(A) op(B), same dtype as the inputs. Dimensions are given
 * in reading order (m x k times k x n), unlike {@link gemm}'s BLAS order.
 */
export function matmul<T extends FloatArray>(a: T, b: T, m: number, k: number, n: number, options: Pick<GemmOptions, 'transA' | 'transB'> = {}): T {
  return native.gemm(...matmulAsGemm(a, b, m, k, n, options));
}

/** {@link matmul} on the libuv thread pool (same arguments). */
export async function matmulAsync<T extends FloatArray>(...args: Parameters<typeof matmul<T>>): Promise<T> {
  return native.gemmAsync(...matmulAsGemm(...args));
}

/** {@link matmul}'s arguments as {@link gemm}'s, with C a new output of `a`'s realm and dtype. */
function matmulAsGemm<T extends FloatArray>(...[a, b, m, k, n, options = {}]: Parameters<typeof matmul<T>>): NativeGemmArgs<T> {
  const c = alloc(a, m * n) ?? newLike(a, 0);
  return [a, b, c, m, n, k, { transA: options.transA, transB: options.transB }];
}

function newLike<T extends FloatArray>(a: T, length: number): T {
  // Symbol.toStringTag, unlike instanceof, also works across realms (vm contexts, jest)
  if (floatDType(a) === 'float32') return new Float32Array(length) as T;
  // float64, or a bad argument that the addon reports with its usual code
  return new Float64Array(length) as T;
}

/**
 * Outputs are allocated here rather than in the addon so that they belong to the caller's
 * JS realm; `undefined` (the addon then checks the dimensions) when `length` is not valid.
 */
function alloc<T extends FloatArray>(a: T, length: number): T | undefined {
  return Number.isSafeInteger(length) && length >= 0 ? newLike(a, length) : undefined;
}

/** 'float32' / 'float64' for a Float32Array / Float64Array (from any realm), else null. */
export function floatDType(a: unknown): 'float32' | 'float64' | null {
  if (!ArrayBuffer.isView(a)) return null;
  const tag = (a as { [Symbol.toStringTag]?: string })[Symbol.toStringTag];
  return tag === 'Float32Array' ? 'float32' : tag === 'Float64Array' ? 'float64' : null;
}

/**
 * Covariance-style accumulation in float64: C += alpha * X^T X (BLAS dsyrk; float32 rows
 * are widened to float64 in blocks). C must be symmetric on entry (e.g. zeros or a
 * previous sum): its upper triangle is updated and mirrored onto the lower one.
 *
 * @param c - n x n float64 running sum, updated in place and returned
 * @param x - rows x n row-major samples, float32 or float64
 * @param alpha - weight of this batch (default 1)
 */
export function syrkAccumulate(c: Float64Array, x: FloatArray, rows: number, n: number, alpha = 1): Float64Array {
  return native.syrkAccumulate(c, x, rows, n, alpha);
}

/** {@link syrkAccumulate} on the libuv thread pool; do not touch `c` or `x` until it settles. */
export async function syrkAccumulateAsync(
  c: Float64Array,
  x: FloatArray,
  rows: number,
  n: number,
  alpha = 1,
): Promise<Float64Array> {
  return native.syrkAccumulateAsync(c, x, rows, n, alpha);
}

/** A 2-D ndarray view (no copy) of row-major `data` with the given shape. */
export function matrixView<T extends FloatArray>(data: T, rows: number, cols: number): ndarray.NdArray<T> {
  if (data.length !== rows * cols)
    throw new GqaError('ERR_SHAPE', `matrixView: ${data.length} values cannot be viewed as ${rows} x ${cols}`, 'runtime');
  return ndarray(data, [rows, cols]);
}

/**
 * The flat row-major data of a 2-D float ndarray, for the functions of this module. The
 * view must be contiguous and row-major (a view from {@link matrixView}, or `.lo()` row
 * ranges of one); anything else throws ERR_NOT_CONTIGUOUS rather than copying silently.
 */
export function matrixData<T extends FloatArray>(a: ndarray.NdArray<T>): { data: T; rows: number; cols: number } {
  if (a.dimension !== 2) throw new GqaError('ERR_SHAPE', `matrixData: expected a 2-D ndarray, got ${a.dimension}-D`, 'runtime');
  if (floatDType(a.data) === null)
    throw new GqaError('ERR_DTYPE', 'matrixData: ndarray data must be a Float32Array or Float64Array', 'runtime');
  const [rows, cols] = a.shape;
  const rowMajor = (cols <= 1 || a.stride[1] === 1) && (rows <= 1 || a.stride[0] === cols);
  if (!rowMajor)
    throw new GqaError(
      'ERR_NOT_CONTIGUOUS',
      `matrixData: ndarray with shape [${rows}, ${cols}] and stride [${a.stride}] is not contiguous row-major`,
      'runtime',
    );
  return { data: a.data.subarray(a.offset, a.offset + rows * cols) as T, rows, cols };
}
