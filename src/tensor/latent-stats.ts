/**
 * Row reductions of a latent c = W x + b (the exact latent norm's inputs): the largest
 * per-token mean square and the smallest non-zero magnitude, float64 sums.
 */
import { gemm } from '../linalg.js';
import { native } from '../native/binding.js';

/** Largest per-token mean square of c = W x + b over rows of x ([rows, hid]). */
export function maxLatentMeanSquare(w: Float32Array, b: Float32Array | null, R: number, hid: number, x: Float32Array, rows: number): { maxMs: number; minAbs: number } {
  const chunk = 4096;
  const c = new Float32Array(Math.min(chunk, rows) * R);
  let maxMs = 0;
  let minAbs = Infinity;
  for (let r0 = 0; r0 < rows; r0 += chunk) {
    const n = Math.min(chunk, rows - r0);
    const out = c.subarray(0, n * R);
    // out[n, R] = x[n, hid] W[R, hid]^T
    gemm(x.subarray(r0 * hid, (r0 + n) * hid), w.subarray(0, R * hid), out, n, R, hid, { transB: true });
    const s = latentRowStats(out, n, R, b);
    maxMs = Math.max(maxMs, s.maxMs);
    minAbs = Math.min(minAbs, s.minAbs);
  }
  return { maxMs, minAbs };
}

/**
 * Largest per-row mean square and smallest non-zero |v| of v = c + b over `n` rows of
 * c ([n, R], the latent before its bias). The backends compute c and share this reduction.
 */
export function latentRowStats(c: Float32Array, n: number, R: number, b: Float32Array | null): { maxMs: number; minAbs: number } {
  if (n === 0) return { maxMs: 0, minAbs: Infinity };
  const out = new Float64Array(2);
  native.latentRowStats(c, b, out, { rows: n, dim: R }); // multithreaded, float64 sums
  return { maxMs: out[0], minAbs: out[1] };
}
