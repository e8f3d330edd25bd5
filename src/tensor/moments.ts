/**
 * Calibration statistics, accumulated in float64 and never as stored activations: the
 * uncentred second moment E[x x^T] and mean E[x] of each layer's attention input x
 * (the input RMSNorm's output). Every projection the factorization needs (keys, values,
 * queries, with biases) is linear in x, so its moments follow exactly from these two.
 */
import { syrkAccumulate } from '../linalg.js';
import { type Mat, matmul, zeros } from './mat.js';

/** Running sums of x x^T and x over calibration tokens. */
export class MomentAccumulator {
  readonly dim: number;
  private readonly sumXX: Float64Array;
  private readonly sumX: Float64Array;
  private n = 0;

  constructor(dim: number) {
    this.dim = dim;
    this.sumXX = new Float64Array(dim * dim);
    this.sumX = new Float64Array(dim);
  }

  /** Adds `rows` token vectors (row-major [rows, dim]). */
  add(x: Float32Array, rows: number): void {
    if (x.length < rows * this.dim) throw new Error(`statistics: ${x.length} values for ${rows} x ${this.dim}`);
    syrkAccumulate(this.sumXX, x.subarray(0, rows * this.dim), rows, this.dim);
    const d = this.dim;
    for (let r = 0; r < rows; r++) {
      const o = r * d;
      for (let j = 0; j < d; j++) this.sumX[j] += x[o + j];
    }
    this.n += rows;
  }

  /** Tokens seen. */
  get count(): number {
    return this.n;
  }

  /** E[x x^T] and E[x]. */
  moments(): InputMoments {
    if (this.n === 0) throw new Error('statistics: no calibration tokens were accumulated');
    const second = zeros(this.dim, this.dim);
    for (let i = 0; i < second.data.length; i++) second.data[i] = this.sumXX[i] / this.n;
    const mean = new Float64Array(this.dim);
    for (let j = 0; j < this.dim; j++) mean[j] = this.sumX[j] / this.n;
    return { second, mean, tokens: this.n };
  }
}

/** Moments of the attention input. */
export interface InputMoments {
  /** E[x x^T], dim x dim */
  second: Mat;
  /** E[x] */
  mean: Float64Array;
  tokens: number;
}

/** An affine map y = W x + b of the attention input. */
export interface Affine {
  w: Mat;
  b: Float64Array | null;
}

/**
 * E[y1 y2^T] for y1 = W1 x + b1 and y2 = W2 x + b2:
 * W1 S W2^T + W1 mu b2^T + b1 mu^T W2^T + b1 b2^T.
 */
export function crossMoment(p1: Affine, p2: Affine, m: InputMoments): Mat {
  const ws = matmul(p1.w, m.second); // W1 S
  const out = matmul(ws, p2.w, false, true);
  const r1 = p1.w.rows;
  const r2 = p2.w.rows;
  const w1mu = p1.b || p2.b ? matvecRows(p1.w, m.mean) : null;
  const w2mu = p1.b || p2.b ? matvecRows(p2.w, m.mean) : null;
  for (let i = 0; i < r1; i++) {
    for (let j = 0; j < r2; j++) {
      let v = 0;
      if (p2.b) v += w1mu![i] * p2.b[j];
      if (p1.b) v += p1.b[i] * w2mu![j];
      if (p1.b && p2.b) v += p1.b[i] * p2.b[j];
      out.data[i * r2 + j] += v;
    }
  }
  return out;
}

/** E[y y^T] for y = W x + b. */
export function secondMoment(p: Affine, m: InputMoments): Mat {
  const out = crossMoment(p, p, m);
  symmetrize(out);
  return out;
}

/** Replaces A by (A + A^T) / 2 (removes rounding asymmetry before eigh). */
export function symmetrize(a: Mat): void {
  const n = a.rows;
  for (let i = 0; i < n; i++)
    for (let j = i + 1; j < n; j++) {
      const v = 0.5 * (a.data[i * n + j] + a.data[j * n + i]);
      a.data[i * n + j] = v;
      a.data[j * n + i] = v;
    }
}

function matvecRows(w: Mat, x: Float64Array): Float64Array {
  const y = new Float64Array(w.rows);
  for (let i = 0; i < w.rows; i++) {
    let s = 0;
    const o = i * w.cols;
    for (let j = 0; j < w.cols; j++) s += w.data[o + j] * x[j];
    y[i] = s;
  }
  return y;
}
