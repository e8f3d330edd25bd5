/**
 * A Hugging Face checkpoint: a directory with one model.safetensors, a sharded set listed by
 * model.safetensors.index.json, or any lone *.safetensors file(s); or a path to one
 * .safetensors file. Every shard is validated when opened (see safetensors-reader.ts);
 * tensors are then read one at a time.
 *
 * Index errors (exit status 3, message naming the index file): ERR_INDEX_JSON (not JSON, no
 * or an empty weight_map object, a non-string or unsafe shard name), ERR_INDEX_MISSING_SHARD (a shard
 * named by the index is not in the directory), ERR_INDEX_MISSING_TENSOR (weight_map names a
 * tensor its shard does not hold). Other: ERR_FILE_MISSING, ERR_NO_WEIGHTS,
 * ERR_DUPLICATE_TENSOR (two shards hold the same name), ERR_TENSOR_MISSING (read of an
 * unknown name).
 */
import { readFile, readdir, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join } from 'node:path';
import { GqaError } from '../errors.js';
import { type Dtype, SafetensorsFile, type TensorInfo } from './safetensors-reader.js';

/** A tensor's description. */
export interface CheckpointTensorInfo {
  dtype: Dtype;
  shape: number[];
  /** path of the shard holding it */
  file: string;
  byteLength: number;
}

/** A tensor's stored form. */
export interface RawTensor {
  dtype: Dtype;
  shape: number[];
  data: Uint8Array;
}

/** Name of the index of a sharded checkpoint. */
export const INDEX_FILE = 'model.safetensors.index.json';

async function kindOf(path: string): Promise<'file' | 'dir' | null> {
  const s = await stat(path).catch(() => null);
  return s ? (s.isDirectory() ? 'dir' : 'file') : null;
}

/** An open checkpoint; tensors are read one at a time. */
export class Checkpoint {
  private constructor(
    /** the checkpoint directory */
    readonly dir: string,
    private readonly files: SafetensorsFile[],
    private readonly where: Map<string, { file: SafetensorsFile; info: TensorInfo }>,
    /** the index file's path when sharded through an index */
    readonly indexPath: string | null,
  ) {}

  /**
   * Opens and validates every shard (and the index when there is one). `path` is a
   * checkpoint directory or one .safetensors file.
   */
  static async open(path: string): Promise<Checkpoint> {
    const kind = await kindOf(path);
    if (!kind) throw new GqaError('ERR_FILE_MISSING', `${path}: no such file or directory`, 'input');
    const dir = kind === 'dir' ? path : dirname(path);
    const indexPath = join(dir, INDEX_FILE);
    let shardNames: string[];
    let weightMap: Record<string, string> | null = null;
    if (kind === 'file') {
      shardNames = [basename(path)];
    } else if ((await kindOf(indexPath)) === 'file') {
      weightMap = await readIndex(indexPath);
      shardNames = [...new Set(Object.values(weightMap))].sort();
      for (const s of shardNames)
        if ((await kindOf(join(dir, s))) !== 'file') throw new GqaError('ERR_INDEX_MISSING_SHARD', `${indexPath}: shard ${s} is missing from ${dir}`, 'input');
    } else if ((await kindOf(join(dir, 'model.safetensors'))) === 'file') {
      shardNames = ['model.safetensors'];
    } else {
      let entries: string[];
      try {
        entries = await readdir(dir);
      } catch (e) {
        throw new GqaError('ERR_FILE_MISSING', `${dir}: cannot list the directory (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, 'input');
      }
      shardNames = entries.filter((f) => f.endsWith('.safetensors')).sort();
      if (shardNames.length === 0) throw new GqaError('ERR_NO_WEIGHTS', `${dir}: no model.safetensors, ${INDEX_FILE} or other *.safetensors file`, 'input');
    }
    const files: SafetensorsFile[] = [];
    const where = new Map<string, { file: SafetensorsFile; info: TensorInfo }>();
    try {
      for (const s of shardNames) {
        const f = await SafetensorsFile.open(join(dir, s));
        files.push(f);
        for (const [name, info] of f.tensors) {
          const other = where.get(name);
          if (other) throw new GqaError('ERR_DUPLICATE_TENSOR', `${f.path}: tensor ${name} is also in ${other.file.path}`, 'input');
          where.set(name, { file: f, info });
        }
      }
      if (weightMap) {
        for (const [name, shard] of Object.entries(weightMap)) {
          const w = where.get(name);
          if (!w || w.file.path !== join(dir, shard))
            throw new GqaError(
              'ERR_INDEX_MISSING_TENSOR',
              `${indexPath}: weight_map puts tensor ${name} in ${shard}, which does not hold it${w ? ` (it is in ${w.file.name})` : ''}`,
              'input',
            );
        }
      }
    } catch (e) {
      for (const f of files) await f.close();
      throw e;
    }
    return new Checkpoint(dir, files, where, weightMap ? indexPath : null);
  }

  /** All tensor names, sorted. */
  names(): string[] {
    return [...this.where.keys()].sort();
  }

  /** Whether the checkpoint holds `name`. */
  has(name: string): boolean {
    return this.where.has(name);
  }

  private get(name: string): { file: SafetensorsFile; info: TensorInfo } {
    const w = this.where.get(name);
    if (!w) throw new GqaError('ERR_TENSOR_MISSING', `${this.dir}: no tensor ${name} in the checkpoint`, 'input');
    return w;
  }

  /** dtype, shape, shard path and byte size of tensor `name`. */
  info(name: string): CheckpointTensorInfo {
    const { info } = this.get(name);
    return { dtype: info.dtype, shape: [...info.shape], file: info.file, byteLength: info.byteLength };
  }

  /** Tensor `name` as float32 (BF16/F16/F32 exact, F64 rounded, I64 through a double). */
  async read(name: string, into?: Float32Array): Promise<Float32Array> {
    const { file } = this.get(name);
    return file.readFloat32(name, into);
  }

  /** Tensor `name`'s stored bytes with its dtype and shape. */
  async readRaw(name: string): Promise<RawTensor> {
    const { file, info } = this.get(name);
    return { dtype: info.dtype, shape: [...info.shape], data: await file.readBytes(name) };
  }

  /** Shard file names (sorted). */
  get shards(): string[] {
    return this.files.map((f) => f.name);
  }

  /** Bytes of all tensors (the index's metadata.total_size). */
  get totalBytes(): number {
    let n = 0;
    for (const { info } of this.where.values()) n += info.byteLength;
    return n;
  }

  /** `__metadata__` of the first shard ({} when absent). */
  get metadata(): Record<string, string> {
    return { ...(this.files[0]?.metadata ?? {}) };
  }

  /** Closes every shard. */
  async close(): Promise<void> {
    for (const f of this.files) await f.close();
  }
}

async function readIndex(indexPath: string): Promise<Record<string, string>> {
  let text: string;
  try {
    text = await readFile(indexPath, 'utf8');
  } catch (e) {
    throw new GqaError('ERR_FILE_MISSING', `${indexPath}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, 'input');
  }
  let idx: unknown;
  try {
    idx = JSON.parse(text);
  } catch (e) {
    throw new GqaError('ERR_INDEX_JSON', `${indexPath}: not valid JSON (${(e as Error).message})`, 'input');
  }
  const wm = (idx as { weight_map?: unknown } | null)?.weight_map;
  if (!wm || typeof wm !== 'object' || Array.isArray(wm)) throw new GqaError('ERR_INDEX_JSON', `${indexPath}: no weight_map object`, 'input');
  if (Object.keys(wm).length === 0) throw new GqaError('ERR_INDEX_JSON', `${indexPath}: weight_map is empty (it names no tensor)`, 'input');
  for (const [name, shard] of Object.entries(wm)) {
    if (typeof shard !== 'string' || shard === '' || isAbsolute(shard) || shard.split(/[\\/]/).includes('..'))
      throw new GqaError('ERR_INDEX_JSON', `${indexPath}: weight_map entry for ${name} is ${JSON.stringify(shard)}, not a shard file name in the directory`, 'input');
  }
  return wm as Record<string, string>;
}
