/**
 * Qwen3-MoE (model_type qwen3_moe: Qwen3's per-head q/k norm attention and a sparse MoE MLP)
 * on test/fixtures/tiny-qwen3-moe, a random-weight Qwen3MoeForCausalLM saved by transformers
 * (bench/zoo/make-tiny-qwen3-moe.py; layer 0 dense, layers 1-2 MoE, norm_topk_prob false):
 * the spec of its config and of Hub-style configs, inspect, our engine's logits, NLL and
 * eval-ppl against transformers' float32 reference (both norm_topk_prob settings), the
 * conversion at lossless attention settings (the fixture's attention makes every q/k-norm
 * stand-in exact, see the script), its DeepSeek-V3 MoE fields and per-layer dense/MoE
 * tensors, each engine's routing of the output, `gqa2mla check`, and the refusal of a layout
 * that DeepSeek-V3 cannot express.
 */
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Checkpoint } from '../src/checkpoint/checkpoint.js';
import { formatInspect, inspectModel } from '../src/cli/inspect.js';
import { deepseekConfig } from '../src/convert/config.js';
import { convert } from '../src/convert/convert.js';
import { resolveOptions } from '../src/convert/options.js';
import { portableConfig } from '../src/export/portable.js';
import { slidingWindowOf } from '../src/engine/attention.js';
import { ModelRunner, readLmHead } from '../src/engine/model.js';
import { routeTokens } from '../src/engine/moe-routing.js';
import { evalPpl } from '../src/eval/ppl.js';
import { engineView, type EngineName } from '../src/interop/engine-semantics.js';
import { isMoeLayer, parseModelSpec } from '../src/model/spec.js';
import type { MoeRouting } from '../src/model/spec-types.js';
import { linearRef, maxRelErr, randn, rmsNormRef } from './helpers/forward-ref.js';
import { engineNllDiffs, expectRoutingVerdicts } from './helpers/moe-engines.js';
import { seedLabel, testSeed } from './helpers/random.js';
import { useTempDir } from './helpers/temp-dir.js';

const FIX = join(new URL('.', import.meta.url).pathname, 'fixtures');
const MODEL = join(FIX, 'tiny-qwen3-moe');
const CALIB = readFileSync(join(FIX, 'pydocs-train-3M.txt'), 'utf8').slice(0, 60_000);

interface Measured {
  ppl: number;
  window0_nll: number[];
  window0_logits: number[][];
}
const REF = JSON.parse(readFileSync(join(MODEL, 'reference.json'), 'utf8')) as {
  text_chars: number;
  seq: number;
  windows: number;
  vocab_stride: number;
  window0_ids: number[];
  as_saved: Measured;
  norm_topk_prob_true: Measured;
};
const T = REF.seq;
const IDS = Int32Array.from(REF.window0_ids);
const tmp = useTempDir('g2m-qwen3-moe-');
const SEED = testSeed();

/** Qwen3-MoE's gate as DeepSeek-V3 routing: softmax over all experts, top-k, renormalised when norm_topk_prob. */
const qwen3Gate = (normTopkProb: boolean): MoeRouting => ({ scoring: 'softmax', normTopkProb, nGroup: 1, topkGroup: 1, groupScore: 'max', correctionBias: false, routedScalingFactor: 1 });

/** The fixture with norm_topk_prob true (same weights), under the temp directory. */
function renormCopy(): string {
  const dir = join(tmp(), 'renorm');
  cpSync(MODEL, dir, { recursive: true });
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...cfg, norm_topk_prob: true }));
  return dir;
}

/** Our engine's logits of window 0 at every position for the reference's strided vocabulary ids. */
async function strideLogits(dir: string): Promise<Float64Array> {
  const r = await ModelRunner.open(dir);
  try {
    const H = r.spec.hiddenSize;
    const h = Float32Array.from(await r.forward(IDS, 1, T));
    const xn = rmsNormRef(h, await r.source.read('model.norm.weight'), T, H, r.spec.rmsNormEps);
    const logits = linearRef(xn, await readLmHead(r.source, r.spec), T, H, r.spec.vocabSize);
    const V = r.spec.vocabSize;
    const cols = V / REF.vocab_stride;
    return Float64Array.from({ length: T * cols }, (_, i) => logits[Math.floor(i / cols) * V + (i % cols) * REF.vocab_stride]);
  } finally {
    await r.close();
  }
}

const refLogits = (m: Measured) => Float64Array.from(m.window0_logits.flat());

describe('spec and inspect', () => {
  const base = { model_type: 'qwen3_moe', hidden_size: 64, num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 96, vocab_size: 100 };

  test("the fixture's config (transformers 5 saves num_local_experts) and a Hub-style config (num_experts)", () => {
    const cfg = JSON.parse(readFileSync(join(MODEL, 'config.json'), 'utf8'));
    const spec = parseModelSpec(cfg);
    expect(spec).toMatchObject({ modelType: 'qwen3_moe', qkNorm: true, headDim: 32, intermediateSize: 64, attentionBias: false, tieWordEmbeddings: true });
    expect(spec.moe).toEqual({ numExperts: 4, topK: 2, expertIntermediateSize: 24, routing: qwen3Gate(false), firstDense: 1, layerFreq: 1 });
    const hub = parseModelSpec({ ...base, num_experts: 8, num_experts_per_tok: 2, moe_intermediate_size: 16, norm_topk_prob: true, decoder_sparse_step: 1, mlp_only_layers: [] });
    expect(hub.moe).toEqual({ numExperts: 8, topK: 2, expertIntermediateSize: 16, routing: qwen3Gate(true), firstDense: 0, layerFreq: 1 });
    // head_dim falls back to hidden / heads (Qwen3MoeConfig has no head_dim default, unlike Qwen3's 128)
    expect(hub.headDim).toBe(16);
    // Qwen3MoeConfig's defaults: 128 experts, top 8, moe_intermediate_size 768, not renormalised
    expect(parseModelSpec(base).moe).toMatchObject({ numExperts: 128, topK: 8, expertIntermediateSize: 768, routing: qwen3Gate(false) });
  });

  test('dense and MoE layers: decoder_sparse_step and mlp_only_layers, as DeepSeek-V3 fields when they express it, else listed', () => {
    const layers = (extra: Record<string, unknown>, n = 4) => {
      const s = parseModelSpec({ ...base, num_hidden_layers: n, num_experts: 4, num_experts_per_tok: 2, ...extra });
      return { moe: s.moe, pattern: Array.from({ length: n }, (_, l) => isMoeLayer(s, l)) };
    };
    expect(layers({ decoder_sparse_step: 2 })).toMatchObject({ moe: { moeLayers: [1, 3] }, pattern: [false, true, false, true] });
    expect(layers({ decoder_sparse_step: 2 }, 2)).toMatchObject({ moe: { firstDense: 1, layerFreq: 1 }, pattern: [false, true] });
    expect(layers({ mlp_only_layers: [0, 1] }).moe).toMatchObject({ firstDense: 2, layerFreq: 1 });
    expect(layers({ mlp_only_layers: [1, 3] }, 5)).toMatchObject({ moe: { firstDense: 0, layerFreq: 2 }, pattern: [true, false, true, false, true] });
    expect(layers({ mlp_only_layers: [1, 3] }, 5).moe!.moeLayers).toBeUndefined();
    // Qwen3MoeConfig keeps sliding_window only with use_sliding_window, then for every layer (no max_window_layers)
    const win = (extra: Record<string, unknown>) => slidingWindowOf(parseModelSpec({ ...base, sliding_window: 64, max_window_layers: 28, ...extra }), 3);
    expect(win({ use_sliding_window: true })).toBe(64);
    expect(win({ use_sliding_window: false })).toBe(0);
    // no MoE layer: a dense qwen3-style model
    expect(layers({ num_experts: 0 }).moe).toBeUndefined();
    expect(layers({ mlp_only_layers: [0, 1, 2, 3] }).moe).toBeUndefined();
  });

  test('impossible settings name the field', () => {
    const bad = (extra: Record<string, unknown>) => () => parseModelSpec({ ...base, ...extra });
    expect(bad({ num_experts: 4, num_experts_per_tok: 5 })).toThrow(/num_experts_per_tok \(5\) exceeds num_experts \(4\)/);
    expect(bad({ num_local_experts: 2, num_experts_per_tok: 3 })).toThrow(/num_experts_per_tok \(3\) exceeds num_local_experts \(2\)/);
    expect(bad({ num_experts: 4, num_local_experts: 8 })).toThrow(/num_experts \(4\) and num_local_experts \(8\) disagree/);
    expect(bad({ decoder_sparse_step: 0 })).toThrow(/decoder_sparse_step must be a positive integer/);
    expect(bad({ mlp_only_layers: [1.5] })).toThrow(/mlp_only_layers must be a list of layer indices/);
    expect(bad({ mlp_only_layers: 2 })).toThrow(/mlp_only_layers must be a list of layer indices/);
    expect(bad({ num_experts: -1 })).toThrow(/num_experts must be a non-negative integer/);
  });

  test('inspect reports the q/k norm, the experts and the dense layer, and checks every tensor', async () => {
    const r = await inspectModel(MODEL);
    expect(r).toMatchObject({ modelType: 'qwen3_moe', qkNorm: true, numLayers: 3, unexpectedTensors: [] });
    expect(r.moe).toMatchObject({ numExperts: 4, topK: 2, expertIntermediateSize: 24, firstDense: 1 });
    // embeddings, final norm; per layer 2 norms, q/k/v/o, q/k norms; layer 0 a dense MLP, layers 1-2 router + 4 x 3 experts
    expect(r.numTensors).toBe(2 + 3 * 8 + 3 + 2 * (1 + 4 * 3));
    const text = formatInspect(r);
    expect(text).toMatch(/4 routed, top 2 per token, no shared expert \(layers >= 1 \(of 3\)\)/);
    expect(text).toMatch(/not renormalised/);
  });
});

describe("our engine against transformers' float32 reference", () => {
  test('logits of window 0 (norm_topk_prob false, as saved)', async () => {
    const ref = refLogits(REF.as_saved);
    expect(maxRelErr(await strideLogits(MODEL), ref)).toBeLessThan(1e-4);
  }, 30000);

  test('norm_topk_prob true: the other reference, and the routing flag moves the logits', async () => {
    const a = refLogits(REF.as_saved);
    const b = refLogits(REF.norm_topk_prob_true);
    expect(maxRelErr(a, b)).toBeGreaterThan(1e-2);
    expect(maxRelErr(await strideLogits(renormCopy()), b)).toBeLessThan(1e-4);
  }, 30000);

  test('NLL of window 0 and eval-ppl over the reference windows', async () => {
    const r = await ModelRunner.open(MODEL);
    const nll = await r.nll(IDS, 1, T);
    await r.close();
    expect(maxRelErr(nll, REF.as_saved.window0_nll)).toBeLessThan(1e-4);
    const text = readFileSync(join(FIX, 'pydocs-eval.txt'), 'utf8').slice(0, REF.text_chars);
    const res = await evalPpl({ modelDir: MODEL, text, seq: T, windows: REF.windows });
    expect(res.ppl).toBeCloseTo(REF.as_saved.ppl, 0);
    expect(Math.abs(res.ppl / REF.as_saved.ppl - 1)).toBeLessThan(1e-5);
  }, 30000);
});

describe('conversion at lossless attention settings', () => {
  const out = () => join(tmp(), 'mla');
  beforeAll(async () => {
    await convert({ modelDir: MODEL, outDir: out(), calibText: CALIB, calibSamples: 8, calibSeqlen: 64, heldOutSamples: 2, qkRopeDim: 32, kvLoraRank: 32, freqfold: 1, dtype: 'F32' });
  }, 120000);

  test('the DeepSeek-V3 MoE fields: layer 0 dense, layers 1-2 MoE with the Qwen3-MoE gate', () => {
    const cfg = JSON.parse(readFileSync(join(out(), 'config.json'), 'utf8'));
    expect(cfg).toMatchObject({ model_type: 'deepseek_v3', first_k_dense_replace: 1, moe_layer_freq: 1, n_routed_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 24, intermediate_size: 64, n_shared_experts: 0 });
    expect(cfg).toMatchObject({ scoring_func: 'softmax', topk_method: 'greedy', n_group: 1, topk_group: 1, norm_topk_prob: false, routed_scaling_factor: 1 });
    expect(cfg.gqa2mla.source_model_type).toBe('qwen3_moe');
  });

  test('per layer: a dense MLP in layer 0, router and experts (equal to the source) in layers 1-2, no q/k norm', async () => {
    const ck = await Checkpoint.open(out());
    const s = await Checkpoint.open(MODEL);
    try {
      expect(await ck.read('model.layers.0.mlp.down_proj.weight')).toEqual(await s.read('model.layers.0.mlp.down_proj.weight'));
      expect(ck.has('model.layers.0.mlp.gate.weight')).toBe(false);
      for (const l of [1, 2]) {
        expect(ck.has(`model.layers.${l}.mlp.gate_proj.weight`)).toBe(false);
        expect(await ck.read(`model.layers.${l}.mlp.gate.weight`)).toEqual(await s.read(`model.layers.${l}.mlp.gate.weight`));
        for (const p of ['gate_proj', 'up_proj', 'down_proj'])
          expect(await ck.read(`model.layers.${l}.mlp.experts.3.${p}.weight`)).toEqual(await s.read(`model.layers.${l}.mlp.experts.3.${p}.weight`));
        expect(ck.info(`model.layers.${l}.mlp.shared_experts.down_proj.weight`).shape).toEqual([32, 0]);
      }
      expect(ck.names().filter((n) => /q_norm|k_norm/.test(n))).toEqual([]);
    } finally {
      await ck.close();
      await s.close();
    }
  });

  test("our engine's logits on the converted model equal the original's", async () => {
    const err = maxRelErr(await strideLogits(out()), await strideLogits(MODEL));
    expect(err).toBeLessThan(1e-4);
  }, 30000);

  test('each engine routes as emulated: vLLM and SGLang exactly as Qwen3-MoE, transformers by sigmoid weights', async () => {
    const diff = await engineNllDiffs(MODEL, out(), IDS);
    expect(diff.vllm).toBeLessThan(1e-4);
    expect(diff.sglang).toBeLessThan(1e-4);
    expect(diff.transformers).toBeGreaterThan(1e-2);
  }, 30000);

  test('check: routing exact for vLLM and SGLang, not for transformers (sigmoid gate, weights not renormalised)', async () => {
    const r = await expectRoutingVerdicts(out(), qwen3Gate(false));
    const t = r.engines.find((v) => v.engine === 'transformers')!;
    expect(t.routing!.engine.normTopkProb).toBe(false);
    expect(t.problems[0].message).toMatch(/weights become sigmoid\(l_i\) instead of softmax\(l_i\) over all experts/);
  });
});

test('a layout DeepSeek-V3 cannot express is refused before any work, naming the layers', async () => {
  const dir = join(tmp(), 'step2');
  mkdirSync(dir, { recursive: true });
  const cfg = JSON.parse(readFileSync(join(MODEL, 'config.json'), 'utf8'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...cfg, num_hidden_layers: 4, mlp_only_layers: [], decoder_sparse_step: 2 }));
  await expect(convert({ modelDir: dir, outDir: join(tmp(), 'step2-out'), calibText: CALIB })).rejects.toMatchObject({
    code: 'ERR_UNSUPPORTED_MODEL',
    message: expect.stringMatching(/mixture-of-experts layers 1, 3 of 4 \(decoder_sparse_step 2, mlp_only_layers \[\]\) cannot be written in DeepSeek-V3/),
  });
});

test('moe_layer_freq 2 (mlp_only_layers [1, 3] of 5): written as is; vLLM and SGLang build those layers, transformers does not read it', () => {
  const spec = parseModelSpec({ ...JSON.parse(readFileSync(join(MODEL, 'config.json'), 'utf8')), num_hidden_layers: 5, mlp_only_layers: [1, 3] });
  const opt = resolveOptions(spec, { modelDir: 'src', outDir: 'out', calibText: 'x', qkRopeDim: 32, kvLoraRank: 32, freqfold: 1 });
  const cfg = portableConfig(deepseekConfig(spec, opt, { qkLatentLayernorm: true, qBias: false, qLoraRank: null, attentionBias: false, dtype: 'F32' }), spec).config;
  expect(cfg).toMatchObject({ first_k_dense_replace: 0, moe_layer_freq: 2, n_routed_experts: 4 });
  // the tensors such an export writes: experts and the zero-size shared expert in layers 0, 2, 4; a dense MLP in 1, 3
  const names = new Set(['lm_head.weight']);
  for (let l = 0; l < 5; l++) {
    const p = `model.layers.${l}.mlp.`;
    const mlp = l % 2 === 0 ? ['gate', ...[0, 1, 2, 3].flatMap((e) => ['gate_proj', 'up_proj', 'down_proj'].map((n) => `experts.${e}.${n}`)), 'shared_experts.gate_proj', 'shared_experts.up_proj', 'shared_experts.down_proj'] : ['gate_proj', 'up_proj', 'down_proj'];
    for (const n of mlp) names.add(`${p}${n}.weight`);
  }
  const facts = { names, zero: new Set<string>() };
  for (const e of ['vllm', 'sglang'] as const) {
    const v = engineView(e, cfg, facts);
    expect(v.problems.filter((x) => x.code.startsWith('moe'))).toEqual([]);
    expect([0, 1, 2, 3, 4].map((l) => isMoeLayer(v.spec!, l))).toEqual([true, false, true, false, true]);
  }
  const t = engineView('transformers', cfg, facts);
  expect(t.problems.map((x) => x.code)).toEqual(expect.arrayContaining(['moe-layer-freq', 'moe-layers']));
});

describe(`each engine's gate on random router logits against Qwen3-MoE's (${seedLabel()})`, () => {
  const rows = 200;
  const E = 8;
  const K = 3;
  const logits = randn(rows * E, SEED + 5, 2);
  const config = (normTopkProb: boolean) => ({
    model_type: 'deepseek_v3', hidden_size: 64, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 48, vocab_size: 100, kv_lora_rank: 16, qk_rope_head_dim: 16,
    qk_nope_head_dim: 32, v_head_dim: 32, first_k_dense_replace: 0, n_routed_experts: E, num_experts_per_tok: K, moe_intermediate_size: 24, n_shared_experts: 0, n_group: 1, topk_group: 1,
    norm_topk_prob: normTopkProb, routed_scaling_factor: 1.0, scoring_func: 'softmax', topk_method: 'greedy',
  });
  /** Largest |weight - Qwen3-MoE's| (softmax over all logits, top-k, renormalised when asked) and whether every row selects Qwen3-MoE's experts. */
  const against = (engine: EngineName, normTopkProb: boolean) => {
    const routing = engineView(engine, config(normTopkProb), { names: new Set(), zero: new Set() }).spec!.moe!.routing;
    const c = routeTokens({ logits, rows, numExperts: E, topK: K, routing });
    let maxErr = 0;
    let same = true;
    for (let r = 0; r < rows; r++) {
      const l = Array.from(logits.subarray(r * E, (r + 1) * E));
      const z = l.reduce((s, v) => s + Math.exp(v), 0);
      const p = l.map((v) => Math.exp(v) / z);
      const top = p.map((_, e) => e).sort((a, b) => p[b] - p[a]).slice(0, K);
      const norm = normTopkProb ? top.reduce((s, e) => s + p[e], 0) : 1;
      const got = Array.from(c.experts.subarray(r * K, (r + 1) * K));
      if ([...got].sort().join() !== [...top].sort().join()) same = false;
      got.forEach((e, k) => (maxErr = Math.max(maxErr, Math.abs(c.weights[r * K + k] - p[e] / norm))));
    }
    return { maxErr, same };
  };

  test.each([false, true])('norm_topk_prob %s: vLLM and SGLang exact, transformers selects the same experts with other weights', (norm) => {
    for (const e of ['vllm', 'sglang'] as const) {
      const r = against(e, norm);
      expect(r.same).toBe(true);
      expect(r.maxErr).toBeLessThan(1e-12);
    }
    const t = against('transformers', norm);
    expect(t.same).toBe(true);
    expect(t.maxErr).toBeGreaterThan(1e-2);
  });
});
