import ndarray from 'ndarray';
import { mlaDecodeCpu } from '../src/decode.js';
import { native } from '../src/native/binding.js';
import { seedLabel, seedStream } from './helpers/random.js';
import { bf16Bits, makeMlaCase, maxAbsLseError, relError, type MlaCase } from './helpers/decode-ref.js';

// Inputs from GQA2MLA_TEST_SEED (fixed default); the seed is in the suite titles and failure messages.
const { base, next: nextSeed } = seedStream(0x6d6c6163, 7919);

async function runCpu(c: MlaCase, bf16: boolean, extra: { simd?: boolean | 'avx2' | 'avx512'; pieceTokens?: number } = {}) {
  return mlaDecodeCpu({
    qLat: c.qLat,
    qRope: c.qRope,
    cache: bf16 ? bf16Bits(c.cache) : c.cache,
    seqLens: Int32Array.from(c.lens),
    blockTable: c.layout.paged ? c.layout.blockTable : undefined,
    seqStride: c.layout.paged ? undefined : c.layout.seqStride,
    pageSize: c.layout.pageSize,
    batch: c.batch,
    qLen: c.qLen,
    heads: c.heads,
    kvLoraRank: c.dl,
    ropeDim: c.dr,
    softmaxScale: c.scale,
    ...extra,
  });
}

function expectClose(c: MlaCase, out: Float32Array, lse: Float32Array, tol: number, what: string) {
  for (let i = 0; i < out.length; i++) if (!Number.isFinite(out[i])) throw new Error(`${what}: non-finite out[${i}]`);
  const rel = relError(out, c.ref.out);
  const lseErr = maxAbsLseError(lse, c.ref.lse);
  if (!(rel < tol) || !(lseErr < 1e-3))
    throw new Error(`${what}: rel error ${rel.toExponential(2)} (tol ${tol}), LSE abs error ${lseErr} (seed base ${base}, ${seedLabel()})`);
  // rows that see no token: zeros and -Infinity
  const dl = c.dl;
  for (let r = 0; r < c.ref.lse.length; r++)
    if (c.ref.lse[r] === -Infinity) {
      expect(lse[r]).toBe(-Infinity);
      for (let d = 0; d < dl; d++) expect(out[r * dl + d]).toBe(0);
    }
  if (process.env.GQA2MLA_TEST_VERBOSE) console.log(`${what}: rel ${rel.toExponential(2)}, lse ${lseErr.toExponential(2)}`);
  return { rel, lseErr };
}

// Instruction-set levels to test; a level the CPU lacks falls back to the next one down.
const simdModes: Array<'avx512' | 'avx2' | false> = native.buildInfo().avx2 ? ['avx512', 'avx2', false] : [false];
const expectedKernel = (mode: 'avx512' | 'avx2' | false, got: string) =>
  mode === false ? got === 'scalar' : mode === 'avx2' ? got === 'avx2-fma' : got === 'avx512' || got === 'avx2-fma';

describe(`mlaDecodeCpu against a float64 reference (${seedLabel()})`, () => {
  // Shape classes: q_len 1 and 2 (causal), paged (shuffled pages, NaN in unused slots and
  // pages) and contiguous, float32 and bf16 cache, lengths 0 and 1, head counts that are
  // not multiples of the register blocks, split and unsplit requests.
  const classes = [
    { name: 'q1 paged h16', qLen: 1, heads: 16, lens: [0, 1, 97, 300], paged: true },
    { name: 'q2 paged h8 causal', qLen: 2, heads: 8, lens: [1, 2, 65, 190], paged: true },
    { name: 'q1 contiguous h5', qLen: 1, heads: 5, lens: [129, 0, 3], paged: false },
    { name: 'q2 contiguous h3', qLen: 2, heads: 3, lens: [1, 64, 250], paged: false },
  ];
  for (const cls of classes)
    for (const bf16 of [false, true])
      test(`${cls.name}, ${bf16 ? 'bf16' : 'f32'} cache`, async () => {
        const c = makeMlaCase({ seed: nextSeed(), qLen: cls.qLen, heads: cls.heads, lens: cls.lens, paged: cls.paged, bf16 });
        for (const simd of simdModes) {
          const r = await runCpu(c, bf16, { simd });
          expect(expectedKernel(simd, r.kernel)).toBe(true);
          expectClose(c, r.out, r.lse, 1e-5, `${cls.name} bf16=${bf16} simd=${simd}`);
          // the same problem cut into 64-token pieces merged by LSE
          const s = await runCpu(c, bf16, { simd, pieceTokens: 64 });
          expect(s.pieces).toBeGreaterThan(c.lens.filter((l) => l > 0).length);
          expectClose(c, s.out, s.lse, 1e-5, `${cls.name} bf16=${bf16} simd=${simd} split`);
        }
      });

  test('peaked softmax (large scale) and long request split across threads', async () => {
    const c = makeMlaCase({ seed: nextSeed(), qLen: 1, heads: 4, lens: [1500, 7], paged: true, bf16: false, scale: 0.35 });
    const r = await runCpu(c, false);
    expectClose(c, r.out, r.lse, 1e-5, 'peaked');
  });

  test('general dims: kvLoraRank 40 + ropeDim 12 (not multiples of 8), and no rope part', async () => {
    for (const simd of simdModes) {
      const c = makeMlaCase({ seed: nextSeed(), qLen: 2, heads: 6, dl: 40, dr: 12, lens: [70, 1, 0, 33], paged: true, pageSize: 16, bf16: false });
      const r = await runCpu(c, false, { simd });
      expectClose(c, r.out, r.lse, 1e-5, `dims 40+12 simd=${simd}`);
      const c0 = makeMlaCase({ seed: nextSeed(), qLen: 1, heads: 4, dl: 64, dr: 0, lens: [50, 9], paged: false, bf16: true });
      const r0 = await runCpu(c0, true, { simd });
      expectClose(c0, r0.out, r0.lse, 1e-5, `dims 64+0 simd=${simd}`);
    }
  });

  test('accepts contiguous ndarray views', async () => {
    const c = makeMlaCase({ seed: nextSeed(), qLen: 1, heads: 4, lens: [40, 80], paged: false, bf16: false });
    const D = c.dl + c.dr;
    const r = await mlaDecodeCpu({
      qLat: ndarray(c.qLat, [2, 1, 4, c.dl]),
      qRope: ndarray(c.qRope, [2, 1, 4, c.dr]),
      cache: ndarray(c.cache, [2, c.layout.seqStride, D]),
      seqLens: c.lens,
      batch: 2,
      heads: 4,
      softmaxScale: c.scale,
    });
    expectClose(c, r.out, r.lse, 1e-5, 'ndarray');
  });
});

describe(`mlaDecodeCpu argument checks (${seedLabel()})`, () => {
  const c = makeMlaCase({ seed: nextSeed(), qLen: 1, heads: 2, lens: [10, 70], paged: true, bf16: false });
  const args = {
    qLat: c.qLat,
    qRope: c.qRope,
    cache: c.cache,
    seqLens: Int32Array.from(c.lens),
    blockTable: c.layout.blockTable,
    batch: 2,
    heads: 2,
    softmaxScale: c.scale,
  };
  test('wrong query length is an ERR_SHAPE GqaError', async () => {
    await expect(mlaDecodeCpu({ ...args, qLat: c.qLat.subarray(1) })).rejects.toMatchObject({ code: 'ERR_SHAPE' });
  });
  test('block-table entry outside the cache is ERR_OUT_OF_RANGE', async () => {
    const bt = Int32Array.from(c.layout.blockTable!);
    bt[0] = 1 << 20;
    await expect(mlaDecodeCpu({ ...args, blockTable: bt })).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
  });
  test('length beyond the block-table row is ERR_SHAPE', async () => {
    await expect(mlaDecodeCpu({ ...args, seqLens: [10, 64 * 100] })).rejects.toMatchObject({ code: 'ERR_SHAPE' });
  });
  test('cache of the wrong element type is ERR_INVALID_ARG_TYPE', async () => {
    await expect(
      mlaDecodeCpu({ ...args, cache: new Float64Array(c.cache) as unknown as Float32Array }),
    ).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
  });
});
