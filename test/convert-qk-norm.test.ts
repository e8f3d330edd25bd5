/**
 * Qwen3's q/k norms as linear maps (src/convert/qk-norm.ts) against float64 references
 * written here: the moment constant, the least-squares scalar and the regression (normal
 * equations solved by Gaussian elimination), their fitting errors in the order the
 * methods promise, intercepts only with biases, the method switch and its errors; and a
 * tiny random Qwen3 converted end to end into a stock DeepSeek-V3 checkpoint.
 */
import { existsSync, readFileSync } from 'node:fs';
import { jest } from '@jest/globals';
import { join } from 'node:path';
import { gqaAttention } from '../src/convert/attention-weights.js';
import { convert } from '../src/convert/convert.js';
import { resolveQkNorm } from '../src/convert/options.js';
import { DEFAULT_QK_NORM, QK_NORM_METHODS, type QkNormMethod, foldQkNorm, sourceAttention } from '../src/convert/qk-norm.js';
import { main } from '../src/cli/main.js';
import type { LayerWeights } from '../src/engine/weights.js';
import { loadModelSpec, parseModelSpec } from '../src/model/spec.js';
import { MomentAccumulator } from '../src/tensor/moments.js';
import { maxRelErr, randn } from './helpers/forward-ref.js';
import { writeSyntheticModel } from './helpers/synthetic.js';
import { useTempDir } from './helpers/temp-dir.js';

const hid = 24;
const H = 4;
const G = 2;
const d = 8;
const eps = 1e-6;
const rows = 900;
/** qk-norm.ts's ridge grid (relative strengths; Infinity: the scalar fold) */
const GRID = [0, 1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1, 10, Infinity];

function specOf(bias: boolean) {
  return parseModelSpec({
    model_type: 'qwen3',
    hidden_size: hid,
    num_hidden_layers: 1,
    num_attention_heads: H,
    num_key_value_heads: G,
    head_dim: d,
    intermediate_size: 32,
    vocab_size: 50,
    attention_bias: bias,
    rms_norm_eps: eps,
  });
}

/** A random Qwen3 attention layer: weights whose rows differ in scale, so per-token head norms vary. */
function layer(bias: boolean, seed: number): LayerWeights {
  const t = (name: string, shape: number[], data: Float32Array) => [`self_attn.${name}`, { data, shape }] as const;
  const gamma = (s: number) => randn(d, s, 0.3).map((v) => 1 + v);
  const entries = [
    t('q_proj.weight', [H * d, hid], randn(H * d * hid, seed, 0.2)),
    t('k_proj.weight', [G * d, hid], randn(G * d * hid, seed + 1, 0.2)),
    t('v_proj.weight', [G * d, hid], randn(G * d * hid, seed + 2, 0.2)),
    t('o_proj.weight', [hid, H * d], randn(hid * H * d, seed + 3, 0.2)),
    t('q_norm.weight', [d], gamma(seed + 4)),
    t('k_norm.weight', [d], gamma(seed + 5)),
  ];
  if (bias) entries.push(t('q_proj.bias', [H * d], randn(H * d, seed + 6, 0.3)), t('k_proj.bias', [G * d], randn(G * d, seed + 7, 0.3)));
  return { layer: 0, tensors: Object.fromEntries(entries) };
}

/** Inputs with a mean direction and rows of varying scale (as RMS-normed hidden states with gamma). */
function inputs(seed: number): Float32Array {
  const x = randn(rows * hid, seed);
  const mean = randn(hid, seed + 1, 0.7);
  const s = randn(rows, seed + 2, 0.4);
  for (let r = 0; r < rows; r++) for (let j = 0; j < hid; j++) x[r * hid + j] = x[r * hid + j] * (1 + 0.5 * Math.tanh(s[r])) + mean[j];
  return x;
}

/** Float64 normed heads of projection `p` ('q' | 'k') of `w` on `x`. */
function normedRef(w: LayerWeights, p: 'q' | 'k', x: Float32Array): Float64Array {
  const nh = p === 'q' ? H : G;
  const W = w.tensors[`self_attn.${p}_proj.weight`].data;
  const b = w.tensors[`self_attn.${p}_proj.bias`]?.data;
  const g = w.tensors[`self_attn.${p}_norm.weight`].data;
  const out = new Float64Array(rows * nh * d);
  const y = new Float64Array(d);
  for (let r = 0; r < rows; r++)
    for (let h = 0; h < nh; h++) {
      let ss = 0;
      for (let i = 0; i < d; i++) {
        let v = b ? b[h * d + i] : 0;
        for (let j = 0; j < hid; j++) v += W[(h * d + i) * hid + j] * x[r * hid + j];
        y[i] = v;
        ss += v * v;
      }
      const inv = 1 / Math.sqrt(ss / d + eps);
      for (let i = 0; i < d; i++) out[(r * nh + h) * d + i] = g[i] * y[i] * inv;
    }
  return out;
}

/** Float64 outputs of a linear map (A, a) on x, and its relative error against `ref`. */
function fitError(A: Float32Array, a: Float32Array | null | undefined, x: Float32Array, ref: Float64Array): number {
  const out = ref.length / rows;
  let num = 0;
  let den = 0;
  for (let r = 0; r < rows; r++)
    for (let o = 0; o < out; o++) {
      let v = a ? a[o] : 0;
      for (let j = 0; j < hid; j++) v += A[o * hid + j] * x[r * hid + j];
      num += (v - ref[r * out + o]) ** 2;
      den += ref[r * out + o] ** 2;
    }
  return Math.sqrt(num / den);
}

/** Solves the normal equations (X^T X) A^T = X^T N in float64 (the ridge solve with lambda 0 over every row). */
function regressionRef(x: Float32Array, n: Float64Array, augmented: boolean): Float64Array {
  const m = augmented ? hid + 1 : hid;
  return ridgeRef(x, n, new Float64Array((n.length / rows) * m), 0, augmented, 0, rows);
}

/** Solves (S + lambda I) A^T = C^T + lambda A0^T in float64 (S = E[xa xa^T], C = E[n xa^T] over rows r0..r1 - 1); A0 [out, m]. */
function ridgeRef(x: Float32Array, n: Float64Array, a0: Float64Array, lambda: number, augmented: boolean, r0: number, r1: number): Float64Array {
  const m = augmented ? hid + 1 : hid;
  const out = n.length / rows;
  const xa = (r: number, j: number) => (j === hid ? 1 : x[r * hid + j]);
  const M = Array.from({ length: m }, (_, i) => {
    const row = new Float64Array(m + out);
    for (let r = r0; r < r1; r++) {
      for (let j = 0; j < m; j++) row[j] += (xa(r, i) * xa(r, j)) / (r1 - r0);
      for (let o = 0; o < out; o++) row[m + o] += (xa(r, i) * n[r * out + o]) / (r1 - r0);
    }
    row[i] += lambda;
    for (let o = 0; o < out; o++) row[m + o] += lambda * a0[o * m + i];
    return row;
  });
  // Gauss-Jordan elimination with partial pivoting
  for (let c = 0; c < m; c++) {
    let p = c;
    for (let i = c + 1; i < m; i++) if (Math.abs(M[i][c]) > Math.abs(M[p][c])) p = i;
    [M[c], M[p]] = [M[p], M[c]];
    for (let i = 0; i < m; i++) {
      if (i === c) continue;
      const f = M[i][c] / M[c][c];
      for (let j = c; j < m + out; j++) M[i][j] -= f * M[c][j];
    }
  }
  const A = new Float64Array(out * m); // [out, m]
  for (let o = 0; o < out; o++) for (let j = 0; j < m; j++) A[o * m + j] = M[j][m + o] / M[j][j];
  return A;
}

/** An [out, m] map (m = hid, plus the intercept column with biases) as weights [out, hid] and intercepts [out] (zeros without biases). */
function splitMap(a: Float64Array, augmented: boolean): { wRef: Float64Array; bRef: Float64Array } {
  const m1 = augmented ? hid + 1 : hid;
  const out = a.length / m1;
  const wRef = new Float64Array(out * hid);
  const bRef = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    for (let j = 0; j < hid; j++) wRef[o * hid + j] = a[o * m1 + j];
    if (augmented) bRef[o] = a[o * m1 + hid];
  }
  return { wRef, bRef };
}

/** The least-squares scalar fold on rows r0..r1 - 1 as an [out, m] map: c_h gamma W_h (and c_h gamma b_h), c_h = sum n.g / sum g.g. */
function scalarFoldRef(w: LayerWeights, p: 'q' | 'k', x: Float32Array, n: Float64Array, augmented: boolean, r0: number, r1: number): { a: Float64Array; c: Float64Array } {
  const nh = p === 'q' ? H : G;
  const W = w.tensors[`self_attn.${p}_proj.weight`].data;
  const b = w.tensors[`self_attn.${p}_proj.bias`]?.data;
  const g = w.tensors[`self_attn.${p}_norm.weight`].data;
  const m = augmented ? hid + 1 : hid;
  const c = new Float64Array(nh);
  for (let h = 0; h < nh; h++) {
    let ng = 0;
    let gg = 0;
    for (let r = r0; r < r1; r++)
      for (let i = 0; i < d; i++) {
        let v = b ? b[h * d + i] : 0;
        for (let j = 0; j < hid; j++) v += W[(h * d + i) * hid + j] * x[r * hid + j];
        const gy = g[i] * v;
        ng += n[(r * nh + h) * d + i] * gy;
        gg += gy * gy;
      }
    c[h] = ng / gg;
  }
  const a = new Float64Array(nh * d * m);
  for (let o = 0; o < nh * d; o++) {
    const f = c[Math.floor(o / d)] * g[o % d];
    for (let j = 0; j < hid; j++) a[o * m + j] = f * W[o * hid + j];
    if (augmented) a[o * m + hid] = f * (b ? b[o] : 0);
  }
  return { a, c };
}

/** Per head, sum over rows r0..r1 - 1 of |n_h - A_h xa|^2 for an [out, m] map. */
function headSquaredErrors(a: Float64Array, x: Float32Array, n: Float64Array, nh: number, augmented: boolean, r0: number, r1: number): Float64Array {
  const m = augmented ? hid + 1 : hid;
  const e = new Float64Array(nh);
  for (let r = r0; r < r1; r++)
    for (let o = 0; o < nh * d; o++) {
      let v = augmented ? a[o * m + hid] : 0;
      for (let j = 0; j < hid; j++) v += a[o * m + j] * x[r * hid + j];
      e[Math.floor(o / d)] += (v - n[r * nh * d + o]) ** 2;
    }
  return e;
}

function momentsOf(x: Float32Array) {
  const acc = new MomentAccumulator(hid);
  acc.add(x, rows);
  return acc.moments();
}

describe.each([
  ['no bias', false],
  ['q/k biases', true],
])('foldQkNorm on a random Qwen3 layer (%s)', (_label, bias) => {
  const spec = specOf(bias);
  const w = layer(bias, bias ? 40 : 20);
  const x = inputs(bias ? 41 : 21);
  const m = momentsOf(x);
  const refs = { q: normedRef(w, 'q', x), k: normedRef(w, 'k', x) };
  const fold = (method: QkNormMethod) => foldQkNorm(spec, w, m, x, rows, method);

  test("'constant' folds gamma and 1 / sqrt(E[mean(y^2)] + eps) per head", async () => {
    const f = await fold('constant');
    for (const p of ['q', 'k'] as const) {
      const nh = p === 'q' ? H : G;
      const W = w.tensors[`self_attn.${p}_proj.weight`].data;
      const b = w.tensors[`self_attn.${p}_proj.bias`]?.data;
      const g = w.tensors[`self_attn.${p}_norm.weight`].data;
      const expected = new Float64Array(W.length);
      for (let h = 0; h < nh; h++) {
        let ms = 0; // mean over tokens and dims of y^2, straight from the inputs
        for (let r = 0; r < rows; r++)
          for (let i = 0; i < d; i++) {
            let v = b ? b[h * d + i] : 0;
            for (let j = 0; j < hid; j++) v += W[(h * d + i) * hid + j] * x[r * hid + j];
            ms += (v * v) / (rows * d);
          }
        const c = 1 / Math.sqrt(ms + eps);
        for (let i = 0; i < d; i++) for (let j = 0; j < hid; j++) expected[(h * d + i) * hid + j] = g[i] * c * W[(h * d + i) * hid + j];
      }
      expect(maxRelErr(p === 'q' ? f.attention.wq : f.attention.wk, expected)).toBeLessThan(1e-5);
    }
    expect(Boolean(f.attention.bq)).toBe(bias);
  });

  test("'regression' equals the normal-equation solution; intercepts only with biases", async () => {
    const f = await fold('regression');
    for (const p of ['q', 'k'] as const) {
      const { wRef, bRef } = splitMap(regressionRef(x, refs[p], bias), bias);
      expect(maxRelErr(p === 'q' ? f.attention.wq : f.attention.wk, wRef)).toBeLessThan(1e-5);
      const b = p === 'q' ? f.attention.bq : f.attention.bk;
      if (bias) expect(maxRelErr(b!, bRef)).toBeLessThan(1e-5);
      else expect(b).toBeNull();
    }
  });

  test("'scalar' folds gamma and the least-squares scalar sum n.g / sum g.g per head", async () => {
    const f = await fold('scalar');
    for (const p of ['q', 'k'] as const) {
      const { wRef, bRef } = splitMap(scalarFoldRef(w, p, x, refs[p], bias, 0, rows).a, bias);
      expect(maxRelErr(p === 'q' ? f.attention.wq : f.attention.wk, wRef)).toBeLessThan(1e-5);
      if (bias) expect(maxRelErr((p === 'q' ? f.attention.bq : f.attention.bk)!, bRef)).toBeLessThan(1e-5);
    }
  });

  test("'ridge': each head's strength minimises the validation-quarter error over the grid, and the map is the refit on all rows", async () => {
    const f = await fold('ridge');
    const m1 = bias ? hid + 1 : hid;
    const split = Math.floor(rows * 0.75);
    const meanEig = (r0: number, r1: number) => {
      let tr = 0;
      for (let r = r0; r < r1; r++) for (let j = 0; j < m1; j++) tr += (j === hid ? 1 : x[r * hid + j] ** 2) / (r1 - r0);
      return tr / m1;
    };
    for (const p of ['q', 'k'] as const) {
      const nh = p === 'q' ? H : G;
      const chosen = f.ridge![p];
      // the choice: fitted on the first three quarters, judged on the last
      const fit0 = scalarFoldRef(w, p, x, refs[p], bias, 0, split).a;
      const errs = GRID.map((t) => headSquaredErrors(t === Infinity ? fit0 : ridgeRef(x, refs[p], fit0, t * meanEig(0, split), bias, 0, split), x, refs[p], nh, bias, split, rows));
      for (let h = 0; h < nh; h++) {
        const best = Math.min(...errs.map((e) => e[h]));
        expect(errs[GRID.indexOf(chosen[h])][h]).toBeLessThanOrEqual(best * (1 + 1e-6));
      }
      // the map: refitted on every row with the chosen strength
      const all0 = scalarFoldRef(w, p, x, refs[p], bias, 0, rows).a;
      const got = p === 'q' ? f.attention.wq : f.attention.wk;
      const gotB = p === 'q' ? f.attention.bq : f.attention.bk;
      for (let h = 0; h < nh; h++) {
        const t = chosen[h];
        const a = t === Infinity ? all0 : ridgeRef(x, refs[p], all0, t * meanEig(0, rows), bias, 0, rows);
        const wRef = new Float64Array(d * hid);
        for (let i = 0; i < d; i++) for (let j = 0; j < hid; j++) wRef[i * hid + j] = a[(h * d + i) * m1 + j];
        expect(maxRelErr(got.subarray(h * d * hid, (h + 1) * d * hid), wRef)).toBeLessThan(1e-4);
        if (bias) expect(maxRelErr(gotB!.subarray(h * d, (h + 1) * d), Float64Array.from({ length: d }, (_, i) => a[(h * d + i) * m1 + hid]))).toBeLessThan(1e-4);
      }
    }
  });

  test('fitting errors: regression <= least-squares scalar <= moment constant, and none is exact', async () => {
    const errs: Record<string, { q: number; k: number }> = {};
    for (const method of ['constant', 'scalar', 'regression'] as const) {
      const f = await fold(method);
      errs[method] = { q: fitError(f.attention.wq, f.attention.bq, x, refs.q), k: fitError(f.attention.wk, f.attention.bk, x, refs.k) };
    }
    for (const p of ['q', 'k'] as const) {
      expect(errs.regression[p]).toBeLessThanOrEqual(errs.scalar[p] * (1 + 1e-9));
      expect(errs.scalar[p]).toBeLessThanOrEqual(errs.constant[p] * (1 + 1e-9));
      expect(errs.regression[p]).toBeGreaterThan(1e-3);
      expect(errs.regression[p]).toBeLessThan(errs.constant[p]);
    }
  });
});

describe('ridge: the regression shrunk toward the scalar fold', () => {
  test.each([false, true])('bias %s: fitting error between the regression and the scalar fold; strengths from the grid', async (bias) => {
    const spec = specOf(bias);
    const w = layer(bias, 70);
    const x = inputs(71);
    const m = momentsOf(x);
    const errs: Record<string, number> = {};
    let ridge: { q: number[]; k: number[] } | undefined;
    for (const method of ['scalar', 'regression', 'ridge'] as const) {
      const f = await foldQkNorm(spec, w, m, x, rows, method);
      errs[method] = fitError(f.attention.wq, f.attention.bq, x, normedRef(w, 'q', x)) + fitError(f.attention.wk, f.attention.bk, x, normedRef(w, 'k', x));
      if (method === 'ridge') ridge = f.ridge;
    }
    // on the rows it is fitted on, the ridge path's error grows from the regression's to the scalar fold's
    expect(errs.ridge).toBeGreaterThanOrEqual(errs.regression * (1 - 1e-9));
    expect(errs.ridge).toBeLessThanOrEqual(errs.scalar * (1 + 1e-9));
    expect(ridge!.q).toHaveLength(H);
    expect(ridge!.k).toHaveLength(G);
    for (const t of [...ridge!.q, ...ridge!.k]) expect([0, 1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1, 10, Infinity]).toContain(t);
  });
});

describe('the method switch and the refusals', () => {
  const dir = useTempDir('g2m-qknorm-cli-');

  test('the qkNorm option: every method accepted, the default when absent, anything else a usage error naming the methods', () => {
    for (const m of QK_NORM_METHODS) expect(resolveQkNorm(m)).toBe(m);
    expect(resolveQkNorm(undefined)).toBe(DEFAULT_QK_NORM);
    for (const bad of ['exact', '', 'Constant', 3])
      expect(() => resolveQkNorm(bad)).toThrow(expect.objectContaining({ code: 'ERR_BAD_OPTION', exitCode: 2, message: expect.stringContaining(QK_NORM_METHODS.join(', ')) }));
  });

  test('--qk-norm: a bad method exits 2 naming the flag before any work', async () => {
    const err = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      const fixture = new URL('./fixtures/tiny-llama-gqa', import.meta.url).pathname;
      const out = join(dir(), 'never-written');
      const code = await main(['node', 'gqa2mla', 'convert', fixture, out, '--calib', join(fixture, 'config.json'), '--qk-rope-dim', '32', '--kv-lora-rank', '64', '--qk-norm', 'exact']);
      expect(code).toBe(2);
      const text = err.mock.calls.map((c) => String(c[0])).join('');
      expect(text).toContain('--qk-norm must be one of');
      expect(existsSync(out)).toBe(false);
    } finally {
      err.mockRestore();
    }
  });

  test('gqaAttention refuses a layer with q/k norms unless they are handled; sourceAttention leaves other models alone', async () => {
    const w = layer(false, 60);
    expect(() => gqaAttention(w)).toThrow(expect.objectContaining({ code: 'ERR_INTERNAL' }));
    const { 'self_attn.q_norm.weight': _q, 'self_attn.k_norm.weight': _k, ...rest } = w.tensors;
    const llama = parseModelSpec({ model_type: 'llama', hidden_size: hid, num_hidden_layers: 1, num_attention_heads: H, num_key_value_heads: G, head_dim: d, intermediate_size: 32, vocab_size: 50 });
    const x = inputs(61);
    const a = await sourceAttention(llama, { layer: 0, tensors: rest }, momentsOf(x), x, rows, 'ridge');
    expect(a.wq).toBe(rest['self_attn.q_proj.weight'].data);
  });

  test('inputs left on the device (NaN-marked host rows) are refused, not fitted', async () => {
    const x = inputs(62);
    x[0] = NaN;
    await expect(foldQkNorm(specOf(false), layer(false, 63), momentsOf(inputs(62)), x, rows, 'regression')).rejects.toMatchObject({ code: 'ERR_INTERNAL' });
  });
});

describe('a tiny random Qwen3 converted end to end', () => {
  const dir = useTempDir('g2m-qwen3-conv-');

  test('the output is a stock DeepSeek-V3 checkpoint without q_norm / k_norm, with finite held-out errors; the config names the qkNorm method', async () => {
    const src = join(dir(), 'src');
    const fixture = new URL('./fixtures/tiny-llama-gqa', import.meta.url).pathname;
    await writeSyntheticModel(src, { modelType: 'qwen3', numLayers: 2, hiddenSize: 64, numHeads: 4, numKvHeads: 2, headDim: 32, intermediateSize: 96, vocabSize: 4096, tie: true, bias: false, dtype: 'BF16', seed: 9, tokenizerFrom: fixture });
    const calibText = readFileSync(join(fixture, '..', 'pydocs-train-3M.txt'), 'utf8').slice(0, 100_000);
    const out = join(dir(), 'mla');
    const r = await convert({ modelDir: src, outDir: out, calibText, calibSamples: 6, calibSeqlen: 64, heldOutSamples: 2, qkRopeDim: 16, kvLoraRank: 48, freqfold: 2, balanceKv: 1, device: 'cpu', qkNorm: 'scalar' });
    const spec = await loadModelSpec(out);
    expect(spec.modelType).toBe('deepseek_v3');
    expect(spec.qkNorm).toBeUndefined();
    expect((spec.raw.gqa2mla as Record<string, unknown>).qk_norm).toMatch(/^approximated: scalar /);
    const index = JSON.parse(readFileSync(join(out, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> };
    const names = Object.keys(index.weight_map);
    expect(names.filter((n) => n.includes('q_norm') || n.includes('k_norm'))).toEqual([]);
    expect(names).toContain('model.layers.1.self_attn.kv_b_proj.weight');
    for (const l of r.layers) {
      expect(Number.isFinite(l.attnRelError)).toBe(true);
      expect(l.attnRelError).toBeLessThan(1);
    }
  }, 300000);
});
