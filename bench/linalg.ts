/**
 * CPU timings of the native linear algebra: eigh (?syevd) and thin SVD (?gesdd) for
 * n = 256, 1024, 2048 in float64 and float32, plus the float64 covariance accumulate
 * (syrkAccumulate) at a conversion-like size. Each timing is the median of a few runs on
 * fresh copies of one seeded random matrix; the relative reconstruction error of the last
 * run is reported alongside. Prints a table and writes bench/results/linalg-cpu.json.
 *
 * Run: `npm run bench:linalg` (optionally GQA2MLA_BENCH_QUICK=1 for n <= 1024 only). With
 * OPENBLAS_CORETYPE set (e.g. SkylakeX) the results go to linalg-cpu-coretype-<name>.json:
 * OpenBLAS 0.3.21 does not recognise newer Xeons and falls back to its generic Prescott
 * kernels, which the `BLAS:` line (the build's config string) shows.
 */
import { readFileSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type FloatArray, eigh, gemm, svd, syrkAccumulate } from '../src/linalg.js';
import { native } from '../src/native/binding.js';
import { randn, randSym } from '../test/helpers/random.js';

interface Row {
  op: string;
  dtype: 'float64' | 'float32';
  shape: string;
  runs: number;
  medianMs: number;
  minMs: number;
  gflops: number | null;
  relErr: number | null;
}

function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    d += (a[i] - b[i]) ** 2;
    s += b[i] * b[i];
  }
  return Math.sqrt(d / s);
}

function median(xs: number[]): number {
  const s = [...xs].sort((x, y) => x - y);
  const h = s.length >> 1;
  return s.length % 2 ? s[h] : 0.5 * (s[h - 1] + s[h]);
}

function time(runs: number, fn: () => void): number[] {
  const ms: number[] = [];
  for (let r = 0; r < runs; r++) {
    const t0 = process.hrtime.bigint();
    fn();
    ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return ms;
}

/** ||A - V diag(w) V^T|| / ||A|| in float64. */
function eighErr(a: Float64Array, w: FloatArray, v: FloatArray, n: number): number {
  const vd = Float64Array.from(v);
  const vw = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) vw[i * n + j] = vd[i * n + j] * w[j];
  return relDiff(gemm(vw, vd, new Float64Array(n * n), n, n, n, { transB: true }), a);
}

/** ||A - U diag(s) Vt|| / ||A|| in float64 (square, thin). */
function svdErr(a: Float64Array, u: FloatArray, s: FloatArray, vt: FloatArray, n: number): number {
  const us = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) us[i * n + j] = u[i * n + j] * s[j];
  return relDiff(gemm(us, Float64Array.from(vt), new Float64Array(n * n), n, n, n), a);
}

function cpuModel(): string {
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) return m[1].trim();
  } catch {
    // not Linux
  }
  return os.cpus()[0]?.model ?? 'unknown';
}

function main(): void {
  const quick = process.env.GQA2MLA_BENCH_QUICK === '1';
  const sizes: Array<[number, number]> = [
    [256, 7],
    [1024, 5],
    [2048, 3],
  ];
  const info = native.buildInfo();
  const machine = {
    cpu: cpuModel(),
    cores: os.cpus().length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    loadavgAtStart: os.loadavg().map((x) => Math.round(x * 100) / 100),
    node: process.version,
    blas: info.blas,
    blasConfig: info.blasConfig,
    blasThreads: info.blasThreads,
    avx2: info.avx2,
    /** OPENBLAS_CORETYPE forces OpenBLAS's kernel choice; unset = its own CPU detection */
    openblasCoreType: process.env.OPENBLAS_CORETYPE ?? null,
  };
  console.log(`machine: ${machine.cpu}, ${machine.cores} cores, ${machine.memoryGiB} GiB, node ${machine.node}`);
  console.log(`BLAS: ${machine.blasConfig} (${machine.blasThreads} threads); load average ${machine.loadavgAtStart.join(' ')}`);

  const rows: Row[] = [];
  const add = (r: Row): void => {
    rows.push(r);
    const g = r.gflops === null ? '' : r.gflops.toFixed(1);
    const e = r.relErr === null ? '' : r.relErr.toExponential(1);
    console.log(
      `${r.op.padEnd(15)} ${r.dtype.padEnd(8)} ${r.shape.padStart(12)} ${String(r.runs).padStart(4)} ` +
        `${r.medianMs.toFixed(1).padStart(10)} ${r.minMs.toFixed(1).padStart(10)} ${g.padStart(7)} ${e.padStart(9)}`,
    );
  };
  console.log(
    `${'op'.padEnd(15)} ${'dtype'.padEnd(8)} ${'shape'.padStart(12)} ${'runs'.padStart(4)} ${'median ms'.padStart(10)} ` +
      `${'min ms'.padStart(10)} ${'GFLOP/s'.padStart(7)} ${'rel err'.padStart(9)}`,
  );

  for (const [n, runs] of sizes) {
    if (quick && n > 1024) continue;
    const a64 = randSym(n, n);
    const g64 = randn(n * n, n + 1);
    for (const dtype of ['float64', 'float32'] as const) {
      const a = dtype === 'float64' ? a64 : Float32Array.from(a64);
      const ref = dtype === 'float64' ? a64 : Float64Array.from(a);
      let last = eigh(a, n); // warm-up (also the page-in of the outputs)
      const te = time(runs, () => {
        last = eigh(a, n);
      });
      add({
        op: 'eigh',
        dtype,
        shape: `${n}x${n}`,
        runs,
        medianMs: median(te),
        minMs: Math.min(...te),
        gflops: null,
        relErr: eighErr(ref, last.values, last.vectors, n),
      });

      const g = dtype === 'float64' ? g64 : Float32Array.from(g64);
      const gref = dtype === 'float64' ? g64 : Float64Array.from(g);
      let sv = svd(g, n, n);
      const ts = time(runs, () => {
        sv = svd(g, n, n);
      });
      add({
        op: 'svd (thin)',
        dtype,
        shape: `${n}x${n}`,
        runs,
        medianMs: median(ts),
        minMs: Math.min(...ts),
        gflops: null,
        relErr: svdErr(gref, sv.u, sv.s, sv.vt, n),
      });

      const c = dtype === 'float64' ? new Float64Array(n * n) : new Float32Array(n * n);
      const tg = time(runs, () => gemm(g, a, c, n, n, n));
      const med = median(tg);
      add({
        op: 'gemm',
        dtype,
        shape: `${n}x${n}x${n}`,
        runs,
        medianMs: med,
        minMs: Math.min(...tg),
        gflops: (2 * n ** 3) / (med * 1e6),
        relErr: null,
      });
    }
  }

  // covariance accumulate at a conversion-like size: hidden 4096, batches of 512 tokens
  {
    const n = quick ? 1024 : 4096;
    const batch = 512;
    const batches = 2;
    const x = Float32Array.from(randn(batch * n, 7));
    const c = new Float64Array(n * n);
    syrkAccumulate(c, x, batch, n); // warm-up
    const t = time(batches, () => syrkAccumulate(c, x, batch, n));
    const med = median(t);
    add({
      op: 'syrkAccumulate',
      dtype: 'float32',
      shape: `${batch}x${n}`,
      runs: batches,
      medianMs: med,
      minMs: Math.min(...t),
      gflops: (batch * n * n) / (med * 1e6), // n(n+1)/2 dot products of length `batch`, 2 flops each
      relErr: null,
    });
  }

  const suffix = (quick ? '-quick' : '') + (machine.openblasCoreType ? `-coretype-${machine.openblasCoreType.toLowerCase()}` : '');
  const out = join(dirname(fileURLToPath(import.meta.url)), 'results', `linalg-cpu${suffix}.json`);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(
    out,
    `${JSON.stringify(
      {
        benchmark: 'linalg',
        date: new Date().toISOString(),
        machine: { ...machine, loadavgAtEnd: os.loadavg().map((x) => Math.round(x * 100) / 100) },
        notes:
          'median wall time of synchronous calls; relErr = relative Frobenius reconstruction error of the last run in float64; ' +
          'svd is thin (m = n); gemm is C = A B; syrkAccumulate adds X^T X of one float32 batch into a float64 n x n sum',
        results: rows,
      },
      null,
      2,
    )}\n`,
  );
  console.log(`saved ${out}`);
}

main();
