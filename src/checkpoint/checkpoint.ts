/**
 * A Hugging Face checkpoint directory: one model.safetensors, a sharded set with
 * model.safetensors.index.json, or a lone *.safetensors file.
 */
import { existsSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { GqaError } from '../errors.js';
import { type Dtype, SafetensorsFile, type TensorInfo, toFloat32 } from './safetensors-reader.js';

/** A tensor's description. */
export interface CheckpointTensorInfo {
  dtype: Dtype;
  shape: number[];
  file: string;
  byteLength: number;
}

/** Open checkpoint; tensors are read one at a time. */
export class Checkpoint {
  private constructor(
    readonly dir: string,
    private readonly files: SafetensorsFile[],
    private readonly where: Map<string, { file: SafetensorsFile; info: TensorInfo }>,
  ) {}

  /** Opens and validates every shard (and the index when sharded). */
  static async open(dir: string): Promise<Checkpoint> {
    if (!existsSync(dir)) throw new GqaError('ERR_FILE_MISSING', `${dir}: no such directory`, 'input');
    const indexPath = join(dir, 'model.safetensors.index.json');
    let shardNames: string[];
    let weightMap: Record<string, string> | null = null;
    if (existsSync(indexPath)) {
      let idx: { weight_map?: unknown };
      try {
        idx = JSON.parse(await readFile(indexPath, 'utf8'));
      } catch (e) {
        throw new GqaError('ERR_INDEX_JSON', `${indexPath}: not valid JSON (${(e as Error).message})`, 'input');
      }
      if (!idx.weight_map || typeof idx.weight_map !== 'object') throw new GqaError('ERR_INDEX_JSON', `${indexPath}: no weight_map object`, 'input');
      weightMap = idx.weight_map as Record<string, string>;
      shardNames = [...new Set(Object.values(weightMap))].sort();
      for (const s of shardNames)
        if (!existsSync(join(dir, s))) throw new GqaError('ERR_INDEX_MISSING_SHARD', `${indexPath}: shard ${s} is missing from ${dir}`, 'input');
    } else if (existsSync(join(dir, 'model.safetensors'))) {
      shardNames = ['model.safetensors'];
    } else {
      shardNames = (await readdir(dir)).filter((f) => f.endsWith('.safetensors')).sort();
      if (shardNames.length === 0) throw new GqaError('ERR_NO_WEIGHTS', `${dir}: no model.safetensors, index or *.safetensors file`, 'input');
    }
    const files: SafetensorsFile[] = [];
    const where = new Map<string, { file: SafetensorsFile; info: TensorInfo }>();
    try {
      for (const s of shardNames) {
        const f = await SafetensorsFile.open(join(dir, s));
        files.push(f);
        for (const [name, info] of f.tensors) {
          if (where.has(name)) throw new GqaError('ERR_DUPLICATE_TENSOR', `${join(dir, s)}: tensor ${name} also appears in ${where.get(name)!.file.path}`, 'input');
          where.set(name, { file: f, info });
        }
      }
      if (weightMap) {
        for (const [name, shard] of Object.entries(weightMap)) {
          const w = where.get(name);
          if (!w || w.file.name !== shard)
            throw new GqaError('ERR_INDEX_MISSING_TENSOR', `${indexPath}: weight_map names tensor ${name} in ${shard}, which does not hold it`, 'input');
        }
      }
    } catch (e) {
      for (const f of files) await f.close();
      throw e;
    }
    return new Checkpoint(dir, files, where);
  }

  /** All tensor names, sorted. */
  names(): string[] {
    return [...this.where.keys()].sort();
  }

  /** Whether the checkpoint holds `name`. */
  has(name: string): boolean {
    return this.where.has(name);
  }

  private get(name: string) {
    const w = this.where.get(name);
    if (!w) throw new GqaError('ERR_TENSOR_MISSING', `${this.dir}: no tensor ${name}`, 'input');
    return w;
  }

  /** dtype, shape, file and size of a tensor. */
  info(name: string): CheckpointTensorInfo {
    const { info } = this.get(name);
    return { dtype: info.dtype, shape: info.shape, file: info.file, byteLength: info.byteLength };
  }

  /** A tensor converted to float32. */
  async read(name: string): Promise<Float32Array> {
    const { file, info } = this.get(name);
    return toFloat32(await file.readBytes(name), info.dtype);
  }

  /** A tensor's stored bytes. */
  async readRaw(name: string): Promise<{ dtype: Dtype; shape: number[]; data: Uint8Array }> {
    const { file, info } = this.get(name);
    return { dtype: info.dtype, shape: info.shape, data: await file.readBytes(name) };
  }

  /** Shard file names. */
  get shards(): string[] {
    return this.files.map((f) => f.name);
  }

  /** Bytes of all tensors. */
  get totalBytes(): number {
    let n = 0;
    for (const { info } of this.where.values()) n += info.byteLength;
    return n;
  }

  /** Metadata of the first shard. */
  get metadata(): Record<string, string> {
    return this.files[0]?.metadata ?? {};
  }

  /** Closes every shard. */
  async close(): Promise<void> {
    for (const f of this.files) await f.close();
  }
}
