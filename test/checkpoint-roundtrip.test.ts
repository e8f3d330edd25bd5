/**
 * Reader and streaming writer: every fixture tensor survives read -> write -> read bit for
 * bit (single file, sharded, reserved-header and rewritten-header shards), the index is
 * complete, float conversions round to nearest even, and the writer's directory protocol
 * (refusal, overwrite at finish, abort, resume) holds.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Checkpoint } from '../src/checkpoint/checkpoint.js';
import { DTYPE_SIZE, floatBitsToBf16, floatBitsToHalf, halfBitsToFloat } from '../src/checkpoint/dtype.js';
import { SafetensorsFile } from '../src/checkpoint/safetensors-reader.js';
import { CheckpointWriter, type WriterOptions } from '../src/checkpoint/safetensors-writer.js';
import { OUTPUT_MARKER } from '../src/checkpoint/output-guard.js';
import { normalGenerator, writeSyntheticModel } from './helpers/synthetic.js';

const FIXTURES = ['test/fixtures/tiny-llama-gqa', 'test/fixtures/tiny-qwen2-gqa'];
let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'g2m-ckpt-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Copies every tensor of `src` through a writer into `dst`. */
async function copyCheckpoint(src: string, dst: string, opts: WriterOptions = {}) {
  const ck = await Checkpoint.open(src);
  const w = await CheckpointWriter.create(dst, opts);
  for (const name of ck.names()) {
    const r = await ck.readRaw(name);
    await w.add(name, r.dtype, r.shape, r.data);
  }
  await ck.close();
  return w.finish();
}

/** Asserts a and b hold the same tensors with identical bytes and float32 values. */
async function expectSameTensors(a: string, b: string) {
  const ca = await Checkpoint.open(a);
  const cb = await Checkpoint.open(b);
  try {
    expect(cb.names()).toEqual(ca.names());
    expect(cb.totalBytes).toBe(ca.totalBytes);
    for (const name of ca.names()) {
      const ra = await ca.readRaw(name);
      const rb = await cb.readRaw(name);
      expect({ name, dtype: rb.dtype, shape: rb.shape }).toEqual({ name, dtype: ra.dtype, shape: ra.shape });
      expect(Buffer.compare(Buffer.from(ra.data), Buffer.from(rb.data))).toBe(0);
      const fa = await ca.read(name);
      const fb = await cb.read(name);
      expect(Buffer.compare(Buffer.from(fa.buffer), Buffer.from(fb.buffer))).toBe(0);
    }
  } finally {
    await ca.close();
    await cb.close();
  }
}

describe('fixture round trip', () => {
  test.each(FIXTURES)('%s: single file, bit-exact', async (src) => {
    const dst = join(tmp, `single-${src.split('/').pop()}`);
    const r = await copyCheckpoint(src, dst);
    expect(r.shards).toEqual(['model.safetensors']);
    expect(readdirSync(dst).sort()).toEqual([OUTPUT_MARKER, 'model.safetensors']);
    expect(existsSync(CheckpointWriter.partialDirOf(dst))).toBe(false);
    await expectSameTensors(src, dst);
    const ck = await Checkpoint.open(dst);
    expect(ck.metadata).toEqual({ format: 'pt' });
    expect(r.totalSize).toBe(ck.totalBytes);
    // small shard: exact header (padded to 8), so the file is header + data and nothing else
    const f = await SafetensorsFile.open(join(dst, 'model.safetensors'));
    expect(f.dataOffset % 8).toBe(0);
    const raw = readFileSync(join(dst, 'model.safetensors'));
    const text = raw.subarray(8, f.dataOffset).toString('utf8');
    expect(text.length - text.trimEnd().length).toBeLessThan(8);
    expect(f.size).toBe(f.dataOffset + ck.totalBytes);
    await f.close();
    await ck.close();
  });

  test.each(FIXTURES)('%s: sharded at 1 MiB, index complete', async (src) => {
    const dst = join(tmp, `sharded-${src.split('/').pop()}`);
    const r = await copyCheckpoint(src, dst, { maxShardBytes: 1 << 20, metadata: { source: 'fixture' } });
    expect(r.shards.length).toBeGreaterThan(4);
    const n = r.shards.length;
    r.shards.forEach((s, i) => expect(s).toBe(`model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`));
    const index = JSON.parse(readFileSync(join(dst, 'model.safetensors.index.json'), 'utf8'));
    const src0 = await Checkpoint.open(src);
    expect(Object.keys(index.weight_map).sort()).toEqual(src0.names());
    expect(index.metadata.total_size).toBe(src0.totalBytes);
    await src0.close();
    expect(new Set(Object.values(index.weight_map))).toEqual(new Set(r.shards));
    // every shard honours the limit unless it holds a single larger tensor
    for (const s of r.shards) {
      const f = await SafetensorsFile.open(join(dst, s));
      let bytes = 0;
      for (const t of f.tensors.values()) bytes += t.byteLength;
      if (f.tensors.size > 1) expect(bytes).toBeLessThanOrEqual(1 << 20);
      expect(f.metadata).toEqual({ format: 'pt', source: 'fixture' });
      for (const name of f.tensors.keys()) expect(index.weight_map[name]).toBe(s);
      await f.close();
    }
    await expectSameTensors(src, dst);
  });

  test('reserved-header shards and the rewrite when the header outgrows the reservation', async () => {
    const src = FIXTURES[0];
    const reserved = join(tmp, 'reserved');
    await copyCheckpoint(src, reserved, { compactBelowBytes: 0, maxShardBytes: 3 << 20 });
    const overflow = join(tmp, 'overflow');
    await copyCheckpoint(src, overflow, { compactBelowBytes: 0, headerReserveBytes: 64, maxShardBytes: 3 << 20 });
    await expectSameTensors(src, reserved);
    await expectSameTensors(src, overflow);
    const files = readdirSync(reserved).filter((f) => f.endsWith('.safetensors'));
    for (const s of files) {
      const f = await SafetensorsFile.open(join(reserved, s));
      expect(f.dataOffset).toBe(64 * 1024); // header padded with spaces up to the reservation
      await f.close();
      const raw = readFileSync(join(reserved, s));
      const hlen = Number(raw.readBigUInt64LE(0));
      const text = raw.subarray(8, 8 + hlen).toString('utf8');
      expect(text.trimEnd().endsWith('}')).toBe(true);
      expect(/^ *$/.test(text.slice(text.trimEnd().length))).toBe(true);
      const g = await SafetensorsFile.open(join(overflow, s));
      expect(g.dataOffset).toBeLessThan(64 * 1024);
      expect(g.size).toBe(statSync(join(overflow, s)).size);
      await g.close();
    }
  });

  test('read() of BF16 matches an independent DataView decoding', async () => {
    const ck = await Checkpoint.open(FIXTURES[1]);
    for (const name of ['model.embed_tokens.weight', 'model.layers.2.self_attn.q_proj.bias', 'model.norm.weight']) {
      const raw = await ck.readRaw(name);
      const f = await ck.read(name);
      const dv = new DataView(raw.data.buffer, raw.data.byteOffset, raw.data.byteLength);
      const tmpv = new DataView(new ArrayBuffer(4));
      let nonzero = 0;
      const bad: number[] = [];
      for (let i = 0; i < f.length; i++) {
        tmpv.setUint32(0, dv.getUint16(2 * i, true) << 16, true);
        if (!Object.is(f[i], tmpv.getFloat32(0, true))) bad.push(i);
        if (f[i] !== 0) nonzero++;
      }
      expect(bad).toEqual([]);
      expect(nonzero).toBeGreaterThan(f.length / 2);
    }
    await ck.close();
  });
});

describe('float conversions', () => {
  const f32 = new Float32Array(1);
  const u32 = new Uint32Array(f32.buffer);
  const bitsOf = (x: number) => {
    f32[0] = x;
    return u32[0];
  };
  const floatOf = (b: number) => {
    u32[0] = b >>> 0;
    return f32[0];
  };
  /** Reference round-to-nearest-even onto the bf16 grid in float64 (2^128 stands for overflow). */
  function refBf16(x: number): number {
    if (Number.isNaN(x)) return NaN;
    const b = bitsOf(x);
    const lo = b & 0xffff0000;
    const loV = floatOf(lo);
    const hiBits = (lo + 0x10000) >>> 0;
    const hiV = (hiBits & 0x7f800000) === 0x7f800000 ? Math.sign(x) * 2 ** 128 : floatOf(hiBits);
    if (!Number.isFinite(x)) return x;
    const dl = Math.abs(x - loV);
    const dh = Math.abs(hiV - x);
    const pick = dl < dh ? loV : dh < dl ? hiV : (lo >>> 16) % 2 === 0 ? loV : hiV;
    return Math.abs(pick) === 2 ** 128 ? Math.sign(x) * Infinity : pick;
  }

  test('BF16 encoding: nearest even on random, tie, subnormal, overflow and special values', async () => {
    const g = normalGenerator(7);
    const vals: number[] = [];
    for (let i = 0; i < 20000; i++) vals.push(g() * 10 ** Math.floor(g() * 12));
    for (let k = 0; k < 2000; k++) {
      // exact ties and their neighbours between consecutive bf16 values
      const base = (Math.floor(Math.abs(g()) * 0x7f00) << 16) >>> 0;
      vals.push(floatOf(base + 0x8000), floatOf(base + 0x7fff), floatOf(base + 0x8001), floatOf(base + 0x18000));
    }
    vals.push(0, -0, 1e-40, -3e-39, 3.4e38, -3.4e38, 3.3961e38, Infinity, -Infinity, NaN, floatOf(0x7f7fffff), floatOf(0x7f7f8000));
    const data = Float32Array.from(vals);
    const dir = join(tmp, 'bf16-conv');
    const w = await CheckpointWriter.create(dir);
    await w.add('x', 'BF16', [data.length], data);
    await w.finish();
    const ck = await Checkpoint.open(dir);
    const back = await ck.read('x');
    const bad: number[][] = [];
    for (let i = 0; i < data.length; i++) {
      const want = refBf16(data[i]);
      if (Number.isNaN(want) ? !Number.isNaN(back[i]) : !Object.is(back[i], want)) bad.push([i, data[i], back[i], want]);
    }
    expect(bad).toEqual([]);
    await ck.close();
    // NaN payloads stay NaN even when they sit only in the low 16 bits; the sign is kept
    for (const nan of [0x7f800001, 0xff800001, 0x7fc00000, 0x7fa00000, 0xffffffff]) {
      const h = floatBitsToBf16(nan);
      expect(Number.isNaN(floatOf(h << 16))).toBe(true);
      expect(h >>> 15).toBe(nan >>> 31);
    }
  });

  /**
   * IEEE binary16 value of a bit pattern by the formula, independent of the product's
   * decoder: sign x 2^(e-15) x (1 + m/1024) for normal e in 1..30, sign x 2^-14 x m/1024
   * for subnormals (e = 0, incl. signed zero), sign x Infinity for e = 31, m = 0, NaN for
   * e = 31, m != 0.
   */
  function refHalf(h: number): number {
    const sign = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    if (e === 31) return m === 0 ? sign * Infinity : NaN;
    if (e === 0) return sign * 2 ** -14 * (m / 1024);
    return sign * 2 ** (e - 15) * (1 + m / 1024);
  }

  test('F16: all 65536 bit patterns decode to the binary16 formula and re-encode to themselves', async () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const dir = join(tmp, 'f16-all');
    const w = await CheckpointWriter.create(dir);
    await w.add('h', 'F16', [256, 256], all);
    await w.finish();
    const ck = await Checkpoint.open(dir);
    const f = await ck.read('h');
    await ck.close();
    // spot values of the formula itself
    expect([refHalf(0x3c00), refHalf(0xc000), refHalf(0x7bff), refHalf(0x0001), refHalf(0x0400), refHalf(0x8000)]).toEqual([
      1, -2, 65504, 2 ** -24, 2 ** -14, -0,
    ]);
    const bad: number[] = [];
    let nans = 0;
    for (let h = 0; h < 65536; h++) {
      const v = refHalf(h);
      if (Number.isNaN(v)) {
        nans++;
        // NaN stays NaN with its sign, and re-encodes to a NaN pattern
        const back = floatBitsToHalf(bitsOf(f[h]));
        if (!Number.isNaN(f[h]) || !Number.isNaN(halfBitsToFloat(h)) || (back & 0x7fff) <= 0x7c00 || back >>> 15 !== h >>> 15) bad.push(h);
      } else if (!Object.is(f[h], v) || !Object.is(halfBitsToFloat(h), v) || floatBitsToHalf(bitsOf(v)) !== h) bad.push(h);
    }
    expect(bad).toEqual([]);
    expect(nans).toBe(2 * 1023);
  });

  test('F16 encoding rounds midpoints to even and neighbours to the nearer value', () => {
    const bad: number[] = [];
    for (let h = 0; h < 0x7bff; h++) {
      const a = refHalf(h);
      const b = refHalf(h + 1);
      const mid = (a + b) / 2; // exact in float32 (12 significant bits)
      const even = h % 2 === 0 ? h : h + 1;
      const midBits = bitsOf(mid);
      if (
        Math.fround(mid) !== mid ||
        floatBitsToHalf(midBits) !== even ||
        floatBitsToHalf(midBits + 1) !== h + 1 ||
        floatBitsToHalf(midBits - 1) !== h ||
        floatBitsToHalf(bitsOf(-mid)) !== (even | 0x8000)
      )
        bad.push(h);
    }
    expect(bad).toEqual([]);
    const max = refHalf(0x7bff);
    const ulp = max - refHalf(0x7bfe);
    expect(floatBitsToHalf(bitsOf(max + ulp / 2))).toBe(0x7c00); // tie with 2^16 rounds to even: infinity
    expect(floatBitsToHalf(bitsOf(max + ulp / 4))).toBe(0x7bff);
    expect(floatBitsToHalf(bitsOf(1e-9))).toBe(0);
    expect(floatBitsToHalf(bitsOf(2 ** -25))).toBe(0); // tie between 0 and the smallest subnormal
    expect(floatBitsToHalf(bitsOf(2 ** -25 * 1.0001))).toBe(1);
  });

  test('F32, F64 and I64 tensors round-trip through Float32Array input', async () => {
    const g = normalGenerator(3);
    const x = Float32Array.from({ length: 1000 }, () => g());
    const ints = Float32Array.from({ length: 64 }, (_, i) => (i - 32) * 1000);
    const dir = join(tmp, 'wide');
    const w = await CheckpointWriter.create(dir);
    await w.add('a', 'F32', [10, 100], x);
    await w.add('b', 'F64', [1000], x);
    await w.add('c', 'I64', [8, 8], ints);
    await w.add('scalar', 'F32', [], Float32Array.of(2.5));
    await w.add('empty', 'BF16', [0, 7], new Float32Array(0));
    await expect(w.add('bad', 'I64', [1], Float32Array.of(0.5))).rejects.toMatchObject({ code: 'ERR_DTYPE' });
    await w.finish();
    const ck = await Checkpoint.open(dir);
    expect(Array.from(await ck.read('a'))).toEqual(Array.from(x));
    expect(Array.from(await ck.read('b'))).toEqual(Array.from(x));
    expect(Array.from(await ck.read('c'))).toEqual(Array.from(ints));
    expect(ck.info('b')).toMatchObject({ dtype: 'F64', shape: [1000], byteLength: 8000 });
    expect(Array.from(await ck.read('scalar'))).toEqual([2.5]);
    expect(ck.info('empty')).toMatchObject({ shape: [0, 7], byteLength: 0 });
    expect(DTYPE_SIZE.I64).toBe(8);
    await ck.close();
  });
});

describe('writer directory protocol', () => {
  test('refuses an existing directory unless overwrite; overwrite replaces only a previous output, at finish; never foreign files', async () => {
    const dir = join(tmp, 'exists');
    mkdirSync(dir);
    writeFileSync(join(dir, 'keep.txt'), 'old');
    await expect(CheckpointWriter.create(dir)).rejects.toMatchObject({ code: 'ERR_OUTPUT_EXISTS', message: expect.stringContaining('overwrite'), exitCode: 2 });
    await expect(CheckpointWriter.create(dir, { overwrite: true })).rejects.toMatchObject({ code: 'ERR_OUTPUT_FOREIGN', message: expect.stringContaining('keep.txt'), exitCode: 2 });
    expect(readFileSync(join(dir, 'keep.txt'), 'utf8')).toBe('old');
    expect(existsSync(`${dir}.partial`)).toBe(false);
    const prev = join(tmp, 'previous');
    const w0 = await CheckpointWriter.create(prev);
    await w0.add('t', 'F32', [1], Float32Array.of(9));
    await w0.addFile('old.json', '{}');
    await w0.finish();
    const w = await CheckpointWriter.create(prev, { overwrite: true });
    await w.add('t', 'F32', [3], Float32Array.of(1, 2, 3));
    await w.flush();
    expect(readFileSync(join(prev, 'old.json'), 'utf8')).toBe('{}');
    await w.addFile('config.json', '{}');
    await w.finish();
    expect(readdirSync(prev).sort()).toEqual([OUTPUT_MARKER, 'config.json', 'model.safetensors']);
    expect(readdirSync(tmp).filter((f) => f.startsWith('previous.'))).toEqual([]);
  });

  test('abort leaves no final directory and no partial directory', async () => {
    const dir = join(tmp, 'aborted');
    const w = await CheckpointWriter.create(dir, { maxShardBytes: 16 });
    for (let i = 0; i < 5; i++) await w.add(`t${i}`, 'F32', [4], Float32Array.of(i, i, i, i));
    expect(existsSync(w.partialDir)).toBe(true);
    expect(existsSync(dir)).toBe(false);
    await w.abort();
    expect(existsSync(dir)).toBe(false);
    expect(existsSync(w.partialDir)).toBe(false);
    await expect(w.add('late', 'F32', [1], Float32Array.of(1))).rejects.toMatchObject({ code: 'ERR_WRITER_CLOSED' });
  });

  test('rejects bad input without corrupting the checkpoint', async () => {
    const dir = join(tmp, 'badinput');
    const w = await CheckpointWriter.create(dir);
    await w.add('a', 'BF16', [2, 2], Float32Array.of(1, 2, 3, 4));
    await expect(w.add('a', 'BF16', [2], Float32Array.of(1, 2))).rejects.toMatchObject({ code: 'ERR_DUPLICATE_TENSOR' });
    await expect(w.add('b', 'BF16', [3], Float32Array.of(1, 2))).rejects.toMatchObject({ code: 'ERR_TENSOR_SHAPE' });
    await expect(w.add('c', 'F32', [2], new Uint8Array(7))).rejects.toMatchObject({ code: 'ERR_TENSOR_SHAPE' });
    await expect(w.add('d', 'F32', [1], new Uint16Array(2))).rejects.toMatchObject({ code: 'ERR_DTYPE' });
    await expect(w.add('e', 'Q8' as never, [1], new Uint8Array(1))).rejects.toMatchObject({ code: 'ERR_DTYPE' });
    await expect(w.add('__metadata__', 'F32', [1], Float32Array.of(1))).rejects.toMatchObject({ code: 'ERR_TENSOR_NAME' });
    await expect(w.addFile('../escape.json', '{}')).rejects.toMatchObject({ code: 'ERR_FILE_NAME' });
    await expect(w.addFile('model.safetensors', '{}')).rejects.toMatchObject({ code: 'ERR_FILE_NAME' });
    const r = await w.finish();
    expect(r.shards).toEqual(['model.safetensors']);
    const ck = await Checkpoint.open(dir);
    expect(ck.names()).toEqual(['a']);
    expect(Array.from(await ck.read('a'))).toEqual([1, 2, 3, 4]);
    await ck.close();
  });

  test('interrupted writer: no final dir; create refuses the partial dir; resume keeps flushed shards and finishes identically', async () => {
    const opts = { modelType: 'llama' as const, numLayers: 3, hiddenSize: 64, numHeads: 4, numKvHeads: 2, headDim: 16, intermediateSize: 96, vocabSize: 128, tie: false, bias: true, dtype: 'BF16' as const, seed: 11 };
    const ref = await writeSyntheticModel(join(tmp, 'resume-ref'), opts);
    const refCk = await Checkpoint.open(ref.dir);
    const names = ref.tensors;
    const dir = join(tmp, 'resumed');
    const w1 = await CheckpointWriter.create(dir, { metadata: { k: 'v' } });
    const cut = 12;
    for (let i = 0; i < names.length; i++) {
      const r = await refCk.readRaw(names[i]);
      await w1.add(names[i], r.dtype, r.shape, r.data);
      if (i === 5 || i === cut - 1) await w1.flush();
      if (i === cut + 3) break; // "crash": tensors cut..cut+3 sit in the open shard, never flushed
    }
    await w1.addFile('config.json', readFileSync(join(ref.dir, 'config.json')));
    expect(existsSync(dir)).toBe(false);
    await expect(CheckpointWriter.create(dir)).rejects.toMatchObject({ code: 'ERR_OUTPUT_EXISTS', message: expect.stringContaining('resume') });
    await expect(CheckpointWriter.resume(dir, { metadata: { k: 'other' } })).rejects.toMatchObject({ code: 'ERR_RESUME' });
    const w2 = await CheckpointWriter.resume(dir);
    expect(w2.closedShards).toBe(2);
    for (let i = 0; i < names.length; i++) expect([names[i], w2.has(names[i])]).toEqual([names[i], i < cut]);
    for (const name of names) {
      if (w2.has(name)) continue;
      const r = await refCk.readRaw(name);
      await w2.add(name, r.dtype, r.shape, r.data);
    }
    const done = await w2.finish();
    await refCk.close();
    expect(done.shards.length).toBe(3);
    expect(existsSync(w2.partialDir)).toBe(false);
    expect(readFileSync(join(dir, 'config.json'), 'utf8')).toBe(readFileSync(join(ref.dir, 'config.json'), 'utf8'));
    expect(readdirSync(dir).filter((f) => f.startsWith('.'))).toEqual([OUTPUT_MARKER]); // no leftovers of the writer
    await expectSameTensors(ref.dir, dir);
    const ck = await Checkpoint.open(dir);
    expect(ck.metadata).toEqual({ format: 'pt', k: 'v' });
    await ck.close();
    await expect(CheckpointWriter.resume(join(tmp, 'never-started'))).rejects.toMatchObject({ code: 'ERR_RESUME' });
  });

  test('a lone *.safetensors file and a path to a file open as checkpoints', async () => {
    const dir = join(tmp, 'lone');
    mkdirSync(dir);
    const src = readFileSync(join(FIXTURES[0], 'model.safetensors'));
    writeFileSync(join(dir, 'weights.safetensors'), src);
    const a = await Checkpoint.open(dir);
    const b = await Checkpoint.open(join(dir, 'weights.safetensors'));
    expect(a.shards).toEqual(['weights.safetensors']);
    expect(b.names()).toEqual(a.names());
    expect(a.names().length).toBe(38);
    await a.close();
    await b.close();
  });
});
