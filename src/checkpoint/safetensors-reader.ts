/**
 * safetensors reader: the header is parsed and validated once; tensors are read one at a
 * time with positional reads (the file is never read whole).
 *
 * Format: u64 little-endian header length N, N bytes of JSON
 * {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the
 * byte buffer; offsets are relative to the buffer, tensors contiguous and non-overlapping,
 * and the buffer ends exactly at the end of the file.
 */
import { type FileHandle, open } from 'node:fs/promises';
import { basename } from 'node:path';
import { GqaError } from '../errors.js';

/** Stored element types. */
export type Dtype = 'BF16' | 'F16' | 'F32' | 'F64' | 'I64';

/** Bytes per element of each dtype. */
export const DTYPE_SIZE: Record<Dtype, number> = { BF16: 2, F16: 2, F32: 4, F64: 8, I64: 8 };

/** Maximum header length accepted (bytes). */
export const MAX_HEADER_BYTES = 100_000_000;

/** Where a tensor lives. */
export interface TensorInfo {
  name: string;
  dtype: Dtype;
  shape: number[];
  /** absolute byte offset in the file */
  offset: number;
  byteLength: number;
  file: string;
}

function bad(code: string, file: string, msg: string): GqaError {
  return new GqaError(code, `${file}: ${msg}`, 'input');
}

/** One open safetensors file. */
export class SafetensorsFile {
  private constructor(
    readonly path: string,
    private readonly fh: FileHandle,
    readonly tensors: Map<string, TensorInfo>,
    readonly metadata: Record<string, string>,
    readonly size: number,
  ) {}

  /** Opens and validates a file; throws GqaError (ERR_SAFETENSORS_*) naming the file and tensor. */
  static async open(path: string): Promise<SafetensorsFile> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      throw bad('ERR_FILE_MISSING', path, `cannot open (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    try {
      const size = (await fh.stat()).size;
      if (size === 0) throw bad('ERR_SAFETENSORS_EMPTY', path, 'empty file');
      if (size < 8) throw bad('ERR_SAFETENSORS_TRUNCATED', path, `file of ${size} bytes is too short for the 8-byte header length`);
      const lenBuf = Buffer.alloc(8);
      await fh.read(lenBuf, 0, 8, 0);
      const n = lenBuf.readBigUInt64LE(0);
      if (n > BigInt(MAX_HEADER_BYTES)) throw bad('ERR_SAFETENSORS_HEADER_TOO_LARGE', path, `header length ${n} exceeds ${MAX_HEADER_BYTES}`);
      const hlen = Number(n);
      if (8 + hlen > size) throw bad('ERR_SAFETENSORS_HEADER_PAST_END', path, `header length ${hlen} runs past the end of the ${size}-byte file`);
      const hbuf = Buffer.alloc(hlen);
      await fh.read(hbuf, 0, hlen, 8);
      let header: unknown;
      try {
        header = JSON.parse(hbuf.toString('utf8'));
      } catch (e) {
        throw bad('ERR_SAFETENSORS_JSON', path, `header is not valid JSON (${(e as Error).message})`);
      }
      if (!header || typeof header !== 'object' || Array.isArray(header)) throw bad('ERR_SAFETENSORS_JSON', path, 'header is not a JSON object');
      const base = 8 + hlen;
      const tensors = new Map<string, TensorInfo>();
      let metadata: Record<string, string> = {};
      const spans: Array<[number, number, string]> = [];
      for (const [name, v] of Object.entries(header as Record<string, unknown>)) {
        if (name === '__metadata__') {
          if (!v || typeof v !== 'object' || Array.isArray(v)) throw bad('ERR_SAFETENSORS_METADATA', path, '__metadata__ must be an object of strings');
          for (const [k, mv] of Object.entries(v)) if (typeof mv !== 'string') throw bad('ERR_SAFETENSORS_METADATA', path, `__metadata__.${k} is not a string`);
          metadata = v as Record<string, string>;
          continue;
        }
        const t = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
        if (!t || typeof t !== 'object') throw bad('ERR_SAFETENSORS_ENTRY', path, `tensor ${name}: entry is not an object`);
        if (typeof t.dtype !== 'string' || !(t.dtype in DTYPE_SIZE))
          throw bad('ERR_SAFETENSORS_DTYPE', path, `tensor ${name}: unsupported dtype ${JSON.stringify(t.dtype)} (supported: ${Object.keys(DTYPE_SIZE).join(', ')})`);
        if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isInteger(d) && d >= 0))
          throw bad('ERR_SAFETENSORS_ENTRY', path, `tensor ${name}: shape must be a list of non-negative integers`);
        const off = t.data_offsets;
        if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isInteger(d) && d >= 0) || off[1] < off[0])
          throw bad('ERR_SAFETENSORS_ENTRY', path, `tensor ${name}: data_offsets must be [begin, end] with 0 <= begin <= end`);
        const dtype = t.dtype as Dtype;
        const numel = (t.shape as number[]).reduce((a, b) => a * b, 1);
        const bytes = off[1] - off[0];
        if (bytes !== numel * DTYPE_SIZE[dtype])
          throw bad('ERR_SAFETENSORS_SIZE', path, `tensor ${name}: ${bytes} bytes for shape [${t.shape}] ${dtype} (expected ${numel * DTYPE_SIZE[dtype]})`);
        if (base + off[1] > size) throw bad('ERR_SAFETENSORS_OFFSET', path, `tensor ${name}: data [${off[0]}, ${off[1]}) runs past the end of the file`);
        tensors.set(name, { name, dtype, shape: t.shape as number[], offset: base + off[0], byteLength: bytes, file: path });
        spans.push([off[0], off[1], name]);
      }
      spans.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
      let pos = 0;
      for (const [b, e, name] of spans) {
        if (b < pos) throw bad('ERR_SAFETENSORS_OVERLAP', path, `tensor ${name}: data [${b}, ${e}) overlaps the previous tensor`);
        if (b > pos) throw bad('ERR_SAFETENSORS_HOLE', path, `tensor ${name}: ${b - pos} unused bytes before its data at ${b}`);
        pos = e;
      }
      if (base + pos !== size)
        throw bad('ERR_SAFETENSORS_LENGTH', path, `file is ${size} bytes but header and tensors account for ${base + pos}`);
      return new SafetensorsFile(path, fh, tensors, metadata, size);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  /** Raw bytes of one tensor. */
  async readBytes(name: string): Promise<Uint8Array> {
    const t = this.tensors.get(name);
    if (!t) throw bad('ERR_TENSOR_MISSING', this.path, `no tensor ${name}`);
    const buf = new Uint8Array(t.byteLength);
    let done = 0;
    while (done < t.byteLength) {
      const { bytesRead } = await this.fh.read(buf, done, t.byteLength - done, t.offset + done);
      if (bytesRead === 0) throw bad('ERR_SAFETENSORS_TRUNCATED', this.path, `tensor ${name}: file ended while reading`);
      done += bytesRead;
    }
    return buf;
  }

  /** Closes the file. */
  async close(): Promise<void> {
    await this.fh.close();
  }

  /** The file's base name. */
  get name(): string {
    return basename(this.path);
  }
}

/** Converts stored bytes to float32 (BF16, F16, F32, F64; I64 as numbers). */
export function toFloat32(bytes: Uint8Array, dtype: Dtype): Float32Array {
  const n = bytes.byteLength / DTYPE_SIZE[dtype];
  const aligned = bytes.byteOffset % 8 === 0 ? bytes : bytes.slice();
  switch (dtype) {
    case 'F32':
      return new Float32Array(aligned.buffer, aligned.byteOffset, n).slice();
    case 'BF16': {
      const src = new Uint16Array(aligned.buffer, aligned.byteOffset, n);
      const out = new Float32Array(n);
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) u[i] = src[i] << 16;
      return out;
    }
    case 'F16': {
      const src = new Uint16Array(aligned.buffer, aligned.byteOffset, n);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = halfToFloat(src[i]);
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

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 0x1f) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}
