/**
 * CPU MLA decode benchmark: mlaDecodeCpu on a paged latent cache (512 + 64, pages of 64
 * shuffled tokens) against this machine's memcpy bandwidth measured in the same run.
 *
 * Metric conventions follow FlashMLA: bytes = cache rows read once + q + out; FLOPs =
 * 2 x heads x q_len x sum(seqlens) x (576 + 512).
 *
 *   npx tsx bench/mla-decode/cpu.ts [--quick] [--out bench/results/mla-decode-cpu.json]
 */
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import os from 'node:os';
import { mlaDecodeCpu } from '../../src/decode.js';
import { native } from '../../src/native/binding.js';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const outPath = args.includes('--out') ? args[args.indexOf('--out') + 1] : 'bench/results/mla-decode-cpu.json';

const DL = 512;
const DR = 64;
const D = DL + DR;
const PAGE = 64;

function xorshiftFill(a: Float32Array, seed: number, amp: number) {
  let s = seed >>> 0 || 1;
  for (let i = 0; i < a.length; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    a[i] = ((s / 4294967296) * 2 - 1) * amp;
  }
}

function toBf16(a: Float32Array): Uint16Array {
  const u = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const o = new Uint16Array(a.length);
  for (let i = 0; i < a.length; i++) o[i] = (u[i] + 0x7fff + ((u[i] >>> 16) & 1)) >>> 16;
  return o;
}

interface Shape {
  batch: number;
  sk: number;
  heads: number;
  qLen: number;
  dtype: 'float32' | 'bf16';
  /** instruction-set cap (default: widest the CPU has) */
  simd?: 'avx2';
}

const shapes: Shape[] = quick
  ? [{ batch: 16, sk: 8192, heads: 32, qLen: 1, dtype: 'float32' }]
  : [
      { batch: 16, sk: 8192, heads: 32, qLen: 1, dtype: 'float32' },
      { batch: 16, sk: 8192, heads: 32, qLen: 1, dtype: 'float32', simd: 'avx2' },
      { batch: 16, sk: 8192, heads: 32, qLen: 1, dtype: 'bf16' },
      { batch: 16, sk: 8192, heads: 32, qLen: 2, dtype: 'float32' },
      { batch: 16, sk: 8192, heads: 16, qLen: 1, dtype: 'float32' },
      { batch: 16, sk: 8192, heads: 128, qLen: 1, dtype: 'float32' },
      { batch: 1, sk: 8192, heads: 32, qLen: 1, dtype: 'float32' },
      { batch: 16, sk: 1024, heads: 32, qLen: 1, dtype: 'float32' },
    ];

function cpuModel(): string {
  try {
    const m = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m) return m[1].trim();
  } catch {
    /* not Linux */
  }
  return os.cpus()[0]?.model ?? 'unknown';
}

async function main() {
  const info = native.buildInfo();
  const maxTokens = Math.max(...shapes.map((s) => s.batch * s.sk));
  const pages = Math.ceil(maxTokens / PAGE);
  const cacheF32 = new Float32Array(pages * PAGE * D);
  xorshiftFill(cacheF32, 12345, 1);
  const cacheBf16 = toBf16(cacheF32);
  const copyBefore = native.cpuCopyBandwidth(1 << 30, 5);
  const rows: Record<string, unknown>[] = [];
  for (const s of shapes) {
    const R = s.batch * s.qLen * s.heads;
    const qLat = new Float32Array(R * DL);
    const qRope = new Float32Array(R * DR);
    xorshiftFill(qLat, 7 + s.batch, 1);
    xorshiftFill(qRope, 9 + s.heads, 1);
    const maxBlocks = Math.ceil(s.sk / PAGE);
    // shuffled pages: request b gets a random set of pages of the pool
    const perm = Array.from({ length: pages }, (_, i) => i);
    let r = 99991;
    for (let i = pages - 1; i > 0; i--) {
      r = (Math.imul(r, 1103515245) + 12345) >>> 0;
      const j = r % (i + 1);
      [perm[i], perm[j]] = [perm[j], perm[i]];
    }
    const blockTable = Int32Array.from(perm.slice(0, s.batch * maxBlocks));
    const seqLens = new Int32Array(s.batch).fill(s.sk);
    const out = new Float32Array(R * DL);
    const lse = new Float32Array(R);
    const cache = s.dtype === 'float32' ? cacheF32 : cacheBf16;
    const run = () =>
      mlaDecodeCpu({
        qLat,
        qRope,
        cache,
        seqLens,
        blockTable,
        batch: s.batch,
        qLen: s.qLen,
        heads: s.heads,
        softmaxScale: 0.07,
        out,
        lse,
        simd: s.simd ?? true,
      });
    const first = await run(); // warm-up (page faults, thread start)
    const iters = quick ? 3 : s.batch * s.sk * s.heads > 16 * 8192 * 32 ? 3 : 5;
    const times: number[] = [];
    for (let i = 0; i < iters; i++) {
      const t0 = process.hrtime.bigint();
      await run();
      times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    times.sort((a, b) => a - b);
    const ms = times[Math.floor(times.length / 2)];
    const totalSeq = s.batch * s.sk;
    const eb = s.dtype === 'float32' ? 4 : 2;
    const bytes = totalSeq * D * eb + R * D * 4 + R * DL * 4;
    const flops = 2 * s.heads * s.qLen * totalSeq * (D + DL);
    rows.push({
      ...s,
      simd: s.simd ?? 'widest',
      kernel: first.kernel,
      pieces: first.pieces,
      ms,
      msAll: times,
      gbps: bytes / ms / 1e6,
      gflops: flops / ms / 1e6,
      bytes,
      flops,
    });
    process.stderr.write('.');
  }
  const copyAfter = native.cpuCopyBandwidth(1 << 30, 5);
  const copy = Math.max(copyBefore.gbps, copyAfter.gbps);
  for (const row of rows) row.pctCopy = (100 * (row.gbps as number)) / copy;
  const machine = {
    cpu: cpuModel(),
    threads: info.threads,
    avx2: info.avx2,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    loadavg: os.loadavg(),
  };
  process.stderr.write('\n');
  console.log(`CPU MLA decode (absorbed, 512+64, paged 64) on ${machine.cpu}, ${machine.threads} threads`);
  console.log(
    `memcpy bandwidth (read+write, all threads, 1 GiB): ${copyBefore.gbps.toFixed(1)} GB/s before, ${copyAfter.gbps.toFixed(1)} after; using ${copy.toFixed(1)}`,
  );
  console.log('batch  s_k   heads q_len cache    kernel    ms       GB/s   %copy  GFLOP/s');
  for (const r of rows)
    console.log(
      `${String(r.batch).padStart(5)} ${String(r.sk).padStart(5)} ${String(r.heads).padStart(5)} ${String(r.qLen).padStart(5)} ${String(r.dtype).padEnd(8)} ${String(r.kernel).padEnd(9)} ${(r.ms as number).toFixed(2).padStart(8)} ${(r.gbps as number).toFixed(2).padStart(7)} ${(r.pctCopy as number).toFixed(1).padStart(6)} ${(r.gflops as number).toFixed(1).padStart(8)}`,
    );
  mkdirSync(dirname(outPath), { recursive: true });
  writeFileSync(
    outPath,
    JSON.stringify(
      {
        bench: 'mla-decode-cpu',
        date: new Date().toISOString(),
        machine,
        metric: 'FlashMLA conventions: bytes = cache read once + q + out; FLOPs = 2*heads*q_len*sum(seqlens)*(576+512)',
        copyGBps: { before: copyBefore.gbps, after: copyAfter.gbps, used: copy },
        rows,
      },
      null,
      2,
    ) + '\n',
  );
  console.log(`wrote ${outPath}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
