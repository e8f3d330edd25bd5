// Native element-type conversions and conversion reductions (native/dtype_convert.cc,
// native/conversion_reduce.cc) against the scalar TypeScript definitions and float64 sums.
import { native } from '../src/native/binding.js';
import { expand16, floatBitsToBf16, floatBitsToHalf } from '../src/checkpoint/dtype.js';
import { latentRowStats } from '../src/tensor/latent-stats.js';
import { relativeError, roundToDtype } from '../src/convert/layer-ops.js';

/** Random float32 bit patterns (every exponent, so NaN/Inf/subnormals/zeros) plus hand-picked edges. */
function patterns(n: number, seed: number): Uint32Array {
  let s = seed >>> 0;
  const next = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s;
  };
  const edges = [
    0, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, 0xffbfffff, 0x00000001, 0x807fffff, 0x3f800000, 0x3f808000, 0x3f818000,
    0x3f807fff, 0x477fe000, 0x477ff000, 0x47800000, 0x33000000, 0x33000001, 0x387fc000, 0x38800000, 0x7f7fffff, 0xff7fffff,
  ];
  const u = new Uint32Array(n + edges.length);
  for (let i = 0; i < n; i++) u[i] = next();
  // a quarter near the f16 range (exponents 100..145) so its rounding paths are exercised
  for (let i = 0; i < n; i += 4) u[i] = (u[i] & 0x807fffff) | ((100 + (u[i] % 46)) << 23);
  u.set(edges, n);
  return u;
}

describe('native element-type conversions', () => {
  const bits = patterns(300_007, 7);
  const f = new Float32Array(bits.buffer);

  test('narrow16 equals floatBitsToBf16 / floatBitsToHalf bit for bit', () => {
    for (const dtype of ['BF16', 'F16'] as const) {
      const out = new Uint16Array(bits.length);
      native.narrow16(f, dtype, out);
      const ref = dtype === 'BF16' ? floatBitsToBf16 : floatBitsToHalf;
      let bad = 0;
      for (let i = 0; i < bits.length; i++) if (out[i] !== ref(bits[i])) bad++;
      expect(bad).toBe(0);
    }
  });

  test('widen16 equals expand16 on all 65536 patterns, async too', async () => {
    const src = new Uint16Array(65536);
    for (let i = 0; i < 65536; i++) src[i] = i;
    for (const dtype of ['BF16', 'F16'] as const) {
      const ref = new Uint32Array(65536);
      expand16(src, ref, dtype);
      const out = new Float32Array(65536);
      native.widen16(src, dtype, out);
      expect(Buffer.compare(Buffer.from(out.buffer), Buffer.from(ref.buffer))).toBe(0);
      const out2 = new Float32Array(65536);
      await native.widen16Async(src, dtype, out2);
      expect(Buffer.compare(Buffer.from(out2.buffer), Buffer.from(ref.buffer))).toBe(0);
    }
  });

  test('roundFloat32 = widen(narrow(x)), in place too', async () => {
    for (const dtype of ['BF16', 'F16'] as const) {
      const n16 = new Uint16Array(bits.length);
      native.narrow16(f, dtype, n16);
      const ref = new Uint32Array(bits.length);
      expand16(n16, ref, dtype);
      const out = roundToDtype(f, dtype);
      expect(Buffer.compare(Buffer.from(out.buffer), Buffer.from(ref.buffer))).toBe(0);
      const inPlace = f.slice();
      await native.roundFloat32Async(inPlace, dtype, inPlace);
      expect(Buffer.compare(Buffer.from(inPlace.buffer), Buffer.from(ref.buffer))).toBe(0);
    }
    expect(roundToDtype(f, 'F32')).toBe(f);
  });

  test('refuses overlapping arrays, wrong lengths and unknown dtypes with codes', () => {
    const buf = new ArrayBuffer(4096);
    const src = new Uint16Array(buf, 1024, 512); // bytes [1024, 2048) inside the output [0, 2048)
    const out = new Float32Array(buf, 0, 512);
    expect(() => native.widen16(src, 'BF16', out)).toThrow(expect.objectContaining({ code: 'ERR_ALIAS' }));
    const a = new Float32Array(buf, 0, 512);
    const b = new Float32Array(buf, 4, 512);
    expect(() => native.roundFloat32(a, 'BF16', b)).toThrow(expect.objectContaining({ code: 'ERR_ALIAS' }));
    expect(() => native.narrow16(new Float32Array(8), 'BF16', new Uint16Array(7))).toThrow(expect.objectContaining({ code: 'ERR_SHAPE' }));
    expect(() => native.narrow16(new Float32Array(8), 'F8' as 'BF16', new Uint16Array(8))).toThrow(expect.objectContaining({ code: 'ERR_DTYPE' }));
  });
});

describe('native conversion reductions', () => {
  let seed = 99;
  const rnd = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed / 2 ** 32 - 0.5;
  };

  test('relativeError matches a float64 loop', async () => {
    const n = 200_003;
    const a = new Float32Array(n);
    const b = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      b[i] = rnd() * 3;
      a[i] = b[i] + rnd() * 0.01 * (i % 7);
    }
    let num = 0;
    let den = 0;
    for (let i = 0; i < n; i++) {
      num += (a[i] - b[i]) ** 2;
      den += b[i] ** 2;
    }
    expect(Math.abs(relativeError(a, b) / Math.sqrt(num / den) - 1)).toBeLessThan(1e-12);
    const sums = new Float64Array(2);
    await native.squaredDiffSumsAsync(a, b, sums);
    expect(Math.abs(sums[0] / num - 1)).toBeLessThan(1e-12);
    expect(Math.abs(sums[1] / den - 1)).toBeLessThan(1e-12);
    // the longer first argument is read over b's length only
    expect(relativeError(new Float32Array([1, 2, 99]), new Float32Array([1, 2]))).toBe(0);
    expect(() => relativeError(new Float32Array(2), new Float32Array(3))).toThrow(expect.objectContaining({ code: 'ERR_SHAPE' }));
  });

  test('latentRowStats matches a float64 loop, with and without bias, and reports NaN', () => {
    const rows = 777;
    const R = 96;
    const c = new Float32Array(rows * R);
    for (let i = 0; i < c.length; i++) c[i] = rnd() * (1 + (i % 13));
    c[5] = 0; // zeros are skipped by the smallest-|v| search
    c[R * 300 + 3] = 1e-30;
    const bias = new Float32Array(R);
    for (let i = 0; i < R; i++) bias[i] = rnd();
    for (const b of [null, bias]) {
      let maxMs = 0;
      let minAbs = Infinity;
      for (let t = 0; t < rows; t++) {
        let ss = 0;
        for (let i = 0; i < R; i++) {
          const v = c[t * R + i] + (b ? b[i] : 0);
          ss += v * v;
          if (Math.abs(v) > 0 && Math.abs(v) < minAbs) minAbs = Math.abs(v);
        }
        maxMs = Math.max(maxMs, ss / R);
      }
      const s = latentRowStats(c, rows, R, b);
      expect(Math.abs(s.maxMs / maxMs - 1)).toBeLessThan(1e-12);
      expect(s.minAbs).toBe(minAbs);
    }
    expect(latentRowStats(c, 0, R, null)).toEqual({ maxMs: 0, minAbs: Infinity });
    const withNan = c.slice();
    withNan[R * 500 + 7] = NaN;
    expect(latentRowStats(withNan, rows, R, null).maxMs).toBeNaN();
    expect(() => latentRowStats(c, rows + 1, R, null)).toThrow(expect.objectContaining({ code: 'ERR_SHAPE' }));
  });
});
