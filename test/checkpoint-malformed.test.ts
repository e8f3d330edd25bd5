/**
 * Malformed safetensors files and indexes: each violation raises a GqaError with its own
 * code, exit status 3 and a message naming the file (and the tensor at fault); random
 * corruption of a valid file never raises anything but a GqaError.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { Checkpoint } from '../src/checkpoint/checkpoint.js';
import { IO_CHUNK_BYTES, SafetensorsFile, readFully } from '../src/checkpoint/safetensors-reader.js';
import { GqaError } from '../src/errors.js';
import { normalGenerator } from './helpers/synthetic.js';

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'g2m-bad-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

type Entry = { dtype: string; shape: number[]; data_offsets: number[] };

/** A safetensors file from a header object and a data buffer (header padded to 8 bytes). */
function build(header: Record<string, unknown>, data: Uint8Array, opts: { lengthField?: bigint; rawHeader?: Buffer } = {}): Buffer {
  let json = opts.rawHeader ?? Buffer.from(JSON.stringify(header));
  if (!opts.rawHeader && json.length % 8) json = Buffer.concat([json, Buffer.alloc(8 - (json.length % 8), 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(opts.lengthField ?? BigInt(json.length));
  return Buffer.concat([len, json, Buffer.from(data)]);
}

/** A valid two-tensor file: a F32 [2,3] (24 bytes) then b BF16 [4] (8 bytes). */
function validParts(): { header: Record<string, Entry | Record<string, string>>; data: Uint8Array } {
  const g = normalGenerator(1);
  const data = new Uint8Array(32);
  new Float32Array(data.buffer, 0, 6).set(Array.from({ length: 6 }, () => g()));
  return {
    header: {
      __metadata__: { format: 'pt' },
      a: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] },
      b: { dtype: 'BF16', shape: [4], data_offsets: [24, 32] },
    },
    data,
  };
}

let n = 0;
function write(buf: Buffer): string {
  const p = join(tmp, `case-${n++}.safetensors`);
  writeFileSync(p, buf);
  return p;
}

async function expectCode(path: string, code: string, mention: string[] = []): Promise<GqaError> {
  let err: unknown;
  try {
    const f = await SafetensorsFile.open(path);
    await f.close();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(GqaError);
  const g = err as GqaError;
  expect({ code: g.code, exit: g.exitCode }).toEqual({ code, exit: 3 });
  expect(g.message).toContain(path);
  for (const m of mention) expect(g.message).toContain(m);
  expect(g.message).not.toContain('\n');
  return g;
}

describe('malformed safetensors', () => {
  test('the valid base case opens and reads', async () => {
    const { header, data } = validParts();
    const f = await SafetensorsFile.open(write(build(header, data)));
    expect([...f.tensors.keys()]).toEqual(['a', 'b']);
    expect(Array.from(await f.readFloat32('a'))).toEqual(Array.from(new Float32Array(data.buffer, 0, 6)));
    await f.close();
  });

  test('empty file', () => expectCode(write(Buffer.alloc(0)), 'ERR_SAFETENSORS_EMPTY'));
  test('shorter than the length field', () => expectCode(write(Buffer.from([1, 0, 0])), 'ERR_SAFETENSORS_TRUNCATED'));

  test('truncated data (file cut short)', async () => {
    const { header, data } = validParts();
    const full = build(header, data);
    await expectCode(write(full.subarray(0, full.length - 5)), 'ERR_SAFETENSORS_TRUNCATED', ['b']);
  });

  test('header length past the end of the file', async () => {
    const { header, data } = validParts();
    const full = build(header, data);
    await expectCode(write(build(header, data, { lengthField: BigInt(full.length) })), 'ERR_SAFETENSORS_HEADER_PAST_END');
    await expectCode(write(full.subarray(0, 20)), 'ERR_SAFETENSORS_HEADER_PAST_END');
  });

  test('header too large', async () => {
    const { header, data } = validParts();
    await expectCode(write(build(header, data, { lengthField: 100_000_001n })), 'ERR_SAFETENSORS_HEADER_TOO_LARGE', ['100000000']);
    await expectCode(write(build(header, data, { lengthField: 0xffffffffffffffffn })), 'ERR_SAFETENSORS_HEADER_TOO_LARGE');
  });

  test('bad JSON, non-object header, invalid UTF-8', async () => {
    const { data } = validParts();
    await expectCode(write(build({}, data, { rawHeader: Buffer.from('{"a": {"dtype": "F32",  ') })), 'ERR_SAFETENSORS_JSON');
    await expectCode(write(build({}, new Uint8Array(0), { rawHeader: Buffer.from('[1, 2, 3]       ') })), 'ERR_SAFETENSORS_JSON');
    await expectCode(write(build({}, new Uint8Array(0), { rawHeader: Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x3a, 0x31, 0x7d]) })), 'ERR_SAFETENSORS_JSON');
  });

  test('__metadata__ that is not a string -> string map', async () => {
    const { header, data } = validParts();
    await expectCode(write(build({ ...header, __metadata__: { format: 'pt', step: 3 } }, data)), 'ERR_SAFETENSORS_METADATA', ['step']);
    await expectCode(write(build({ ...header, __metadata__: ['pt'] }, data)), 'ERR_SAFETENSORS_METADATA');
    await expectCode(write(build({ ...header, __metadata__: null }, data)), 'ERR_SAFETENSORS_METADATA');
  });

  test('unknown and unsupported dtypes', async () => {
    const { header, data } = validParts();
    const g = await expectCode(write(build({ ...header, b: { dtype: 'Q7', shape: [4], data_offsets: [24, 32] } }, data)), 'ERR_SAFETENSORS_DTYPE', ['b', 'Q7', 'BF16']);
    expect(g.message).toContain('unknown');
    const h = await expectCode(write(build({ ...header, b: { dtype: 'I32', shape: [2], data_offsets: [24, 32] } }, data)), 'ERR_SAFETENSORS_DTYPE', ['b', 'I32']);
    expect(h.message).toContain('unsupported');
  });

  test('overlapping offsets', async () => {
    const { data } = validParts();
    const header = { a: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] }, b: { dtype: 'BF16', shape: [4], data_offsets: [20, 28] } };
    await expectCode(write(build(header, data.subarray(0, 28))), 'ERR_SAFETENSORS_OVERLAP', ['b', 'a']);
  });

  test('hole between tensors, and a first tensor not at offset 0', async () => {
    const { data } = validParts();
    await expectCode(
      write(build({ a: { dtype: 'F32', shape: [5], data_offsets: [0, 20] }, b: { dtype: 'BF16', shape: [4], data_offsets: [24, 32] } }, data)),
      'ERR_SAFETENSORS_HOLE',
      ['b', '4 unused bytes'],
    );
    await expectCode(write(build({ b: { dtype: 'BF16', shape: [4], data_offsets: [24, 32] } }, data)), 'ERR_SAFETENSORS_HOLE', ['b']);
  });

  test('file longer than header + tensors (wrong file byte size)', async () => {
    const { header, data } = validParts();
    const full = build(header, data);
    await expectCode(write(Buffer.concat([full, Buffer.alloc(3)])), 'ERR_SAFETENSORS_TRAILING', ['3 bytes']);
  });

  test('shape / offsets mismatch (byte size != numel x dtype size)', async () => {
    const { header, data } = validParts();
    await expectCode(write(build({ ...header, a: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 24] } }, data)), 'ERR_SAFETENSORS_SIZE', ['tensor a', '[2, 2]']);
    await expectCode(write(build({ ...header, b: { dtype: 'F32', shape: [4], data_offsets: [24, 32] } }, data)), 'ERR_SAFETENSORS_SIZE', ['tensor b']);
  });

  test('malformed offsets and entries', async () => {
    const { header, data } = validParts();
    await expectCode(write(build({ ...header, b: { dtype: 'BF16', shape: [4], data_offsets: [32, 24] } }, data)), 'ERR_SAFETENSORS_OFFSET', ['b']);
    await expectCode(write(build({ ...header, b: { dtype: 'BF16', shape: [4], data_offsets: [24] } }, data)), 'ERR_SAFETENSORS_OFFSET', ['b']);
    await expectCode(write(build({ ...header, b: { dtype: 'BF16', shape: [4], data_offsets: [-8, 0] } }, data)), 'ERR_SAFETENSORS_OFFSET', ['b']);
    await expectCode(write(build({ ...header, b: { dtype: 'BF16', shape: [4, -1], data_offsets: [24, 32] } }, data)), 'ERR_SAFETENSORS_ENTRY', ['b']);
    await expectCode(write(build({ ...header, b: { dtype: 'BF16', shape: '4', data_offsets: [24, 32] } }, data)), 'ERR_SAFETENSORS_ENTRY', ['b']);
    await expectCode(write(build({ ...header, b: 7 }, data)), 'ERR_SAFETENSORS_ENTRY', ['b']);
  });

  test('chunked positional reads (large tensors are read at most IO_CHUNK_BYTES at a time) reassemble the bytes', async () => {
    expect(IO_CHUNK_BYTES).toBeLessThan(2 ** 31); // Node's fs binding aborts the process on reads of 2 GiB or more
    const g = normalGenerator(4);
    const bytes = Buffer.from(Array.from({ length: 1000 }, () => Math.floor(Math.abs(g()) * 97) & 0xff));
    const p = write(bytes);
    const fh = await open(p, 'r');
    try {
      for (const chunk of [1, 7, 64, 1 << 20]) {
        const buf = new Uint8Array(1003);
        await readFully(fh, buf, 3, 990, 10, p, 'probe', chunk);
        expect(Buffer.compare(Buffer.from(buf.subarray(3, 993)), bytes.subarray(10))).toBe(0);
        expect(Array.from(buf.subarray(0, 3)).concat(Array.from(buf.subarray(993)))).toEqual(new Array(13).fill(0)); // nothing written outside [3, 993)
      }
      const err = await readFully(fh, new Uint8Array(100), 0, 100, 950, p, 'tensor z', 16).catch((e) => e);
      expect(err).toMatchObject({ code: 'ERR_SAFETENSORS_TRUNCATED', message: expect.stringContaining('tensor z') });
    } finally {
      await fh.close();
    }
  });

  test('random corruption never raises anything but a GqaError', async () => {
    const { header, data } = validParts();
    const full = build(header, data);
    const g = normalGenerator(99);
    const codes = new Set<string>();
    let opened = 0;
    for (let k = 0; k < 400; k++) {
      const buf = Buffer.from(full);
      const edits = 1 + Math.floor(Math.abs(g()) * 3);
      for (let e = 0; e < edits; e++) {
        const at = Math.floor(Math.abs(g() * 0.4) * buf.length) % buf.length;
        buf[at] = Math.floor(Math.abs(g()) * 256) & 0xff;
      }
      const cut = k % 5 === 0 ? Math.floor(Math.abs(g() * 0.5) * buf.length) % buf.length : buf.length;
      const p = join(tmp, 'fuzz.safetensors');
      writeFileSync(p, buf.subarray(0, cut));
      try {
        const f = await SafetensorsFile.open(p);
        for (const name of f.tensors.keys()) await f.readFloat32(name);
        await f.close();
        opened++;
      } catch (e) {
        if (!(e instanceof GqaError)) throw e;
        codes.add(e.code);
      }
    }
    expect(codes.size).toBeGreaterThanOrEqual(4);
    expect(opened).toBeGreaterThan(0);
  });
});

describe('malformed checkpoints and indexes', () => {
  /** A sharded checkpoint dir with two valid shards and an index. */
  function sharded(name: string, weightMap?: Record<string, unknown>): string {
    const dir = join(tmp, name);
    mkdirSync(dir);
    const { header, data } = validParts();
    writeFileSync(join(dir, 'model-00001-of-00002.safetensors'), build({ a: header.a }, data.subarray(0, 24)));
    writeFileSync(join(dir, 'model-00002-of-00002.safetensors'), build({ b: { ...(header.b as Entry), data_offsets: [0, 8] } }, data.subarray(24)));
    const wm = weightMap ?? { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' };
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 32 }, weight_map: wm }));
    return dir;
  }

  async function expectOpenCode(dir: string, code: string, mention: string[]): Promise<void> {
    const err = await Checkpoint.open(dir).then(
      () => null,
      (e) => e,
    );
    expect(err).toBeInstanceOf(GqaError);
    expect({ code: err.code, exit: err.exitCode }).toEqual({ code, exit: 3 });
    for (const m of mention) expect(err.message).toContain(m);
  }

  test('valid sharded checkpoint opens', async () => {
    const ck = await Checkpoint.open(sharded('ok'));
    expect(ck.names()).toEqual(['a', 'b']);
    expect(ck.shards).toEqual(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
    expect(ck.totalBytes).toBe(32);
    await ck.close();
  });

  test('index naming a missing shard', () =>
    expectOpenCode(sharded('missing-shard', { a: 'model-00001-of-00002.safetensors', b: 'model-00003-of-00002.safetensors' }), 'ERR_INDEX_MISSING_SHARD', [
      'model.safetensors.index.json',
      'model-00003-of-00002.safetensors',
    ]));

  test('index weight_map naming a tensor missing from its shard', async () => {
    await expectOpenCode(
      sharded('missing-tensor', { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors', c: 'model-00002-of-00002.safetensors' }),
      'ERR_INDEX_MISSING_TENSOR',
      ['model.safetensors.index.json', 'tensor c'],
    );
    await expectOpenCode(sharded('wrong-shard', { a: 'model-00002-of-00002.safetensors', b: 'model-00002-of-00002.safetensors' }), 'ERR_INDEX_MISSING_TENSOR', [
      'tensor a in model-00002-of-00002.safetensors',
    ]);
  });

  test('index that is not JSON, lacks weight_map, or names a path outside the directory', async () => {
    const bad = sharded('bad-index');
    writeFileSync(join(bad, 'model.safetensors.index.json'), '{"weight_map": ');
    await expectOpenCode(bad, 'ERR_INDEX_JSON', ['model.safetensors.index.json']);
    writeFileSync(join(bad, 'model.safetensors.index.json'), '{"metadata": {}}');
    await expectOpenCode(bad, 'ERR_INDEX_JSON', ['weight_map']);
    writeFileSync(join(bad, 'model.safetensors.index.json'), '{"metadata": {"total_size": 0}, "weight_map": {}}');
    await expectOpenCode(bad, 'ERR_INDEX_JSON', ['weight_map is empty']);
    await expectOpenCode(sharded('escape', { a: '../case-0.safetensors' }), 'ERR_INDEX_JSON', ['../case-0.safetensors']);
  });

  test('a malformed shard is reported with its path', async () => {
    const dir = sharded('bad-shard');
    const p = join(dir, 'model-00002-of-00002.safetensors');
    const buf = readFileSync(p);
    writeFileSync(p, buf.subarray(0, buf.length - 2));
    await expectOpenCode(dir, 'ERR_SAFETENSORS_TRUNCATED', [p]);
  });

  test('the same tensor in two files, no weights at all, missing directory, unknown tensor', async () => {
    const dir = join(tmp, 'dup');
    mkdirSync(dir);
    const { header, data } = validParts();
    writeFileSync(join(dir, 'x.safetensors'), build(header, data));
    copyFileSync(join(dir, 'x.safetensors'), join(dir, 'y.safetensors'));
    await expectOpenCode(dir, 'ERR_DUPLICATE_TENSOR', ['y.safetensors', 'x.safetensors']);
    const empty = join(tmp, 'noweights');
    mkdirSync(empty);
    writeFileSync(join(empty, 'config.json'), '{}');
    await expectOpenCode(empty, 'ERR_NO_WEIGHTS', [empty]);
    await expectOpenCode(join(tmp, 'does-not-exist'), 'ERR_FILE_MISSING', ['does-not-exist']);
    const ck = await Checkpoint.open(join(dir, 'x.safetensors'));
    await expect(ck.read('zz')).rejects.toMatchObject({ code: 'ERR_TENSOR_MISSING' });
    expect(() => ck.info('zz')).toThrow(expect.objectContaining({ code: 'ERR_TENSOR_MISSING' }));
    await ck.close();
  });
});
