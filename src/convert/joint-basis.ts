/**
 * One latent for two targets read through different input covariances (the attention-aware
 * joint K/V compression).
 *
 * The latent c = A x (A: R x n) must serve two linear targets y_i = M_i x (the weighted
 * NoPE keys and the weighted values), whose errors are measured under different input
 * covariances S_i (keys: the attention-weighted spread of the attended inputs; values: the
 * second moment of the attended inputs). Minimized over A and the decoders D_i:
 *
 *   J(A, D_1, D_2) = sum_i tr((M_i - D_i A) S_i (M_i - D_i A)^T).
 *
 * With S_1 = S_2 this is a PCA (reduced-rank regression); otherwise alternating least
 * squares, each step exact, so J never increases:
 * - decoders: D_i = M_i S_i A^T (A S_i A^T)^{-1};
 * - encoder: the stationarity condition P_1 A S_1 + P_2 A S_2 = Q with P_i = D_i^T D_i,
 *   Q = sum_i D_i^T M_i S_i, solved in closed form by simultaneous diagonalization:
 *   with P = P_1 + P_2, S = S_1 + S_2, P^{-1/2} P_1 P^{-1/2} = U diag(l) U^T and
 *   S^{-1/2} S_1 S^{-1/2} = W diag(m) W^T, A = P^{-1/2} U X W^T S^{-1/2} where
 *   X_ab = (U^T P^{-1/2} Q S^{-1/2} W)_ab / (l_a m_b + (1 - l_a)(1 - m_b)).
 * All in float64.
 */
import { type Mat, matmul, pinOperand, spectralMatrix, symEigh as eigh, zeros } from '../tensor/mat.js';

/** sum_ij a_ij b_ij (= tr(A B^T)). */
function dotAll(a: Mat, b: Mat): number {
  let s = 0;
  for (let i = 0; i < a.data.length; i++) s += a.data[i] * b.data[i];
  return s;
}

/** Result of {@link jointBasis}. */
export interface JointBasis {
  /** the encoder A, R x n */
  a: Mat;
  /** the optimal decoders D_1 (rows of M_1 x R) and D_2 for the final A */
  decoders: [Mat, Mat];
  /** J after each decoder step (loss[0]: the initial encoder), non-increasing */
  loss: number[];
}

/** The symmetric part of a square matrix (copy). */
function symPart(a: Mat): Float64Array {
  const n = a.rows;
  const sym = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) sym[i * n + j] = 0.5 * (a.data[i * n + j] + a.data[j * n + i]);
  return sym;
}

/** Symmetric functions of a positive semi-definite matrix: V f(max(lambda, floor)) V^T. */
function symFn(a: Mat, f: (x: number) => number, relFloor: number): { out: Mat; values: Float64Array; vectors: Float64Array } {
  const n = a.rows;
  const { values, vectors } = eigh(symPart(a), n);
  const floor = Math.max(values[0], 1e-300) * relFloor;
  return { out: spectralMatrix(values, vectors, n, (l) => f(Math.max(l, floor))), values, vectors };
}

/** Pseudo-inverse of a symmetric PSD matrix (eigenvalues below 1e-12 x the largest dropped). */
function pinv(a: Mat): Mat {
  const n = a.rows;
  const { values, vectors } = eigh(symPart(a), n);
  const cut = Math.max(values[0], 0) * 1e-12;
  return spectralMatrix(values, vectors, n, (l) => (l > cut ? 1 / l : 0));
}

/**
 * D = M S A^T (A S A^T)^{-1} and the loss tr(M S M^T) - tr(D A S M^T), from ms = M S and
 * total = tr(M S M^T).
 */
function decoder(ms: Mat, total: number, s: Mat, a: Mat): { d: Mat; loss: number } {
  const msa = matmul(ms, a, false, true); // rows x R
  const asa = matmul(a, matmul(s, a, false, true)); // R x R
  const inv = pinv(asa);
  const d = matmul(msa, inv);
  let explained = 0;
  for (let i = 0; i < d.data.length; i++) explained += d.data[i] * msa.data[i];
  return { d, loss: total - explained };
}

/** The input side of {@link jointBasis}, fixed for a pair of covariances (reusable). */
export interface JointInputs {
  s1: Mat;
  s2: Mat;
  /** S^{-1/2} W with S = S_1 + S_2 and S^{-1/2} S_1 S^{-1/2} = W diag(mu) W^T */
  sIsqrtW: Mat;
  mu: Float64Array;
}

/**
 * Prepares the input side of {@link jointBasis} for covariances S_1, S_2 (n x n, PSD).
 * Each gets a ridge of `ridge` x its mean eigenvalue, so that directions without data
 * still have a unique (decoder-consistent) encoder.
 */
export function jointInputs(c1: Mat, c2: Mat, ridge = 1e-9): JointInputs {
  const n = c1.rows;
  for (const [name, x] of [
    ['s1', c1],
    ['s2', c2],
  ] as const)
    if (x.rows !== n || x.cols !== n) throw new Error(`jointBasis: ${name} is ${x.rows}x${x.cols}, expected ${n}x${n}`);
  const withRidge = (c: Mat): Mat => {
    const out: Mat = { rows: n, cols: n, data: c.data.slice() };
    let tr = 0;
    for (let i = 0; i < n; i++) tr += c.data[i * n + i];
    const lam = (ridge * Math.max(tr, 0)) / n;
    for (let i = 0; i < n; i++) out.data[i * n + i] += lam;
    return out;
  };
  const s1 = withRidge(c1);
  const s2 = withRidge(c2);
  const S = zeros(n, n);
  for (let i = 0; i < n * n; i++) S.data[i] = s1.data[i] + s2.data[i];
  const sIsqrt = symFn(S, (x) => 1 / Math.sqrt(x), 1e-12).out;
  const eS = symFn(matmul(matmul(sIsqrt, s1), sIsqrt), (x) => x, 0);
  const mu = eS.values.map((v) => Math.min(1, Math.max(0, v)));
  return { s1, s2, sIsqrtW: matmul(sIsqrt, { rows: n, cols: n, data: eS.vectors }), mu };
}

/**
 * Alternating least squares for the shared encoder of two targets (see the module
 * comment), started from `a0`. Stops after `iterations` encoder steps or when J falls by
 * less than `tol` (relative) in a step.
 * @param m1 first target map, rows1 x n
 * @param m2 second target map, rows2 x n
 * @param inputs their input covariances S_1, S_2 ({@link jointInputs})
 * @param a0 initial encoder, R x n (full row rank, R < n; with R >= n the latent can keep
 *   all of x and there is nothing to refine)
 */
export function jointBasis(m1: Mat, m2: Mat, inputs: JointInputs, a0: Mat, iterations = 40, tol = 1e-6): JointBasis {
  const n = a0.cols;
  const R = a0.rows;
  for (const [name, x] of [
    ['m1', m1],
    ['m2', m2],
    ['s1', inputs.s1],
  ] as const)
    if (x.cols !== n) throw new Error(`jointBasis: ${name} has ${x.cols} columns, expected ${n}`);
  const { s1, s2, sIsqrtW, mu } = inputs;
  if (R >= n) iterations = 0;
  for (const x of [s1.data, s2.data, sIsqrtW.data]) pinOperand(x); // read in every iteration, never written
  const m1s1 = matmul(m1, s1);
  const m2s2 = matmul(m2, s2);
  pinOperand(m1s1.data);
  pinOperand(m2s2.data);
  const tot1 = dotAll(m1s1, m1);
  const tot2 = dotAll(m2s2, m2);

  let a = a0;
  let d1 = decoder(m1s1, tot1, s1, a);
  let d2 = decoder(m2s2, tot2, s2, a);
  const loss = [d1.loss + d2.loss];
  const scale = tot1 + tot2;
  // an (almost) exact start has nothing to refine, and rounding would dominate the steps
  if (loss[0] <= 1e-10 * scale) iterations = 0;
  for (let it = 0; it < iterations; it++) {
    const p1 = matmul(d1.d, d1.d, true, false);
    const p2 = matmul(d2.d, d2.d, true, false);
    const P = zeros(R, R);
    for (let i = 0; i < R * R; i++) P.data[i] = p1.data[i] + p2.data[i];
    const pIsqrt = symFn(P, (x) => 1 / Math.sqrt(x), 1e-12).out;
    const eP = symFn(matmul(matmul(pIsqrt, p1), pIsqrt), (x) => x, 0);
    const lam = eP.values.map((v) => Math.min(1, Math.max(0, v)));
    const U: Mat = { rows: R, cols: R, data: eP.vectors };
    const pIsqrtU = matmul(pIsqrt, U); // R x R
    const Q = matmul(d1.d, m1s1, true, false);
    const q2 = matmul(d2.d, m2s2, true, false);
    for (let i = 0; i < Q.data.length; i++) Q.data[i] += q2.data[i];
    const X = matmul(matmul(pIsqrtU, Q, true, false), sIsqrtW); // R x n
    for (let i = 0; i < R; i++)
      for (let j = 0; j < n; j++) {
        const den = lam[i] * mu[j] + (1 - lam[i]) * (1 - mu[j]);
        X.data[i * n + j] /= Math.max(den, 1e-12);
      }
    const next = matmul(matmul(pIsqrtU, X), sIsqrtW, false, true);
    const n1 = decoder(m1s1, tot1, s1, next);
    const n2 = decoder(m2s2, tot2, s2, next);
    const l = n1.loss + n2.loss;
    // a step that does not help, or that rounding broke (J < 0), ends the iteration
    if (!(l <= loss[loss.length - 1]) || l < -1e-9 * scale) break;
    a = next;
    d1 = n1;
    d2 = n2;
    const prev = loss[loss.length - 1];
    loss.push(l);
    if (prev - l <= tol * Math.abs(prev)) break;
  }
  return { a, decoders: [d1.d, d2.d], loss };
}

