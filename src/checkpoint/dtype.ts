/**
 * Element types of stored tensors and the conversions between them and float32:
 * bf16 <-> f32 by 16-bit shifts (round-to-nearest-even on the way down, NaN kept NaN),
 * f16 <-> f32 (a 64 Ki-entry table up, exact round-to-nearest-even with subnormals down),
 * f64 and i64. Host byte order is assumed little-endian, as safetensors stores it.
 */
import { GqaError } from '../errors.js';
import { native } from '../native/binding.js';

/** Element types gqa2mla reads and writes. */
export type Dtype = 'BF16' | 'F16' | 'F32' | 'F64' | 'I64';

/** Bytes per element of each dtype. */
export const DTYPE_SIZE: Readonly<Record<Dtype, number>> = { BF16: 2, F16: 2, F32: 4, F64: 8, I64: 8 };

/** The dtypes of the safetensors format that gqa2mla does not handle (named in errors). */
export const OTHER_SAFETENSORS_DTYPES = ['BOOL', 'U8', 'I8', 'U16', 'I16', 'U32', 'I32', 'U64', 'F8_E4M3', 'F8_E5M2', 'F8_E8M0', 'F4', 'F6_E2M3', 'F6_E3M2', 'C64'];

/** Whether `s` names a dtype gqa2mla handles. */
export function isDtype(s: unknown): s is Dtype {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_SIZE, s);
}

/** Product of a shape's dimensions (1 for a scalar). */
export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** float32 value of IEEE half-precision bits `h`. */
export function halfBitsToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return sign * m * 2 ** -24;
  if (e === 0x1f) return m ? NaN : sign * Infinity;
  return sign * (1024 + m) * 2 ** (e - 25);
}

let halfTable: Uint32Array | null = null;
/** float32 bit patterns of all 65536 half values (NaN payloads kept, quiet bit set). */
function halfToFloatBitsTable(): Uint32Array {
  if (halfTable) return halfTable;
  const t = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const e = (h >>> 10) & 0x1f;
    if (e === 0x1f && h & 0x3ff) {
      t[h] = ((h & 0x8000) << 16) | 0x7fc00000 | ((h & 0x3ff) << 13);
    } else {
      f32Scratch[0] = halfBitsToFloat(h);
      t[h] = u32Scratch[0];
    }
  }
  halfTable = t;
  return t;
}

/** IEEE half bits of float32 bits `x`, rounded to nearest even (overflow to infinity, NaN stays NaN). */
export function floatBitsToHalf(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112; // rebias 127 -> 15
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // half subnormal (or zero): value = full mantissa (with hidden bit) >> (14 - e) in units of 2^-24
    if (e < -10) return sign;
    const full = mant | 0x800000;
    const shift = 14 - e;
    let h = full >>> shift;
    const rem = full & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++; // a carry into the exponent is the right result
  return sign | h;
}

/** bfloat16 bits of float32 bits `b`, rounded to nearest even; NaN stays NaN (quiet bit set). */
export function floatBitsToBf16(b: number): number {
  if ((b & 0x7f800000) === 0x7f800000 && b & 0x7fffff) return (b >>> 16) | 0x40;
  return ((b >>> 0) + 0x7fff + ((b >>> 16) & 1)) >>> 16;
}

/**
 * Decodes `bytes` (little-endian `dtype` elements) to float32. BF16/F16/F32 are exact;
 * F64 rounds to float32; I64 converts through a double (exact below 2^24).
 */
export function toFloat32(bytes: Uint8Array, dtype: Dtype): Float32Array {
  const n = bytes.byteLength / DTYPE_SIZE[dtype];
  if (!Number.isInteger(n)) throw new GqaError('ERR_DTYPE', `${bytes.byteLength} bytes are not a whole number of ${dtype} elements`, 'runtime');
  const aligned = bytes.byteOffset % DTYPE_SIZE[dtype] === 0 ? bytes : bytes.slice();
  switch (dtype) {
    case 'F32':
      return new Float32Array(aligned.buffer, aligned.byteOffset, n).slice();
    case 'BF16':
    case 'F16': {
      // multithreaded native widening, bit-identical to expand16
      const out = new Float32Array(n);
      native.widen16(new Uint16Array(aligned.buffer, aligned.byteOffset, n), dtype, out);
      return out;
    }
    case 'F64':
      return Float32Array.from(new Float64Array(aligned.buffer, aligned.byteOffset, n));
    case 'I64': {
      const src = new BigInt64Array(aligned.buffer, aligned.byteOffset, n);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = Number(src[i]);
      return out;
    }
  }
}

/**
 * Widens 16-bit elements to float32 bit patterns: `out[i] = f32bits(src[i])`. `src` may
 * alias the upper half of `out`'s buffer (in-place widening after a read into that half):
 * element i is read before bytes [4i, 4i + 4) are written, and those bytes never reach an
 * element still to be read.
 */
export function expand16(src: Uint16Array, out: Uint32Array, dtype: 'BF16' | 'F16'): void {
  const n = src.length;
  if (dtype === 'BF16') {
    for (let i = 0; i < n; i++) out[i] = src[i] << 16;
  } else {
    const t = halfToFloatBitsTable();
    for (let i = 0; i < n; i++) out[i] = t[src[i]];
  }
}

/**
 * Encodes float32 values as `dtype` bytes (a view of `a` itself for F32). BF16 and F16
 * round to nearest even and keep NaN; I64 requires integer values.
 */
export function encodeFloat32(a: Float32Array, dtype: Dtype, what = 'tensor'): Uint8Array {
  const n = a.length;
  switch (dtype) {
    case 'F32':
      return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    case 'BF16':
    case 'F16': {
      // multithreaded native rounding, bit-identical to floatBitsToBf16 / floatBitsToHalf
      const out = new Uint16Array(n);
      native.narrow16(a.byteOffset % 4 === 0 ? a : a.slice(), dtype, out);
      return new Uint8Array(out.buffer);
    }
    case 'F64':
      return new Uint8Array(Float64Array.from(a).buffer);
    case 'I64': {
      const out = new BigInt64Array(n);
      for (let i = 0; i < n; i++) {
        if (!Number.isInteger(a[i])) throw new GqaError('ERR_DTYPE', `${what}: value ${a[i]} at ${i} cannot be stored as I64`, 'usage');
        out[i] = BigInt(a[i]);
      }
      return new Uint8Array(out.buffer);
    }
  }
}
