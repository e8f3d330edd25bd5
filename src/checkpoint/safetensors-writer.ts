/**
 * Streaming safetensors checkpoint writer.
 *
 * Tensors are written as they are added: memory holds one tensor (in its stored dtype) plus
 * the header bookkeeping. A shard's data goes straight into its file after a reserved header
 * region; when the shard closes, its header (JSON, `__metadata__` = {"format": "pt"} merged
 * with the caller's metadata, padded with spaces) is written into that region. Small shards
 * (below `compactBelowBytes`) and shards whose header outgrows the reservation are instead
 * rewritten with an exact header, so every shard is a standard safetensors file.
 *
 * Layout on disk while writing (the *partial directory*, `<dir>.partial`):
 *   shard-00001.safetensors ...   closed shards, complete and valid
 *   shard-0000k.safetensors.open  the shard being written (incomplete)
 *   .writer-journal.json          closed shards, their tensors, added files, settings, pid
 *   <files added with addFile>
 * `finish()` renames the shards to `model.safetensors` (one shard) or
 * `model-0000i-of-0000N.safetensors` plus `model.safetensors.index.json` (complete
 * weight_map, metadata.total_size = bytes of all tensors), then renames the partial
 * directory to `dir`. An interrupted run therefore never leaves a complete-looking `dir`.
 *
 * Resume: `CheckpointWriter.resume(dir)` re-opens the partial directory of an interrupted
 * writer, keeps every closed shard (and added file) and discards the shard that was open.
 * `has(name)` then tells which tensors are already stored; the caller adds the rest. A
 * caller that wants a clean resume point (e.g. after each decoder layer) calls `flush()`,
 * which closes the open shard durably (data synced, then the journal updated); everything
 * added before a completed `flush()` survives an interruption. The caller may keep its own
 * journal files in `partialDir` (written with `addFile`, or directly; files it writes
 * directly are its own to remove before `finish()`).
 */
import { existsSync } from 'node:fs';
import { type FileHandle, mkdir, open, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, normalize, sep } from 'node:path';
import { GqaError, usageError } from '../errors.js';
import { DTYPE_SIZE, type Dtype, encodeFloat32, isDtype, numelOf } from './dtype.js';
import { INDEX_FILE } from './checkpoint.js';
import { IO_CHUNK_BYTES, MAX_HEADER_BYTES } from './safetensors-reader.js';
import { assertReplaceable, OUTPUT_MARKER, outputMarker } from './output-guard.js';

/** Options of {@link CheckpointWriter.create} and {@link CheckpointWriter.resume}. */
export interface WriterOptions {
  /** replace an existing `dir` (only at finish()) and discard an existing partial directory */
  overwrite?: boolean;
  /** start a new shard before a tensor that would take the current one past this (default 5e9, as transformers) */
  maxShardBytes?: number;
  /** merged into each shard's `__metadata__` after {"format": "pt"} */
  metadata?: Record<string, string>;
  /** header space reserved at the start of each shard file (default 64 KiB) */
  headerReserveBytes?: number;
  /** shards with fewer data bytes get an exact header by a rewrite (default 64 MiB) */
  compactBelowBytes?: number;
}

/** What finish() produced. */
export interface WriterResult {
  /** the final directory */
  dir: string;
  /** shard file names in order */
  shards: string[];
  /** bytes of all tensors (the index's metadata.total_size) */
  totalSize: number;
}

/** Name of the writer's journal inside the partial directory. */
export const WRITER_JOURNAL = '.writer-journal.json';
const DEFAULT_MAX_SHARD = 5_000_000_000;
const DEFAULT_RESERVE = 64 * 1024;
const DEFAULT_COMPACT_BELOW = 64 * 1024 * 1024;
const COPY_CHUNK = 8 * 1024 * 1024;

interface Entry {
  name: string;
  dtype: Dtype;
  shape: number[];
  begin: number;
  end: number;
}

interface ShardRecord {
  file: string;
  fileSize: number;
  dataBytes: number;
  tensors: Entry[];
}

interface Journal {
  format: 'gqa2mla-checkpoint-writer';
  version: 1;
  pid: number;
  maxShardBytes: number;
  metadata: Record<string, string>;
  shards: ShardRecord[];
  files: string[];
}

interface OpenShard {
  index: number;
  path: string;
  fh: FileHandle;
  reserve: number;
  bytes: number;
  entries: Entry[];
}

const pad5 = (i: number, width: number) => String(i).padStart(width, '0');
const tempShardName = (i: number) => `shard-${pad5(i, 5)}.safetensors`;

function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function writeFully(fh: FileHandle, buf: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < buf.byteLength) {
    const { bytesWritten } = await fh.write(buf, done, Math.min(buf.byteLength - done, IO_CHUNK_BYTES), position + done);
    done += bytesWritten;
  }
}

async function writeAtomic(path: string, contents: string | Uint8Array): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, contents);
  await rename(tmp, path);
}

function checkMetadata(m: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = { format: 'pt' };
  if (m === undefined) return out;
  if (!m || typeof m !== 'object' || Array.isArray(m)) throw usageError('ERR_WRITER_OPTIONS', 'metadata must be an object of strings');
  for (const [k, v] of Object.entries(m)) {
    if (typeof v !== 'string') throw usageError('ERR_WRITER_OPTIONS', `metadata.${k} must be a string (got ${JSON.stringify(v)})`);
    out[k] = v;
  }
  return out;
}

function positive(v: number | undefined, dflt: number, what: string, multipleOf = 1): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !(v > 0) || (Number.isFinite(v) && v % multipleOf !== 0))
    throw usageError('ERR_WRITER_OPTIONS', `${what} must be a positive number${multipleOf > 1 ? ` and a multiple of ${multipleOf}` : ''} (got ${v})`);
  return v;
}

/** Streaming writer of a (possibly sharded) safetensors checkpoint directory. */
export class CheckpointWriter {
  private shard: OpenShard | null = null;
  private readonly stored = new Set<string>();
  private chain: Promise<unknown> = Promise.resolve();
  private state: 'open' | 'broken' | 'finished' | 'aborted' = 'open';

  private constructor(
    /** the final directory, created by finish() */
    readonly dir: string,
    /** where everything is written until finish() (`<dir>.partial`) */
    readonly partialDir: string,
    private readonly journal: Journal,
    private readonly overwrite: boolean,
    private readonly reserve: number,
    private readonly compactBelow: number,
  ) {
    for (const s of journal.shards) for (const t of s.tensors) this.stored.add(t.name);
  }

  /** The partial directory a writer for `dir` uses. */
  static partialDirOf(dir: string): string {
    return `${normalize(dir).replace(/[\\/]+$/, '')}.partial`;
  }

  /**
   * Starts a new checkpoint in `<dir>.partial`. An existing `dir` is refused
   * (ERR_OUTPUT_EXISTS) unless `overwrite`, which replaces it only at finish(); so is an
   * existing partial directory (an interrupted write: resume it, or `overwrite` to discard
   * it). A partial directory owned by another live process is always refused (ERR_OUTPUT_BUSY).
   */
  static async create(dir: string, opts: WriterOptions = {}): Promise<CheckpointWriter> {
    const out = normalize(dir).replace(/[\\/]+$/, '');
    const partial = CheckpointWriter.partialDirOf(out);
    const metadata = checkMetadata(opts.metadata);
    const maxShardBytes = positive(opts.maxShardBytes, DEFAULT_MAX_SHARD, 'maxShardBytes');
    const reserve = positive(opts.headerReserveBytes, DEFAULT_RESERVE, 'headerReserveBytes', 8);
    const compactBelow = opts.compactBelowBytes ?? DEFAULT_COMPACT_BELOW;
    if (existsSync(out) && (await readdir(out)).length > 0) {
      if (!opts.overwrite) throw usageError('ERR_OUTPUT_EXISTS', `output directory ${out} already exists (use overwrite to replace a previous gqa2mla output)`);
      assertReplaceable(out);
    }
    if (existsSync(partial)) {
      const owner = await readJournal(partial).then((j) => j.pid).catch(() => 0);
      if (owner !== process.pid && isAlive(owner))
        throw usageError('ERR_OUTPUT_BUSY', `${partial} is being written by process ${owner}; wait for it or stop it first (if no gqa2mla is running, remove ${partial})`);
      if (!opts.overwrite)
        throw usageError('ERR_OUTPUT_EXISTS', `an interrupted write is in ${partial}: resume it (CheckpointWriter.resume) or use overwrite to start afresh`);
      if (!existsSync(join(partial, WRITER_JOURNAL)) && (await readdir(partial)).length > 0)
        throw usageError('ERR_OUTPUT_FOREIGN', `${partial} exists but is not an interrupted gqa2mla write (no ${WRITER_JOURNAL}); refusing to touch it`);
      await rm(partial, { recursive: true, force: true });
    }
    await mkdir(dirname(partial), { recursive: true });
    await mkdir(partial);
    const journal: Journal = { format: 'gqa2mla-checkpoint-writer', version: 1, pid: process.pid, maxShardBytes, metadata, shards: [], files: [] };
    await writeAtomic(join(partial, WRITER_JOURNAL), JSON.stringify(journal));
    return new CheckpointWriter(out, partial, journal, Boolean(opts.overwrite), reserve, compactBelow);
  }

  /**
   * Re-opens the partial directory of an interrupted writer for `dir`: closed shards and
   * added files are kept (their sizes checked), the shard that was open is discarded.
   * `opts.metadata`, when given, must equal the original (ERR_RESUME otherwise);
   * `maxShardBytes` defaults to the original. Without a partial directory: ERR_RESUME.
   */
  static async resume(dir: string, opts: WriterOptions = {}): Promise<CheckpointWriter> {
    const out = normalize(dir).replace(/[\\/]+$/, '');
    const partial = CheckpointWriter.partialDirOf(out);
    if (!existsSync(partial)) throw usageError('ERR_RESUME', `nothing to resume: ${partial} does not exist`);
    let j: Journal;
    try {
      j = await readJournal(partial);
    } catch (e) {
      throw new GqaError('ERR_RESUME', `cannot resume ${partial}: ${(e as Error).message} (use --force to start afresh)`, 'input');
    }
    if (j.pid !== process.pid && isAlive(j.pid)) throw usageError('ERR_OUTPUT_BUSY', `${partial} is being written by process ${j.pid}; wait for it or stop it first (if no gqa2mla is running, remove ${partial})`);
    if (existsSync(out) && !opts.overwrite) throw usageError('ERR_OUTPUT_EXISTS', `output directory ${out} already exists (use --force to replace it)`);
    if (opts.metadata !== undefined && JSON.stringify(checkMetadata(opts.metadata)) !== JSON.stringify(j.metadata))
      throw usageError('ERR_RESUME', `cannot resume ${partial}: it was started with different metadata`);
    if (opts.maxShardBytes !== undefined) j.maxShardBytes = positive(opts.maxShardBytes, DEFAULT_MAX_SHARD, 'maxShardBytes');
    for (const s of j.shards) {
      const st = await stat(join(partial, s.file)).catch(() => null);
      if (!st || st.size !== s.fileSize)
        throw new GqaError('ERR_RESUME', `cannot resume ${partial}: shard ${s.file} is missing or has the wrong size (use --force to start afresh)`, 'input');
    }
    for (const f of j.files) {
      if (!existsSync(join(partial, f))) throw new GqaError('ERR_RESUME', `cannot resume ${partial}: added file ${f} is missing (use --force to start afresh)`, 'input');
    }
    const known = new Set(j.shards.map((s) => s.file));
    for (const f of await readdir(partial)) {
      if (/^shard-\d+\.safetensors/.test(f) && !known.has(f)) await rm(join(partial, f), { force: true });
    }
    j.pid = process.pid;
    await writeAtomic(join(partial, WRITER_JOURNAL), JSON.stringify(j));
    const reserve = positive(opts.headerReserveBytes, DEFAULT_RESERVE, 'headerReserveBytes', 8);
    return new CheckpointWriter(out, partial, j, Boolean(opts.overwrite), reserve, opts.compactBelowBytes ?? DEFAULT_COMPACT_BELOW);
  }

  /** Names of the tensors stored so far (closed shards and the open one), in order of addition. */
  names(): string[] {
    return [...this.stored];
  }

  /** Whether tensor `name` was stored (after resume: only those of closed shards). */
  has(name: string): boolean {
    return this.stored.has(name);
  }

  /** Closed shards so far. */
  get closedShards(): number {
    return this.journal.shards.length;
  }

  private usable(): void {
    if (this.state === 'broken') throw new GqaError('ERR_WRITER_BROKEN', `the writer of ${this.partialDir} failed earlier; abort() it`, 'runtime');
    if (this.state !== 'open') throw new GqaError('ERR_WRITER_CLOSED', `the writer of ${this.dir} is already ${this.state}`, 'runtime');
  }

  private enqueue<T>(op: () => Promise<T>): Promise<T> {
    const run = this.chain.then(() => {
      this.usable();
      return op().catch((e) => {
        this.state = 'broken';
        throw e;
      });
    });
    this.chain = run.catch(() => undefined);
    return run;
  }

  /**
   * Adds tensor `name`. Float32Array data is converted to `dtype` (BF16/F16 round to
   * nearest even, NaN kept; I64 needs integers); Uint16Array is taken as BF16/F16 bits and
   * Uint8Array as the stored bytes. The data is written before the promise resolves and
   * must not change until then. Calls are serialised in order.
   */
  add(name: string, dtype: Dtype, shape: readonly number[], data: Float32Array | Uint8Array | Uint16Array): Promise<void> {
    let bytes: Uint8Array;
    try {
      this.usable();
      bytes = this.encode(name, dtype, shape, data);
    } catch (e) {
      return Promise.reject(e);
    }
    this.stored.add(name);
    const entryShape = [...shape];
    return this.enqueue(async () => {
      const size = bytes.byteLength;
      if (this.shard && this.shard.entries.length > 0 && this.shard.bytes + size > this.journal.maxShardBytes) await this.closeShard();
      const s = this.shard ?? (await this.openShard());
      await writeFully(s.fh, bytes, s.reserve + s.bytes);
      s.entries.push({ name, dtype, shape: entryShape, begin: s.bytes, end: s.bytes + size });
      s.bytes += size;
    });
  }

  private encode(name: string, dtype: Dtype, shape: readonly number[], data: Float32Array | Uint8Array | Uint16Array): Uint8Array {
    const what = `tensor ${name}`;
    if (typeof name !== 'string' || name === '__metadata__') throw usageError('ERR_TENSOR_NAME', `invalid tensor name ${JSON.stringify(name)}`);
    if (this.stored.has(name)) throw usageError('ERR_DUPLICATE_TENSOR', `${what} was already added to ${this.dir}`);
    if (!isDtype(dtype)) throw usageError('ERR_DTYPE', `${what}: unsupported dtype ${JSON.stringify(dtype)} (supported: ${Object.keys(DTYPE_SIZE).join(', ')})`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      throw usageError('ERR_TENSOR_SHAPE', `${what}: shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    const numel = numelOf(shape);
    let bytes: Uint8Array;
    if (data instanceof Float32Array) {
      if (data.length !== numel) throw usageError('ERR_TENSOR_SHAPE', `${what}: ${data.length} values for shape [${shape.join(', ')}] (${numel})`);
      bytes = encodeFloat32(data, dtype, what);
    } else if (data instanceof Uint16Array) {
      if (dtype !== 'BF16' && dtype !== 'F16') throw usageError('ERR_DTYPE', `${what}: Uint16Array data is only accepted as BF16 or F16 bits, not ${dtype}`);
      if (data.length !== numel) throw usageError('ERR_TENSOR_SHAPE', `${what}: ${data.length} values for shape [${shape.join(', ')}] (${numel})`);
      bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    } else if (data instanceof Uint8Array) {
      if (data.byteLength !== numel * DTYPE_SIZE[dtype])
        throw usageError('ERR_TENSOR_SHAPE', `${what}: ${data.byteLength} bytes for shape [${shape.join(', ')}] ${dtype} (${numel * DTYPE_SIZE[dtype]})`);
      bytes = data;
    } else {
      throw usageError('ERR_TENSOR_DATA', `${what}: data must be a Float32Array, Uint16Array or Uint8Array`);
    }
    return bytes;
  }

  private async openShard(): Promise<OpenShard> {
    const index = this.journal.shards.length + 1;
    const path = join(this.partialDir, `${tempShardName(index)}.open`);
    const fh = await open(path, 'w+');
    this.shard = { index, path, fh, reserve: this.reserve, bytes: 0, entries: [] };
    return this.shard;
  }

  /** Writes the open shard's header, makes it a valid file and records it in the journal. */
  private async closeShard(): Promise<void> {
    const s = this.shard;
    if (!s) return;
    const header: Record<string, unknown> = { __metadata__: this.journal.metadata };
    for (const e of s.entries) header[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [e.begin, e.end] };
    const json = Buffer.from(JSON.stringify(header), 'utf8');
    if (json.length > MAX_HEADER_BYTES) throw new GqaError('ERR_HEADER_TOO_LARGE', `${s.path}: header of ${json.length} bytes exceeds ${MAX_HEADER_BYTES}; lower maxShardBytes`, 'runtime');
    const final = join(this.partialDir, tempShardName(s.index));
    let fileSize: number;
    if (s.bytes >= this.compactBelow && 8 + json.length <= s.reserve) {
      const head = Buffer.alloc(s.reserve, 0x20);
      head.writeBigUInt64LE(BigInt(s.reserve - 8), 0);
      json.copy(head, 8);
      await writeFully(s.fh, head, 0);
      await s.fh.truncate(s.reserve + s.bytes);
      await s.fh.datasync();
      await s.fh.close();
      await rename(s.path, final);
      fileSize = s.reserve + s.bytes;
    } else {
      const hlen = Math.ceil(json.length / 8) * 8;
      const head = Buffer.alloc(8 + hlen, 0x20);
      head.writeBigUInt64LE(BigInt(hlen), 0);
      json.copy(head, 8);
      const tmp = `${final}.compact`;
      const out = await open(tmp, 'w');
      try {
        await writeFully(out, head, 0);
        const buf = Buffer.alloc(Math.min(COPY_CHUNK, Math.max(s.bytes, 1)));
        for (let off = 0; off < s.bytes; ) {
          const len = Math.min(buf.length, s.bytes - off);
          let got = 0;
          while (got < len) {
            const { bytesRead } = await s.fh.read(buf, got, len - got, s.reserve + off + got);
            if (bytesRead === 0) throw new GqaError('ERR_WRITE', `${s.path}: shorter than the data written to it`, 'runtime');
            got += bytesRead;
          }
          await writeFully(out, buf.subarray(0, len), head.length + off);
          off += len;
        }
        await out.datasync();
      } finally {
        await out.close();
      }
      await s.fh.close();
      await rename(tmp, final);
      await rm(s.path, { force: true });
      fileSize = head.length + s.bytes;
    }
    this.shard = null;
    this.journal.shards.push({ file: tempShardName(s.index), fileSize, dataBytes: s.bytes, tensors: s.entries });
    await writeAtomic(join(this.partialDir, WRITER_JOURNAL), JSON.stringify(this.journal));
  }

  /**
   * Closes the open shard (if any) durably, so that everything added so far survives an
   * interruption (see resume). The next tensor starts a new shard.
   */
  flush(): Promise<void> {
    return this.enqueue(() => this.closeShard());
  }

  /**
   * Writes a non-tensor file (config.json, tokenizer files, ...) at `relPath` inside the
   * checkpoint. Paths must stay inside the directory and not collide with the weight files.
   */
  addFile(relPath: string, contents: string | Uint8Array): Promise<void> {
    const rel = normalize(relPath);
    if (!rel || isAbsolute(rel) || rel === '.' || rel.split(/[\\/]/).includes('..'))
      return Promise.reject(usageError('ERR_FILE_NAME', `file ${JSON.stringify(relPath)} must be a relative path inside the checkpoint`));
    const first = rel.split(sep)[0];
    if (rel === INDEX_FILE || rel === WRITER_JOURNAL || /^model(-\d+-of-\d+)?\.safetensors$/.test(rel) || /^shard-\d+\.safetensors/.test(first))
      return Promise.reject(usageError('ERR_FILE_NAME', `file ${relPath} would collide with the checkpoint's weight files`));
    return this.enqueue(async () => {
      await mkdir(dirname(join(this.partialDir, rel)), { recursive: true });
      await writeAtomic(join(this.partialDir, rel), contents);
      if (!this.journal.files.includes(rel)) this.journal.files.push(rel);
      await writeAtomic(join(this.partialDir, WRITER_JOURNAL), JSON.stringify(this.journal));
    });
  }

  /**
   * Closes the last shard, names the shards (model.safetensors, or model-0000i-of-0000N +
   * index), and renames the partial directory to `dir` (replacing an existing one when
   * `overwrite`). A checkpoint without tensors gets one model.safetensors with only metadata.
   */
  finish(): Promise<WriterResult> {
    return this.enqueue(async () => {
      await this.closeShard();
      if (this.journal.shards.length === 0) {
        await this.openShard();
        await this.closeShard();
      }
      const shards = this.journal.shards;
      const n = shards.length;
      const width = Math.max(5, String(n).length);
      const names = n === 1 ? ['model.safetensors'] : shards.map((_, i) => `model-${pad5(i + 1, width)}-of-${pad5(n, width)}.safetensors`);
      let totalSize = 0;
      const weightMap: Record<string, string> = {};
      shards.forEach((s, i) => {
        totalSize += s.dataBytes;
        for (const t of s.tensors) weightMap[t.name] = names[i];
      });
      for (let i = 0; i < n; i++) await rename(join(this.partialDir, shards[i].file), join(this.partialDir, names[i]));
      if (n > 1) {
        const sorted: Record<string, string> = {};
        for (const k of Object.keys(weightMap).sort()) sorted[k] = weightMap[k];
        await writeAtomic(join(this.partialDir, INDEX_FILE), `${JSON.stringify({ metadata: { total_size: totalSize }, weight_map: sorted }, null, 2)}\n`);
      }
      await rm(join(this.partialDir, WRITER_JOURNAL), { force: true });
      await writeAtomic(join(this.partialDir, OUTPUT_MARKER), outputMarker('checkpoint', '0.1.0', await readdir(this.partialDir)));
      if (existsSync(this.dir)) {
        if (!this.overwrite && (await readdir(this.dir)).length > 0) throw usageError('ERR_OUTPUT_EXISTS', `output directory ${this.dir} appeared while writing (use overwrite to replace it)`);
        assertReplaceable(this.dir);
        const old = `${this.dir}.old-${process.pid}`;
        await rename(this.dir, old);
        await rename(this.partialDir, this.dir);
        await rm(old, { recursive: true, force: true });
      } else {
        await rename(this.partialDir, this.dir);
      }
      this.state = 'finished';
      return { dir: this.dir, shards: names, totalSize };
    });
  }

  /** Stops writing and removes the partial directory; an existing `dir` is left as it was. */
  async abort(): Promise<void> {
    if (this.state === 'finished' || this.state === 'aborted') return;
    await this.chain;
    this.state = 'aborted';
    if (this.shard) {
      await this.shard.fh.close().catch(() => undefined);
      this.shard = null;
    }
    await rm(this.partialDir, { recursive: true, force: true });
  }
}

async function readJournal(partial: string): Promise<Journal> {
  const path = join(partial, WRITER_JOURNAL);
  let j: Journal;
  try {
    j = JSON.parse(await readFile(path, 'utf8')) as Journal;
  } catch (e) {
    throw new Error(`${path} is missing or unreadable (${(e as Error).message})`);
  }
  if (j?.format !== 'gqa2mla-checkpoint-writer' || !Array.isArray(j.shards) || !Array.isArray(j.files)) throw new Error(`${path} is not a writer journal`);
  return j;
}
