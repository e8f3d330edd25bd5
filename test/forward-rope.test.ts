import { native } from '../src/native/binding.js';
import { computeRope } from '../src/model/rope.js';
import type { RopeSpec } from '../src/model/spec-types.js';
import { maxRelErr, randn, ropeHalfRef, ropeInterleavedRef } from './helpers/forward-ref.js';

const base = (theta: number): RopeSpec => ({ type: 'default', theta, factor: 1, partialRotaryFactor: 1 });

/** float64 inverse frequencies theta^(-2i/d). */
function inv64(theta: number, d: number): Float64Array {
  const out = new Float64Array(d / 2);
  for (let i = 0; i < d / 2; i++) out[i] = Math.pow(theta, (-2 * i) / d);
  return out;
}

describe('rope frequencies (transformers rope types)', () => {
  test('default matches theta^(-2i/d) in float32', () => {
    for (const [theta, d] of [
      [1e4, 64],
      [1e6, 128],
      [5e5, 32],
    ]) {
      const r = computeRope(base(theta), { rotDim: d, maxPositionEmbeddings: 2048 });
      expect(r.invFreq.length).toBe(d / 2);
      expect(r.attentionScaling).toBe(1);
      expect(maxRelErr(r.invFreq, inv64(theta, d))).toBeLessThan(3e-7);
    }
  });

  test('linear divides every frequency by the factor', () => {
    const r = computeRope({ ...base(1e4), type: 'linear', factor: 4 }, { rotDim: 64, maxPositionEmbeddings: 2048 });
    const ref = inv64(1e4, 64).map((v) => v / 4);
    expect(maxRelErr(r.invFreq, ref)).toBeLessThan(3e-7);
  });

  test('dynamic: unchanged up to max_position_embeddings, NTK base growth beyond', () => {
    const spec: RopeSpec = { ...base(1e4), type: 'dynamic', factor: 2 };
    const short = computeRope(spec, { rotDim: 64, maxPositionEmbeddings: 1024, seqLen: 512 });
    expect(maxRelErr(short.invFreq, inv64(1e4, 64))).toBeLessThan(3e-7);
    const long = computeRope(spec, { rotDim: 64, maxPositionEmbeddings: 1024, seqLen: 3000 });
    // base' = base * (factor * L / max - (factor - 1))^(d / (d - 2))
    const b = 1e4 * Math.pow((2 * 3000) / 1024 - 1, 64 / 62);
    expect(maxRelErr(long.invFreq, inv64(b, 64))).toBeLessThan(3e-7);
    expect(long.invFreq[10]).toBeLessThan(short.invFreq[10]);
  });

  test('llama3: high frequencies kept, low ones divided by factor, smooth in between', () => {
    const spec: RopeSpec = {
      ...base(5e5),
      type: 'llama3',
      factor: 8,
      lowFreqFactor: 1,
      highFreqFactor: 4,
      originalMaxPositionEmbeddings: 8192,
    };
    const d = 128;
    const r = computeRope(spec, { rotDim: d, maxPositionEmbeddings: 131072 });
    const inv = inv64(5e5, d);
    let kept = 0;
    let divided = 0;
    let smooth = 0;
    for (let i = 0; i < d / 2; i++) {
      const wavelen = (2 * Math.PI) / inv[i];
      let want: number;
      if (wavelen < 8192 / 4) {
        want = inv[i];
        kept++;
      } else if (wavelen > 8192 / 1) {
        want = inv[i] / 8;
        divided++;
      } else {
        // interpolate 1/factor -> 1 linearly in context/wavelength between low and high factors
        const s = (8192 / wavelen - 1) / (4 - 1);
        want = inv[i] * ((1 - s) / 8 + s);
        smooth++;
        expect(r.invFreq[i]).toBeGreaterThanOrEqual(inv[i] / 8 - 1e-12);
        expect(r.invFreq[i]).toBeLessThanOrEqual(inv[i] * (1 + 1e-6));
      }
      expect(Math.abs(r.invFreq[i] - want) / want).toBeLessThan(1e-6);
    }
    expect(kept).toBeGreaterThan(0);
    expect(divided).toBeGreaterThan(0);
    expect(smooth).toBeGreaterThan(0);
  });

  test('yarn: extrapolated high frequencies, interpolated low ones, mscale attention factor', () => {
    const spec: RopeSpec = { ...base(1e4), type: 'yarn', factor: 4, originalMaxPositionEmbeddings: 4096 };
    const d = 64;
    const r = computeRope(spec, { rotDim: d, maxPositionEmbeddings: 16384 });
    const inv = inv64(1e4, d);
    expect(Math.abs(r.invFreq[0] - inv[0]) / inv[0]).toBeLessThan(1e-6);
    expect(Math.abs(r.invFreq[d / 2 - 1] - inv[d / 2 - 1] / 4) / (inv[d / 2 - 1] / 4)).toBeLessThan(1e-6);
    expect(r.attentionScaling).toBeCloseTo(0.1 * Math.log(4) + 1, 12);
    const ds = computeRope({ ...spec, mscale: 1, mscaleAllDim: 1 }, { rotDim: d, maxPositionEmbeddings: 16384 });
    expect(ds.attentionScaling).toBeCloseTo(1, 12);
  });

  test('odd or missing parameters are rejected', () => {
    expect(() => computeRope(base(1e4), { rotDim: 63, maxPositionEmbeddings: 10 })).toThrow(expect.objectContaining({ code: 'ERR_ROPE_CONFIG' }));
    expect(() => computeRope({ ...base(1e4), type: 'llama3', factor: 8 }, { rotDim: 64, maxPositionEmbeddings: 10 })).toThrow(
      /low_freq_factor/,
    );
  });
});

describe('rope kernel', () => {
  const spec: RopeSpec = {
    ...base(5e5),
    type: 'llama3',
    factor: 8,
    lowFreqFactor: 1,
    highFreqFactor: 4,
    originalMaxPositionEmbeddings: 64,
  };

  test.each([64, 128])('rotate-half on strided heads (offset, partial rotation, scale), head_dim %i', async (hd) => {
    const rows = 40;
    const H = 3;
    const off = 8;
    const rd = hd - 16;
    const headStride = hd;
    const rowStride = H * headStride + 5;
    const tables = computeRope(spec, { rotDim: rd, maxPositionEmbeddings: 2048 });
    const x = randn(rows * rowStride, hd);
    const orig = x.slice();
    const pos = new Int32Array(rows);
    for (let r = 0; r < rows; r++) pos[r] = (r * 37) % 1000;
    await native.ropeAsync(x, pos, tables.invFreq, { rowStride, nHeads: H, headStride, offset: off, rotDim: rd, scale: 1.25 });
    const got: number[] = [];
    const want: number[] = [];
    for (let r = 0; r < rows; r++)
      for (let h = 0; h < H; h++) {
        const at = r * rowStride + h * headStride;
        const ref = ropeHalfRef(orig.subarray(at + off, at + off + rd), tables.invFreq, pos[r], 1.25);
        for (let c = 0; c < rd; c++) {
          got.push(x[at + off + c]);
          want.push(ref[c]);
        }
        // dims outside [off, off+rd) untouched
        for (let c = 0; c < off; c++) expect(x[at + c]).toBe(orig[at + c]);
        for (let c = off + rd; c < headStride; c++) expect(x[at + c]).toBe(orig[at + c]);
      }
    expect(maxRelErr(got, want)).toBeLessThan(2e-6);
  });

  test('interleaved layout gives the dot products of transformers de-interleave + rotate-half', () => {
    const d = 32;
    const T = 20;
    const tables = computeRope(base(1e4), { rotDim: d, maxPositionEmbeddings: 2048 });
    const q = randn(T * d, 1);
    const k = randn(T * d, 2);
    const q0 = q.slice();
    const k0 = k.slice();
    const pos = new Int32Array(T).map((_, i) => i * 3);
    native.rope(q, pos, tables.invFreq, { rowStride: d, nHeads: 1, headStride: d, rotDim: d, interleave: true });
    native.rope(k, pos, tables.invFreq, { rowStride: d, nHeads: 1, headStride: d, rotDim: d, interleave: true });
    const got: number[] = [];
    const want: number[] = [];
    for (let t = 0; t < T; t++)
      for (let u = 0; u <= t; u++) {
        let g = 0;
        for (let c = 0; c < d; c++) g += q[t * d + c] * k[u * d + c];
        const qr = ropeInterleavedRef(q0.subarray(t * d, (t + 1) * d), tables.invFreq, pos[t]);
        const kr = ropeInterleavedRef(k0.subarray(u * d, (u + 1) * d), tables.invFreq, pos[u]);
        let w = 0;
        for (let c = 0; c < d; c++) w += qr[c] * kr[c];
        got.push(g);
        want.push(w);
      }
    expect(maxRelErr(got, want)).toBeLessThan(2e-6);
  });
});
