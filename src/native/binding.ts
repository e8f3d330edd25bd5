/**
 * The one file that types the native addon. Every export of `native/addon.cc` is
 * declared here; the rest of the TypeScript code imports `native` from this module.
 *
 * Conventions of the addon: TypedArray arguments are read in place (no copies);
 * functions named `*Async` run on the libuv thread pool and return Promises; bad
 * arguments throw TypeError/RangeError with `code` (ERR_INVALID_ARG_TYPE, ERR_SHAPE,
 * ERR_OUT_OF_RANGE); solver failures reject with an Error carrying `code` and `info`.
 */
import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Facts about the build of the addon and the CPU it runs on. */
export interface BuildInfo {
  cuda: boolean;
  blas: string;
  blasConfig: string;
  blasThreads: number;
  threads: number;
  avx2: boolean;
  napiVersion: number;
}

/* ---- linalg (native/linalg.cc) ---- */
/** Dense float data for the linear-algebra exports; all arrays of one call share a dtype. */
export type FloatArray = Float32Array | Float64Array;

/** Options of `eigh` / `eighAsync`: optional preallocated outputs (same dtype as `a`). */
export interface NativeEighOptions<T extends FloatArray> {
  /** n eigenvalues (descending); allocated when absent */
  values?: T;
  /** n x n row-major, column j = eigenvector j; may be `a` itself (then `a` is overwritten) */
  vectors?: T;
  /** reject non-finite input with ERR_NONFINITE before LAPACK sees it (default true) */
  checkFinite?: boolean;
}

/** Options of `svd` / `svdAsync`. */
export interface NativeSvdOptions<T extends FloatArray> {
  /** full U (m x m) and Vt (n x n) instead of thin (m x k, k x n), k = min(m, n) */
  full?: boolean;
  /** false: singular values only (u and vt are null) */
  computeUV?: boolean;
  /** preallocated outputs (same dtype as `a`, exact lengths) */
  u?: T;
  s?: T;
  vt?: T;
  /** let LAPACK destroy `a` instead of working on an internal scratch copy (default false) */
  overwrite?: boolean;
  /** reject non-finite input with ERR_NONFINITE (default true) */
  checkFinite?: boolean;
}

/** Options of `gemm` / `gemmAsync`. */
export interface NativeGemmOptions {
  transA?: boolean;
  transB?: boolean;
  /** default 1 */
  alpha?: number;
  /** default 0 (C's old contents are ignored, NaN included) */
  beta?: number;
}

/** The arguments of `gemm` / `gemmAsync`, in BLAS order (C is m x n, the inner dimension k last). */
export type NativeGemmArgs<T extends FloatArray> = [a: T, b: T, c: T, m: number, n: number, k: number, options?: NativeGemmOptions];

// Linear algebra, merged into NativeBinding below (declaration merging keeps each
// feature's section self-contained). Row-major everywhere; inputs read in place.
export interface NativeBinding {
  /**
   * Symmetric eigendecomposition (LAPACK ?syevd) of row-major `a` (n x n). Only the upper
   * triangle (`a[i*n+j]`, j >= i) is read. `a` is not modified unless it is passed as
   * `options.vectors`. Eigenvalues are descending; column j of `vectors` is eigenvector j.
   * @throws TypeError ERR_INVALID_ARG_TYPE / ERR_DTYPE, RangeError ERR_SHAPE / ERR_OUT_OF_RANGE /
   *   ERR_ALIAS, Error ERR_NONFINITE, Error ERR_LAPACK (with `info`)
   */
  eigh<T extends FloatArray>(a: T, n: number, options?: NativeEighOptions<T>): { values: T; vectors: T };
  /** `eigh` on the libuv pool; argument errors throw synchronously, solver errors reject. */
  eighAsync<T extends FloatArray>(a: T, n: number, options?: NativeEighOptions<T>): Promise<{ values: T; vectors: T }>;
  /**
   * SVD (LAPACK ?gesdd) of row-major `a` (m x n) = U diag(s) Vt, s descending (length
   * min(m, n)). `a` is untouched unless `options.overwrite`.
   * @throws as `eigh`
   */
  svd<T extends FloatArray>(a: T, m: number, n: number, options?: NativeSvdOptions<T>): { u: T | null; s: T; vt: T | null };
  /** `svd` on the libuv pool. */
  svdAsync<T extends FloatArray>(
    a: T,
    m: number,
    n: number,
    options?: NativeSvdOptions<T>,
  ): Promise<{ u: T | null; s: T; vt: T | null }>;
  /**
   * C (m x n) = alpha op(A) op(B) + beta C (BLAS ?gemm), row-major, in place; op(A) is
   * m x k (A stored k x m when transA), op(B) is k x n (stored n x k when transB). Returns c.
   * Dimensions may be 0. c must not share memory with a or b (ERR_ALIAS).
   */
  gemm<T extends FloatArray>(...args: NativeGemmArgs<T>): T;
  /** `gemm` on the libuv pool; resolves with c. */
  gemmAsync<T extends FloatArray>(...args: NativeGemmArgs<T>): Promise<T>;
  /**
   * C (n x n, float64) += alpha X^T X for row-major X (rows x n, float32 or float64),
   * accumulated in float64 (dsyrk). C must be symmetric on entry: its upper triangle is
   * updated and copied onto the lower one. Returns c.
   */
  syrkAccumulate(c: Float64Array, x: FloatArray, rows: number, n: number, alpha?: number): Float64Array;
  /** `syrkAccumulate` on the libuv pool; resolves with c. */
  syrkAccumulateAsync(c: Float64Array, x: FloatArray, rows: number, n: number, alpha?: number): Promise<Float64Array>;
}

/* ---- element types and reductions of the conversion (native/dtype_convert.cc, native/conversion_reduce.cc) ---- */
/** Stored 16-bit element types. */
export type NativeHalfDtype = 'BF16' | 'F16';

// Multithreaded, each also as a Promise (`*Async`, libuv pool; argument errors throw
// synchronously). Bit-exact with src/checkpoint/dtype.ts (round to nearest even, NaN kept NaN
// with the quiet bit set, f16 overflow to infinity and subnormals). Source and output must
// not overlap (ERR_ALIAS), except roundFloat32's output being its source.
export interface NativeBinding {
  /** out[i] = float32 value of the bf16/f16 bits src[i]. */
  widen16(src: Uint16Array, dtype: NativeHalfDtype, out: Float32Array): void;
  widen16Async(src: Uint16Array, dtype: NativeHalfDtype, out: Float32Array): Promise<void>;
  /** out[i] = bf16/f16 bits of src[i]. */
  narrow16(src: Float32Array, dtype: NativeHalfDtype, out: Uint16Array): void;
  narrow16Async(src: Float32Array, dtype: NativeHalfDtype, out: Uint16Array): Promise<void>;
  /** out[i] = src[i] rounded to the precision of `dtype`, as float32 (out may be src). */
  roundFloat32(src: Float32Array, dtype: NativeHalfDtype, out: Float32Array): void;
  roundFloat32Async(src: Float32Array, dtype: NativeHalfDtype, out: Float32Array): Promise<void>;
  /** out = [sum (a - b)^2, sum b^2] over the first b.length values, in float64. */
  squaredDiffSums(a: Float32Array, b: Float32Array, out: Float64Array): void;
  squaredDiffSumsAsync(a: Float32Array, b: Float32Array, out: Float64Array): Promise<void>;
  /**
   * With v = c[t, :] + bias over `rows` rows of `dim`: out = [largest per-row mean(v^2) (NaN
   * when any v is NaN), smallest non-zero |v| (Infinity when none)], in float64.
   */
  latentRowStats(c: Float32Array, bias: Float32Array | null, out: Float64Array, options: { rows: number; dim: number }): void;
  latentRowStatsAsync(c: Float32Array, bias: Float32Array | null, out: Float64Array, options: { rows: number; dim: number }): Promise<void>;
}

/* ---- forward kernels (native/forward_*.cc) ---- */
/** Options of `rmsNorm`: rows of `dim` values, optionally strided. */
export interface NativeRmsNormOptions {
  rows: number;
  dim: number;
  /** default 1e-6 */
  eps?: number;
  /** elements between row starts of x (default dim) */
  xStride?: number;
  /** elements between row starts of out (default dim) */
  outStride?: number;
}

/** Options of `linear`. */
export interface NativeLinearOptions {
  rows: number;
  inDim: number;
  outDim: number;
  /** outDim values added to every output row */
  bias?: Float32Array | null;
  /** elements between row starts of x (default inDim) */
  xStride?: number;
  /** elements between row starts of out (default outDim) */
  outStride?: number;
  /** add to out instead of overwriting it (residual connections) */
  accumulate?: boolean;
}

/** Options of `rope`: which dims of which heads of each row rotate. */
export interface NativeRopeOptions {
  /** elements between row starts */
  rowStride: number;
  nHeads: number;
  /** elements between head starts within a row */
  headStride: number;
  /** first rotated dim within a head (default 0) */
  offset?: number;
  /** rotated dims per head (even) */
  rotDim: number;
  /** cos/sin multiplier: the rope type's attention scaling (default 1) */
  scale?: number;
  /** pairs (2i, 2i+1) instead of HF rotate-half pairs (i, i + rotDim/2) (default false) */
  interleave?: boolean;
}

/** Options of `attention` (see native/forward_attention.cc for the exact semantics). */
export interface NativeAttentionOptions {
  nSeq: number;
  seqLen: number;
  nHeads: number;
  nKvHeads: number;
  /** dims of the per-KV-head key part (and of the matching query prefix) */
  qkDim: number;
  vDim: number;
  /** softmax scale applied to q.k */
  scale: number;
  /** defaults: dense [rows, heads, dim] layouts */
  qRowStride?: number;
  qHeadStride?: number;
  kRowStride?: number;
  kHeadStride?: number;
  vRowStride?: number;
  vHeadStride?: number;
  /** MLA: one rope key per row shared by all heads, matched by q dims [qkDim, qkDim+ropeDim) */
  kRope?: Float32Array | null;
  ropeDim?: number;
  kRopeRowStride?: number;
  /** sliding window: keys u with t - u < window only (0 = unlimited) */
  window?: number;
}

/** Options of `logSoftmaxNll`. */
export interface NativeNllOptions {
  rows: number;
  vocab: number;
}

/** Options of `lmHeadNll`. */
export interface NativeLmHeadOptions {
  rows: number;
  hiddenDim: number;
  vocab: number;
  /** rows of logits materialised at once (default ~32 MiB worth, 32..1024 rows) */
  chunkRows?: number;
}

// Forward-pass kernels, float32, multithreaded (GQA2MLA_THREADS), each also as a Promise
// (`*Async`, libuv pool; argument errors throw synchronously). Arrays are read and written
// in place; views (`subarray`) address strided parts of larger buffers.
export interface NativeBinding {
  /** out[r, :] = table[ids[r], :] (table [vocab, hidden]); ids outside [0, vocab) throw ERR_OUT_OF_RANGE. */
  embedGather(table: Float32Array, ids: Int32Array, out: Float32Array, hidden: number): void;
  embedGatherAsync(table: Float32Array, ids: Int32Array, out: Float32Array, hidden: number): Promise<void>;
  /** out[r] = weight * x[r] / sqrt(mean(x[r]^2) + eps) (HF RMSNorm; weight null = none); out may be x. */
  rmsNorm(x: Float32Array, weight: Float32Array | null, out: Float32Array, options: NativeRmsNormOptions): void;
  rmsNormAsync(x: Float32Array, weight: Float32Array | null, out: Float32Array, options: NativeRmsNormOptions): Promise<void>;
  /** out[r, :] (+)= x[r, :] W^T + bias, W [outDim, inDim] row-major (sgemm). out must not alias x. */
  linear(x: Float32Array, w: Float32Array, out: Float32Array, options: NativeLinearOptions): void;
  linearAsync(x: Float32Array, w: Float32Array, out: Float32Array, options: NativeLinearOptions): Promise<void>;
  /** out[i] = silu(gate[i]) * up[i] for i < n; out may alias gate or up. */
  swiglu(gate: Float32Array, up: Float32Array, out: Float32Array, n: number): void;
  swigluAsync(gate: Float32Array, up: Float32Array, out: Float32Array, n: number): Promise<void>;
  /** Rotary embedding in place; row r is at position positions[r]; invFreq has rotDim/2 entries. */
  rope(x: Float32Array, positions: Int32Array, invFreq: Float32Array, options: NativeRopeOptions): void;
  ropeAsync(x: Float32Array, positions: Int32Array, invFreq: Float32Array, options: NativeRopeOptions): Promise<void>;
  /** Causal attention with an online softmax over key blocks; out is [nSeq*seqLen, nHeads*vDim]. */
  attention(q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array, options: NativeAttentionOptions): void;
  attentionAsync(q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array, options: NativeAttentionOptions): Promise<void>;
  /** out[r] = logsumexp(logits[r]) - logits[r, targets[r]] (0 where targets[r] < 0). */
  logSoftmaxNll(logits: Float32Array, targets: Int32Array, out: Float64Array | Float32Array, options: NativeNllOptions): void;
  logSoftmaxNllAsync(
    logits: Float32Array,
    targets: Int32Array,
    out: Float64Array | Float32Array,
    options: NativeNllOptions,
  ): Promise<void>;
  /** `logSoftmaxNll` of logits = hidden W^T (W [vocab, hiddenDim]), chunked over rows. */
  lmHeadNll(hidden: Float32Array, w: Float32Array, targets: Int32Array, out: Float64Array | Float32Array, options: NativeLmHeadOptions): void;
  lmHeadNllAsync(
    hidden: Float32Array,
    w: Float32Array,
    targets: Int32Array,
    out: Float64Array | Float32Array,
    options: NativeLmHeadOptions,
  ): Promise<void>;
}

/* ---- decode kernels (native/decode_*.cc) ---- */
/** Options of `mlaDecodeCpuAsync` (native/decode_mla_cpu.cc); all arrays are read in place. */
export interface NativeMlaDecodeCpuOptions {
  /** [batch, qLen, heads, kvLoraRank] float32 (the query already multiplied by W_UK) */
  qLat: Float32Array;
  /** [batch, qLen, heads, ropeDim] float32 */
  qRope: Float32Array;
  /**
   * Latent cache, one row of kvLoraRank + ropeDim values ([latent | k_rope]) per token,
   * float32 or bf16 bit patterns (Uint16Array). Paged [numBlocks, pageSize, row] with a
   * `blockTable`, else contiguous [batch, seqStride, row].
   */
  cache: Float32Array | Uint16Array;
  /** tokens in the cache per request (>= 0) */
  seqLens: Int32Array;
  /** [batch, maxBlocks] block indices (paged layout); entries of used pages are range-checked */
  blockTable?: Int32Array;
  batch: number;
  /** queries per request (1 or 2 for decode; causal when > 1); default 1 */
  qLen?: number;
  heads: number;
  /** default 512 */
  kvLoraRank?: number;
  /** default 64 */
  ropeDim?: number;
  /** tokens per page (paged layout), default 64 */
  pageSize?: number;
  /** tokens per request (contiguous layout), default cache rows / batch */
  seqStride?: number;
  softmaxScale: number;
  /** output [batch, qLen, heads, kvLoraRank] float32 */
  out: Float32Array;
  /** output log-sum-exp [batch, qLen, heads] (natural log; -Infinity for no visible token) */
  lse: Float32Array;
  /**
   * Widest instruction set to use: true (default: AVX-512, else AVX2/FMA, as the CPU has
   * them), 'avx2' (at most AVX2/FMA), 'avx512', or false (scalar kernel).
   */
  simd?: boolean | 'avx2' | 'avx512';
  /** tokens per parallel piece of a request (default: enough pieces for all threads) */
  pieceTokens?: number;
}

/** What `mlaDecodeCpuAsync` ran. */
export interface NativeMlaDecodeCpuResult {
  kernel: 'avx512' | 'avx2-fma' | 'scalar';
  pieces: number;
  threads: number;
}

/** An allocation of GPU memory owned by a JS object (freed by `free` or when collected). */
export interface NativeDeviceBuffer {
  readonly bytes: number;
  readonly handle: unknown;
}

/** A split schedule for one decode shape and one set of sequence lengths (`decodeCuda.plan`). */
export interface NativeDecodePlan {
  readonly handle: unknown;
  readonly kind: 'mla' | 'gqa';
  /** kernel instance, e.g. 'mla576x512.m16' */
  readonly kernel: string;
  /** persistent parts (grid rows) */
  readonly numParts: number;
  /** query-row blocks per KV head */
  readonly mBlocks: number;
  readonly numSegments: number;
  /** partial-result slots of requests cut into several pieces */
  readonly numSlots: number;
  readonly maxSplits: number;
  readonly ctasPerSm: number;
  readonly rowsPerCta: number;
  readonly smCount: number;
}

/** Options of `decodeCuda.plan`. */
export interface NativeDecodePlanOptions {
  kind: 'mla' | 'gqa';
  seqLens: Int32Array;
  batch: number;
  qLen?: number;
  /** query heads */
  heads: number;
  /** GQA only: KV heads (heads must be a multiple) */
  kvHeads?: number;
  /** MLA only: default 512 (the CUDA kernel is built for 512 + 64) */
  kvLoraRank?: number;
  ropeDim?: number;
  /** GQA only: default 128 (the CUDA kernel is built for 128) */
  headDim?: number;
  /** paged layout: tokens per page (multiple of 32, default 64) and block-table row length */
  pageSize?: number;
  maxBlocks?: number;
  /** contiguous layout: tokens per request */
  seqStride?: number;
  /**
   * Kernel instance by name (benchmarks and tests), e.g. 'mla576x512.m32.w8.ov'; by default
   * chosen from the query rows per KV head. An unknown name is ERR_UNSUPPORTED.
   */
  kernel?: string;
}

/**
 * Device buffers of one decode call, all bf16 except `blockTable` (int32) and `lse`
 * (float32). MLA: qLat, qRope, cache; GQA: q [batch, qLen, heads, headDim], kCache and
 * vCache ([numBlocks, pageSize, kvHeads, headDim] paged, or [batch, seqStride, ...]).
 */
export interface NativeDecodeTensors {
  qLat?: NativeDeviceBuffer;
  qRope?: NativeDeviceBuffer;
  cache?: NativeDeviceBuffer;
  q?: NativeDeviceBuffer;
  kCache?: NativeDeviceBuffer;
  vCache?: NativeDeviceBuffer;
  blockTable?: NativeDeviceBuffer;
  /** [batch, qLen, heads, dv] bf16 */
  out: NativeDeviceBuffer;
  /** [batch, qLen, heads] float32 */
  lse: NativeDeviceBuffer;
}

/** The CUDA decode kernels (native/decode_cuda.cc), present in the CUDA build only. */
export interface NativeDecodeCuda {
  deviceInfo(): {
    name: string;
    smCount: number;
    computeCapability: string;
    totalMemory: number;
    l2Bytes: number;
    runtimeVersion: number;
    driverVersion: number;
  };
  alloc(bytes: number): NativeDeviceBuffer;
  free(buffer: NativeDeviceBuffer): void;
  /** Copies a TypedArray's bytes to `buffer` at `byteOffset` (synchronous). */
  upload(buffer: NativeDeviceBuffer, source: ArrayBufferView, byteOffset?: number): void;
  /** Copies `destination.byteLength` bytes from `buffer` at `byteOffset` (synchronous). */
  download(buffer: NativeDeviceBuffer, destination: ArrayBufferView, byteOffset?: number): void;
  /** Fills `count` bf16 values with uniform [-scale, scale) numbers hashed from (seed, index). */
  fillRandomBf16(buffer: NativeDeviceBuffer, count: number, seed: number, scale: number): void;
  /** Device-to-device copy bandwidth in GB/s, counting bytes read plus bytes written (median). */
  copyBandwidth(bytes: number, iters: number): number;
  plan(options: NativeDecodePlanOptions): NativeDecodePlan;
  /** Runs the attention (and the LSE merge of split requests); resolves when the GPU is done. */
  decodeAsync(plan: NativeDecodePlan, tensors: NativeDecodeTensors, softmaxScale: number): Promise<void>;
  /**
   * Times `iters` runs with CUDA events after `warmup` untimed ones; the L2 cache is flushed
   * before each timed run.
   */
  benchAsync(
    plan: NativeDecodePlan,
    tensors: NativeDecodeTensors,
    softmaxScale: number,
    options?: { warmup?: number; iters?: number },
  ): Promise<{ ms: number[]; medianMs: number; minMs: number }>;
}

// Decode attention kernels: absorbed MLA on the CPU, MLA and GQA on the GPU.
export interface NativeBinding {
  /**
   * Absorbed MLA decode attention on the CPU (float32 math, AVX-512, AVX2/FMA or scalar,
   * multithreaded). Argument errors throw synchronously (TypeError ERR_INVALID_ARG_TYPE,
   * RangeError ERR_SHAPE / ERR_OUT_OF_RANGE).
   */
  mlaDecodeCpuAsync(options: NativeMlaDecodeCpuOptions): Promise<NativeMlaDecodeCpuResult>;
  /**
   * memcpy bandwidth of this machine over all threads (median of `iters` copies of `bytes`),
   * in GB/s counting bytes read plus bytes written; `check` is a byte of the copy.
   */
  cpuCopyBandwidth(bytes: number, iters: number): { gbps: number; threads: number; check: number };
  /** CUDA decode kernels; undefined unless the addon was built with -DGQA2MLA_CUDA=ON. */
  decodeCuda?: NativeDecodeCuda;
}

/* ---- conversion on the GPU (native/memory_cuda.cc, forward_cuda.cc, linalg_cuda.cc) ---- */
/**
 * A device allocation (or a view of one, `convertCuda.view`) owned by a JS object: freed by
 * `convertCuda.free` or when the allocation and all its views are collected.
 */
export interface NativeCudaBuffer {
  readonly bytes: number;
  readonly byteOffset: number;
  readonly handle: unknown;
}

/** Element types the device copies and converts. */
export type NativeCudaDtype = 'F32' | 'BF16' | 'F16';

/** Device-memory accounting of the conversion exports (bytes). */
export interface NativeCudaMemStats {
  /** held now by convertCuda buffers and internal scratch */
  allocated: number;
  peakAllocated: number;
  /** total minus free memory of the whole device, now and its peak over the samples taken */
  deviceUsed: number;
  peakDeviceUsed: number;
  deviceTotal: number;
}

/** Options of `convertCuda.linear`: as `NativeLinearOptions`, with the weights' device dtype. */
export interface NativeCudaLinearOptions {
  rows: number;
  inDim: number;
  outDim: number;
  /** 'BF16': x is rounded to bf16 and multiplied with bf16 weights; 'F32': float32 throughout; float32 accumulation either way */
  wDtype: 'BF16' | 'F32';
  bias?: NativeCudaBuffer | null;
  xStride?: number;
  outStride?: number;
  accumulate?: boolean;
}

/** Options of `convertCuda.attention`: `NativeAttentionOptions` with a device `kRope`. */
export interface NativeCudaAttentionOptions extends Omit<NativeAttentionOptions, 'kRope'> {
  kRope?: NativeCudaBuffer | null;
}

/**
 * The conversion's CUDA exports, present in the CUDA build only. Kernels are queued on one
 * compute stream in call order and return at once; `download`, `synchronize` and
 * `synchronizeAsync` wait for them. Argument errors throw like the CPU kernels (TypeError
 * ERR_INVALID_ARG_TYPE, RangeError ERR_SHAPE / ERR_OUT_OF_RANGE / ERR_DTYPE); CUDA, cuBLAS
 * and cuSOLVER failures throw or reject with code ERR_CUDA (ERR_CUSOLVER with `info`).
 */
export interface NativeConvertCuda {
  /** Whether a CUDA device is present (false without a driver; never throws). */
  available(): boolean;
  deviceInfo(): {
    name: string;
    smCount: number;
    computeCapability: string;
    totalMemory: number;
    runtimeVersion: number;
    driverVersion: number;
  };
  memStats(): NativeCudaMemStats;
  /** Restarts the peak marks from the current use. */
  resetPeak(): void;
  alloc(bytes: number): NativeCudaBuffer;
  /** `bytes` bytes of `buffer` from `byteOffset` (shares the allocation). */
  view(buffer: NativeCudaBuffer, byteOffset: number, bytes: number): NativeCudaBuffer;
  free(buffer: NativeCudaBuffer): void;
  /** Copies a TypedArray's bytes to `buffer` at `byteOffset` (the source may be reused on return). */
  upload(buffer: NativeCudaBuffer, source: ArrayBufferView, byteOffset?: number): void;
  /** Copies `destination.byteLength` bytes from `buffer` at `byteOffset` after all queued work. */
  download(buffer: NativeCudaBuffer, destination: ArrayBufferView, byteOffset?: number): void;
  /** Device-to-device copy of `bytes` bytes (queued). */
  copy(destination: NativeCudaBuffer, source: NativeCudaBuffer, bytes: number): void;
  /** Sets every byte of `buffer` to `value` (queued). */
  fill(buffer: NativeCudaBuffer, value: number): void;
  /**
   * Converts `count` elements (queued); narrowing rounds to nearest even and keeps NaN with
   * the quiet bit set, bit-identical to `encodeFloat32`; widening is exact.
   */
  convert(source: NativeCudaBuffer, srcDtype: NativeCudaDtype, destination: NativeCudaBuffer, dstDtype: NativeCudaDtype, count: number): void;
  synchronize(): void;
  /** Resolves once the work queued so far is done (waits on the libuv pool). */
  synchronizeAsync(): Promise<void>;
  /** `rmsNorm` on device buffers (float32; the mean square accumulated in float64). */
  rmsNorm(x: NativeCudaBuffer, weight: NativeCudaBuffer | null, out: NativeCudaBuffer, options: NativeRmsNormOptions): void;
  /** `rope` on device buffers: positions int32 (rows entries), invFreq float32 (rotDim / 2). */
  rope(x: NativeCudaBuffer, positions: NativeCudaBuffer, invFreq: NativeCudaBuffer, options: NativeRopeOptions & { rows: number }): void;
  swiglu(gate: NativeCudaBuffer, up: NativeCudaBuffer, out: NativeCudaBuffer, n: number): void;
  /** out (+)= x W^T + bias through cuBLAS (W [outDim, inDim] in `wDtype`); out must not alias x. */
  linear(x: NativeCudaBuffer, w: NativeCudaBuffer, out: NativeCudaBuffer, options: NativeCudaLinearOptions): void;
  /** Causal attention with an online softmax, semantics of `attention`; vDim <= 512, qkDim + ropeDim <= 576. */
  attention(q: NativeCudaBuffer, k: NativeCudaBuffer, v: NativeCudaBuffer, out: NativeCudaBuffer, options: NativeCudaAttentionOptions): void;
  /** c (n x n float64) += X^T X (one triangle), sum (n float64) += column sums, X rows x n float32 (float64 DSYRK). */
  momentsAdd(c: NativeCudaBuffer, sum: NativeCudaBuffer, x: NativeCudaBuffer, rows: number, n: number): void;
  /** c = symmetric c / count, sum = sum / count. */
  momentsFinish(c: NativeCudaBuffer, sum: NativeCudaBuffer, n: number, count: number): void;
  /** Symmetric eigendecomposition (cuSOLVER Xsyevd), conventions of `eigh` (float64 only); `seconds`: solver GPU time. */
  eigh(a: Float64Array, n: number, options?: { values?: Float64Array; vectors?: Float64Array; checkFinite?: boolean }): { values: Float64Array; vectors: Float64Array; seconds: number };
  eighAsync(
    a: Float64Array,
    n: number,
    options?: { values?: Float64Array; vectors?: Float64Array; checkFinite?: boolean },
  ): Promise<{ values: Float64Array; vectors: Float64Array; seconds: number }>;
  /** SVD (cuSOLVER Xgesvd), conventions of `svd` (float64 only). */
  svd(
    a: Float64Array,
    m: number,
    n: number,
    options?: { full?: boolean; computeUV?: boolean; u?: Float64Array; s?: Float64Array; vt?: Float64Array; checkFinite?: boolean },
  ): { u: Float64Array | null; s: Float64Array; vt: Float64Array | null; seconds: number };
  svdAsync(
    a: Float64Array,
    m: number,
    n: number,
    options?: { full?: boolean; computeUV?: boolean; u?: Float64Array; s?: Float64Array; vt?: Float64Array; checkFinite?: boolean },
  ): Promise<{ u: Float64Array | null; s: Float64Array; vt: Float64Array | null; seconds: number }>;
  /** `gemm` in float64 on the GPU (cuBLAS DGEMM); a and b may be float64 device buffers. Blocks; returns c. */
  gemm(
    a: Float64Array | NativeCudaBuffer,
    b: Float64Array | NativeCudaBuffer,
    c: Float64Array,
    m: number,
    n: number,
    k: number,
    options?: NativeGemmOptions,
  ): Float64Array;
}

// GPU conversion kernels (CUDA build only).
export interface NativeBinding {
  /** Conversion kernels on the GPU; undefined unless the addon was built with -DGQA2MLA_CUDA=ON. */
  convertCuda?: NativeConvertCuda;
}

/** The addon's exports. */
export interface NativeBinding {
  buildInfo(): BuildInfo;
}

const require = createRequire(import.meta.url);

/**
 * The addon file: GQA2MLA_ADDON when set, else node-gyp-build's choice — a local build
 * (build/Release, where both `node-gyp` and the CUDA `cmake-js` build put it, then
 * build/Debug), else the prebuilt binary for this platform in prebuilds/ (shipped in the npm
 * package, OpenBLAS linked in).
 */
function findAddon(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  // src/native or dist/native -> package root
  const root = join(here, '..', '..');
  const env = process.env.GQA2MLA_ADDON;
  if (env) {
    if (existsSync(env)) return env;
    throw Object.assign(new Error(`GQA2MLA_ADDON=${env} does not exist`), { code: 'ERR_ADDON_MISSING' });
  }
  try {
    return (require('node-gyp-build') as { path(dir: string): string }).path(root);
  } catch (e) {
    const err = new Error(
      `gqa2mla native addon not found (no build in ${join(root, 'build')}, no prebuilt binary in ${join(root, 'prebuilds')} for ` +
        `${process.platform}-${process.arch}); run \`npm run build:native\` (needs libopenblas-dev and liblapacke-dev): ${(e as Error).message.split('\n')[0]}`,
    ) as Error & { code: string };
    err.code = 'ERR_ADDON_MISSING';
    throw err;
  }
}


/**
 * OpenBLAS 0.3.21 (Debian 12) does not recognise recent Xeons and falls back to its generic
 * Prescott kernels (about 4x slower GEMM). When the user has not chosen a core type, pick
 * the kernel family the CPU supports before the library is loaded (it reads the variable
 * once, at load). GQA2MLA_KEEP_BLAS_CORETYPE=1 leaves OpenBLAS's own detection alone.
 */
function chooseBlasCoreType(): void {
  if (process.env.OPENBLAS_CORETYPE || process.env.GQA2MLA_KEEP_BLAS_CORETYPE || process.arch !== 'x64') return;
  let flags = '';
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    flags = /^flags\s*:(.*)$/m.exec(info)?.[1] ?? '';
  } catch {
    return;
  }
  const has = (f: string) => new RegExp(`\\b${f}\\b`).test(flags);
  if (['avx512f', 'avx512bw', 'avx512vl', 'avx512dq'].every(has)) process.env.OPENBLAS_CORETYPE = 'SkylakeX';
  else if (has('avx2') && has('fma')) process.env.OPENBLAS_CORETYPE = 'Haswell';
}
chooseBlasCoreType();

/** The loaded native addon. */
export const native: NativeBinding = require(findAddon()) as NativeBinding;
