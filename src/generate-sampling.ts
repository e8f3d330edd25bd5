/**
 * Next-token choice from one row of logits: argmax (greedy), or a draw from the
 * temperature-scaled softmax restricted to the top-p nucleus, with a seeded generator so
 * a seed always gives the same tokens. Probabilities in float64.
 */

/** How to pick the next token. */
export interface SamplingOptions {
  /** 0: greedy; > 0: sample from softmax(logits / temperature) */
  temperature: number;
  /** keep the most likely tokens whose probabilities sum to at least topP (1: all) */
  topP: number;
  /** uniform draws in [0, 1) */
  random: () => number;
}

/** A deterministic uniform generator in [0, 1) (mulberry32) from an integer seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Index of the largest logit (the first on ties). */
export function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

/** The next token from `row` (one position's logits). */
export function pickToken(row: ArrayLike<number>, o: SamplingOptions): number {
  if (o.temperature === 0) return argmax(row);
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i] > max) max = row[i];
  const p = new Float64Array(row.length);
  let sum = 0;
  for (let i = 0; i < row.length; i++) {
    p[i] = Math.exp((row[i] - max) / o.temperature);
    sum += p[i];
  }
  const order = Array.from(p.keys()).sort((x, y) => p[y] - p[x] || x - y);
  let kept = 0;
  let mass = 0;
  while (kept < order.length && (kept === 0 || mass < o.topP * sum)) mass += p[order[kept++]];
  let u = o.random() * mass;
  for (let j = 0; j < kept; j++) {
    u -= p[order[j]];
    if (u < 0) return order[j];
  }
  return order[kept - 1];
}
