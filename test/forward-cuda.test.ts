/**
 * The conversion's CUDA kernels (native/forward_cuda.cc, memory_cuda.cc) against the CPU
 * kernels on the same random inputs: RMSNorm, RoPE (rotate-half and interleaved, offsets,
 * scale), SwiGLU, linear (float32, and bf16 against the CPU on bf16-rounded operands),
 * causal attention (GQA with a window, MLA with the shared rope key and strided views),
 * float64 moments against MomentAccumulator, dtype conversion bit-exact against
 * encodeFloat32, and the GPU layer forward / held-out attention against the engine on a
 * real fixture layer. Skipped unless the addon was built with CUDA and a GPU answers.
 */
import { Checkpoint } from '../src/checkpoint/checkpoint.js';
import { encodeFloat32, toFloat32 } from '../src/checkpoint/dtype.js';
import { CudaBackend } from '../src/backend/cuda.js';
import { MomentAccumulator } from '../src/tensor/moments.js';
import { attentionForward } from '../src/engine/attention.js';
import { layerForward } from '../src/engine/layer.js';
import { loadLayerWeights } from '../src/engine/weights.js';
import { loadModelSpec } from '../src/model/spec.js';
import { native, type NativeCudaBuffer } from '../src/native/binding.js';
import { maxRelErr, randn } from './helpers/forward-ref.js';
import { seedLabel, seedStream } from './helpers/random.js';

const cu = native.convertCuda;
const enabled = native.buildInfo().cuda && cu !== undefined && cu.available();
const suite = enabled ? describe : describe.skip;
const verbose = process.env.GQA2MLA_TEST_VERBOSE === '1';
// Inputs from GQA2MLA_TEST_SEED (fixed default), shown in the suite titles.
const seed = seedStream(0x2545f491, 7919).next;
const fixture = (name: string) => new URL(`./fixtures/${name}`, import.meta.url).pathname;

function dev(a: ArrayBufferView): NativeCudaBuffer {
  const b = cu!.alloc(Math.max(4, a.byteLength));
  cu!.upload(b, a);
  return b;
}
function devPoisoned(n: number): NativeCudaBuffer {
  const b = cu!.alloc(4 * n);
  cu!.fill(b, 0xff); // NaN pattern: every element must be written
  return b;
}
function back(b: NativeCudaBuffer, n: number): Float32Array {
  const o = new Float32Array(n);
  cu!.download(b, o);
  return o;
}
function roundBf16(a: Float32Array): Float32Array {
  return toFloat32(encodeFloat32(a, 'BF16'), 'BF16');
}
function log(name: string, e: number): void {
  if (verbose) console.log(`${name}: max rel err ${e.toExponential(2)}`);
}

suite(`convertCuda kernels vs the CPU kernels (${seedLabel()})`, () => {
  test('rmsNorm with strides and in place', () => {
    const rows = 37;
    const dim = 300;
    const xs = 320;
    const x = randn(rows * xs, seed(), 3);
    const w = randn(dim, seed());
    const ref = new Float32Array(rows * dim);
    native.rmsNorm(x, w, ref, { rows, dim, eps: 1e-5, xStride: xs });
    const out = devPoisoned(rows * dim);
    cu!.rmsNorm(dev(x), dev(w), out, { rows, dim, eps: 1e-5, xStride: xs });
    const e = maxRelErr(back(out, rows * dim), ref);
    log('rmsNorm', e);
    expect(e).toBeLessThan(1e-6);
    const xin = dev(x);
    cu!.rmsNorm(xin, null, xin, { rows, dim, eps: 1e-6, xStride: xs, outStride: xs });
    const ref2 = x.slice();
    native.rmsNorm(ref2, null, ref2, { rows, dim, eps: 1e-6, xStride: xs, outStride: xs });
    expect(maxRelErr(back(xin, rows * xs), ref2)).toBeLessThan(1e-6);
  });

  test.each([
    [false, 0, 1],
    [true, 64, 1],
    [false, 32, 1.2],
  ])('rope interleave %s offset %d scale %d', (interleave, offset, scale) => {
    const rows = 70;
    const nHeads = 3;
    const rotDim = 64;
    const headStride = offset + rotDim + 8;
    const rowStride = nHeads * headStride + 5;
    const x = randn(rows * rowStride, seed());
    const pos = new Int32Array(rows);
    for (let r = 0; r < rows; r++) pos[r] = (r * 37) % 300;
    const inv = new Float32Array(rotDim / 2);
    for (let i = 0; i < inv.length; i++) inv[i] = Math.fround(1 / Math.pow(10000, (2 * i) / rotDim));
    const ref = x.slice();
    native.rope(ref, pos, inv, { rowStride, nHeads, headStride, offset, rotDim, scale, interleave });
    const d = dev(x);
    cu!.rope(d, dev(pos), dev(inv), { rows, rowStride, nHeads, headStride, offset, rotDim, scale, interleave });
    const e = maxRelErr(back(d, rows * rowStride), ref);
    log(`rope ${interleave}`, e);
    expect(e).toBeLessThan(2e-6);
  });

  test('swiglu', () => {
    const n = 10007;
    const g = randn(n, seed(), 4);
    const u = randn(n, seed());
    const ref = new Float32Array(n);
    native.swiglu(g, u, ref, n);
    const out = devPoisoned(n);
    cu!.swiglu(dev(g), dev(u), out, n);
    const e = maxRelErr(back(out, n), ref);
    log('swiglu', e);
    expect(e).toBeLessThan(1e-5);
  });

  test('linear: float32 with bias, strides, accumulate; bf16 against bf16-rounded operands', () => {
    const rows = 67;
    const inDim = 300;
    const outDim = 190;
    const xs = 310;
    const os = 200;
    const x = randn(rows * xs, seed());
    const w = randn(outDim * inDim, seed(), 0.05);
    const b = randn(outDim, seed());
    const init = randn(rows * os, seed());
    const ref = init.slice();
    native.linear(x, w, ref, { rows, inDim, outDim, bias: b, xStride: xs, outStride: os, accumulate: true });
    const out = dev(init);
    cu!.linear(dev(x), dev(w), out, { rows, inDim, outDim, wDtype: 'F32', bias: dev(b), xStride: xs, outStride: os, accumulate: true });
    const e = maxRelErr(back(out, rows * os), ref);
    log('linear f32', e);
    expect(e).toBeLessThan(1e-5);
    // bf16: the GPU rounds x to bf16; the CPU gets the same rounded operands
    const wb = encodeFloat32(w, 'BF16');
    const ref2 = new Float32Array(rows * outDim);
    native.linear(roundBf16(x), toFloat32(wb, 'BF16'), ref2, { rows, inDim, outDim, xStride: xs });
    const out2 = devPoisoned(rows * outDim);
    cu!.linear(dev(x), dev(wb), out2, { rows, inDim, outDim, wDtype: 'BF16', xStride: xs });
    const e2 = maxRelErr(back(out2, rows * outDim), ref2);
    log('linear bf16', e2);
    expect(e2).toBeLessThan(1e-5);
    expect(() => cu!.linear(out2, dev(wb), out2, { rows, inDim: 10, outDim: 10, wDtype: 'BF16' })).toThrow(expect.objectContaining({ code: 'ERR_ALIAS' }));
    expect(() => cu!.linear(dev(x), dev(wb), out2, { rows, inDim, outDim: outDim + 1, wDtype: 'BF16', xStride: xs })).toThrow(
      expect.objectContaining({ code: 'ERR_SHAPE' }),
    );
  });

  test('attention: GQA with a sliding window, several sequences', () => {
    const nSeq = 3;
    const seqLen = 75;
    const nHeads = 8;
    const nKvHeads = 2;
    const d = 64;
    const rows = nSeq * seqLen;
    const q = randn(rows * nHeads * d, seed());
    const k = randn(rows * nKvHeads * d, seed());
    const v = randn(rows * nKvHeads * d, seed());
    for (const window of [0, 20]) {
      const opts = { nSeq, seqLen, nHeads, nKvHeads, qkDim: d, vDim: d, scale: 1 / Math.sqrt(d), window };
      const ref = new Float32Array(rows * nHeads * d);
      native.attention(q, k, v, ref, opts);
      const out = devPoisoned(rows * nHeads * d);
      cu!.attention(dev(q), dev(k), dev(v), out, opts);
      const e = maxRelErr(back(out, rows * nHeads * d), ref);
      log(`attention gqa window ${window}`, e);
      expect(e).toBeLessThan(1e-5);
    }
  });

  test('attention: MLA layout (k/v views of one buffer, shared rope key)', () => {
    const nSeq = 2;
    const seqLen = 130;
    const nH = 4;
    const dn = 64;
    const dv = 48;
    const dr = 32;
    const R = 40;
    const rows = nSeq * seqLen;
    const q = randn(rows * nH * (dn + dr), seed());
    const kvb = randn(rows * nH * (dn + dv), seed());
    const kva = randn(rows * (R + dr), seed());
    const opts = {
      nSeq,
      seqLen,
      nHeads: nH,
      nKvHeads: nH,
      qkDim: dn,
      vDim: dv,
      scale: 0.11,
      kHeadStride: dn + dv,
      vHeadStride: dn + dv,
      ropeDim: dr,
      kRopeRowStride: R + dr,
    };
    const ref = new Float32Array(rows * nH * dv);
    native.attention(q, kvb, kvb.subarray(dn), ref, { ...opts, kRope: kva.subarray(R) });
    const dkvb = dev(kvb);
    const dkva = dev(kva);
    const out = devPoisoned(rows * nH * dv);
    cu!.attention(dev(q), dkvb, cu!.view(dkvb, 4 * dn, kvb.byteLength - 4 * dn), out, { ...opts, kRope: cu!.view(dkva, 4 * R, kva.byteLength - 4 * R) });
    const e = maxRelErr(back(out, rows * nH * dv), ref);
    log('attention mla', e);
    expect(e).toBeLessThan(1e-5);
  });

  test('float64 moments match MomentAccumulator', () => {
    const rows = 5000;
    const n = 96;
    const x = randn(rows * n, seed(), 2);
    const acc = new MomentAccumulator(n);
    acc.add(x, rows);
    const m = acc.moments();
    const c = cu!.alloc(8 * n * n);
    const s = cu!.alloc(8 * n);
    cu!.fill(c, 0);
    cu!.fill(s, 0);
    const dx = dev(x);
    cu!.momentsAdd(c, s, cu!.view(dx, 0, 4 * 3000 * n), 3000, n);
    cu!.momentsAdd(c, s, cu!.view(dx, 4 * 3000 * n, 4 * 2000 * n), 2000, n);
    cu!.momentsFinish(c, s, n, rows);
    const second = new Float64Array(n * n);
    const mean = new Float64Array(n);
    cu!.download(c, second);
    cu!.download(s, mean);
    const e1 = maxRelErr(second, m.second.data);
    const e2 = maxRelErr(mean, m.mean);
    log('moments second', e1);
    expect(e1).toBeLessThan(1e-12);
    expect(e2).toBeLessThan(1e-12);
    for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) expect(second[i * n + j]).toBe(second[j * n + i]);
  });

  test('dtype conversion is bit-identical to encodeFloat32 / toFloat32 (ties, NaN, infinities, subnormals)', () => {
    const special = [0, -0, 1, -1, Infinity, -Infinity, NaN, 1e-40, -3e-39, 65504, 65520, 1e-8, 6e-5, 3.4e38];
    const bits = new Uint32Array(4096 + special.length + 3);
    const f = new Float32Array(bits.buffer);
    const r = randn(4096, seed(), 100);
    f.set(r);
    f.set(special, 4096);
    bits[4096 + special.length] = 0x3f808000; // exact bf16 tie, even
    bits[4096 + special.length + 1] = 0x3f818000; // exact bf16 tie, odd
    bits[4096 + special.length + 2] = 0x7f800001; // signalling NaN
    const n = f.length;
    const src = dev(f);
    for (const dt of ['BF16', 'F16'] as const) {
      const d16 = cu!.alloc(2 * n);
      cu!.convert(src, 'F32', d16, dt, n);
      const got = new Uint8Array(2 * n);
      cu!.download(d16, got);
      expect(Buffer.from(got).equals(Buffer.from(encodeFloat32(f, dt)))).toBe(true);
      const wide = cu!.alloc(4 * n);
      cu!.convert(d16, dt, wide, 'F32', n);
      const w = new Uint32Array(n);
      cu!.download(wide, w);
      expect(Buffer.from(w.buffer).equals(Buffer.from(toFloat32(got, dt).buffer))).toBe(true);
    }
  });

  test('argument errors carry codes', () => {
    expect(() => cu!.rmsNorm({} as NativeCudaBuffer, null, {} as NativeCudaBuffer, { rows: 1, dim: 1 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    const b = cu!.alloc(16);
    expect(() => cu!.view(b, 8, 16)).toThrow(expect.objectContaining({ code: 'ERR_SHAPE' }));
    expect(() => cu!.swiglu(b, b, b, 5)).toThrow(expect.objectContaining({ code: 'ERR_SHAPE' }));
    cu!.free(b);
    expect(() => cu!.swiglu(b, b, b, 1)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_STATE' }));
  });
});

suite(`CudaBackend vs the engine on a fixture layer (${seedLabel()})`, () => {
  test.each(['tiny-llama-gqa', 'tiny-qwen2-gqa'])('%s: statistics, held-out attention (float32) and layer propagation (bf16)', async (name) => {
    const dir = fixture(name);
    const spec = await loadModelSpec(dir);
    const ckpt = await Checkpoint.open(dir);
    const backend = new CudaBackend();
    try {
      const H = spec.hiddenSize;
      const nSeq = 6;
      const S = 96;
      const rows = nSeq * S;
      const hidden = randn(rows * H, seed());
      const w = await backend.loadLayer(ckpt, spec, 1);
      const ref = await loadLayerWeights(ckpt, spec, 1);
      for (const [k, t] of Object.entries(ref.tensors)) expect(Buffer.from(w.tensors[k].data.buffer).equals(Buffer.from(t.data.buffer))).toBe(true);
      const x = new Float32Array(rows * H);
      const m = await backend.statistics(spec, w, hidden, x, 4 * S, rows);
      const xr = new Float32Array(rows * H);
      native.rmsNorm(hidden, ref.tensors['input_layernorm.weight'].data, xr, { rows, dim: H, eps: spec.rmsNormEps });
      expect(maxRelErr(x, xr)).toBeLessThan(1e-6);
      const acc = new MomentAccumulator(H);
      acc.add(xr, 4 * S);
      expect(maxRelErr(m.second.data, acc.moments().second.data)).toBeLessThan(1e-6);
      const xHeld = x.subarray(4 * S * H);
      const a = await backend.attentionForward(spec, w, xHeld, 2, S);
      const aRef = await attentionForward(spec, ref, xr.subarray(4 * S * H), 2, S);
      const ea = maxRelErr(a, aRef);
      log(`${name} attention`, ea);
      expect(ea).toBeLessThan(1e-4);
      const h2 = hidden.slice();
      await backend.layerForward(spec, w, h2, nSeq, S);
      await backend.syncHidden(h2); // the device keeps the hidden states until asked
      const hRef = hidden.slice();
      await layerForward(spec, ref, hRef, nSeq, S);
      // bf16 activations in the GEMMs: relative change of the layer's update, not of h
      const upd = h2.map((v, i) => v - hidden[i]);
      const updRef = hRef.map((v, i) => v - hidden[i]);
      const el = maxRelErr(upd, updRef);
      log(`${name} layer update (bf16)`, el);
      expect(el).toBeLessThan(3e-2);
      const enc = await backend.encodeForWrite([{ name: 'm', dtype: 'BF16', shape: [H], data: w.tensors['post_attention_layernorm.weight'].data }]);
      expect(enc[0].data).toBeInstanceOf(Uint8Array);
      expect(backend.stats.passthroughTensors).toBe(1);
    } finally {
      await backend.release();
      await ckpt.close();
    }
  });
});

suite(`CudaBackend float64 products with pinned operands (${seedLabel()})`, () => {
  test('a pinned operand gives the product of its host values, on the GPU path', async () => {
    const { matmul, pinOperand } = await import('../src/tensor/mat.js');
    const { gemm } = await import('../src/linalg.js');
    const backend = new CudaBackend();
    try {
      backend.claimMatKernels();
      const n = 600; // 2 n^3 > the GPU threshold, n^2 > the pin threshold
      const a = Float64Array.from(randn(n * n, seed()));
      const b = Float64Array.from(randn(n * n, seed()));
      const ref = new Float64Array(n * n);
      gemm(a, b, ref, n, n, n, {});
      pinOperand(a);
      pinOperand(b);
      const calls = backend.stats.gemmCalls;
      const c1 = matmul({ rows: n, cols: n, data: a }, { rows: n, cols: n, data: b });
      const c2 = matmul({ rows: n, cols: n, data: b }, { rows: n, cols: n, data: a }, true, false);
      const ref2 = new Float64Array(n * n);
      gemm(b, a, ref2, n, n, n, { transA: true });
      expect(backend.stats.gemmCalls).toBe(calls + 2);
      expect(maxRelErr(c1.data, ref)).toBeLessThan(1e-12);
      expect(maxRelErr(c2.data, ref2)).toBeLessThan(1e-12);
    } finally {
      await backend.release();
    }
  });
});

suite(`CudaBackend vs the engine on a random Qwen3 layer (q_norm / k_norm) (${seedLabel()})`, () => {
  test('held-out attention (float32) through the same layer graph', async () => {
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const { writeSyntheticModel } = await import('./helpers/synthetic.js');
    const tmp = mkdtempSync(join(tmpdir(), 'g2m-cuda-qwen3-'));
    const opts = { modelType: 'qwen3', numLayers: 1, hiddenSize: 64, numHeads: 4, numKvHeads: 2, headDim: 32, intermediateSize: 96, vocabSize: 64 } as const;
    await writeSyntheticModel(join(tmp, 'm'), { ...opts, tie: true, bias: false, dtype: 'F32', seed: seed() });
    const spec = await loadModelSpec(join(tmp, 'm'));
    const ckpt = await Checkpoint.open(join(tmp, 'm'));
    const backend = new CudaBackend();
    try {
      const S = 80;
      const x = randn(3 * S * spec.hiddenSize, seed());
      const w = await backend.loadLayer(ckpt, spec, 0);
      const ref = await loadLayerWeights(ckpt, spec, 0);
      const a = await backend.attentionForward(spec, w, x, 3, S);
      const aRef = await attentionForward(spec, ref, x, 3, S);
      const e = maxRelErr(a, aRef);
      log('qwen3 attention', e);
      expect(e).toBeLessThan(1e-4);
    } finally {
      await backend.release();
      await ckpt.close();
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
