/**
 * The conversion's output directory, written so that an interrupted run never leaves a
 * complete-looking checkpoint and can be resumed bit-identically.
 *
 * Everything is written under `<out>.partial/` and renamed to `<out>` at the very end.
 * Shards are per stage: shard 1 holds the embeddings, shard 2 + l decoder layer l, the last
 * one the final norm (and lm_head when untied); the index maps every tensor. After each
 * layer, `journal.json` records the finished layers and their reports. The calibration
 * hidden states entering the next layer (`hidden.f32`, calibration tokens x hidden float32:
 * 600 MB for an 8B model) are saved after a layer when `checkpointSeconds` have passed since
 * the last save (0: after every layer), and `--resume` continues from the last saved layer
 * (later layers are redone, with identical results). The journal also stores the settings;
 * a resume with different settings is refused.
 *
 * Layer shards are written behind the computation ({@link OutputSink.writeShardBehind}): one
 * shard at a time is in flight while the next layer computes, and a layer is recorded as
 * finished in the journal only after its shard is on disk (fsync'ed and renamed).
 */
import { createHash } from 'node:crypto';
import { copyFile, mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { GqaError, usageError } from '../errors.js';
import { assertReplaceable, isOwnPartial, OUTPUT_MARKER, outputMarker, readOutputMarker } from '../checkpoint/output-guard.js';
import { DTYPE_SIZE, type Dtype, encodeFloat32 } from '../checkpoint/dtype.js';
import { stringifyConfig } from './config.js';
import type { ConvertOptions, ResolvedOptions } from './options.js';
import type { OutTensor } from '../tensor/out-tensor.js';

/** Default seconds between saves of the resume state (the calibration hidden states). */
export const DEFAULT_CHECKPOINT_SECONDS = 60;

export type { OutTensor };

/** Writes one safetensors file (header padded to 8 bytes, metadata {"format":"pt"}). */
async function writeShard(path: string, tensors: OutTensor[]): Promise<number> {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  const blobs: Uint8Array[] = [];
  let off = 0;
  for (const t of tensors) {
    const bytes = t.data instanceof Uint8Array ? t.data : encodeFloat32(t.data, t.dtype as Dtype, t.name);
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (bytes.byteLength !== numel * DTYPE_SIZE[t.dtype as Dtype])
      throw new GqaError('ERR_TENSOR_SHAPE', `tensor ${t.name}: ${bytes.byteLength} bytes for shape [${t.shape}] ${t.dtype}`, 'runtime');
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + bytes.byteLength] };
    off += bytes.byteLength;
    blobs.push(bytes);
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  const tmp = `${path}.tmp`;
  const fh = await open(tmp, 'w');
  try {
    await fh.write(head);
    await fh.write(Buffer.from(json));
    for (const b of blobs) await fh.write(b);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  return off;
}

interface Journal {
  settingsKey: string;
  layersDone: number;
  /** layers the saved hidden.f32 has passed (absent in journals of older versions: = layersDone) */
  hiddenLayers?: number;
  layers: unknown[];
  shardBytes: Record<string, number>;
  weightMap: Record<string, string>;
}

/** The partial output directory of a conversion. */
export class OutputSink {
  readonly toolVersion = '0.1.0';
  private journal: Journal;
  private lastCheckpoint = performance.now();
  /** the shard being written behind the computation, then its journal update */
  private pending: Promise<void> | null = null;
  private constructor(
    readonly outDir: string,
    readonly partialDir: string,
    readonly numLayers: number,
    private readonly overwrite: boolean,
    journal: Journal,
    /** seconds between saves of the resume state (0: after every layer) */
    readonly checkpointSeconds: number,
    /** this run created the partial directory (it did not resume one) */
    private readonly fresh: boolean,
  ) {
    this.journal = journal;
  }

  /**
   * Prepares `<out>.partial/`: refuses an existing output unless overwrite, refuses an
   * existing partial directory unless resume (or overwrite, which starts afresh).
   */
  static async open(o: ConvertOptions, opt: ResolvedOptions, numLayers: number, settings: unknown): Promise<OutputSink> {
    const out = o.outDir.replace(/\/+$/, '');
    const partial = `${out}.partial`;
    if (existsSync(out) && readdirSync(out).length > 0) {
      if (!o.overwrite) throw usageError('ERR_OUTPUT_EXISTS', `output directory ${out} already exists (use overwrite to replace a previous gqa2mla output)`);
      assertReplaceable(out);
    }
    const checkpointSeconds = o.checkpointSeconds ?? DEFAULT_CHECKPOINT_SECONDS;
    if (!(checkpointSeconds >= 0) || !Number.isFinite(checkpointSeconds))
      throw usageError('ERR_BAD_OPTION', `checkpointSeconds must be a number >= 0 (got ${checkpointSeconds})`);
    const settingsKey = createHash('sha256').update(JSON.stringify(settings)).digest('hex');
    const fresh: Journal = { settingsKey, layersDone: 0, layers: [], shardBytes: {}, weightMap: {} };
    if (existsSync(partial)) {
      if (o.resume) {
        let j: Journal;
        try {
          j = JSON.parse(await readFile(join(partial, 'journal.json'), 'utf8')) as Journal;
        } catch {
          throw new GqaError('ERR_RESUME', `cannot resume: ${partial}/journal.json is missing or unreadable (rerun without --resume, with --force)`, 'input');
        }
        if (j.settingsKey !== settingsKey)
          throw usageError('ERR_RESUME', `cannot resume: ${partial} was started with different settings or inputs (rerun with --force to start afresh)`);
        return new OutputSink(out, partial, numLayers, Boolean(o.overwrite), j, checkpointSeconds, false);
      }
      if (!o.overwrite)
        throw usageError('ERR_OUTPUT_EXISTS', `an interrupted conversion is in ${partial}: use resume to continue it or overwrite to start afresh`);
      if (!isOwnPartial(partial) && readdirSync(partial).length > 0)
        throw usageError('ERR_OUTPUT_FOREIGN', `${partial} exists but is not an interrupted gqa2mla conversion (no journal.json); refusing to touch it`);
      await rm(partial, { recursive: true, force: true });
    } else if (o.resume) {
      // nothing to resume: start normally
    }
    await mkdir(partial, { recursive: true });
    await writeFile(join(partial, 'journal.json'), JSON.stringify(fresh));
    void opt;
    return new OutputSink(out, partial, numLayers, Boolean(o.overwrite), fresh, checkpointSeconds, true);
  }

  /**
   * After a failure: removes the partial directory when this run created it and no layer was
   * recorded (nothing to resume, and it would only block the next run).
   */
  async discardIfUnused(): Promise<void> {
    await this.settle();
    if (this.fresh && this.journal.layersDone === 0 && isOwnPartial(this.partialDir)) await rm(this.partialDir, { recursive: true, force: true });
  }

  private shardName(index: number): string {
    const total = this.numLayers + 2;
    const w = Math.max(5, String(total).length);
    return `model-${String(index).padStart(w, '0')}-of-${String(total).padStart(w, '0')}.safetensors`;
  }

  /** Writes the tensors of shard `index` (1-based) and records them (after any write still in flight). */
  async writeShard(index: number, tensors: OutTensor[]): Promise<void> {
    await this.flush();
    await this.write(index, tensors);
  }

  private async write(index: number, tensors: OutTensor[]): Promise<void> {
    const name = this.shardName(index);
    const bytes = await writeShard(join(this.partialDir, name), tensors);
    this.journal.shardBytes[name] = bytes;
    for (const t of tensors) this.journal.weightMap[t.name] = name;
  }

  /**
   * Starts writing shard `index` in the background and returns once the previous background
   * write (and its journal update) has finished: at most one shard is in flight. Float32
   * tensors are encoded before this returns; raw byte tensors (Uint8Array) must not change
   * until the write is done. A failure is thrown by the next {@link flush},
   * {@link writeShard}, {@link writeShardBehind}, saving {@link layerDone} or {@link finish}.
   */
  async writeShardBehind(index: number, tensors: OutTensor[]): Promise<void> {
    // encoded now, into bytes of their own: the caller may refill float32 buffers meanwhile
    const owned = tensors.map((t) => {
      if (t.data instanceof Uint8Array) return t;
      const bytes = encodeFloat32(t.data, t.dtype as Dtype, t.name);
      return { ...t, data: bytes.buffer === t.data.buffer ? bytes.slice() : bytes };
    });
    await this.flush();
    this.pending = this.write(index, owned);
    this.pending.catch(() => undefined); // reported by the next flush
  }

  /** Waits for the background write and its journal update; throws its error, if any. */
  async flush(): Promise<void> {
    const p = this.pending;
    this.pending = null;
    if (p) await p;
  }

  /** {@link flush}, ignoring a failure (for cleanup after another error). */
  async settle(): Promise<void> {
    await this.flush().catch(() => undefined);
  }

  /** Layers already finished by an earlier, interrupted run, with the hidden states to go on from. */
  async resumeState(hiddenLength: number): Promise<{ nextLayer: number; hidden: Float32Array; layers: unknown[] } | null> {
    const saved = this.journal.hiddenLayers ?? this.journal.layersDone;
    if (saved === 0) return null;
    const path = join(this.partialDir, 'hidden.f32');
    const st = await stat(path).catch(() => null);
    if (!st || st.size !== hiddenLength * 4)
      throw new GqaError('ERR_RESUME', `cannot resume: ${path} is missing or has the wrong size`, 'input');
    const buf = await readFile(path);
    const hidden = new Float32Array(hiddenLength);
    new Uint8Array(hidden.buffer).set(buf);
    return { nextLayer: saved, hidden, layers: this.journal.layers.slice(0, saved) };
  }

  /** Whether finishing layer `layer` saves the resume state (the host hidden states must then be current). */
  checkpointDue(layer: number): boolean {
    const last = layer + 1 === this.numLayers; // nothing left to resume: the run finishes next
    return !last && (performance.now() - this.lastCheckpoint) / 1000 >= this.checkpointSeconds;
  }

  /**
   * Records layer `layer` as finished, saving `hidden` as the resume state when `save` (the
   * caller's {@link checkpointDue} answer, taken once: the host hidden states were made
   * current for that answer).
   */
  async layerDone(layer: number, hidden: Float32Array, layers: unknown[], save: boolean): Promise<void> {
    const reports = layers.slice();
    if (save) {
      // the resume state needs every earlier shard on disk, and `hidden` as it is now
      await this.flush();
      const tmp = join(this.partialDir, 'hidden.f32.tmp');
      await writeFile(tmp, new Uint8Array(hidden.buffer, hidden.byteOffset, hidden.byteLength));
      await rename(tmp, join(this.partialDir, 'hidden.f32'));
      this.journal.hiddenLayers = layer + 1;
      this.lastCheckpoint = performance.now();
      await this.recordLayers(layer + 1, reports);
      return;
    }
    // after the layer's shard (still being written behind) is on disk
    const shard = this.pending ?? Promise.resolve();
    this.pending = shard.then(() => this.recordLayers(layer + 1, reports));
    this.pending.catch(() => undefined);
  }

  private async recordLayers(done: number, reports: unknown[]): Promise<void> {
    if (this.journal.hiddenLayers === undefined) this.journal.hiddenLayers = 0;
    this.journal.layersDone = done;
    this.journal.layers = reports;
    const jt = join(this.partialDir, 'journal.json.tmp');
    await writeFile(jt, JSON.stringify(this.journal));
    await rename(jt, join(this.partialDir, 'journal.json'));
  }

  /** Bytes of every shard written so far, by file name. */
  get shardBytes(): Record<string, number> {
    return this.journal.shardBytes;
  }

  /** Index of shard holding layer `l`. */
  layerShard(l: number): number {
    return l + 2;
  }

  /** Index of the last shard (final norm, lm_head). */
  get finalShard(): number {
    return this.numLayers + 2;
  }

  /**
   * Writes the index, config, copied tokenizer/generation files and the report, then
   * renames the partial directory to the output directory.
   */
  async finish(sourceDir: string, config: unknown, report: unknown): Promise<{ shards: string[]; totalSize: number }> {
    await this.flush();
    const shards = Object.keys(this.journal.shardBytes).sort();
    const totalSize = Object.values(this.journal.shardBytes).reduce((a, b) => a + b, 0);
    const weightMap: Record<string, string> = {};
    for (const k of Object.keys(this.journal.weightMap).sort()) weightMap[k] = this.journal.weightMap[k];
    const p = this.partialDir;
    await writeFile(join(p, 'model.safetensors.index.json'), `${JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2)}\n`);
    await writeFile(join(p, 'config.json'), stringifyConfig(config as Record<string, unknown>));
    for (const f of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'special_tokens_map.json', 'tokenizer.model']) {
      if (existsSync(join(sourceDir, f))) await copyFile(join(sourceDir, f), join(p, f));
    }
    await writeFile(join(p, 'conversion-report.json'), `${JSON.stringify(report, null, 2)}\n`);
    await rm(join(p, 'hidden.f32'), { force: true });
    await rm(join(p, 'journal.json'), { force: true });
    // the marker lists what this output owns (report.html is drawn after the rename)
    await writeFile(join(p, OUTPUT_MARKER), outputMarker('conversion', this.toolVersion, [...(await readdir(p)), 'report.html']));
    if (existsSync(this.outDir)) {
      const empty = (await readdir(this.outDir)).length === 0;
      if (!this.overwrite && !empty) throw usageError('ERR_OUTPUT_EXISTS', `output directory ${this.outDir} appeared during the conversion`);
      assertReplaceable(this.outDir); // checked again: it may have changed during the run
      const old = `${this.outDir}.old-${process.pid}`;
      await rename(this.outDir, old);
      await rename(p, this.outDir);
      await rm(old, { recursive: true, force: true });
    } else {
      await rename(p, this.outDir);
    }
    return { shards, totalSize };
  }
}

/**
 * Ends a sweep into `outDir` whose budgets went to `budgetDirs`: drops the top-level entries a
 * previous gqa2mla output there owned that this sweep did not write again (its marker lists
 * them; nothing else is touched) and writes the sweep's marker (budget directories,
 * sweep.json, report.html).
 */
export async function finishSweepDir(outDir: string, budgetDirs: string[], version: string): Promise<void> {
  const names = [...budgetDirs.map((d) => d.slice(outDir.replace(/\/+$/, '').length + 1)), 'sweep.json', 'report.html'];
  const previous = readOutputMarker(outDir);
  for (const f of previous?.files ?? []) if (isPlainName(f) && !names.includes(f)) await rm(join(outDir, f), { recursive: true, force: true });
  await writeFile(join(outDir, OUTPUT_MARKER), outputMarker('sweep', version, names));
}

/** A single path component (a marker's entries never reach outside its directory). */
function isPlainName(f: string): boolean {
  return typeof f === 'string' && f !== '' && f !== '.' && f !== '..' && !f.includes('/') && !f.includes('\\');
}
