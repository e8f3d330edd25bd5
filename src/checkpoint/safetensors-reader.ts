/**
 * safetensors reader: the header is read and validated once through a file handle; tensors
 * are then read one at a time with positional reads (the file is never read whole).
 *
 * Format: u64 little-endian header length N, N bytes of UTF-8 JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}` (may be
 * padded with trailing spaces), then the byte buffer. Offsets are relative to the buffer;
 * the tensors cover it exactly (contiguous, non-overlapping, no holes), each holds
 * numel x dtype-size bytes, and the buffer ends exactly at the end of the file.
 *
 * Every violation is a GqaError (exit status 3) whose message names the file and, where
 * one is at fault, the tensor:
 * ERR_FILE_MISSING, ERR_SAFETENSORS_EMPTY, ERR_SAFETENSORS_TRUNCATED,
 * ERR_SAFETENSORS_HEADER_TOO_LARGE, ERR_SAFETENSORS_HEADER_PAST_END, ERR_SAFETENSORS_JSON,
 * ERR_SAFETENSORS_METADATA, ERR_SAFETENSORS_ENTRY, ERR_SAFETENSORS_DTYPE,
 * ERR_SAFETENSORS_OFFSET, ERR_SAFETENSORS_SIZE, ERR_SAFETENSORS_OVERLAP,
 * ERR_SAFETENSORS_HOLE, ERR_SAFETENSORS_TRAILING.
 */
import { type FileHandle, open } from 'node:fs/promises';
import { basename } from 'node:path';
import { GqaError } from '../errors.js';
import { DTYPE_SIZE, type Dtype, OTHER_SAFETENSORS_DTYPES, expand16, isDtype, numelOf, toFloat32 } from './dtype.js';

export { DTYPE_SIZE, type Dtype, toFloat32 };

/** Largest header length accepted (bytes), as in the reference implementation. */
export const MAX_HEADER_BYTES = 100_000_000;

/** Where a tensor lives. */
export interface TensorInfo {
  name: string;
  dtype: Dtype;
  shape: number[];
  /** absolute byte offset in the file */
  offset: number;
  byteLength: number;
  /** path of the file */
  file: string;
}

function bad(code: string, file: string, msg: string): GqaError {
  return new GqaError(code, `${file}: ${msg}`, 'input');
}

/**
 * Largest length passed to one positional read or write: Node's fs binding asserts (and
 * aborts the process) on lengths of 2 GiB and more, which single tensors can reach.
 */
export const IO_CHUNK_BYTES = 1 << 30;

/**
 * Reads exactly `length` bytes at `position` into `buf` at `offset`, at most `chunk` bytes
 * per read, looping over short reads; a file that ends early is ERR_SAFETENSORS_TRUNCATED
 * naming `path` and `what`.
 */
export async function readFully(
  fh: FileHandle,
  buf: Uint8Array,
  offset: number,
  length: number,
  position: number,
  path: string,
  what: string,
  chunk = IO_CHUNK_BYTES,
): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, offset + done, Math.min(length - done, chunk), position + done);
    if (bytesRead === 0) throw bad('ERR_SAFETENSORS_TRUNCATED', path, `${what}: the file ended while reading (it changed after it was opened?)`);
    done += bytesRead;
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** One open, validated safetensors file. */
export class SafetensorsFile {
  private constructor(
    /** path of the file */
    readonly path: string,
    private readonly fh: FileHandle,
    /** tensors by name, in header order */
    readonly tensors: Map<string, TensorInfo>,
    /** the `__metadata__` map ({} when absent) */
    readonly metadata: Record<string, string>,
    /** file size in bytes */
    readonly size: number,
    /** byte offset of the data buffer (8 + header length) */
    readonly dataOffset: number,
  ) {}

  /** Opens and validates `path`; throws GqaError (codes in the module comment) naming the file and tensor. */
  static async open(path: string): Promise<SafetensorsFile> {
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      throw bad('ERR_FILE_MISSING', path, `cannot open (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw bad('ERR_FILE_MISSING', path, 'not a regular file');
      const size = st.size;
      if (size === 0) throw bad('ERR_SAFETENSORS_EMPTY', path, 'empty file (0 bytes)');
      if (size < 8) throw bad('ERR_SAFETENSORS_TRUNCATED', path, `file of ${size} bytes is too short for the 8-byte header length`);
      const lenBuf = Buffer.alloc(8);
      await readFully(fh, lenBuf, 0, 8, 0, path, 'header length');
      const n = lenBuf.readBigUInt64LE(0);
      if (n > BigInt(MAX_HEADER_BYTES)) throw bad('ERR_SAFETENSORS_HEADER_TOO_LARGE', path, `header length ${n} exceeds the limit of ${MAX_HEADER_BYTES} bytes`);
      const hlen = Number(n);
      if (8 + hlen > size) throw bad('ERR_SAFETENSORS_HEADER_PAST_END', path, `header length ${hlen} runs past the end of the ${size}-byte file`);
      const hbuf = new Uint8Array(hlen);
      await readFully(fh, hbuf, 0, hlen, 8, path, 'header');
      const header = parseHeader(hbuf, path);
      const dataOffset = 8 + hlen;
      const { tensors, metadata } = validateEntries(header, path, dataOffset);
      checkLayout(tensors, path, dataOffset, size - dataOffset);
      return new SafetensorsFile(path, fh, tensors, metadata, size, dataOffset);
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  private get(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw bad('ERR_TENSOR_MISSING', this.path, `no tensor ${name}`);
    return t;
  }

  /** The stored bytes of tensor `name` (a fresh, 8-byte aligned buffer). */
  async readBytes(name: string): Promise<Uint8Array> {
    const t = this.get(name);
    const buf = new Uint8Array(t.byteLength);
    await readFully(this.fh, buf, 0, t.byteLength, t.offset, this.path, `tensor ${name}`);
    return buf;
  }

  /**
   * Tensor `name` as float32 (BF16/F16/F32 exact, F64 rounded, I64 through a double).
   * 16-bit data is read into the upper half of the result's buffer and widened in place,
   * so no second buffer is allocated. `into`, when given with exactly the tensor's element
   * count, receives the values instead of a new array (lets callers reuse buffers).
   */
  async readFloat32(name: string, into?: Float32Array): Promise<Float32Array> {
    const t = this.get(name);
    const n = t.byteLength / DTYPE_SIZE[t.dtype];
    if (t.dtype === 'F32' || t.dtype === 'BF16' || t.dtype === 'F16') {
      const out = into && into.length === n && into.byteOffset === 0 && into.buffer.byteLength === 4 * n ? into : new Float32Array(n);
      const bytes = new Uint8Array(out.buffer);
      const at = t.dtype === 'F32' ? 0 : 2 * n;
      await readFully(this.fh, bytes, at, t.byteLength, t.offset, this.path, `tensor ${name}`);
      if (t.dtype !== 'F32') expand16(new Uint16Array(out.buffer, at, n), new Uint32Array(out.buffer), t.dtype);
      return out;
    }
    return toFloat32(await this.readBytes(name), t.dtype);
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

function parseHeader(hbuf: Uint8Array, path: string): Record<string, unknown> {
  let text: string;
  try {
    text = utf8.decode(hbuf);
  } catch {
    throw bad('ERR_SAFETENSORS_JSON', path, 'header is not valid UTF-8');
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    throw bad('ERR_SAFETENSORS_JSON', path, `header is not valid JSON (${(e as Error).message})`);
  }
  if (!header || typeof header !== 'object' || Array.isArray(header)) throw bad('ERR_SAFETENSORS_JSON', path, 'header is not a JSON object');
  return header as Record<string, unknown>;
}

function validateEntries(header: Record<string, unknown>, path: string, dataOffset: number): { tensors: Map<string, TensorInfo>; metadata: Record<string, string> } {
  const tensors = new Map<string, TensorInfo>();
  let metadata: Record<string, string> = {};
  for (const [name, v] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (!v || typeof v !== 'object' || Array.isArray(v)) throw bad('ERR_SAFETENSORS_METADATA', path, '__metadata__ must be an object mapping strings to strings');
      for (const [k, mv] of Object.entries(v)) {
        if (typeof mv !== 'string') throw bad('ERR_SAFETENSORS_METADATA', path, `__metadata__.${k} is ${JSON.stringify(mv)}, not a string`);
      }
      metadata = { ...(v as Record<string, string>) };
      continue;
    }
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw bad('ERR_SAFETENSORS_ENTRY', path, `tensor ${name}: entry is not an object`);
    const t = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (!isDtype(t.dtype)) {
      const known = typeof t.dtype === 'string' && OTHER_SAFETENSORS_DTYPES.includes(t.dtype);
      throw bad(
        'ERR_SAFETENSORS_DTYPE',
        path,
        `tensor ${name}: ${known ? 'unsupported' : 'unknown'} dtype ${JSON.stringify(t.dtype)} (supported: ${Object.keys(DTYPE_SIZE).join(', ')})`,
      );
    }
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      throw bad('ERR_SAFETENSORS_ENTRY', path, `tensor ${name}: shape ${JSON.stringify(t.shape)} is not a list of non-negative integers`);
    const off = t.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isSafeInteger(d) && d >= 0))
      throw bad('ERR_SAFETENSORS_OFFSET', path, `tensor ${name}: data_offsets ${JSON.stringify(off)} is not [begin, end] of non-negative integers`);
    const [begin, end] = off as [number, number];
    if (end < begin) throw bad('ERR_SAFETENSORS_OFFSET', path, `tensor ${name}: data_offsets [${begin}, ${end}] end before they begin`);
    const dtype = t.dtype;
    const shape = t.shape as number[];
    const expected = numelOf(shape) * DTYPE_SIZE[dtype];
    if (end - begin !== expected)
      throw bad('ERR_SAFETENSORS_SIZE', path, `tensor ${name}: data_offsets [${begin}, ${end}] span ${end - begin} bytes but shape [${shape.join(', ')}] ${dtype} needs ${expected}`);
    tensors.set(name, { name, dtype, shape: [...shape], offset: dataOffset + begin, byteLength: end - begin, file: path });
  }
  return { tensors, metadata };
}

/** Tensors must tile the data buffer [0, dataLength) exactly. */
function checkLayout(tensors: Map<string, TensorInfo>, path: string, dataOffset: number, dataLength: number): void {
  const spans = [...tensors.values()].sort((a, b) => a.offset - b.offset || a.byteLength - b.byteLength);
  let pos = 0;
  let prev = '';
  for (const t of spans) {
    const begin = t.offset - dataOffset;
    const end = begin + t.byteLength;
    if (begin < pos) throw bad('ERR_SAFETENSORS_OVERLAP', path, `tensor ${t.name}: data [${begin}, ${end}) overlaps tensor ${prev}, which ends at ${pos}`);
    if (begin > pos)
      throw bad('ERR_SAFETENSORS_HOLE', path, `tensor ${t.name}: ${begin - pos} unused bytes before its data at ${begin}${prev ? ` (after tensor ${prev})` : ''}`);
    pos = end;
    prev = t.name;
  }
  if (pos > dataLength)
    throw bad('ERR_SAFETENSORS_TRUNCATED', path, `truncated: tensor ${prev} ends at data byte ${pos} but the file holds only ${dataLength} data bytes (${dataOffset + dataLength} bytes in all)`);
  if (pos < dataLength)
    throw bad('ERR_SAFETENSORS_TRAILING', path, `file has ${dataLength - pos} bytes after the end of the last tensor${prev ? ` (${prev})` : ''}: size ${dataOffset + dataLength}, expected ${dataOffset + pos}`);
}
