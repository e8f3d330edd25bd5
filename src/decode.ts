/**
 * Decode attention kernels for Multi-Head Latent Attention (absorbed form) and the GQA
 * baseline.
 *
 * MLA decode reads one latent row per cached token, `[latent (kvLoraRank) | k_rope
 * (ropeDim)]`, shared by all query heads: with the query already multiplied by W_UK
 * (`qLat`), scores are `scale * (qLat . latent + qRope . k_rope)` and the output
 * `oLat = softmax(scores) @ latent` (multiply by W_UV afterwards). When `qLen > 1`
 * (speculative / multi-token decode), query i of a request with `L` cached tokens sees the
 * first `L - qLen + 1 + i` of them. The log-sum-exp of the scores is returned per
 * (request, query, head); a query that sees no token gets zeros and `-Infinity`.
 *
 * The cache is paged (a block table of `pageSize`-token pages, as vLLM/FlashMLA) or
 * contiguous (`seqStride` tokens per request).
 *
 * - CPU ({@link mlaDecodeCpu}): float32 or bf16 cache, float32 queries and outputs,
 *   AVX-512 or AVX2/FMA when the CPU has them (else scalar), all threads (GQA2MLA_THREADS).
 * - CUDA ({@link getDecodeCuda}, {@link mlaDecodeCudaHost}): bf16 everything, float32
 *   LSE, Hopper (sm_90a) build; device buffers and split plans come from the native
 *   `decodeCuda` object.
 */
import type { NdArray } from 'ndarray';
import { GqaError } from './errors.js';
import {
  native,
  type NativeDecodeCuda,
  type NativeDecodePlan,
  type NativeDecodePlanOptions,
  type NativeDecodeTensors,
  type NativeDeviceBuffer,
} from './native/binding.js';

export type { NativeDecodeCuda, NativeDecodePlan, NativeDecodeTensors, NativeDeviceBuffer };

/** A flat row-major array, or an ndarray view of one (must be contiguous). */
export type ArrayLike<T extends Float32Array | Uint16Array | Int32Array> = T | NdArray<T>;

/** Input of {@link mlaDecodeCpu}. Shapes are row-major. */
export interface MlaDecodeCpuInput {
  /** [batch, qLen, heads, kvLoraRank] */
  qLat: ArrayLike<Float32Array>;
  /** [batch, qLen, heads, ropeDim] */
  qRope: ArrayLike<Float32Array>;
  /**
   * [numBlocks, pageSize, kvLoraRank + ropeDim] with `blockTable`, else [batch, seqStride,
   * kvLoraRank + ropeDim]; float32, or bf16 bit patterns in a Uint16Array.
   */
  cache: ArrayLike<Float32Array> | ArrayLike<Uint16Array>;
  /** cached tokens per request */
  seqLens: Int32Array | readonly number[];
  /** [batch, maxBlocks] page indices into `cache` (paged layout) */
  blockTable?: ArrayLike<Int32Array>;
  batch: number;
  heads: number;
  /** default 1 */
  qLen?: number;
  /** default 512 */
  kvLoraRank?: number;
  /** default 64 */
  ropeDim?: number;
  /** default 64 */
  pageSize?: number;
  /** contiguous layout: tokens per request (default: cache rows / batch) */
  seqStride?: number;
  /** the model's softmax scale (DeepSeek-V3: mscale^2 / sqrt(qk_nope_head_dim + qk_rope_head_dim)) */
  softmaxScale: number;
  /** preallocated outputs */
  out?: Float32Array;
  lse?: Float32Array;
  /** widest instruction set: true (default, widest the CPU has), 'avx2', 'avx512', or false (scalar) */
  simd?: boolean | 'avx2' | 'avx512';
  /** tokens per parallel piece of one request (default automatic) */
  pieceTokens?: number;
}

/** Output of {@link mlaDecodeCpu}. */
export interface MlaDecodeCpuResult {
  /** [batch, qLen, heads, kvLoraRank] */
  out: Float32Array;
  /** [batch, qLen, heads], natural log */
  lse: Float32Array;
  /** 'avx512', 'avx2-fma' or 'scalar' */
  kernel: string;
  /** parallel pieces the requests were cut into */
  pieces: number;
}

function flat<T extends Float32Array | Uint16Array | Int32Array>(name: string, x: ArrayLike<T>): T {
  if (ArrayBuffer.isView(x)) return x as T;
  const nd = x as NdArray<T>;
  if (!nd || !nd.data || !Array.isArray(nd.shape))
    throw new GqaError('ERR_INVALID_ARG', `${name} must be a TypedArray or an ndarray`, 'usage');
  let stride = 1;
  for (let i = nd.shape.length - 1; i >= 0; i--) {
    if (nd.shape[i] !== 1 && nd.stride[i] !== stride)
      throw new GqaError('ERR_INVALID_ARG', `${name} must be a contiguous row-major ndarray`, 'usage');
    stride *= nd.shape[i];
  }
  return (nd.data as T).subarray(nd.offset, nd.offset + nd.size) as T;
}

function positiveInt(name: string, v: number | undefined, dflt?: number, min = 1): number {
  const x = v ?? dflt;
  if (x === undefined || !Number.isInteger(x) || x < min)
    throw new GqaError('ERR_INVALID_ARG', `${name} must be an integer >= ${min} (got ${String(v)})`, 'usage');
  return x;
}

/**
 * Absorbed MLA decode attention on the CPU. Resolves when done; `out`/`lse` are allocated
 * unless given.
 *
 * @example
 * const { out, lse } = await mlaDecodeCpu({ qLat, qRope, cache, seqLens, blockTable,
 *   batch: 4, heads: 32, softmaxScale: 1 / Math.sqrt(192) });
 */
export async function mlaDecodeCpu(input: MlaDecodeCpuInput): Promise<MlaDecodeCpuResult> {
  const batch = positiveInt('batch', input.batch);
  const heads = positiveInt('heads', input.heads);
  const qLen = positiveInt('qLen', input.qLen, 1);
  const kvLoraRank = positiveInt('kvLoraRank', input.kvLoraRank, 512);
  const ropeDim = positiveInt('ropeDim', input.ropeDim, 64, 0);
  const rows = batch * qLen * heads;
  const qLat = flat('qLat', input.qLat);
  const qRope = ropeDim > 0 ? flat('qRope', input.qRope) : new Float32Array(0);
  const cache = flat('cache', input.cache as ArrayLike<Float32Array>) as Float32Array | Uint16Array;
  const seqLens = input.seqLens instanceof Int32Array ? input.seqLens : Int32Array.from(input.seqLens);
  if (seqLens.length !== batch)
    throw new GqaError('ERR_SHAPE', `seqLens has ${seqLens.length} entries, batch is ${batch}`, 'usage');
  const check = (name: string, have: number, want: number) => {
    if (have !== want) throw new GqaError('ERR_SHAPE', `${name} has ${have} elements, expected ${want}`, 'usage');
  };
  check('qLat', qLat.length, rows * kvLoraRank);
  if (ropeDim > 0) check('qRope', qRope.length, rows * ropeDim);
  const out = input.out ?? new Float32Array(rows * kvLoraRank);
  const lse = input.lse ?? new Float32Array(rows);
  check('out', out.length, rows * kvLoraRank);
  check('lse', lse.length, rows);
  if (!Number.isFinite(input.softmaxScale))
    throw new GqaError('ERR_INVALID_ARG', 'softmaxScale must be a finite number', 'usage');
  const r = await native.mlaDecodeCpuAsync({
    qLat,
    qRope: ropeDim > 0 ? qRope : qLat,
    cache,
    seqLens,
    blockTable: input.blockTable ? flat('blockTable', input.blockTable) : undefined,
    batch,
    qLen,
    heads,
    kvLoraRank,
    ropeDim,
    pageSize: input.pageSize,
    seqStride: input.seqStride,
    softmaxScale: input.softmaxScale,
    out,
    lse,
    simd: input.simd,
    pieceTokens: input.pieceTokens,
  });
  return { out, lse, kernel: r.kernel, pieces: r.pieces };
}

/** True when the addon was built with CUDA and a GPU answers. */
export function cudaDecodeAvailable(): boolean {
  if (!native.buildInfo().cuda || !native.decodeCuda) return false;
  try {
    native.decodeCuda.deviceInfo();
    return true;
  } catch {
    return false;
  }
}

/** The native CUDA decode object; throws GqaError ERR_NO_CUDA in a CPU-only build. */
export function getDecodeCuda(): NativeDecodeCuda {
  const dc = native.decodeCuda;
  if (!dc)
    throw new GqaError(
      'ERR_NO_CUDA',
      'this build of the gqa2mla addon has no CUDA kernels; rebuild with `npm run build:cuda`',
      'runtime',
    );
  return dc;
}

/** float32 -> bf16 bit patterns, round to nearest even (NaN stays NaN). */
export function f32ToBf16(x: Float32Array): Uint16Array {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = u[i];
    if ((v & 0x7fffffff) > 0x7f800000) out[i] = (v >>> 16) | 0x40;
    else out[i] = (v + 0x7fff + ((v >>> 16) & 1)) >>> 16;
  }
  return out;
}

/** bf16 bit patterns -> float32. */
export function bf16ToF32(x: Uint16Array): Float32Array {
  const out = new Float32Array(x.length);
  const u = new Uint32Array(out.buffer);
  for (let i = 0; i < x.length; i++) u[i] = x[i] << 16;
  return out;
}

/** Host-side input of {@link mlaDecodeCudaHost} / {@link gqaDecodeCudaHost}: bf16 bit patterns. */
export interface DecodeCudaHostInput {
  batch: number;
  heads: number;
  qLen?: number;
  seqLens: Int32Array;
  blockTable?: Int32Array;
  pageSize?: number;
  seqStride?: number;
  softmaxScale: number;
}

/** Result of the host-convenience CUDA calls. */
export interface DecodeCudaHostResult {
  /** bf16 bit patterns [batch, qLen, heads, dv] */
  out: Uint16Array;
  lse: Float32Array;
  plan: NativeDecodePlan;
}

function upload(dc: NativeDecodeCuda, a: ArrayBufferView): NativeDeviceBuffer {
  const b = dc.alloc(Math.max(a.byteLength, 16));
  if (a.byteLength > 0) dc.upload(b, a);
  return b;
}

async function runHost(
  dc: NativeDecodeCuda,
  plan: NativeDecodePlan,
  bufs: Omit<NativeDecodeTensors, 'out' | 'lse'>,
  rows: number,
  dv: number,
  scale: number,
): Promise<DecodeCudaHostResult> {
  const out = dc.alloc(rows * dv * 2);
  const lse = dc.alloc(rows * 4);
  const all = [...Object.values(bufs), out, lse] as NativeDeviceBuffer[];
  try {
    await dc.decodeAsync(plan, { ...bufs, out, lse }, scale);
    const o = new Uint16Array(rows * dv);
    const l = new Float32Array(rows);
    dc.download(out, o);
    dc.download(lse, l);
    return { out: o, lse: l, plan };
  } finally {
    for (const b of all) if (b) dc.free(b);
  }
}

/** The host arrays a decode kind uploads besides the block table (bf16 bit patterns). */
type HostTensors = Partial<Record<'qLat' | 'qRope' | 'cache' | 'q' | 'kCache' | 'vCache', Uint16Array>>;

/**
 * One host-convenience decode: plans `kind` over `input`'s geometry (a contiguous cache's
 * default `seqStride` is `cache.values / cache.perToken / batch`), uploads `tensors` and the
 * block table, runs, and downloads the [rows, dv] output and the LSE.
 */
async function decodeHost(
  input: DecodeCudaHostInput,
  kind: Pick<NativeDecodePlanOptions, 'kind' | 'kvHeads' | 'headDim'>,
  tensors: HostTensors,
  cache: { values: number; perToken: number },
  dv: number,
): Promise<DecodeCudaHostResult> {
  const dc = getDecodeCuda();
  const qLen = input.qLen ?? 1;
  const plan = dc.plan({
    ...kind,
    seqLens: input.seqLens,
    batch: input.batch,
    qLen,
    heads: input.heads,
    pageSize: input.pageSize ?? 64,
    maxBlocks: input.blockTable ? input.blockTable.length / input.batch : 0,
    seqStride: input.blockTable ? 0 : (input.seqStride ?? cache.values / cache.perToken / input.batch),
  });
  const bufs: Omit<NativeDecodeTensors, 'out' | 'lse'> = Object.fromEntries(Object.entries(tensors).map(([name, a]) => [name, upload(dc, a)]));
  bufs.blockTable = input.blockTable ? upload(dc, input.blockTable) : undefined;
  return runHost(dc, plan, bufs, input.batch * qLen * input.heads, dv, input.softmaxScale);
}

/**
 * MLA decode on the GPU from host arrays (uploads, runs, downloads; for tests and simple
 * use — a serving loop keeps its buffers on the device and calls `decodeCuda` directly).
 * `qLat`, `qRope`, `cache` are bf16 bit patterns; the kernel is built for 512 + 64.
 */
export async function mlaDecodeCudaHost(
  input: DecodeCudaHostInput & { qLat: Uint16Array; qRope: Uint16Array; cache: Uint16Array },
): Promise<DecodeCudaHostResult> {
  const tensors = { qLat: input.qLat, qRope: input.qRope, cache: input.cache };
  return decodeHost(input, { kind: 'mla' }, tensors, { values: input.cache.length, perToken: 576 }, 512);
}

/**
 * GQA decode on the GPU from host arrays: q [batch, qLen, heads, 128], K/V caches
 * [numBlocks, pageSize, kvHeads, 128] (paged) or [batch, seqStride, kvHeads, 128], bf16.
 */
export async function gqaDecodeCudaHost(
  input: DecodeCudaHostInput & { kvHeads: number; q: Uint16Array; kCache: Uint16Array; vCache: Uint16Array },
): Promise<DecodeCudaHostResult> {
  const tensors = { q: input.q, kCache: input.kCache, vCache: input.vCache };
  return decodeHost(input, { kind: 'gqa', kvHeads: input.kvHeads, headDim: 128 }, tensors, { values: input.kCache.length, perToken: input.kvHeads * 128 }, 128);
}
