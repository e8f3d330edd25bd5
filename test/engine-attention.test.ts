import { attentionForward, layerForward, type LayerWeights } from '../src/engine/index.js';
import { computeRope } from '../src/model/rope.js';
import type { ModelSpec, RopeSpec } from '../src/model/spec-types.js';
import { linearRef, randn, rmsNormRef } from './helpers/forward-ref.js';
import { gqaAttentionRef, mlaAttentionRef, relErr } from './helpers/ref-attention.js';

const rope = (theta: number): RopeSpec => ({ type: 'default', theta, factor: 1, partialRotaryFactor: 1 });

function gqaSpec(o: Partial<ModelSpec> & { hiddenSize: number; numHeads: number; numKvHeads: number; headDim: number }): ModelSpec {
  return {
    modelType: 'llama',
    numLayers: 1,
    intermediateSize: 96,
    vocabSize: 64,
    rmsNormEps: 1e-6,
    tieWordEmbeddings: true,
    attentionBias: false,
    oBias: false,
    maxPositionEmbeddings: 4096,
    rope: rope(1e4),
    raw: {},
    ...o,
  };
}

const t = (data: Float32Array, ...shape: number[]) => ({ data, shape });

function gqaWeights(spec: ModelSpec, seed: number, bias: boolean): LayerWeights {
  const { hiddenSize: Hd, numHeads: H, numKvHeads: G, headDim: d, intermediateSize: I } = spec;
  const s = 1 / Math.sqrt(Hd);
  const tensors: LayerWeights['tensors'] = {
    'self_attn.q_proj.weight': t(randn(H * d * Hd, seed, s), H * d, Hd),
    'self_attn.k_proj.weight': t(randn(G * d * Hd, seed + 1, s), G * d, Hd),
    'self_attn.v_proj.weight': t(randn(G * d * Hd, seed + 2, s), G * d, Hd),
    'self_attn.o_proj.weight': t(randn(Hd * H * d, seed + 3, 1 / Math.sqrt(H * d)), Hd, H * d),
    'input_layernorm.weight': t(randn(Hd, seed + 4, 0.2).map((v) => 1 + v), Hd),
    'post_attention_layernorm.weight': t(randn(Hd, seed + 5, 0.2).map((v) => 1 + v), Hd),
    'mlp.gate_proj.weight': t(randn(I * Hd, seed + 6, s), I, Hd),
    'mlp.up_proj.weight': t(randn(I * Hd, seed + 7, s), I, Hd),
    'mlp.down_proj.weight': t(randn(Hd * I, seed + 8, 1 / Math.sqrt(I)), Hd, I),
  };
  if (bias) {
    tensors['self_attn.q_proj.bias'] = t(randn(H * d, seed + 9, 0.3), H * d);
    tensors['self_attn.k_proj.bias'] = t(randn(G * d, seed + 10, 0.3), G * d);
    tensors['self_attn.v_proj.bias'] = t(randn(G * d, seed + 11, 0.3), G * d);
  }
  return { layer: 0, tensors };
}

function f64(a: Float32Array): Float64Array {
  return Float64Array.from(a);
}

/** Reference attention over nSeq sequences (the helper handles one). */
function gqaRefBatch(spec: ModelSpec, w: LayerWeights, x: Float32Array, nSeq: number, T: number): Float64Array {
  const Hd = spec.hiddenSize;
  const inv = computeRope(spec.rope, { rotDim: spec.headDim, maxPositionEmbeddings: spec.maxPositionEmbeddings }).invFreq;
  const out = new Float64Array(nSeq * T * Hd);
  const g = (n: string) => w.tensors[n]?.data ?? null;
  for (let s = 0; s < nSeq; s++) {
    const o = gqaAttentionRef(
      f64(x.subarray(s * T * Hd, (s + 1) * T * Hd)),
      T,
      { hidden: Hd, heads: spec.numHeads, kvHeads: spec.numKvHeads, headDim: spec.headDim },
      {
        wq: g('self_attn.q_proj.weight')!,
        wk: g('self_attn.k_proj.weight')!,
        wv: g('self_attn.v_proj.weight')!,
        wo: g('self_attn.o_proj.weight')!,
        bq: g('self_attn.q_proj.bias'),
        bk: g('self_attn.k_proj.bias'),
        bv: g('self_attn.v_proj.bias'),
      },
      inv,
    );
    out.set(o, s * T * Hd);
  }
  return out;
}

describe('GQA attention (llama / qwen2 semantics) vs float64 reference', () => {
  test.each([
    { heads: 4, kv: 2, d: 64, bias: false, T: 45, llama3: false },
    { heads: 2, kv: 1, d: 128, bias: true, T: 70, llama3: false },
    { heads: 8, kv: 1, d: 32, bias: false, T: 33, llama3: false },
    { heads: 4, kv: 4, d: 64, bias: true, T: 20, llama3: false },
    { heads: 8, kv: 2, d: 64, bias: false, T: 65, llama3: true },
  ])('heads=$heads kv=$kv d=$d bias=$bias T=$T llama3=$llama3', async ({ heads, kv, d, bias, T, llama3 }) => {
    const r: RopeSpec = llama3
      ? { type: 'llama3', theta: 5e5, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 32, partialRotaryFactor: 1 }
      : rope(bias ? 1e6 : 1e4);
    const spec = gqaSpec({ hiddenSize: 96, numHeads: heads, numKvHeads: kv, headDim: d, attentionBias: bias, rope: r });
    const w = gqaWeights(spec, 100 + d, bias);
    const nSeq = 2;
    const x = randn(nSeq * T * spec.hiddenSize, 7);
    const out = await attentionForward(spec, w, x, nSeq, T);
    expect(relErr(out, gqaRefBatch(spec, w, x, nSeq, T))).toBeLessThan(2e-6);
  });

  test('layerForward = residual + attention + SwiGLU MLP (float64 reference), hook sees the normed input', async () => {
    const spec = gqaSpec({ hiddenSize: 64, numHeads: 4, numKvHeads: 2, headDim: 16, intermediateSize: 80, attentionBias: true });
    const w = gqaWeights(spec, 3, true);
    const nSeq = 3;
    const T = 21;
    const Hd = spec.hiddenSize;
    const h0 = randn(nSeq * T * Hd, 9);
    const h = h0.slice();
    const seen: Float32Array[] = [];
    // micro-batches of 2 sequences: the hook fires twice
    await layerForward(spec, w, h, nSeq, T, { onAttnInput: (x) => void seen.push(x.slice()) }, { microBatchTokens: 2 * T });
    expect(seen.map((s) => s.length)).toEqual([2 * T * Hd, T * Hd]);
    const rows = nSeq * T;
    const xn = rmsNormRef(h0, w.tensors['input_layernorm.weight'].data, rows, Hd, spec.rmsNormEps);
    const hookAll = new Float32Array(rows * Hd);
    hookAll.set(seen[0], 0);
    hookAll.set(seen[1], 2 * T * Hd);
    expect(relErr(hookAll, xn)).toBeLessThan(1e-6);
    const attn = gqaRefBatch(spec, w, Float32Array.from(xn), nSeq, T);
    const h1 = new Float64Array(rows * Hd);
    for (let i = 0; i < h1.length; i++) h1[i] = h0[i] + attn[i];
    const x2 = rmsNormRef(h1, w.tensors['post_attention_layernorm.weight'].data, rows, Hd, spec.rmsNormEps);
    const I = spec.intermediateSize;
    const g = linearRef(x2, w.tensors['mlp.gate_proj.weight'].data, rows, Hd, I);
    const u = linearRef(x2, w.tensors['mlp.up_proj.weight'].data, rows, Hd, I);
    for (let i = 0; i < g.length; i++) g[i] = (g[i] / (1 + Math.exp(-g[i]))) * u[i];
    const dn = linearRef(g, w.tensors['mlp.down_proj.weight'].data, rows, I, Hd);
    const want = h1.map((v, i) => v + dn[i]);
    expect(relErr(h, want)).toBeLessThan(2e-6);
  });

  test('mistral sliding window limits attention to the last `sliding_window` positions', async () => {
    const base = gqaSpec({ hiddenSize: 32, numHeads: 2, numKvHeads: 1, headDim: 16 });
    const w = gqaWeights(base, 5, false);
    const T = 40;
    const x = randn(T * 32, 6);
    const full = await attentionForward(base, w, x, 1, T);
    const win = await attentionForward({ ...base, modelType: 'mistral', raw: { sliding_window: 8 } }, w, x, 1, T);
    // identical while t < window, different afterwards
    expect(relErr(win.subarray(0, 8 * 32), full.subarray(0, 8 * 32))).toBeLessThan(1e-7);
    expect(relErr(win.subarray(20 * 32), full.subarray(20 * 32))).toBeGreaterThan(1e-3);
  });
});

interface MlaCase {
  heads: number;
  R: number;
  dn: number;
  dr: number;
  dv: number;
  latentNorm: boolean;
  bias: boolean;
}

function mlaSpec(c: MlaCase, Hd: number): ModelSpec {
  return gqaSpec({
    modelType: 'deepseek_v3',
    hiddenSize: Hd,
    numHeads: c.heads,
    numKvHeads: c.heads,
    headDim: c.dr,
    attentionBias: c.bias,
    oBias: c.bias,
    rope: rope(1e4),
    mla: {
      qLoraRank: null,
      kvLoraRank: c.R,
      qkRopeHeadDim: c.dr,
      qkNopeHeadDim: c.dn,
      vHeadDim: c.dv,
      ropeInterleave: false,
      qkLatentLayernorm: c.latentNorm,
      qBias: c.bias,
    },
  });
}

describe('DeepSeek-V3 MLA attention', () => {
  test.each<MlaCase>([
    { heads: 4, R: 48, dn: 32, dr: 16, dv: 24, latentNorm: true, bias: false },
    { heads: 2, R: 32, dn: 64, dr: 64, dv: 64, latentNorm: false, bias: true },
    { heads: 3, R: 20, dn: 16, dr: 32, dv: 16, latentNorm: true, bias: true },
  ])('vs float64 transformers-semantics reference: %j', async (c) => {
    const Hd = 64;
    const spec = mlaSpec(c, Hd);
    const dq = c.dn + c.dr;
    const s = 1 / Math.sqrt(Hd);
    const w: LayerWeights = {
      layer: 0,
      tensors: {
        'self_attn.q_proj.weight': t(randn(c.heads * dq * Hd, 1, s), c.heads * dq, Hd),
        'self_attn.kv_a_proj_with_mqa.weight': t(randn((c.R + c.dr) * Hd, 2, s), c.R + c.dr, Hd),
        'self_attn.kv_a_layernorm.weight': t(randn(c.R, 3, 0.2).map((v) => 1 + v), c.R),
        'self_attn.kv_b_proj.weight': t(randn(c.heads * (c.dn + c.dv) * c.R, 4, 1 / Math.sqrt(c.R)), c.heads * (c.dn + c.dv), c.R),
        'self_attn.o_proj.weight': t(randn(Hd * c.heads * c.dv, 5, 1 / Math.sqrt(c.heads * c.dv)), Hd, c.heads * c.dv),
      },
    };
    if (c.bias) {
      w.tensors['self_attn.q_proj.bias'] = t(randn(c.heads * dq, 6, 0.3), c.heads * dq);
      w.tensors['self_attn.kv_a_proj_with_mqa.bias'] = t(randn(c.R + c.dr, 7, 0.3), c.R + c.dr);
      w.tensors['self_attn.o_proj.bias'] = t(randn(Hd, 8, 0.3), Hd);
    }
    const T = 50;
    const nSeq = 2;
    const x = randn(nSeq * T * Hd, 9);
    const out = await attentionForward(spec, w, x, nSeq, T);
    const inv = computeRope(spec.rope, { rotDim: c.dr, maxPositionEmbeddings: 4096 }).invFreq;
    const g = (n: string) => w.tensors[n]?.data ?? null;
    for (let sq = 0; sq < nSeq; sq++) {
      const ref = mlaAttentionRef(
        f64(x.subarray(sq * T * Hd, (sq + 1) * T * Hd)),
        T,
        {
          hidden: Hd,
          heads: c.heads,
          kvLoraRank: c.R,
          ropeDim: c.dr,
          nopeDim: c.dn,
          vDim: c.dv,
          latentNorm: c.latentNorm ? { eps: spec.rmsNormEps, weight: g('self_attn.kv_a_layernorm.weight')! } : null,
        },
        {
          qProj: g('self_attn.q_proj.weight')!,
          qBias: g('self_attn.q_proj.bias'),
          kvA: g('self_attn.kv_a_proj_with_mqa.weight')!,
          kvABias: g('self_attn.kv_a_proj_with_mqa.bias'),
          kvB: g('self_attn.kv_b_proj.weight')!,
          oProj: g('self_attn.o_proj.weight')!,
          oBias: g('self_attn.o_proj.bias'),
        },
        inv,
      );
      expect(relErr(out.subarray(sq * T * Hd, (sq + 1) * T * Hd), ref)).toBeLessThan(2e-6);
    }
  });

  test('q_lora path: q_b_proj(q_a_layernorm(q_a_proj(x))) equals q_proj = q_b diag(norm) q_a when the norm is off', async () => {
    const c: MlaCase = { heads: 2, R: 16, dn: 16, dr: 16, dv: 16, latentNorm: false, bias: false };
    const Hd = 32;
    const Rq = 24;
    const dq = c.dn + c.dr;
    const qa = randn(Rq * Hd, 1, 0.2);
    const qb = randn(c.heads * dq * Rq, 2, 0.2);
    // q_proj = qb @ qa
    const qProj = Float32Array.from(linearRef(qb, Float64Array.from({ length: Hd * Rq }, (_, i) => qa[(i % Rq) * Hd + Math.floor(i / Rq)]), c.heads * dq, Rq, Hd));
    const common = {
      'self_attn.kv_a_proj_with_mqa.weight': t(randn((c.R + c.dr) * Hd, 3, 0.2), c.R + c.dr, Hd),
      'self_attn.kv_b_proj.weight': t(randn(c.heads * (c.dn + c.dv) * c.R, 4, 0.2), c.heads * (c.dn + c.dv), c.R),
      'self_attn.o_proj.weight': t(randn(Hd * c.heads * c.dv, 5, 0.2), Hd, c.heads * c.dv),
    };
    const spec = mlaSpec(c, Hd);
    const specLora: ModelSpec = { ...spec, mla: { ...spec.mla!, qLoraRank: Rq } };
    const x = randn(30 * Hd, 6);
    const a = await attentionForward(spec, { layer: 0, tensors: { ...common, 'self_attn.q_proj.weight': t(qProj, c.heads * dq, Hd) } }, x, 1, 30);
    const b = await attentionForward(
      specLora,
      { layer: 0, tensors: { ...common, 'self_attn.q_a_proj.weight': t(qa, Rq, Hd), 'self_attn.q_b_proj.weight': t(qb, c.heads * dq, Rq) } },
      x,
      1,
      30,
    );
    expect(relErr(b, a)).toBeLessThan(1e-5);
  });

  /**
   * Exact GQA -> MLA construction without RoPE (all positions 0, so rotations are the
   * identity): latent = [K of all KV heads | V of all KV heads] (kv_lora_rank = 2 x kv_heads x
   * head_dim), kv_b selects each query head's group slice (identity blocks), latent norm off,
   * q scaled by sqrt((d + dr) / d) to undo the larger MLA softmax denominator, q_pe = 0.
   */
  test.each([
    { heads: 4, kv: 2, d: 32 },
    { heads: 8, kv: 2, d: 16 },
    { heads: 4, kv: 4, d: 16 },
  ])('reproduces a GQA layer (heads=$heads kv=$kv d=$d) built into MLA form, within 1e-5', async ({ heads, kv, d }) => {
    const Hd = 64;
    const gspec = gqaSpec({ hiddenSize: Hd, numHeads: heads, numKvHeads: kv, headDim: d, attentionBias: true });
    const gw = gqaWeights(gspec, 40 + heads, true);
    const dr = 8;
    const R = 2 * kv * d;
    const grp = heads / kv;
    const mspec = mlaSpec({ heads, R, dn: d, dr, dv: d, latentNorm: false, bias: true }, Hd);
    const dq = d + dr;
    const sc = Math.sqrt(dq / d);
    const wq = gw.tensors['self_attn.q_proj.weight'].data;
    const bq = gw.tensors['self_attn.q_proj.bias'].data;
    const qProj = new Float32Array(heads * dq * Hd);
    const qBias = new Float32Array(heads * dq);
    for (let h = 0; h < heads; h++)
      for (let i = 0; i < d; i++) {
        for (let j = 0; j < Hd; j++) qProj[(h * dq + i) * Hd + j] = wq[(h * d + i) * Hd + j] * sc;
        qBias[h * dq + i] = bq[h * d + i] * sc;
      }
    const kvA = new Float32Array((R + dr) * Hd);
    const kvABias = new Float32Array(R + dr);
    kvA.set(gw.tensors['self_attn.k_proj.weight'].data, 0);
    kvA.set(gw.tensors['self_attn.v_proj.weight'].data, kv * d * Hd);
    kvA.set(randn(dr * Hd, 77), R * Hd); // k_rope: anything (q_pe = 0)
    kvABias.set(gw.tensors['self_attn.k_proj.bias'].data, 0);
    kvABias.set(gw.tensors['self_attn.v_proj.bias'].data, kv * d);
    const kvB = new Float32Array(heads * 2 * d * R);
    for (let h = 0; h < heads; h++) {
      const g = Math.floor(h / grp);
      for (let i = 0; i < d; i++) {
        kvB[(h * 2 * d + i) * R + g * d + i] = 1; // k_nope_h = K_g
        kvB[(h * 2 * d + d + i) * R + kv * d + g * d + i] = 1; // v_h = V_g
      }
    }
    const mw: LayerWeights = {
      layer: 0,
      tensors: {
        'self_attn.q_proj.weight': t(qProj, heads * dq, Hd),
        'self_attn.q_proj.bias': t(qBias, heads * dq),
        'self_attn.kv_a_proj_with_mqa.weight': t(kvA, R + dr, Hd),
        'self_attn.kv_a_proj_with_mqa.bias': t(kvABias, R + dr),
        'self_attn.kv_b_proj.weight': t(kvB, heads * 2 * d, R),
        'self_attn.o_proj.weight': gw.tensors['self_attn.o_proj.weight'],
      },
    };
    const T = 37;
    const nSeq = 2;
    const x = randn(nSeq * T * Hd, 8);
    const pos = new Int32Array(T); // all 0: RoPE is the identity in both forms
    const want = await attentionForward(gspec, gw, x, nSeq, T, pos);
    const got = await attentionForward(mspec, mw, x, nSeq, T, pos);
    expect(relErr(got, want)).toBeLessThan(1e-5);
  });

  /**
   * Exact GQA -> MLA construction with RoPE for one KV head (MQA): the single rotated key
   * becomes the shared rope key (qk_rope_head_dim = head_dim), values the latent
   * (kv_lora_rank = head_dim, identity kv_b for v), q_nope = 0.
   */
  test.each([false, true])('reproduces an MQA layer with RoPE (rope part = the whole key), interleave=%s', async (interleave) => {
    const Hd = 64;
    const heads = 4;
    const d = 32;
    const gspec = gqaSpec({ hiddenSize: Hd, numHeads: heads, numKvHeads: 1, headDim: d, attentionBias: true });
    const gw = gqaWeights(gspec, 61, true);
    const dn = 8;
    const R = d;
    const mspec0 = mlaSpec({ heads, R, dn, dr: d, dv: d, latentNorm: false, bias: true }, Hd);
    const mspec: ModelSpec = { ...mspec0, mla: { ...mspec0.mla!, ropeInterleave: interleave } };
    const dq = dn + d;
    const sc = Math.sqrt(dq / d);
    // interleaved layout: rotate-half dim i -> 2i, i + d/2 -> 2i + 1
    const perm = (i: number) => (interleave ? (i < d / 2 ? 2 * i : 2 * (i - d / 2) + 1) : i);
    const wq = gw.tensors['self_attn.q_proj.weight'].data;
    const bq = gw.tensors['self_attn.q_proj.bias'].data;
    const qProj = new Float32Array(heads * dq * Hd);
    const qBias = new Float32Array(heads * dq);
    for (let h = 0; h < heads; h++)
      for (let i = 0; i < d; i++) {
        const row = h * dq + dn + perm(i);
        for (let j = 0; j < Hd; j++) qProj[row * Hd + j] = wq[(h * d + i) * Hd + j] * sc;
        qBias[row] = bq[h * d + i] * sc;
      }
    const wk = gw.tensors['self_attn.k_proj.weight'].data;
    const bk = gw.tensors['self_attn.k_proj.bias'].data;
    const kvA = new Float32Array((R + d) * Hd);
    const kvABias = new Float32Array(R + d);
    kvA.set(gw.tensors['self_attn.v_proj.weight'].data, 0);
    kvABias.set(gw.tensors['self_attn.v_proj.bias'].data, 0);
    for (let i = 0; i < d; i++) {
      for (let j = 0; j < Hd; j++) kvA[(R + perm(i)) * Hd + j] = wk[i * Hd + j];
      kvABias[R + perm(i)] = bk[i];
    }
    const kvB = new Float32Array(heads * (dn + d) * R);
    kvB.set(randn(heads * (dn + d) * R, 5)); // k_nope rows: anything (q_nope = 0)
    for (let h = 0; h < heads; h++)
      for (let i = 0; i < d; i++) {
        const row = h * (dn + d) + dn + i;
        kvB.fill(0, row * R, (row + 1) * R);
        kvB[row * R + i] = 1;
      }
    const mw: LayerWeights = {
      layer: 0,
      tensors: {
        'self_attn.q_proj.weight': t(qProj, heads * dq, Hd),
        'self_attn.q_proj.bias': t(qBias, heads * dq),
        'self_attn.kv_a_proj_with_mqa.weight': t(kvA, R + d, Hd),
        'self_attn.kv_a_proj_with_mqa.bias': t(kvABias, R + d),
        'self_attn.kv_b_proj.weight': t(kvB, heads * (dn + d), R),
        'self_attn.o_proj.weight': gw.tensors['self_attn.o_proj.weight'],
      },
    };
    const T = 45;
    const x = randn(2 * T * Hd, 12);
    const want = await attentionForward(gspec, gw, x, 2, T);
    const got = await attentionForward(mspec, mw, x, 2, T);
    expect(relErr(got, want)).toBeLessThan(1e-5);
  });

  test('missing or mis-sized tensors are named in the error', async () => {
    const c: MlaCase = { heads: 2, R: 16, dn: 16, dr: 16, dv: 16, latentNorm: true, bias: false };
    const spec = mlaSpec(c, 32);
    const w: LayerWeights = { layer: 3, tensors: { 'self_attn.q_proj.weight': t(new Float32Array(10), 10) } };
    await expect(attentionForward(spec, w, new Float32Array(32 * 4), 1, 4)).rejects.toMatchObject({
      code: 'ERR_TENSOR_SHAPE',
      message: expect.stringContaining('self_attn.q_proj.weight'),
    });
    const w2: LayerWeights = { layer: 3, tensors: {} };
    await expect(attentionForward(spec, w2, new Float32Array(32 * 4), 1, 4)).rejects.toMatchObject({ code: 'ERR_TENSOR_MISSING' });
  });
});
