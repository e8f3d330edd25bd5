/**
 * The conversion's output sink writes layer shards behind the computation: a layer is in
 * the journal only once its shard is on disk, a failed background write surfaces at the next
 * flush, and float32 tensors are encoded before the call returns (their buffers may be
 * refilled by the next layer).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SafetensorsFile } from '../src/checkpoint/safetensors-reader.js';
import { loadModelSpec } from '../src/model/spec.js';
import { resolveOptions } from '../src/convert/options.js';
import { OutputSink } from '../src/convert/output.js';

const LLAMA = 'test/fixtures/tiny-llama-gqa';
let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'g2m-sink-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function openSink(name: string) {
  const spec = await loadModelSpec(LLAMA);
  const o = { modelDir: LLAMA, outDir: join(tmp, name), calibText: 'x' };
  const opt = resolveOptions(spec, o);
  const sink = await OutputSink.open(o, opt, 4, { test: name });
  const journal = () => JSON.parse(readFileSync(join(tmp, `${name}.partial`, 'journal.json'), 'utf8')) as { layersDone: number; shardBytes: Record<string, number> };
  return { sink, journal, dir: join(tmp, `${name}.partial`) };
}

test('a background-written layer enters the journal after its shard, with the values at call time', async () => {
  const { sink, journal, dir } = await openSink('ok');
  const values = new Float32Array(4096).map((_, i) => Math.sin(i) * 3);
  const expected = Buffer.from(values.buffer).toString('base64');
  await sink.writeShardBehind(sink.layerShard(0), [{ name: 'model.layers.0.w', dtype: 'F32', shape: [64, 64], data: values }]);
  values.fill(7); // the caller refills its buffer while the shard is written
  await sink.layerDone(0, new Float32Array(1), [{ layer: 0 }], false);
  await sink.flush();
  expect(journal().layersDone).toBe(1);
  const shard = Object.keys(journal().shardBytes)[0];
  const f = await SafetensorsFile.open(join(dir, shard));
  const back = await f.readFloat32('model.layers.0.w');
  await f.close();
  expect(Buffer.from(back.buffer).toString('base64')).toBe(expected);
});

test('a failed background write is reported by the next flush and the layer is not recorded', async () => {
  const { sink, journal } = await openSink('bad');
  // 10 bytes for a [4] BF16 tensor (needs 8): the write itself fails
  await sink.writeShardBehind(sink.layerShard(0), [{ name: 'model.layers.0.w', dtype: 'BF16', shape: [4], data: new Uint8Array(10) }]);
  await sink.layerDone(0, new Float32Array(1), [{ layer: 0 }], false);
  await expect(sink.flush()).rejects.toMatchObject({ code: 'ERR_TENSOR_SHAPE' });
  expect(journal().layersDone).toBe(0);
  await sink.flush(); // reported once
});
