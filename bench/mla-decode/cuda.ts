/**
 * CUDA decode benchmark of gqa2mla's own kernels (run on the GPU machine, CUDA build):
 *  - absorbed MLA decode (512 + 64 latent, bf16, paged cache of 64-token pages), shapes
 *    batch {1,16,64,128} x s_k {1K..32K} x heads {16,32,128} x q_len {1,2}, fixed and
 *    varied lengths (FlashMLA's: normal(s_k, s_k/2), at least q_len);
 *  - GQA decode of the equivalent original Llama-3-8B layer (32 query heads, 8 KV heads x
 *    128), same batches, lengths and q_len;
 *  - device-to-device copy bandwidth measured in the same run (read + write).
 * Each timed run follows an L2 flush; times are medians of CUDA-event timings.
 * FlashMLA metric conventions: bytes = cache read once + q + out; FLOPs = 2 x heads x
 * q_len x sum(seqlens) x (dqk + dv).
 *
 *   node node_modules/.bin/tsx bench/mla-decode/cuda.ts --out OUT.json [--quick]
 */
import { writeFileSync } from 'node:fs';
import { getDecodeCuda, type NativeDeviceBuffer } from '../../src/decode.js';
import { seededRandom as mulberry } from '../../src/generate-sampling.js';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const outPath = args.includes('--out') ? args[args.indexOf('--out') + 1] : 'mla-decode-cuda.json';
const iters = quick ? 8 : 12;

const PAGE = 64;
const BATCHES = quick ? [16, 128] : [1, 16, 64, 128];
const SKS = quick ? [4096, 8192] : [1024, 4096, 8192, 16384, 32768];
const HEADS = quick ? [16, 32, 128] : [16, 32, 128];
const QLENS = [1, 2];


/** FlashMLA's varied lengths: max(normal(mean, mean / 2), qLen), integer. */
function lengths(batch: number, sk: number, qLen: number, varied: boolean, seed: number): Int32Array {
  const out = new Int32Array(batch).fill(sk);
  if (!varied) return out;
  const u = mulberry(seed);
  for (let b = 0; b < batch; b++) {
    const z = Math.sqrt(-2 * Math.log(u() + 1e-12)) * Math.cos(2 * Math.PI * u());
    out[b] = Math.max(qLen, Math.round(sk + (z * sk) / 2));
  }
  return out;
}

interface Cfg {
  kind: 'mla' | 'gqa';
  batch: number;
  sk: number;
  heads: number;
  kvHeads: number;
  qLen: number;
  varied: boolean;
  lens: Int32Array;
}

/**
 * Kernel variants (the plan's `kernel` option) next to the default choice, fixed lengths,
 * batch 64 and 128: for 16 rows the bulk-copy 16-row kernel; for 32 rows (heads 32 q_len 1, heads 16 q_len 2) the bulk-copy (TMA)
 * 8-warp 32-row kernel (two-barrier, overlapped and one-barrier pipelined schedules, the
 * last with 4 or 5 stages), the 16-warp one and the 16-warp cp.async one; for 64 and 128 rows the
 * bulk-copy 64-row kernel, the 16-warp cp.async one and (64 rows) two bulk-copy 32-row
 * blocks. (The overlapped-schedule .ov instances and two 16-row blocks per part, measured
 * in device runs 4-5 at +-1% and -10% of the defaults, are no longer timed here.)
 */
const VARIANTS: Array<[number, number, string[]]> = [
  [16, 1, ['mla576x512.m16.tma']],
  [
    32,
    1,
    [
      'mla576x512.m32.tma',
      'mla576x512.m32.tma.ov',
      'mla576x512.m32.tma.p',
      'mla576x512.m32.tma.p5',
      'mla576x512.m32.w16.tma',
      'mla576x512.m32.w16',
    ],
  ],
  [16, 2, ['mla576x512.m32.tma', 'mla576x512.m32.tma.ov', 'mla576x512.m32.tma.p', 'mla576x512.m32.tma.p5', 'mla576x512.m32.w16.tma']],
  [32, 2, ['mla576x512.m64.tma', 'mla576x512.m32.tma', 'mla576x512.m64.w16']],
  [128, 1, ['mla576x512.m64.tma', 'mla576x512.m64.w16']],
];
function variantConfigs(): Array<Cfg & { forced: string }> {
  const list: Array<Cfg & { forced: string }> = [];
  for (const batch of quick ? [128] : [64, 128])
    for (const sk of quick ? [8192] : [4096, 8192, 16384, 32768])
      for (const [heads, qLen, kernels] of VARIANTS)
        for (const forced of kernels)
          list.push({
            kind: 'mla',
            batch,
            sk,
            heads,
            kvHeads: 1,
            qLen,
            varied: false,
            lens: lengths(batch, sk, qLen, false, 0),
            forced,
          });
  return list;
}

function configs(): Cfg[] {
  const list: Cfg[] = [];
  let seed = 1;
  for (const batch of BATCHES)
    for (const sk of SKS)
      for (const qLen of QLENS)
        for (const varied of [false, true]) {
          const lens = lengths(batch, sk, qLen, varied, seed++);
          for (const heads of HEADS) list.push({ kind: 'mla', batch, sk, heads, kvHeads: 1, qLen, varied, lens });
          list.push({ kind: 'gqa', batch, sk, heads: 32, kvHeads: 8, qLen, varied, lens });
        }
  return list;
}

async function main() {
  const dc = getDecodeCuda();
  const dev = dc.deviceInfo();
  const copyBefore = dc.copyBandwidth(2 ** 31, 10);
  const main = configs();
  const variants = variantConfigs();
  const cfgs: Array<Cfg & { forced?: string }> = [...main, ...variants];
  const pagesOf = (c: Cfg) => c.lens.reduce((a, l) => a + Math.ceil(l / PAGE), 0);
  const poolPages = Math.max(...cfgs.map(pagesOf)) + 8;
  const maxRows = Math.max(...cfgs.map((c) => c.batch * c.qLen * c.heads));
  const maxTable = Math.max(...cfgs.map((c) => c.batch * Math.ceil(Math.max(...c.lens) / PAGE)));

  // One shuffled page pool per cache; each configuration takes consecutive slices of it.
  const u = mulberry(4242);
  const perm = new Int32Array(poolPages);
  for (let i = 0; i < poolPages; i++) perm[i] = i;
  for (let i = poolPages - 1; i > 0; i--) {
    const j = Math.floor(u() * (i + 1));
    const t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  const bufs: NativeDeviceBuffer[] = [];
  const alloc = (bytes: number) => {
    const b = dc.alloc(bytes);
    bufs.push(b);
    return b;
  };
  const mlaCache = alloc(poolPages * PAGE * 576 * 2);
  dc.fillRandomBf16(mlaCache, poolPages * PAGE * 576, 1, 1);
  const kCache = alloc(poolPages * PAGE * 8 * 128 * 2);
  const vCache = alloc(poolPages * PAGE * 8 * 128 * 2);
  dc.fillRandomBf16(kCache, poolPages * PAGE * 8 * 128, 2, 1);
  dc.fillRandomBf16(vCache, poolPages * PAGE * 8 * 128, 3, 1);
  const qLat = alloc(maxRows * 512 * 2);
  const qRope = alloc(maxRows * 64 * 2);
  const q = alloc(maxRows * 128 * 2);
  dc.fillRandomBf16(qLat, maxRows * 512, 4, 1);
  dc.fillRandomBf16(qRope, maxRows * 64, 5, 1);
  dc.fillRandomBf16(q, maxRows * 128, 6, 1);
  const out = alloc(maxRows * 512 * 2);
  const lse = alloc(maxRows * 4);
  const table = alloc(maxTable * 4);

  const rows: Record<string, unknown>[] = [];
  let done = 0;
  for (const [ci, c] of cfgs.entries()) {
    const variant = ci >= main.length;
    const maxBlocks = Math.ceil(Math.max(...c.lens) / PAGE);
    const bt = new Int32Array(c.batch * maxBlocks);
    let next = 0;
    for (let b = 0; b < c.batch; b++)
      for (let p = 0; p < Math.ceil(c.lens[b] / PAGE); p++) bt[b * maxBlocks + p] = perm[next++];
    dc.upload(table, bt);
    const mla = c.kind === 'mla';
    const plan = dc.plan({
      kind: c.kind,
      seqLens: c.lens,
      batch: c.batch,
      qLen: c.qLen,
      heads: c.heads,
      kvHeads: c.kvHeads,
      pageSize: PAGE,
      maxBlocks,
      kernel: variant ? c.forced : undefined,
    });
    const tensors = mla
      ? { qLat, qRope, cache: mlaCache, blockTable: table, out, lse }
      : { q, kCache, vCache, blockTable: table, out, lse };
    const scale = mla ? 1 / Math.sqrt(192) : 1 / Math.sqrt(128);
    const r = await dc.benchAsync(plan, tensors, scale, { warmup: 2, iters });
    const total = c.lens.reduce((a, l) => a + l, 0);
    const R = c.batch * c.qLen * c.heads;
    const dqk = mla ? 576 : 128;
    const dv = mla ? 512 : 128;
    const kvPerToken = mla ? 576 : 2 * c.kvHeads * 128;
    const bytes = (total * kvPerToken + R * dqk + R * dv) * 2;
    const flops = 2 * c.heads * c.qLen * total * (dqk + dv);
    rows.push({
      kind: variant ? 'mla-kernel' : c.kind,
      batch: c.batch,
      sk: c.sk,
      heads: c.heads,
      kvHeads: c.kvHeads,
      qLen: c.qLen,
      varied: c.varied,
      sumSeq: total,
      ms: r.medianMs,
      msMin: r.minMs,
      gbps: bytes / r.medianMs / 1e6,
      tflops: flops / r.medianMs / 1e9,
      bytes,
      flops,
      kernel: plan.kernel,
      numParts: plan.numParts,
      numSlots: plan.numSlots,
      ctasPerSm: plan.ctasPerSm,
    });
    if (++done % 20 === 0) process.stderr.write(`${done}/${cfgs.length} `);
  }
  const copyAfter = dc.copyBandwidth(2 ** 31, 10);
  for (const b of bufs) dc.free(b);
  const copy = Math.max(copyBefore, copyAfter);
  for (const r of rows) r.pctCopy = (100 * (r.gbps as number)) / copy;
  writeFileSync(
    outPath,
    JSON.stringify(
      {
        bench: 'mla-decode-cuda',
        date: new Date().toISOString(),
        device: dev,
        copyGBps: { before: copyBefore, after: copyAfter, used: copy },
        metric: 'FlashMLA conventions: bytes = cache read once + q + out; FLOPs = 2*heads*q_len*sum(seqlens)*(dqk+dv)',
        timing: `median of ${iters} CUDA-event timings, each after an L2 flush; 2 warm-up runs`,
        rows,
      },
      null,
      1,
    ) + '\n',
  );
  process.stderr.write('\n');
  console.log(`ours: ${rows.length} configurations on ${dev.name}; copy ${copy.toFixed(0)} GB/s; wrote ${outPath}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
