/**
 * Typed views of device memory for the CUDA backend: a `DeviceArray` is a buffer of
 * `convertCuda` with an element type and length, sliceable without copies; a
 * `DeviceWorkspace` hands out grow-only named scratch arrays (so a pass over many layers
 * allocates once and GPU memory stays bounded by the largest layer).
 */
import { GqaError } from '../errors.js';
import type { NativeConvertCuda, NativeCudaBuffer } from '../native/binding.js';
import { native } from '../native/binding.js';

/** Element types of device arrays. */
export type DeviceDtype = 'F32' | 'BF16' | 'F64' | 'I32';

const BYTES: Record<DeviceDtype, number> = { F32: 4, BF16: 2, F64: 8, I32: 4 };

/** The CUDA exports; throws ERR_NO_CUDA when the addon was built without them. */
export function cudaExports(): NativeConvertCuda {
  const cu = native.convertCuda;
  if (!cu) throw new GqaError('ERR_NO_CUDA', 'the gqa2mla addon was built without CUDA (rebuild with `npm run build:cuda`)', 'usage');
  return cu;
}

/** `length` elements of `dtype` in device memory. */
export class DeviceArray {
  constructor(
    readonly buf: NativeCudaBuffer,
    readonly dtype: DeviceDtype,
    readonly length: number,
  ) {}

  /** A new allocation. */
  static alloc(dtype: DeviceDtype, length: number): DeviceArray {
    return new DeviceArray(cudaExports().alloc(Math.max(1, length) * BYTES[dtype]), dtype, length);
  }

  /** Elements [start, start + count) as a view sharing the allocation. */
  sub(start: number, count = this.length - start): DeviceArray {
    if (start < 0 || count < 0 || start + count > this.length)
      throw new GqaError('ERR_SHAPE', `device view [${start}, ${start + count}) is outside an array of ${this.length}`, 'runtime');
    const b = BYTES[this.dtype];
    return new DeviceArray(cudaExports().view(this.buf, start * b, count * b), this.dtype, count);
  }

  get bytes(): number {
    return this.length * BYTES[this.dtype];
  }

  /** Copies host data (same element size) to the start of this array. */
  upload(src: ArrayBufferView): void {
    if (src.byteLength > this.bytes) throw new GqaError('ERR_SHAPE', `upload of ${src.byteLength} bytes into ${this.bytes}`, 'runtime');
    cudaExports().upload(this.buf, src);
  }

  /** Copies the first `dst.byteLength` bytes to the host after all queued work. */
  download(dst: ArrayBufferView): void {
    cudaExports().download(this.buf, dst);
  }

  free(): void {
    cudaExports().free(this.buf);
  }
}

/** Grow-only named device scratch. */
export class DeviceWorkspace {
  private readonly arrays = new Map<string, DeviceArray>();

  /** `length` elements of buffer `name` (contents unspecified). */
  get(name: string, dtype: DeviceDtype, length: number): DeviceArray {
    let a = this.arrays.get(name);
    if (!a || a.dtype !== dtype || a.length < length) {
      a?.free();
      a = DeviceArray.alloc(dtype, Math.max(length, a && a.dtype === dtype ? Math.ceil(a.length * 1.25) : 0));
      this.arrays.set(name, a);
    }
    return a.length === length ? a : a.sub(0, length);
  }

  /** Frees every buffer. */
  clear(): void {
    for (const a of this.arrays.values()) a.free();
    this.arrays.clear();
  }

  /** Bytes held. */
  get bytes(): number {
    let s = 0;
    for (const a of this.arrays.values()) s += a.bytes;
    return s;
  }
}
