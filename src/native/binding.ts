/**
 * The one file that types the native addon. Every export of `native/addon.cc` is
 * declared here; the rest of the TypeScript code imports `native` from this module.
 *
 * Conventions of the addon: TypedArray arguments are read in place (no copies);
 * functions named `*Async` run on the libuv thread pool and return Promises; bad
 * arguments throw TypeError/RangeError with `code` (ERR_INVALID_ARG_TYPE, ERR_SHAPE,
 * ERR_OUT_OF_RANGE); solver failures reject with an Error carrying `code` and `info`.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Facts about the build of the addon and the CPU it runs on. */
export interface BuildInfo {
  cuda: boolean;
  blas: string;
  blasConfig: string;
  blasThreads: number;
  threads: number;
  avx2: boolean;
  napiVersion: number;
}

/* ---- linalg (native/linalg.cc) ---- */
/** Dense float data for the linear-algebra exports; all arrays of one call share a dtype. */
export type FloatArray = Float32Array | Float64Array;

/** Options of `eigh` / `eighAsync`: optional preallocated outputs (same dtype as `a`). */
export interface NativeEighOptions<T extends FloatArray> {
  /** n eigenvalues (descending); allocated when absent */
  values?: T;
  /** n x n row-major, column j = eigenvector j; may be `a` itself (then `a` is overwritten) */
  vectors?: T;
  /** reject non-finite input with ERR_NONFINITE before LAPACK sees it (default true) */
  checkFinite?: boolean;
}

/** Options of `svd` / `svdAsync`. */
export interface NativeSvdOptions<T extends FloatArray> {
  /** full U (m x m) and Vt (n x n) instead of thin (m x k, k x n), k = min(m, n) */
  full?: boolean;
  /** false: singular values only (u and vt are null) */
  computeUV?: boolean;
  /** preallocated outputs (same dtype as `a`, exact lengths) */
  u?: T;
  s?: T;
  vt?: T;
  /** let LAPACK destroy `a` instead of working on an internal scratch copy (default false) */
  overwrite?: boolean;
  /** reject non-finite input with ERR_NONFINITE (default true) */
  checkFinite?: boolean;
}

/** Options of `gemm` / `gemmAsync`. */
export interface NativeGemmOptions {
  transA?: boolean;
  transB?: boolean;
  /** default 1 */
  alpha?: number;
  /** default 0 (C's old contents are ignored, NaN included) */
  beta?: number;
}

// Linear algebra, merged into NativeBinding below (declaration merging keeps each
// feature's section self-contained). Row-major everywhere; inputs read in place.
export interface NativeBinding {
  /**
   * Symmetric eigendecomposition (LAPACK ?syevd) of row-major `a` (n x n). Only the upper
   * triangle (`a[i*n+j]`, j >= i) is read. `a` is not modified unless it is passed as
   * `options.vectors`. Eigenvalues are descending; column j of `vectors` is eigenvector j.
   * @throws TypeError ERR_INVALID_ARG_TYPE / ERR_DTYPE, RangeError ERR_SHAPE / ERR_OUT_OF_RANGE /
   *   ERR_ALIAS, Error ERR_NONFINITE, Error ERR_LAPACK (with `info`)
   */
  eigh<T extends FloatArray>(a: T, n: number, options?: NativeEighOptions<T>): { values: T; vectors: T };
  /** `eigh` on the libuv pool; argument errors throw synchronously, solver errors reject. */
  eighAsync<T extends FloatArray>(a: T, n: number, options?: NativeEighOptions<T>): Promise<{ values: T; vectors: T }>;
  /**
   * SVD (LAPACK ?gesdd) of row-major `a` (m x n) = U diag(s) Vt, s descending (length
   * min(m, n)). `a` is untouched unless `options.overwrite`.
   * @throws as `eigh`
   */
  svd<T extends FloatArray>(a: T, m: number, n: number, options?: NativeSvdOptions<T>): { u: T | null; s: T; vt: T | null };
  /** `svd` on the libuv pool. */
  svdAsync<T extends FloatArray>(
    a: T,
    m: number,
    n: number,
    options?: NativeSvdOptions<T>,
  ): Promise<{ u: T | null; s: T; vt: T | null }>;
  /**
   * C (m x n) = alpha op(A) op(B) + beta C (BLAS ?gemm), row-major, in place; op(A) is
   * m x k (A stored k x m when transA), op(B) is k x n (stored n x k when transB). Returns c.
   * Dimensions may be 0. c must not share memory with a or b (ERR_ALIAS).
   */
  gemm<T extends FloatArray>(a: T, b: T, c: T, m: number, n: number, k: number, options?: NativeGemmOptions): T;
  /** `gemm` on the libuv pool; resolves with c. */
  gemmAsync<T extends FloatArray>(
    a: T,
    b: T,
    c: T,
    m: number,
    n: number,
    k: number,
    options?: NativeGemmOptions,
  ): Promise<T>;
  /**
   * C (n x n, float64) += alpha X^T X for row-major X (rows x n, float32 or float64),
   * accumulated in float64 (dsyrk). C must be symmetric on entry: its upper triangle is
   * updated and copied onto the lower one. Returns c.
   */
  syrkAccumulate(c: Float64Array, x: FloatArray, rows: number, n: number, alpha?: number): Float64Array;
  /** `syrkAccumulate` on the libuv pool; resolves with c. */
  syrkAccumulateAsync(c: Float64Array, x: FloatArray, rows: number, n: number, alpha?: number): Promise<Float64Array>;
}

/* ---- forward kernels (native/forward_*.cc) ---- */
/* ---- decode kernels (native/decode_*.cc) ---- */

/** The addon's exports. */
export interface NativeBinding {
  buildInfo(): BuildInfo;
}

function findAddon(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  // src/native or dist/native -> package root
  const root = join(here, '..', '..');
  const candidates = [
    process.env.GQA2MLA_ADDON,
    join(root, 'build', 'Release', 'gqa2mla.node'),
    join(root, 'build', 'Debug', 'gqa2mla.node'),
  ].filter((p): p is string => typeof p === 'string' && p.length > 0);
  for (const c of candidates) if (existsSync(c)) return c;
  const err = new Error(
    `gqa2mla native addon not found (looked in ${candidates.join(', ')}); run \`npm install\` ` +
      '(needs libopenblas-dev and liblapacke-dev) or `npm run build:native`',
  ) as Error & { code: string };
  err.code = 'ERR_ADDON_MISSING';
  throw err;
}

const require = createRequire(import.meta.url);

/** The loaded native addon. */
export const native: NativeBinding = require(findAddon()) as NativeBinding;
