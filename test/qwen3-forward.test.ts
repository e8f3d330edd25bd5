/**
 * Qwen3 (model_type qwen3) through the engine: a tiny random Qwen3 checkpoint written here
 * (explicit head_dim != hidden / heads, GQA 2:1, untied, with and without attention_bias)
 * against a float64 reference forward written in this file after transformers'
 * Qwen3Attention (modeling_qwen3.py at huggingface/transformers 000c33fd: q_norm / k_norm =
 * RMSNorm over head_dim of each head's projection, before RoPE; no norm on values). The
 * layer-streamed engine (ModelRunner), its NLL and the KV-cache decoder (GqaDecoder) are
 * compared by relative error; the reference without the norms shows the test can fail.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Checkpoint } from '../src/checkpoint/checkpoint.js';
import { formatInspect, inspectModel } from '../src/cli/inspect.js';
import { GqaDecoder } from '../src/engine/gqa-decoder.js';
import { ModelRunner, slidingWindowOf } from '../src/engine/index.js';
import { loadModelSpec } from '../src/model/spec.js';
import type { ModelSpec } from '../src/model/spec-types.js';
import { attentionRef, linearRef, maxRelErr, nllRef, rmsNormRef, ropeHalfRef } from './helpers/forward-ref.js';
import { rng } from './helpers/forward-ref.js';
import { type SyntheticOptions, writeSyntheticModel } from './helpers/synthetic.js';

const BASE: SyntheticOptions = {
  modelType: 'qwen3',
  numLayers: 2,
  hiddenSize: 48,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 16,
  intermediateSize: 80,
  vocabSize: 97,
  tie: false,
  bias: false,
  dtype: 'F32',
  seed: 31,
  ropeTheta: 1e6,
  ropeParameters: true,
};

let tmp: string;
beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'g2m-qwen3-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

type Read = (name: string) => Promise<Float32Array>;

/** Per-head RMSNorm over head_dim of rows x heads vectors, in place (float64). */
function headNorm(v: Float64Array, w: Float32Array, heads: number, d: number, eps: number, rows: number): void {
  v.set(rmsNormRef(v, w, rows * heads, d, eps));
}

/** Rotate-half RoPE of every head at positions 0..T-1, in place (float64). */
function ropeAll(v: Float64Array, heads: number, d: number, T: number, theta: number): void {
  const inv = Array.from({ length: d / 2 }, (_, i) => Math.fround(1 / Math.pow(theta, (2 * i) / d)));
  for (let t = 0; t < T; t++)
    for (let h = 0; h < heads; h++) {
      const o = (t * heads + h) * d;
      v.set(ropeHalfRef(v.subarray(o, o + d), inv, t), o);
    }
}

/** transformers' Qwen3 decoder layer in float64 on the residual stream `h` [T, hidden] (in place). */
async function layerRef(read: Read, s: ModelSpec, l: number, h: Float64Array, T: number, qkNorm: boolean): Promise<void> {
  const { hiddenSize: H, numHeads: nH, numKvHeads: G, headDim: d, rmsNormEps: eps } = s;
  const p = `model.layers.${l}.`;
  const bias = async (n: string) => (s.attentionBias ? read(`${p}self_attn.${n}.bias`) : null);
  const x = rmsNormRef(h, await read(`${p}input_layernorm.weight`), T, H, eps);
  const q = linearRef(x, await read(`${p}self_attn.q_proj.weight`), T, H, nH * d, await bias('q_proj'));
  const k = linearRef(x, await read(`${p}self_attn.k_proj.weight`), T, H, G * d, await bias('k_proj'));
  const v = linearRef(x, await read(`${p}self_attn.v_proj.weight`), T, H, G * d, await bias('v_proj'));
  if (qkNorm) {
    headNorm(q, await read(`${p}self_attn.q_norm.weight`), nH, d, eps, T);
    headNorm(k, await read(`${p}self_attn.k_norm.weight`), G, d, eps, T);
  }
  ropeAll(q, nH, d, T, s.rope.theta);
  ropeAll(k, G, d, T, s.rope.theta);
  const a = attentionRef(q, k, v, { nSeq: 1, seqLen: T, nHeads: nH, nKvHeads: G, dqk: d, dv: d, scale: 1 / Math.sqrt(d) });
  const o = linearRef(a, await read(`${p}self_attn.o_proj.weight`), T, nH * d, H, s.oBias ? await read(`${p}self_attn.o_proj.bias`) : null);
  for (let i = 0; i < h.length; i++) h[i] += o[i];
  const xm = rmsNormRef(h, await read(`${p}post_attention_layernorm.weight`), T, H, eps);
  const I = s.intermediateSize;
  const gate = linearRef(xm, await read(`${p}mlp.gate_proj.weight`), T, H, I);
  const up = linearRef(xm, await read(`${p}mlp.up_proj.weight`), T, H, I);
  for (let i = 0; i < gate.length; i++) gate[i] = (gate[i] / (1 + Math.exp(-gate[i]))) * up[i];
  const down = linearRef(gate, await read(`${p}mlp.down_proj.weight`), T, I, H);
  for (let i = 0; i < h.length; i++) h[i] += down[i];
}

/** Final residual stream and logits of one sequence in float64. */
async function forwardRef(dir: string, ids: Int32Array, qkNorm = true): Promise<{ h: Float64Array; logits: Float64Array }> {
  const s = await loadModelSpec(dir);
  const ck = await Checkpoint.open(dir);
  try {
    const read: Read = (n) => ck.read(n);
    const H = s.hiddenSize;
    const T = ids.length;
    const emb = await read('model.embed_tokens.weight');
    const h = new Float64Array(T * H);
    for (let t = 0; t < T; t++) for (let i = 0; i < H; i++) h[t * H + i] = emb[ids[t] * H + i];
    for (let l = 0; l < s.numLayers; l++) await layerRef(read, s, l, h, T, qkNorm);
    const hn = rmsNormRef(h, await read('model.norm.weight'), T, H, s.rmsNormEps);
    return { h, logits: linearRef(hn, await read('lm_head.weight'), T, H, s.vocabSize) };
  } finally {
    await ck.close();
  }
}

function randomIds(n: number, vocab: number, seed: number): Int32Array {
  const u = rng(seed);
  return Int32Array.from({ length: n }, () => Math.floor(u() * vocab));
}

describe.each([
  ['no bias', false],
  ['attention_bias', true],
])('tiny random Qwen3 (%s) vs a float64 reference', (_label, bias) => {
  let dir: string;
  beforeAll(async () => {
    dir = join(tmp, bias ? 'bias' : 'plain');
    await writeSyntheticModel(dir, { ...BASE, bias, seed: bias ? 32 : 31 });
  });

  test('spec and inspect show the per-head q/k norms', async () => {
    const s = await loadModelSpec(dir);
    expect(s).toMatchObject({ modelType: 'qwen3', qkNorm: true, headDim: 16, attentionBias: bias, oBias: bias });
    const r = await inspectModel(dir);
    expect(r).toMatchObject({ modelType: 'qwen3', qkNorm: true, unexpectedTensors: [] });
    expect(formatInspect(r)).toMatch(/q\/k norm\s+per-head RMSNorm over head dim before RoPE/);
    // sliding windows as Qwen3Config: from max_window_layers (default 28) on, when use_sliding_window
    const sw = { ...s, raw: { ...s.raw, use_sliding_window: true, sliding_window: 8 } };
    expect([slidingWindowOf(sw, 27), slidingWindowOf(sw, 28)]).toEqual([0, 8]);
    expect(slidingWindowOf({ ...s, raw: { ...s.raw, sliding_window: 8 } }, 30)).toBe(0);
  });

  test('ModelRunner residual stream and NLL equal the reference; leaving out q_norm / k_norm would not', async () => {
    const T = 37;
    const ids = randomIds(T, BASE.vocabSize, bias ? 5 : 6);
    const ref = await forwardRef(dir, ids);
    const runner = await ModelRunner.open(dir, { microBatchTokens: 16 });
    try {
      const h = Float32Array.from(await runner.forward(ids, 1, T));
      const err = maxRelErr(h, ref.h);
      expect(err).toBeLessThan(1e-5);
      const noNorm = await forwardRef(dir, ids, false);
      expect(maxRelErr(noNorm.h, ref.h)).toBeGreaterThan(1000 * err);
      const nll = await runner.nll(ids, 1, T);
      const nllExpected = nllRef(ref.logits, ids.subarray(1), T - 1, BASE.vocabSize);
      expect(maxRelErr(nll, nllExpected)).toBeLessThan(1e-5);
    } finally {
      await runner.close();
    }
  });

  test('GqaDecoder (KV cache, prompt then single tokens) equals the reference logits', async () => {
    const T = 21;
    const ids = randomIds(T, BASE.vocabSize, bias ? 7 : 8);
    const ref = await forwardRef(dir, ids);
    const dec = await GqaDecoder.open(dir);
    try {
      const V = BASE.vocabSize;
      const got = new Float32Array(T * V);
      got.set(await dec.append(ids.subarray(0, 12)), 0);
      for (let t = 12; t < T; t++) got.set(await dec.append(ids.subarray(t, t + 1)), t * V);
      expect(maxRelErr(got, ref.logits)).toBeLessThan(1e-5);
    } finally {
      await dec.close();
    }
  });
});
