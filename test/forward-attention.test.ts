import { native } from '../src/native/binding.js';
import { attentionRef, maxRelErr, randn } from './helpers/forward-ref.js';

interface Case {
  nSeq: number;
  seqLen: number;
  nHeads: number;
  nKvHeads: number;
  d: number;
}

function runGqa(c: Case, seed: number, window = 0) {
  const rows = c.nSeq * c.seqLen;
  const q = randn(rows * c.nHeads * c.d, seed);
  const k = randn(rows * c.nKvHeads * c.d, seed + 1);
  const v = randn(rows * c.nKvHeads * c.d, seed + 2);
  const out = new Float32Array(rows * c.nHeads * c.d);
  const scale = 1 / Math.sqrt(c.d);
  native.attention(q, k, v, out, { nSeq: c.nSeq, seqLen: c.seqLen, nHeads: c.nHeads, nKvHeads: c.nKvHeads, qkDim: c.d, vDim: c.d, scale, window });
  const ref = attentionRef(q, k, v, { ...c, dqk: c.d, dv: c.d, scale, window });
  return { out, ref, q, k, v };
}

describe('attention kernel vs float64 reference', () => {
  // seq lengths not multiples of the 32-query / 64-key blocks; GQA ratios 1 (MHA), 2, 4, 8
  const cases: Case[] = [
    { nSeq: 2, seqLen: 75, nHeads: 4, nKvHeads: 4, d: 64 },
    { nSeq: 2, seqLen: 130, nHeads: 4, nKvHeads: 2, d: 64 },
    { nSeq: 1, seqLen: 97, nHeads: 8, nKvHeads: 2, d: 128 },
    { nSeq: 3, seqLen: 33, nHeads: 8, nKvHeads: 1, d: 64 },
    { nSeq: 1, seqLen: 200, nHeads: 2, nKvHeads: 1, d: 128 },
    { nSeq: 2, seqLen: 1, nHeads: 2, nKvHeads: 2, d: 64 },
  ];
  test.each(cases)('nSeq=$nSeq seqLen=$seqLen heads=$nHeads kv=$nKvHeads d=$d', (c) => {
    const { out, ref } = runGqa(c, 11 + c.seqLen);
    expect(maxRelErr(out, ref)).toBeLessThan(2e-6);
  });

  test('sliding window masks keys at distance >= window', () => {
    const c = { nSeq: 2, seqLen: 150, nHeads: 4, nKvHeads: 2, d: 64 };
    const { out, ref } = runGqa(c, 5, 40);
    expect(maxRelErr(out, ref)).toBeLessThan(2e-6);
  });

  test('async variant equals the sync one', async () => {
    const c = { nSeq: 2, seqLen: 70, nHeads: 4, nKvHeads: 2, d: 64 };
    const { out, q, k, v } = runGqa(c, 3);
    const out2 = new Float32Array(out.length);
    await native.attentionAsync(q, k, v, out2, { nSeq: 2, seqLen: 70, nHeads: 4, nKvHeads: 2, qkDim: 64, vDim: 64, scale: 1 / 8 });
    expect(Array.from(out2)).toEqual(Array.from(out));
  });

  test('MLA split keys: per-head nope keys + one shared rope key, strided views, vDim != qkDim', () => {
    const nSeq = 2;
    const T = 77;
    const H = 3;
    const dn = 32;
    const dr = 16;
    const dv = 24;
    const R = 20;
    const rows = nSeq * T;
    const q = randn(rows * H * (dn + dr), 21);
    const kvb = randn(rows * H * (dn + dv), 22); // per head [k_nope | v]
    const kva = randn(rows * (R + dr), 23); // [latent | k_rope]
    const out = new Float32Array(rows * H * dv);
    const scale = 1 / Math.sqrt(dn + dr);
    native.attention(q, kvb, kvb.subarray(dn), out, {
      nSeq,
      seqLen: T,
      nHeads: H,
      nKvHeads: H,
      qkDim: dn,
      vDim: dv,
      scale,
      kHeadStride: dn + dv,
      vHeadStride: dn + dv,
      kRope: kva.subarray(R),
      ropeDim: dr,
      kRopeRowStride: R + dr,
    });
    // dense copies for the reference
    const k = new Float64Array(rows * H * dn);
    const v = new Float64Array(rows * H * dv);
    const kr = new Float64Array(rows * dr);
    for (let r = 0; r < rows; r++) {
      for (let h = 0; h < H; h++) {
        for (let c = 0; c < dn; c++) k[(r * H + h) * dn + c] = kvb[(r * H + h) * (dn + dv) + c];
        for (let c = 0; c < dv; c++) v[(r * H + h) * dv + c] = kvb[(r * H + h) * (dn + dv) + dn + c];
      }
      for (let c = 0; c < dr; c++) kr[r * dr + c] = kva[r * (R + dr) + R + c];
    }
    const ref = attentionRef(q, k, v, { nSeq, seqLen: T, nHeads: H, nKvHeads: H, dqk: dn, dv, scale }, { data: kr, dim: dr });
    expect(maxRelErr(out, ref)).toBeLessThan(2e-6);
  });

  test('large scores stay finite (online softmax rescaling)', () => {
    const c = { nSeq: 1, seqLen: 140, nHeads: 2, nKvHeads: 1, d: 64 };
    const rows = c.seqLen;
    const q = randn(rows * 2 * 64, 7, 6);
    const k = randn(rows * 64, 8, 6);
    const v = randn(rows * 64, 9);
    const out = new Float32Array(rows * 2 * 64);
    native.attention(q, k, v, out, { ...c, qkDim: 64, vDim: 64, scale: 1 / 8 });
    const ref = attentionRef(q, k, v, { ...c, dqk: 64, dv: 64, scale: 1 / 8 });
    expect(out.every(Number.isFinite)).toBe(true);
    expect(maxRelErr(out, ref)).toBeLessThan(2e-5);
  });

  test('shape errors carry codes', () => {
    const q = new Float32Array(10);
    expect(() =>
      native.attention(q, q, q, q, { nSeq: 1, seqLen: 4, nHeads: 2, nKvHeads: 1, qkDim: 8, vDim: 8, scale: 1 }),
    ).toThrow(expect.objectContaining({ code: 'ERR_SHAPE' }));
    const big = new Float32Array(1000);
    expect(() =>
      native.attention(big, big, big, big, { nSeq: 1, seqLen: 4, nHeads: 3, nKvHeads: 2, qkDim: 8, vDim: 8, scale: 1 }),
    ).toThrow(expect.objectContaining({ code: 'ERR_SHAPE' }));
  });
});
