/** Seeded random data for tests and benches. */
import { seededRandom } from '../../src/generate-sampling.js';

/** mulberry32: a small seeded PRNG returning floats in [0, 1) (the one of src/generate-sampling.ts). */
export const prng = seededRandom;

/** Standard normal samples (Box-Muller). */
export function randn(len: number, seed: number): Float64Array {
  const u = prng(seed);
  const out = new Float64Array(len);
  for (let i = 0; i < len; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - u()));
    const th = 2 * Math.PI * u();
    out[i] = r * Math.cos(th);
    if (i + 1 < len) out[i + 1] = r * Math.sin(th);
  }
  return out;
}

/** Random symmetric n x n (B + B^T) / 2. */
export function randSym(n: number, seed: number): Float64Array {
  const b = randn(n * n, seed);
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) a[i * n + j] = 0.5 * (b[i * n + j] + b[j * n + i]);
  return a;
}

/**
 * Seed of the randomized tests: `GQA2MLA_TEST_SEED` (a decimal or 0x-hex integer in
 * [0, 2^32)) when set, else {@link DEFAULT_TEST_SEED}, so every run is reproducible and a
 * failing one can be re-run with the seed its test title shows ({@link seedLabel}).
 */
export const DEFAULT_TEST_SEED = 20261201;

/** The test seed (see {@link DEFAULT_TEST_SEED}); throws on a malformed value. */
export function testSeed(): number {
  const env = process.env.GQA2MLA_TEST_SEED;
  if (env === undefined || env.trim() === '') return DEFAULT_TEST_SEED;
  const v = Number(env.trim());
  if (!Number.isInteger(v) || v < 0 || v > 0xffffffff)
    throw new Error(`GQA2MLA_TEST_SEED must be an integer in [0, 2^32), got ${JSON.stringify(env)}`);
  return v;
}

/** `GQA2MLA_TEST_SEED=<seed>`: put it in a describe title so Jest prints it with every failure. */
export function seedLabel(): string {
  return `GQA2MLA_TEST_SEED=${testSeed()}`;
}

/**
 * A stream of per-case seeds derived from the test seed: `salt` separates files, `stride`
 * (an odd prime) spaces the cases. `next()` returns the next case seed.
 */
export function seedStream(salt: number, stride = 7919): { base: number; next: () => number } {
  const base = (testSeed() ^ salt) >>> 0;
  let n = 0;
  return { base, next: () => (base + stride * ++n) >>> 0 };
}
