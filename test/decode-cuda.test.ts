// CUDA decode kernels against a float64 reference. Skipped unless the addon was built
// with CUDA (npm run build:cuda) and a GPU answers.
import { bf16ToF32, cudaDecodeAvailable, getDecodeCuda, type NativeDeviceBuffer } from '../src/decode.js';
import { native } from '../src/native/binding.js';
import {
  bf16Bits,
  cacheRow,
  decodeRef,
  makeCache,
  makeLayout,
  makeMlaCase,
  maxAbsLseError,
  randomArray,
  relError,
  uniform,
  type CacheLayout,
  type RefResult,
} from './helpers/decode-ref.js';
import { seedLabel, seedStream } from './helpers/random.js';

const enabled = native.buildInfo().cuda && cudaDecodeAvailable();
const suite = enabled ? describe : describe.skip;

// Inputs from GQA2MLA_TEST_SEED (fixed default); the seed is in the suite titles and failure messages.
const { base, next: nextSeed } = seedStream(0x63756461, 104729);

interface Run {
  out: Float32Array;
  lse: Float32Array;
  plan: { kernel: string; numSlots: number; mBlocks: number; numParts: number };
}

/** Uploads, poisons the outputs with NaN, runs, downloads. */
async function runCuda(
  planOpts: Parameters<NonNullable<typeof native.decodeCuda>['plan']>[0],
  inputs: Record<string, ArrayBufferView | undefined>,
  rows: number,
  dv: number,
  scale: number,
): Promise<Run> {
  const dc = getDecodeCuda();
  const plan = dc.plan(planOpts);
  const bufs: Record<string, NativeDeviceBuffer> = {};
  try {
    for (const [k, v] of Object.entries(inputs))
      if (v) {
        bufs[k] = dc.alloc(Math.max(16, v.byteLength));
        dc.upload(bufs[k], v);
      }
    bufs.out = dc.alloc(rows * dv * 2);
    bufs.lse = dc.alloc(rows * 4);
    dc.upload(bufs.out, new Uint16Array(rows * dv).fill(0x7fc1)); // NaN poison
    dc.upload(bufs.lse, new Float32Array(rows).fill(NaN));
    await dc.decodeAsync(plan, bufs as never, scale);
    const o = new Uint16Array(rows * dv);
    const lse = new Float32Array(rows);
    dc.download(bufs.out, o);
    dc.download(bufs.lse, lse);
    return { out: bf16ToF32(o), lse, plan };
  } finally {
    for (const b of Object.values(bufs)) dc.free(b);
  }
}

function check(run: Run, ref: RefResult, what: string) {
  for (let i = 0; i < run.out.length; i++)
    if (!Number.isFinite(run.out[i])) throw new Error(`${what}: non-finite out[${i}] (${run.plan.kernel}, seed base ${base}, ${seedLabel()})`);
  const rel = relError(run.out, ref.out);
  const lseErr = maxAbsLseError(run.lse, ref.lse);
  if (process.env.GQA2MLA_TEST_VERBOSE)
    console.log(`${what} [${run.plan.kernel}, parts ${run.plan.numParts}, slots ${run.plan.numSlots}]: rel ${rel.toExponential(2)}, lse ${lseErr.toExponential(2)}`);
  if (!(rel < 1e-2) || !(lseErr < 1e-3))
    throw new Error(`${what}: rel error ${rel}, LSE abs error ${lseErr} (${run.plan.kernel}, seed base ${base}, ${seedLabel()})`);
}

function layoutOpts(layout: CacheLayout) {
  return layout.paged
    ? { pageSize: layout.pageSize, maxBlocks: layout.maxBlocks }
    : { seqStride: layout.seqStride };
}

suite(`CUDA MLA decode (bf16) against a float64 reference (${seedLabel()})`, () => {
  // Row counts 16, 32, 64, 128, 256 cover every kernel instance and several row blocks;
  // a long request next to short ones is split over many blocks and LSE-merged.
  const classes: Array<{ heads: number; qLen: number; lens: number[]; paged: boolean }> = [
    { heads: 16, qLen: 1, lens: [0, 1, 77, 2100], paged: true },
    { heads: 16, qLen: 2, lens: [1, 2, 300, 64], paged: false },
    { heads: 32, qLen: 1, lens: [5, 0, 640, 1333], paged: true },
    { heads: 32, qLen: 2, lens: [1, 900, 31, 33], paged: true },
    { heads: 128, qLen: 1, lens: [0, 1, 1500], paged: false },
    { heads: 128, qLen: 2, lens: [1, 2, 700], paged: true },
  ];
  for (const cls of classes)
    test(`heads ${cls.heads}, q_len ${cls.qLen}, ${cls.paged ? 'paged' : 'contiguous'}, lens ${cls.lens.join('/')}`, async () => {
      const c = makeMlaCase({ seed: nextSeed(), qLen: cls.qLen, heads: cls.heads, lens: cls.lens, paged: cls.paged, bf16: true, scale: 0.1 });
      const rows = c.batch * c.qLen * c.heads;
      const run = await runCuda(
        { kind: 'mla', seqLens: Int32Array.from(c.lens), batch: c.batch, qLen: c.qLen, heads: c.heads, ...layoutOpts(c.layout) },
        { qLat: bf16Bits(c.qLat), qRope: bf16Bits(c.qRope), cache: bf16Bits(c.cache), blockTable: c.layout.blockTable },
        rows,
        512,
        c.scale,
      );
      check(run, c.ref, `mla h${cls.heads} q${cls.qLen}`);
      for (let r = 0; r < rows; r++)
        if (c.ref.lse[r] === -Infinity) {
          expect(run.lse[r]).toBe(-Infinity);
          for (let d = 0; d < 512; d++) expect(run.out[r * 512 + d]).toBe(0);
        }
    });

  // Every MLA kernel instance, forced by the plan's `kernel` option, on 32 rows (heads 32,
  // q_len 1: one 32-row block, or two 16-row blocks per part) and on 128 causal rows
  // (heads 64, q_len 2: several row blocks per part).
  const kernels = [
    'mla576x512.m16',
    'mla576x512.m32.w8',
    'mla576x512.m32.w16',
    'mla576x512.m64.w16',
    'mla576x512.m64.w8',
    'mla576x512.m32.w8.ov',
    'mla576x512.m32.w16.ov',
    'mla576x512.m64.w8.ov',
    'mla576x512.m32.tma',
    'mla576x512.m32.w16.tma',
    'mla576x512.m64.tma',
    'mla576x512.m32.tma.ov',
    'mla576x512.m16.tma',
    'mla576x512.m32.tma.p',
    'mla576x512.m32.tma.p5',
  ];
  for (const kernel of kernels)
    test(`kernel ${kernel} (heads 32 q_len 1 paged, heads 64 q_len 2 contiguous)`, async () => {
      for (const [heads, qLen, paged, lens] of [
        [32, 1, true, [0, 1, 333, 1200]],
        [64, 2, false, [1, 2, 500, 97]],
      ] as Array<[number, number, boolean, number[]]>) {
        const c = makeMlaCase({ seed: nextSeed(), qLen, heads, lens, paged, bf16: true, scale: 0.1 });
        const run = await runCuda(
          { kind: 'mla', seqLens: Int32Array.from(c.lens), batch: c.batch, qLen, heads, kernel, ...layoutOpts(c.layout) },
          { qLat: bf16Bits(c.qLat), qRope: bf16Bits(c.qRope), cache: bf16Bits(c.cache), blockTable: c.layout.blockTable },
          c.batch * qLen * heads,
          512,
          c.scale,
        );
        expect(run.plan.kernel).toBe(kernel);
        check(run, c.ref, `mla h${heads} q${qLen}`);
      }
    });

  // The bulk-copy (TMA) instances on every shape class (16 to 256 rows, q_len 1 and 2
  // causal, paged and contiguous, lengths 0 and 1, NaN in every slot past a length); one
  // float64 reference per class, every instance checked against it.
  const tmaKernels = [
    'mla576x512.m16.tma',
    'mla576x512.m32.tma',
    'mla576x512.m32.tma.ov',
    'mla576x512.m32.w16.tma',
    'mla576x512.m64.tma',
    'mla576x512.m32.tma.p',
    'mla576x512.m32.tma.p5',
  ];
  const tmaClasses: Array<{ heads: number; qLen: number; lens: number[]; paged: boolean }> = [
    ...classes,
    { heads: 32, qLen: 1, lens: [0, 1, 64, 999], paged: false },
    { heads: 16, qLen: 2, lens: [2, 1, 129, 450], paged: true },
  ];
  for (const cls of tmaClasses)
    test(`bulk-load kernels, heads ${cls.heads}, q_len ${cls.qLen}, ${cls.paged ? 'paged' : 'contiguous'}, lens ${cls.lens.join('/')}`, async () => {
      const c = makeMlaCase({ seed: nextSeed(), qLen: cls.qLen, heads: cls.heads, lens: cls.lens, paged: cls.paged, bf16: true, scale: 0.1 });
      const rows = c.batch * c.qLen * c.heads;
      for (const kernel of tmaKernels) {
        const run = await runCuda(
          { kind: 'mla', seqLens: Int32Array.from(c.lens), batch: c.batch, qLen: c.qLen, heads: c.heads, kernel, ...layoutOpts(c.layout) },
          { qLat: bf16Bits(c.qLat), qRope: bf16Bits(c.qRope), cache: bf16Bits(c.cache), blockTable: c.layout.blockTable },
          rows,
          512,
          c.scale,
        );
        expect(run.plan.kernel).toBe(kernel);
        check(run, c.ref, `mla h${cls.heads} q${cls.qLen}`);
        for (let r = 0; r < rows; r++)
          if (c.ref.lse[r] === -Infinity) {
            expect(run.lse[r]).toBe(-Infinity);
            for (let d = 0; d < 512; d++) expect(run.out[r * 512 + d]).toBe(0);
          }
      }
    });

  test('a kernel name of the other kind or unknown is ERR_UNSUPPORTED', () => {
    for (const kernel of ['gqa128.m16', 'mla576x512.m7'])
      expect(() =>
        getDecodeCuda().plan({ kind: 'mla', seqLens: Int32Array.from([4]), batch: 1, heads: 16, seqStride: 64, kernel }),
      ).toThrow(expect.objectContaining({ code: 'ERR_UNSUPPORTED' }));
  });

  test('unsupported dims are ERR_UNSUPPORTED', () => {
    expect(() =>
      getDecodeCuda().plan({ kind: 'mla', seqLens: Int32Array.from([4]), batch: 1, heads: 16, kvLoraRank: 256, seqStride: 64 }),
    ).toThrow(expect.objectContaining({ code: 'ERR_UNSUPPORTED' }));
  });
});

suite(`CUDA GQA decode (bf16) against a float64 reference (${seedLabel()})`, () => {
  const classes: Array<{ heads: number; kvHeads: number; qLen: number; lens: number[]; paged: boolean }> = [
    { heads: 32, kvHeads: 8, qLen: 1, lens: [0, 1, 700, 1285], paged: true },
    { heads: 32, kvHeads: 8, qLen: 2, lens: [1, 2, 450, 64], paged: false },
    { heads: 16, kvHeads: 2, qLen: 2, lens: [3, 999], paged: true },
    { heads: 64, kvHeads: 1, qLen: 1, lens: [129, 1], paged: true },
  ];
  for (const cls of classes)
    test(`heads ${cls.heads}/${cls.kvHeads}, q_len ${cls.qLen}, ${cls.paged ? 'paged' : 'contiguous'}`, async () => {
      const rand = uniform(nextSeed());
      const hd = 128;
      const rowDim = cls.kvHeads * hd;
      const batch = cls.lens.length;
      const layout = makeLayout(cls.lens, cls.paged, 64, rand);
      const k = makeCache(layout, cls.lens, rowDim, rand, 1, true);
      const v = makeCache(layout, cls.lens, rowDim, rand, 1, true);
      const rows = batch * cls.qLen * cls.heads;
      const q = randomArray(rows * hd, rand, 1, true);
      const scale = 1 / Math.sqrt(hd);
      const ref = decodeRef({
        batch,
        qLen: cls.qLen,
        heads: cls.heads,
        kvHeads: cls.kvHeads,
        dqk: hd,
        dv: hd,
        lens: cls.lens,
        scale,
        q: (b, i, h, d) => q[((b * cls.qLen + i) * cls.heads + h) * hd + d],
        k: (b, t, kvh, d) => k[cacheRow(layout, b, t) * rowDim + kvh * hd + d],
        v: (b, t, kvh, d) => v[cacheRow(layout, b, t) * rowDim + kvh * hd + d],
      });
      const run = await runCuda(
        { kind: 'gqa', seqLens: Int32Array.from(cls.lens), batch, qLen: cls.qLen, heads: cls.heads, kvHeads: cls.kvHeads, headDim: hd, ...layoutOpts(layout) },
        { q: bf16Bits(q), kCache: bf16Bits(k), vCache: bf16Bits(v), blockTable: layout.blockTable },
        rows,
        hd,
        scale,
      );
      check(run, ref, `gqa h${cls.heads}/${cls.kvHeads} q${cls.qLen}`);
    });
});

