/**
 * The CUDA backend of a conversion. The calibration hidden states live on the GPU for the
 * whole run (the host copy is refreshed only when a resume checkpoint is due); each layer's
 * weights are uploaded once in their stored dtype while the next layer's bytes are read from
 * disk and widened to their float32 host values in the background; the normalised inputs x
 * stay on the device unless host code needs them; the input norm, float64 moments (DSYRK), held-out
 * attention and propagation run on the GPU; the factorization's large float64 products
 * and eigendecompositions run on cuBLAS / cuSOLVER through src/convert/mat.ts.
 *
 * Precision: propagation multiplies bf16-stored weights with bf16-rounded activations
 * (float32 accumulation), the rest is float32; held-out evaluation is float32 throughout
 * (weights widened exactly), so candidate errors are measured like on the CPU.
 * GPU memory: the hidden states and normalised inputs (2 x rows x hidden float32), one
 * layer's weights, the moments (hidden^2 float64) and micro-batch activations.
 */
import type { Checkpoint, RawTensor } from '../checkpoint/checkpoint.js';
import { encodeFloat32, toFloat32, type Dtype } from '../checkpoint/dtype.js';
import type { OutTensor } from '../tensor/out-tensor.js';
import type { InputMoments } from '../tensor/moments.js';
import { setMatKernels } from '../tensor/mat.js';
import { latentRowStats } from '../tensor/latent-stats.js';
import { gemm as cpuGemm, eigh as cpuEigh } from '../linalg.js';
import { type LayerWeights, layerPrefix, layerTensorSpecs } from '../engine/weights.js';
import { GqaError } from '../errors.js';
import type { ModelSpec } from '../model/spec-types.js';
import { native, type NativeConvertCuda } from '../native/binding.js';
import { type DeviceForwardContext, type DeviceWeight, attentionDevice, cudaMoeRefusal, layerForwardDevice } from './cuda-forward.js';
import { DeviceArray, DeviceWorkspace, cudaExports } from './cuda-memory.js';
import { type BackendStats, type ComputeBackend, emptyStats } from './types.js';

/** Tokens per micro-batch of the GPU layer forward (activations ~ tokens x intermediate x 8 bytes). */
const MICRO_BATCH_TOKENS = 16384;
/** Products of at least this many flops (2mnk) run on the GPU. */
const GPU_GEMM_FLOPS = 2e8;
/** Pinned float64 operands of at least this many elements keep a device copy. */
const PIN_MIN_ELEMENTS = 1 << 18;
/** Eigendecompositions of at least this order run on cuSOLVER. */
const GPU_EIGH_MIN_N = 256;

const now = () => performance.now() / 1000;

/** One layer tensor on the device, in its stored precision, with a lazily widened float32 copy. */
interface DeviceTensor {
  dev: DeviceArray;
  f32: DeviceArray | null;
  f32Valid: boolean;
  host: Float32Array;
  /** stored bytes and dtype when the host values decode them exactly (BF16/F16/F32) */
  raw: { dtype: string; bytes: Uint8Array } | null;
}

/** A layer tensor as read: its stored bytes and their float32 values. */
interface HostTensor {
  raw: RawTensor;
  host: Float32Array;
}

/** The float32 values of stored bytes (BF16/F16 widened by the addon on the libuv pool, bit-exact). */
async function decodeHost(r: RawTensor): Promise<Float32Array> {
  if (r.dtype !== 'BF16' && r.dtype !== 'F16') return toFloat32(r.data, r.dtype as Dtype);
  const n = r.data.byteLength / 2;
  const bytes = r.data.byteOffset % 2 === 0 ? r.data : r.data.slice();
  const out = new Float32Array(n);
  await native.widen16Async(new Uint16Array(bytes.buffer, bytes.byteOffset, n), r.dtype, out);
  return out;
}

/** Conversion work on one CUDA GPU. */
export class CudaBackend implements ComputeBackend {
  readonly device = 'cuda' as const;
  readonly name: string;
  readonly stats: BackendStats = emptyStats();
  private readonly cu: NativeConvertCuda;
  private readonly ws = new DeviceWorkspace();
  /** per tensor name, reused from layer to layer */
  private readonly tensors = new Map<string, DeviceTensor>();
  private readonly byHost = new WeakMap<Float32Array, DeviceTensor>();
  private readonly invFreqs = new WeakMap<Float32Array, DeviceArray>();
  private prefetch: { layer: number; bytes: Promise<Map<string, HostTensor>> } | null = null;
  /**
   * Device copies of the hidden-state streams (the calibration windows', the context
   * windows'), by host array; `stale`: the device copy is newer than the host one (set by
   * layerForward, cleared by syncHidden).
   */
  private readonly streams = new Map<Float32Array, { dev: DeviceArray; stale: boolean }>();
  private x: DeviceArray | null = null;
  private hostX: Float32Array | null = null;
  private momC: DeviceArray | null = null;
  private momSum: DeviceArray | null = null;
  /** host copy of the current moments: products with it use momC instead of an upload */
  private resident: Float64Array | null = null;
  private posKey = '';
  private latentHost: Float32Array | null = null;
  /** device copies of float64 operands pinned for the current layer (mat.ts pinOperand) */
  private readonly pinned = new Map<Float64Array, DeviceArray>();

  constructor() {
    this.cu = cudaExports();
    if (!this.cu.available()) throw new GqaError('ERR_NO_CUDA', 'no CUDA device is present', 'usage');
    this.name = this.cu.deviceInfo().name;
  }

  // ---- weights ---------------------------------------------------------------------------

  /**
   * Reads a layer's stored bytes and decodes their float32 host values, all on the libuv
   * pool (disk reads, then the addon's multithreaded widening) while the main thread and
   * the GPU work on the current layer.
   */
  private readLayer(ckpt: Checkpoint, spec: ModelSpec, layer: number): Promise<Map<string, HostTensor>> {
    const prefix = layerPrefix(layer);
    const names = layerTensorSpecs(spec, layer)
      .map((s) => s.name)
      .filter((n) => ckpt.has(prefix + n));
    const p = Promise.all(
      names.map(async (n) => {
        const raw = await ckpt.readRaw(prefix + n);
        return [n, { raw, host: await decodeHost(raw) }] as const;
      }),
    ).then((e) => new Map(e));
    p.catch(() => undefined);
    return p;
  }

  async loadLayer(ckpt: Checkpoint, spec: ModelSpec, layer: number): Promise<LayerWeights> {
    if (!Number.isInteger(layer) || layer < 0 || layer >= spec.numLayers)
      throw new GqaError('ERR_OUT_OF_RANGE', `layer ${layer} is outside [0, ${spec.numLayers})`, 'usage');
    if (spec.moe) throw cudaMoeRefusal();
    this.unpinAll(); // pins last for one layer
    let t = now();
    const raw = this.prefetch?.layer === layer ? await this.prefetch.bytes : await this.readLayer(ckpt, spec, layer);
    this.stats.readWaitSeconds += now() - t;
    this.prefetch = layer + 1 < spec.numLayers ? { layer: layer + 1, bytes: this.readLayer(ckpt, spec, layer + 1) } : null;
    const prefix = layerPrefix(layer);
    const out: LayerWeights = { layer, tensors: {} };
    t = now();
    for (const want of layerTensorSpecs(spec, layer)) {
      const r = raw.get(want.name);
      const full = prefix + want.name;
      if (!r) {
        if (want.optional) continue;
        throw new GqaError('ERR_TENSOR_MISSING', `tensor ${full} is missing from the checkpoint (model_type ${spec.modelType})`);
      }
      const numel = want.shape.reduce((a, b) => a * b, 1);
      if (r.host.length !== numel)
        throw new GqaError('ERR_TENSOR_SHAPE', `tensor ${full} has ${r.host.length} elements, config implies [${want.shape.join(', ')}] = ${numel}`);
      out.tensors[want.name] = { data: this.place(want.name, r.raw, r.host), shape: want.shape };
    }
    this.stats.uploadSeconds += now() - t;
    return out;
  }

  /** Uploads one tensor in its stored precision; `host` (its decoded values) becomes the layer's host array. */
  private place(name: string, r: RawTensor, host: Float32Array): Float32Array {
    const numel = host.length;
    const bf16 = r.dtype === 'BF16';
    const want = bf16 ? 'BF16' : 'F32';
    let dt = this.tensors.get(name);
    if (!dt || dt.dev.dtype !== want || dt.dev.length !== numel) {
      dt?.dev.free();
      dt?.f32?.free();
      dt = { dev: DeviceArray.alloc(want, numel), f32: null, f32Valid: false, host, raw: null };
      this.tensors.set(name, dt);
    }
    dt.f32Valid = false;
    dt.host = host;
    if (r.dtype === 'BF16' || r.dtype === 'F32') {
      dt.dev.upload(r.data);
    } else if (r.dtype === 'F16') {
      const stage = this.ws.get('stage16', 'BF16', numel); // 2-byte staging
      stage.upload(r.data);
      this.cu.convert(stage.buf, 'F16', dt.dev.buf, 'F32', numel);
    } else {
      dt.dev.upload(host);
    }
    dt.raw = r.dtype === 'BF16' || r.dtype === 'F16' || r.dtype === 'F32' ? { dtype: r.dtype, bytes: r.data } : null;
    this.byHost.set(host, dt);
    return host;
  }

  /** The float32 device copy of a tensor (widened from bf16 on first use per layer). */
  private widened(dt: DeviceTensor): DeviceArray {
    if (dt.dev.dtype === 'F32') return dt.dev;
    if (!dt.f32 || dt.f32.length !== dt.dev.length) {
      dt.f32?.free();
      dt.f32 = DeviceArray.alloc('F32', dt.dev.length);
    }
    if (!dt.f32Valid) {
      this.cu.convert(dt.dev.buf, 'BF16', dt.f32.buf, 'F32', dt.dev.length);
      dt.f32Valid = true;
    }
    return dt.f32;
  }

  /** Device copies of host tensors: the loaded layer's, or an upload of a built one (float32). */
  private readonly source = {
    linear: (w: LayerWeights, name: string, elements: number, allowBf16: boolean): DeviceWeight => {
      const data = this.hostTensor(w, name, elements, true)!;
      const dt = this.byHost.get(data);
      if (dt) return allowBf16 && dt.dev.dtype === 'BF16' ? { arr: dt.dev, dtype: 'BF16' } : { arr: this.widened(dt), dtype: 'F32' };
      return { arr: this.uploadBuilt(name, data), dtype: 'F32' };
    },
    vector: (w: LayerWeights, name: string, elements: number): DeviceArray | null => {
      const data = this.hostTensor(w, name, elements, false);
      if (!data) return null;
      const dt = this.byHost.get(data);
      return dt ? this.widened(dt) : this.uploadBuilt(name, data);
    },
  };

  private hostTensor(w: LayerWeights, name: string, elements: number, need: boolean): Float32Array | null {
    const t = w.tensors[name];
    if (!t) {
      if (need) throw new GqaError('ERR_TENSOR_MISSING', `layer ${w.layer}: weight ${name} is missing`);
      return null;
    }
    if (t.data.length !== elements)
      throw new GqaError('ERR_TENSOR_SHAPE', `layer ${w.layer}: weight ${name} has ${t.data.length} elements, expected ${elements}`);
    return t.data;
  }

  private uploadBuilt(name: string, data: Float32Array): DeviceArray {
    const t = now();
    const a = this.ws.get(`w:${name}`, 'F32', data.length);
    a.upload(data);
    this.stats.uploadSeconds += now() - t;
    return a;
  }

  private context(allowBf16: boolean): DeviceForwardContext {
    return {
      cu: this.cu,
      ws: this.ws,
      weights: this.source,
      allowBf16,
      positions: (rows, seqLen) => {
        const key = `${rows}/${seqLen}`;
        const a = this.ws.get('positions', 'I32', rows);
        if (this.posKey !== key) {
          const p = new Int32Array(rows);
          for (let r = 0; r < rows; r++) p[r] = r % seqLen;
          a.upload(p);
          this.posKey = key;
        }
        return a;
      },
      invFreq: (table) => {
        let a = this.invFreqs.get(table);
        if (!a) {
          a = DeviceArray.alloc('F32', table.length);
          a.upload(table);
          this.invFreqs.set(table, a);
        }
        return a;
      },
    };
  }

  // ---- activations ----------------------------------------------------------------------

  /** The device copy of stream `hidden` (uploaded when new or when the host copy is the newer one). */
  private ensureHidden(hidden: Float32Array): DeviceArray {
    let st = this.streams.get(hidden);
    if (st && st.dev.length !== hidden.length) {
      st.dev.free();
      this.streams.delete(hidden);
      st = undefined;
    }
    if (!st) {
      const t = now();
      st = { dev: DeviceArray.alloc('F32', hidden.length), stale: false };
      st.dev.upload(hidden);
      this.streams.set(hidden, st);
      this.stats.uploadSeconds += now() - t;
    }
    return st.dev;
  }

  async statistics(spec: ModelSpec, w: LayerWeights, hidden: Float32Array, x: Float32Array, statRows: number, allRows: number, hostInputs = true): Promise<InputMoments> {
    const hid = spec.hiddenSize;
    if (hidden.length < allRows * hid || x.length < allRows * hid)
      throw new GqaError('ERR_SHAPE', `statistics: hidden/x hold fewer than ${allRows} x ${hid} values`, 'runtime');
    const h = this.ensureHidden(hidden);
    if (!this.x || this.x.length !== allRows * hid) {
      this.x?.free();
      this.x = DeviceArray.alloc('F32', allRows * hid);
    }
    if (!this.momC || this.momC.length !== hid * hid) {
      this.momC?.free();
      this.momSum?.free();
      this.momC = DeviceArray.alloc('F64', hid * hid);
      this.momSum = DeviceArray.alloc('F64', hid);
    }
    const norm = this.source.vector(w, 'input_layernorm.weight', hid);
    if (!norm) throw new GqaError('ERR_TENSOR_MISSING', `layer ${w.layer}: weight input_layernorm.weight is missing`);
    this.cu.rmsNorm(h.buf, norm.buf, this.x.buf, { rows: allRows, dim: hid, eps: spec.rmsNormEps });
    this.cu.fill(this.momC.buf, 0);
    this.cu.fill(this.momSum!.buf, 0);
    this.cu.momentsAdd(this.momC.buf, this.momSum!.buf, this.x.buf, statRows, hid);
    this.cu.momentsFinish(this.momC.buf, this.momSum!.buf, hid, statRows);
    await this.cu.synchronizeAsync();
    const t = now();
    if (hostInputs) this.x.download(x.subarray(0, allRows * hid));
    else x.fill(NaN, 0, hid); // not current on the host: a stray host read shows up as NaN
    const second = new Float64Array(hid * hid);
    const mean = new Float64Array(hid);
    this.momC.download(second);
    this.momSum!.download(mean);
    this.stats.downloadSeconds += now() - t;
    this.hostX = x;
    this.resident = second;
    return { second: { rows: hid, cols: hid, data: second }, mean, tokens: statRows };
  }

  /** `x` on the device: a view of the normalised inputs when `x` views their host copy, else an upload. */
  private deviceInput(x: Float32Array, elements: number): DeviceArray {
    const hx = this.hostX;
    if (this.x && hx && x.buffer === hx.buffer && x.byteOffset >= hx.byteOffset) {
      const start = (x.byteOffset - hx.byteOffset) / 4;
      if (Number.isInteger(start) && start + elements <= this.x.length) return this.x.sub(start, elements);
    }
    const t = now();
    const a = this.ws.get('xin', 'F32', elements);
    a.upload(x.subarray(0, elements));
    this.stats.uploadSeconds += now() - t;
    return a;
  }

  async attentionForward(spec: ModelSpec, w: LayerWeights, x: Float32Array, nSeq: number, seqLen: number): Promise<Float32Array> {
    const H = spec.hiddenSize;
    const rows = nSeq * seqLen;
    if (!Number.isInteger(nSeq) || !Number.isInteger(seqLen) || nSeq < 0 || seqLen < 1)
      throw new GqaError('ERR_SHAPE', `nSeq (${nSeq}) and seqLen (${seqLen}) must be integers, seqLen >= 1`, 'usage');
    if (x.length < rows * H) throw new GqaError('ERR_SHAPE', `x has ${x.length} floats, needs nSeq*seqLen*hidden = ${rows * H}`, 'usage');
    const result = new Float32Array(rows * H);
    if (rows === 0) return result;
    const xd = this.deviceInput(x, rows * H);
    const out = this.ws.get('aout', 'F32', rows * H);
    const ctx = this.context(false);
    const per = Math.max(1, Math.floor(MICRO_BATCH_TOKENS / seqLen));
    for (let s0 = 0; s0 < nSeq; s0 += per) {
      const n = Math.min(per, nSeq - s0);
      await attentionDevice(ctx, spec, w, xd.sub(s0 * seqLen * H, n * seqLen * H), n, seqLen, out.sub(s0 * seqLen * H, n * seqLen * H), false);
    }
    await this.cu.synchronizeAsync();
    const t = now();
    out.download(result);
    this.stats.downloadSeconds += now() - t;
    return result;
  }

  async layerForward(spec: ModelSpec, w: LayerWeights, hidden: Float32Array, nSeq: number, seqLen: number): Promise<void> {
    const H = spec.hiddenSize;
    if (!Number.isInteger(nSeq) || !Number.isInteger(seqLen) || nSeq < 0 || seqLen < 1)
      throw new GqaError('ERR_SHAPE', `nSeq (${nSeq}) and seqLen (${seqLen}) must be integers, seqLen >= 1`, 'usage');
    if (hidden.length < nSeq * seqLen * H)
      throw new GqaError('ERR_SHAPE', `hidden has ${hidden.length} floats, needs nSeq*seqLen*hidden = ${nSeq * seqLen * H}`, 'usage');
    const h = this.ensureHidden(hidden);
    await layerForwardDevice(this.context(true), spec, w, h, nSeq, seqLen, MICRO_BATCH_TOKENS);
    await this.cu.synchronizeAsync();
    this.streams.get(hidden)!.stale = true; // the device copy is current; the host one only after syncHidden
  }

  async syncHidden(hidden: Float32Array): Promise<void> {
    const st = this.streams.get(hidden);
    if (!st?.stale) return;
    await this.cu.synchronizeAsync();
    const t = now();
    st.dev.download(hidden);
    st.stale = false;
    this.stats.downloadSeconds += now() - t;
  }

  async latentMeanSquare(w: Float32Array, b: Float32Array | null, R: number, hid: number, x: Float32Array, rows: number): Promise<{ maxMs: number; minAbs: number }> {
    if (rows === 0) return { maxMs: 0, minAbs: Infinity };
    const xd = this.deviceInput(x, rows * hid);
    const t = now();
    const wd = this.ws.get('latentW', 'F32', R * hid);
    wd.upload(w.subarray(0, R * hid));
    this.stats.uploadSeconds += now() - t;
    const out = this.ws.get('latentOut', 'F32', rows * R);
    this.cu.linear(xd.buf, wd.buf, out.buf, { rows, inDim: hid, outDim: R, wDtype: 'F32' });
    await this.cu.synchronizeAsync();
    const t2 = now();
    // a host buffer kept across layers: no fresh pages to fault in on every download
    if (!this.latentHost || this.latentHost.length < rows * R) this.latentHost = new Float32Array(rows * R);
    const c = this.latentHost.subarray(0, rows * R);
    out.download(c);
    this.stats.downloadSeconds += now() - t2;
    return latentRowStats(c, rows, R, b);
  }

  // ---- output ------------------------------------------------------------------------------

  async encodeForWrite(tensors: OutTensor[]): Promise<OutTensor[]> {
    const out: OutTensor[] = [];
    for (const t of tensors) {
      if (!(t.data instanceof Float32Array) || (t.dtype !== 'BF16' && t.dtype !== 'F16')) {
        out.push(t);
        continue;
      }
      const dt = this.byHost.get(t.data);
      if (dt?.raw && dt.host === t.data && dt.raw.dtype === t.dtype) {
        // unchanged source tensor in its stored dtype: its bytes, no decode/encode round trip
        out.push({ ...t, data: dt.raw.bytes });
        this.stats.passthroughTensors++;
        continue;
      }
      out.push({ ...t, data: encodeFloat32(t.data, t.dtype as Dtype, t.name) }); // the addon's multithreaded rounding
    }
    return out;
  }

  // ---- factorization kernels -----------------------------------------------------------------

  claimMatKernels(): void {
    setMatKernels({
      gemm: (a, b, c, m, n, k, options) => {
        if (2 * m * n * k < GPU_GEMM_FLOPS) {
          cpuGemm(a, b, c, m, n, k, options);
          return;
        }
        const t = now();
        const A = this.resident && a === this.resident && this.momC ? this.momC.buf : (this.pinned.get(a)?.buf ?? a);
        const B = this.resident && b === this.resident && this.momC ? this.momC.buf : (this.pinned.get(b)?.buf ?? b);
        this.cu.gemm(A, B, c, m, n, k, options);
        this.stats.gemmCalls++;
        this.stats.gemmSeconds += now() - t;
      },
      pin: (a) => {
        if (a.length < PIN_MIN_ELEMENTS || this.pinned.has(a)) return;
        const t = now();
        const d = DeviceArray.alloc('F64', a.length);
        d.upload(a);
        this.pinned.set(a, d);
        this.stats.uploadSeconds += now() - t;
      },
      eigh: (a, n) => {
        const t = now();
        const r = n >= GPU_EIGH_MIN_N ? this.cu.eigh(a, n) : cpuEigh(a, n);
        this.stats.eighCalls++;
        this.stats.eighSeconds += now() - t;
        this.stats.eighMaxN = Math.max(this.stats.eighMaxN, n);
        return { values: r.values, vectors: r.vectors };
      },
    });
  }

  private unpinAll(): void {
    for (const d of this.pinned.values()) d.free();
    this.pinned.clear();
  }

  async release(): Promise<void> {
    setMatKernels(null);
    this.unpinAll();
    if (this.prefetch) await this.prefetch.bytes.catch(() => undefined);
    this.prefetch = null;
    this.cu.synchronize();
    this.ws.clear();
    for (const dt of this.tensors.values()) {
      dt.dev.free();
      dt.f32?.free();
    }
    this.tensors.clear();
    for (const st of this.streams.values()) st.dev.free();
    this.streams.clear();
    for (const a of [this.x, this.momC, this.momSum]) a?.free();
    this.x = this.momC = this.momSum = null;
    this.hostX = this.resident = this.latentHost = null;
  }
}
