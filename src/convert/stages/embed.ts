/**
 * Stage 2, embed: the calibration hidden states entering the first layer to convert, either
 * the embedding rows of the windows (and the embedding shard written to every target) or
 * the state an interrupted single-target run saved.
 *
 * Invariant: a resumed run continues from exactly the hidden states the interrupted run had
 * after its last saved layer, so the rest of the output is bit-identical.
 */
import type { Checkpoint } from '../../checkpoint/checkpoint.js';
import { type Dtype, toFloat32 } from '../../checkpoint/dtype.js';
import { GqaError } from '../../errors.js';
import { native } from '../../native/binding.js';
import type { LayerReport } from '../../report-types.js';
import type { OutTensor } from '../../tensor/out-tensor.js';
import type { HiddenStreams, Target, Windows } from './context.js';

/** Output of {@link embed}: the hidden states and the first layer still to convert. */
export interface Embedded {
  hidden: HiddenStreams;
  startLayer: number;
}

/** The streams of one buffer holding the statistics + short held-out rows, then the context windows' rows. */
export function hiddenStreams(all: Float32Array, windows: Windows, hid: number): HiddenStreams {
  if (!windows.long) return { all, calib: all, long: null };
  const split = windows.allRows * hid;
  return { all, calib: all.subarray(0, split), long: all.subarray(split) };
}

/** Embeds the windows, or resumes the single target's interrupted run (its reports are restored into it). */
export async function embed(ckpt: Checkpoint, hid: number, windows: Windows, targets: Target[]): Promise<Embedded> {
  const rows = windows.allRows + (windows.long?.rows ?? 0);
  if (targets.length === 1) {
    const tg = targets[0];
    const resumed = await tg.sink.resumeState(rows * hid);
    if (resumed) {
      tg.layers.push(...(resumed.layers as LayerReport[]));
      tg.startLayer = resumed.nextLayer;
      return { hidden: hiddenStreams(resumed.hidden, windows, hid), startLayer: resumed.nextLayer };
    }
  }
  const table = await rawTensor(ckpt, 'model.embed_tokens.weight');
  let ids = windows.calib.ids;
  if (windows.long) {
    ids = new Int32Array(rows);
    ids.set(windows.calib.ids);
    ids.set(windows.long.ids, windows.allRows);
  }
  const hidden = await embedRows(table, ids, hid);
  for (const tg of targets) await tg.sink.writeShard(1, [table]);
  return { hidden: hiddenStreams(hidden, windows, hid), startLayer: 0 };
}

/** A tensor of the source checkpoint as its stored bytes. */
export async function rawTensor(ckpt: Checkpoint, name: string): Promise<OutTensor> {
  const r = await ckpt.readRaw(name);
  return { name, dtype: r.dtype, shape: r.shape, data: r.data };
}

/**
 * Rows `ids` of an embedding table given by its stored bytes, as float32 ([ids, hid]): only
 * the needed rows are widened (BF16/F16), so the table is read once and never expanded whole.
 */
async function embedRows(table: OutTensor, ids: Int32Array, hid: number): Promise<Float32Array> {
  const bytes = table.data as Uint8Array;
  const vocab = table.shape[0];
  if (table.shape.length !== 2 || table.shape[1] !== hid)
    throw new GqaError('ERR_TENSOR_SHAPE', `model.embed_tokens.weight has shape [${table.shape}], expected [vocab, ${hid}]`);
  const out = new Float32Array(ids.length * hid);
  if (table.dtype === 'BF16' || table.dtype === 'F16') {
    const aligned = bytes.byteOffset % 2 === 0 ? bytes : bytes.slice();
    const u16 = new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 2);
    for (let r = 0; r < ids.length; r++) {
      const id = ids[r];
      if (!(id >= 0 && id < vocab)) throw new GqaError('ERR_OUT_OF_RANGE', `token id ${id} is outside the embedding table [0, ${vocab})`);
      native.widen16(u16.subarray(id * hid, (id + 1) * hid), table.dtype, out.subarray(r * hid, (r + 1) * hid));
    }
    return out;
  }
  await native.embedGatherAsync(toFloat32(bytes, table.dtype as Dtype), ids, out, hid);
  return out;
}
