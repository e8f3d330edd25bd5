/**
 * float64 symmetric eigendecomposition, cuSOLVER (Xsyevd) vs LAPACK (OpenBLAS dsyevd) on
 * the same machine and the same random symmetric matrices, n = 1024, 2048, 4096: wall time
 * host array to host array (what the conversion pays) and, for cuSOLVER, the solver's own
 * GPU time. Median of `--reps` runs after one warm-up each.
 *   tsx bench/convert-8b/eigh.ts --json <file> [--reps 3]
 */
import { writeFileSync } from 'node:fs';
import { eighAsync } from '../../src/linalg.js';
import { native } from '../../src/native/binding.js';
import { randSym } from '../../test/helpers/random.js';

const i = process.argv.indexOf('--json');
const out = i >= 0 ? process.argv[i + 1] : null;
const ri = process.argv.indexOf('--reps');
const reps = ri >= 0 ? Number(process.argv[ri + 1]) : 3;
const cu = native.convertCuda;
if (!cu) throw new Error('needs the CUDA build');
const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
const rows: Array<{ n: number; lapackSeconds: number; cusolverSeconds: number; cusolverSolverSeconds: number; speedup: number; maxValueDiffRel: number }> = [];
for (const n of [1024, 2048, 4096]) {
  const a = randSym(n, 1000 + n);
  const lap: number[] = [];
  const gpu: number[] = [];
  const solver: number[] = [];
  let ref: Float64Array | null = null;
  let got: Float64Array | null = null;
  for (let r = 0; r <= reps; r++) {
    let t = performance.now();
    const l = await eighAsync(a, n);
    if (r > 0) lap.push((performance.now() - t) / 1000);
    ref = l.values;
    t = performance.now();
    const g = await cu.eighAsync(a, n);
    if (r > 0) {
      gpu.push((performance.now() - t) / 1000);
      solver.push(g.seconds);
    }
    got = g.values;
  }
  let diff = 0;
  let scale = 0;
  for (let k = 0; k < n; k++) {
    diff = Math.max(diff, Math.abs(got![k] - ref![k]));
    scale = Math.max(scale, Math.abs(ref![k]));
  }
  const row = { n, lapackSeconds: median(lap), cusolverSeconds: median(gpu), cusolverSolverSeconds: median(solver), speedup: median(lap) / median(gpu), maxValueDiffRel: diff / scale };
  rows.push(row);
}
const info = native.buildInfo();
const result = { bench: 'eigh float64', reps, blas: info.blasConfig, blasThreads: info.blasThreads, gpu: cu.deviceInfo(), rows };
if (out) writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
console.log(`eigh float64 on ${result.gpu.name} vs ${info.blasConfig} (${info.blasThreads} threads), median of ${reps}`);
console.log('| n | LAPACK s | cuSOLVER s (wall) | cuSOLVER s (solver) | speedup | max |dλ|/|λ|max |\n| --- | --- | --- | --- | --- | --- |');
for (const r of rows)
  console.log(`| ${r.n} | ${r.lapackSeconds.toFixed(3)} | ${r.cusolverSeconds.toFixed(3)} | ${r.cusolverSolverSeconds.toFixed(3)} | ${r.speedup.toFixed(1)}x | ${r.maxValueDiffRel.toExponential(1)} |`);
