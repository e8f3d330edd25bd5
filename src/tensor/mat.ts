/**
 * Dense float64 matrix helpers for the factorization (row-major storage). Products go
 * through the native BLAS (dgemm); the helpers here only arrange shapes and slices.
 */
import { eigh, gemm, type GemmOptions } from '../linalg.js';

/**
 * The float64 kernels behind {@link matmul} and {@link symEigh}: the CPU BLAS/LAPACK unless a
 * conversion backend installs others for the duration of a run (src/backend/cuda.ts).
 */
export interface MatKernels {
  gemm(a: Float64Array, b: Float64Array, c: Float64Array, m: number, n: number, k: number, options: GemmOptions): void;
  eigh(a: Float64Array, n: number): { values: Float64Array; vectors: Float64Array };
  /** `a` will not change until the backend's next layer: a device copy may be kept for products */
  pin?(a: Float64Array): void;
}

const cpuKernels: MatKernels = {
  gemm: (a, b, c, m, n, k, options) => void gemm(a, b, c, m, n, k, options),
  eigh: (a, n) => eigh(a, n),
};
let kernels: MatKernels = cpuKernels;

/** Installs `k` as the kernels of matmul / symEigh (null restores the CPU ones). */
export function setMatKernels(k: MatKernels | null): void {
  kernels = k ?? cpuKernels;
}

/**
 * Promises that `a` is not written again during the current layer, so that the installed
 * kernels may keep a device copy for repeated products instead of uploading it each time
 * (a no-op on the CPU).
 */
export function pinOperand(a: Float64Array): void {
  kernels.pin?.(a);
}

/** Symmetric eigendecomposition (linalg `eigh` conventions: values descending, column j = vector j) on the installed kernels. */
export function symEigh(a: Float64Array, n: number): { values: Float64Array; vectors: Float64Array } {
  return kernels.eigh(a, n);
}

/** A row-major float64 matrix. */
export interface Mat {
  rows: number;
  cols: number;
  data: Float64Array;
}

/** A new zero matrix. */
export function zeros(rows: number, cols: number): Mat {
  return { rows, cols, data: new Float64Array(rows * cols) };
}

/** Wraps float32 or float64 data as a float64 matrix (copies float32). */
export function fromArray(data: Float32Array | Float64Array, rows: number, cols: number): Mat {
  if (data.length !== rows * cols) throw new Error(`matrix data has ${data.length} values, expected ${rows}x${cols}`);
  return { rows, cols, data: data instanceof Float64Array ? data : Float64Array.from(data) };
}

/** C = op(A) op(B), with op = transpose when the flag is set. */
export function matmul(a: Mat, b: Mat, transA = false, transB = false): Mat {
  const m = transA ? a.cols : a.rows;
  const k = transA ? a.rows : a.cols;
  const kb = transB ? b.cols : b.rows;
  const n = transB ? b.rows : b.cols;
  if (k !== kb) throw new Error(`matmul shape mismatch: ${m}x${k} times ${kb}x${n}`);
  const c = zeros(m, n);
  if (m === 0 || n === 0 || k === 0) return c;
  kernels.gemm(a.data, b.data, c.data, m, n, k, { transA, transB });
  return c;
}

/**
 * V diag(f(lambda)) V^T from a symmetric eigendecomposition (column c of `vectors` belongs to
 * `values[c]`), as one product on the installed kernels, made exactly symmetric.
 */
export function spectralMatrix(values: ArrayLike<number>, vectors: Float64Array, n: number, f: (lambda: number) => number): Mat {
  const scaled = new Float64Array(n * n);
  const fv = new Float64Array(n);
  for (let c = 0; c < n; c++) fv[c] = f(values[c]);
  for (let i = 0; i < n; i++) for (let c = 0; c < n; c++) scaled[i * n + c] = vectors[i * n + c] * fv[c];
  const out = matmul({ rows: n, cols: n, data: scaled }, { rows: n, cols: n, data: vectors }, false, true);
  const d = out.data;
  for (let i = 0; i < n; i++)
    for (let j = i + 1; j < n; j++) {
      const v = 0.5 * (d[i * n + j] + d[j * n + i]);
      d[i * n + j] = v;
      d[j * n + i] = v;
    }
  return out;
}

/** Rows [r0, r1) of a matrix (copy). */
export function rowSlice(a: Mat, r0: number, r1: number): Mat {
  return { rows: r1 - r0, cols: a.cols, data: a.data.slice(r0 * a.cols, r1 * a.cols) };
}

/** Columns [c0, c1) of a matrix (copy). */
export function colSlice(a: Mat, c0: number, c1: number): Mat {
  const out = zeros(a.rows, c1 - c0);
  for (let i = 0; i < a.rows; i++) out.data.set(a.data.subarray(i * a.cols + c0, i * a.cols + c1), i * out.cols);
  return out;
}

/** Stacks matrices vertically. */
export function vstack(parts: Mat[]): Mat {
  const cols = parts[0].cols;
  const rows = parts.reduce((s, p) => s + p.rows, 0);
  const out = zeros(rows, cols);
  let off = 0;
  for (const p of parts) {
    if (p.cols !== cols) throw new Error('vstack: column counts differ');
    out.data.set(p.data, off);
    off += p.data.length;
  }
  return out;
}

/** Transpose (copy). */
export function transpose(a: Mat): Mat {
  const out = zeros(a.cols, a.rows);
  for (let i = 0; i < a.rows; i++) for (let j = 0; j < a.cols; j++) out.data[j * a.rows + i] = a.data[i * a.cols + j];
  return out;
}

/** Multiplies row i by s[i] in place. */
export function scaleRows(a: Mat, s: number | ArrayLike<number>): Mat {
  for (let i = 0; i < a.rows; i++) {
    const f = typeof s === 'number' ? s : s[i];
    for (let j = 0; j < a.cols; j++) a.data[i * a.cols + j] *= f;
  }
  return a;
}

/** Trace of a square matrix. */
export function trace(a: Mat): number {
  let t = 0;
  for (let i = 0; i < a.rows; i++) t += a.data[i * a.cols + i];
  return t;
}

/** Matrix-vector product y = op(A) x. */
export function matvec(a: Mat, x: ArrayLike<number>, transA = false): Float64Array {
  const n = transA ? a.cols : a.rows;
  const y = new Float64Array(n);
  if (!transA) {
    for (let i = 0; i < a.rows; i++) {
      let s = 0;
      const o = i * a.cols;
      for (let j = 0; j < a.cols; j++) s += a.data[o + j] * x[j];
      y[i] = s;
    }
  } else {
    for (let i = 0; i < a.rows; i++) {
      const xi = x[i];
      const o = i * a.cols;
      for (let j = 0; j < a.cols; j++) y[j] += a.data[o + j] * xi;
    }
  }
  return y;
}

/** Float32 copy of a matrix's data. */
export function toF32(a: Mat): Float32Array {
  return Float32Array.from(a.data);
}
