/**
 * Mixtral (sparse mixture-of-experts MLP): the spec and `inspect` of a tiny random Mixtral
 * written in the test, the engine's MoE MLP against a float64 reference (softmax over all
 * router logits, top-2, renormalised over the selected), the conversion at lossless attention
 * settings (logits equal the original's), each engine's MoE gate in the engine-semantics
 * emulation and `gqa2mla check`'s routing verdicts. The zoo Mixtral against transformers is in
 * zoo-reference.test.ts.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Checkpoint } from '../src/checkpoint/checkpoint.js';
import { inspectModel } from '../src/cli/inspect.js';
import { convert } from '../src/convert/convert.js';
import { mlpInto } from '../src/engine/layer.js';
import { ModelRunner } from '../src/engine/model.js';
import { routeTokens } from '../src/engine/moe-routing.js';
import { loadLayerWeights } from '../src/engine/weights.js';
import { Workspace } from '../src/engine/workspace.js';
import { engineRouting, engineView, type EngineName } from '../src/interop/engine-semantics.js';
import { loadModelSpec, parseModelSpec } from '../src/model/spec.js';
import type { MoeRouting } from '../src/model/spec-types.js';
import { linearRef, maxRelErr, randn, rmsNormRef } from './helpers/forward-ref.js';
import { engineNllDiffs, expectRoutingVerdicts } from './helpers/moe-engines.js';
import { seedLabel, testSeed } from './helpers/random.js';
import { writeSyntheticModel } from './helpers/synthetic.js';
import { useTempDir } from './helpers/temp-dir.js';
import { LOSSLESS_REL_TOL } from './helpers/tolerance.js';

const FIX = join(new URL('.', import.meta.url).pathname, 'fixtures');
const CALIB = readFileSync(join(FIX, 'pydocs-train-3M.txt'), 'utf8').slice(0, 400_000);
const tmp = useTempDir('g2m-mixtral-');
const SEED = testSeed();
const SHAPE = { modelType: 'mixtral' as const, numLayers: 2, hiddenSize: 64, numHeads: 2, numKvHeads: 1, headDim: 32, intermediateSize: 48, vocabSize: 4096, tie: false, bias: false };
const src = () => join(tmp(), 'mixtral');

beforeAll(async () => {
  await writeSyntheticModel(src(), { ...SHAPE, dtype: 'F32', seed: SEED, experts: 4, topK: 2, tokenizerFrom: join(FIX, 'tiny-llama-gqa') });
}, 60000);

const MIXTRAL_GATE: MoeRouting = { scoring: 'softmax', normTopkProb: true, nGroup: 1, topkGroup: 1, groupScore: 'max', correctionBias: false, routedScalingFactor: 1 };

describe('spec and inspect', () => {
  test('config.json -> the MoE spec; impossible settings name the field', () => {
    const base = { model_type: 'mixtral', hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1, intermediate_size: 48, vocab_size: 100 };
    const spec = parseModelSpec({ ...base, num_local_experts: 8, num_experts_per_tok: 2 });
    expect(spec.moe).toEqual({ numExperts: 8, topK: 2, expertIntermediateSize: 48, routing: MIXTRAL_GATE, firstDense: 0, layerFreq: 1 });
    // MixtralConfig's defaults: 8 experts, top 2
    expect(parseModelSpec(base).moe).toMatchObject({ numExperts: 8, topK: 2 });
    expect(() => parseModelSpec({ ...base, num_local_experts: 2, num_experts_per_tok: 3 })).toThrow(/num_experts_per_tok \(3\) exceeds num_local_experts \(2\)/);
    expect(() => parseModelSpec({ ...base, num_local_experts: 0 })).toThrow(/num_local_experts must be a positive integer/);
  });

  test('a DeepSeek-V3 MoE config is read as vLLM reads its gate; shared experts are refused', () => {
    const ds = { model_type: 'deepseek_v3', hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 48, vocab_size: 100, kv_lora_rank: 16, qk_rope_head_dim: 16, qk_nope_head_dim: 32, v_head_dim: 32 };
    const moe = { n_routed_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 24, first_k_dense_replace: 1, n_group: 2, topk_group: 1, norm_topk_prob: false, routed_scaling_factor: 2.0, n_shared_experts: 0 };
    const spec = parseModelSpec({ ...ds, ...moe, topk_method: 'noaux_tc', scoring_func: 'sigmoid' });
    expect(spec.moe).toEqual({
      numExperts: 4,
      topK: 2,
      expertIntermediateSize: 24,
      routing: { scoring: 'sigmoid', normTopkProb: false, nGroup: 2, topkGroup: 1, groupScore: 'top2', correctionBias: true, routedScalingFactor: 2 },
      firstDense: 1,
      layerFreq: 1,
    });
    expect(() => parseModelSpec({ ...ds, ...moe, n_shared_experts: 1 })).toThrow(/n_shared_experts 1: shared experts are not supported/);
    expect(() => parseModelSpec({ ...ds, ...moe, scoring_func: 'relu' })).toThrow(/scoring_func must be "softmax" or "sigmoid"/);
    // every layer dense (a dense export's placeholder fields): no MoE
    expect(parseModelSpec({ ...ds, ...moe, first_k_dense_replace: 2 }).moe).toBeUndefined();
  });

  test('inspect reports the experts and checks every expert tensor', async () => {
    const r = await inspectModel(src());
    expect(r.modelType).toBe('mixtral');
    expect(r.moe).toMatchObject({ numExperts: 4, topK: 2, expertIntermediateSize: 48, routing: MIXTRAL_GATE });
    expect(r.unexpectedTensors).toEqual([]);
    // 4 experts x 3 projections + the router per layer, plus norms and attention
    expect(r.numTensors).toBe(3 + 2 * (2 + 4 + 1 + 4 * 3));
    const broken = join(tmp(), 'mixtral-3-experts');
    await writeSyntheticModel(broken, { ...SHAPE, dtype: 'F32', seed: SEED, experts: 3 });
    const cfg = JSON.parse(readFileSync(join(broken, 'config.json'), 'utf8'));
    cfg.num_local_experts = 4;
    writeFileSync(join(broken, 'config.json'), JSON.stringify(cfg));
    // the router's shape is checked first, naming the tensor and what the config implies
    await expect(inspectModel(broken)).rejects.toThrow(/tensor model\.layers\.0\.block_sparse_moe\.gate\.weight has shape \[3, 64\] but config\.json implies \[4, 64\]/);
  }, 60000);
});

/** Mixtral's MoE MLP in float64: softmax over all logits, top-k, renormalised, sum of weighted SwiGLU experts. */
function moeRef(x: Float32Array, rows: number, H: number, I: number, E: number, k: number, t: (n: string) => Float32Array): { y: Float64Array; pairs: Set<string> } {
  const logits = linearRef(x, t('mlp.gate.weight'), rows, H, E);
  const y = new Float64Array(rows * H);
  const pairs = new Set<string>();
  for (let r = 0; r < rows; r++) {
    const l = Array.from(logits.subarray(r * E, (r + 1) * E));
    const mx = Math.max(...l);
    const p = l.map((v) => Math.exp(v - mx));
    const order = p.map((_, e) => e).sort((a, b) => p[b] - p[a]).slice(0, k);
    pairs.add([...order].sort().join(','));
    const z = order.reduce((s, e) => s + p[e], 0);
    const xr = x.subarray(r * H, (r + 1) * H);
    for (const e of order) {
      const g = linearRef(xr, t(`mlp.experts.${e}.gate_proj.weight`), 1, H, I);
      const u = linearRef(xr, t(`mlp.experts.${e}.up_proj.weight`), 1, H, I);
      const a = g.map((v, i) => (v / (1 + Math.exp(-v))) * u[i]);
      const d = linearRef(a, t(`mlp.experts.${e}.down_proj.weight`), 1, I, H);
      for (let j = 0; j < H; j++) y[r * H + j] += (p[e] / z) * d[j];
    }
  }
  return { y, pairs };
}

test(`the engine's MoE MLP equals a float64 Mixtral reference (${seedLabel()})`, async () => {
  const spec = await loadModelSpec(src());
  const ck = await Checkpoint.open(src());
  try {
    const w = await loadLayerWeights(ck, spec, 1);
    const rows = 96;
    const H = spec.hiddenSize;
    const x = randn(rows * H, SEED + 1);
    const out = new Float32Array(rows * H);
    await mlpInto(spec, w, x, rows, out, new Workspace());
    const ref = moeRef(x, rows, H, 48, 4, 2, (n) => w.tensors[n].data);
    // the routing matters here: rows go to different expert pairs
    expect(ref.pairs.size).toBeGreaterThanOrEqual(3);
    expect(maxRelErr(out, ref.y)).toBeLessThan(1e-5);
  } finally {
    await ck.close();
  }
});

describe('conversion at lossless attention settings', () => {
  const out = () => join(tmp(), 'mixtral-mla');
  beforeAll(async () => {
    await convert({ modelDir: src(), outDir: out(), calibText: CALIB, calibSamples: 16, calibSeqlen: 128, heldOutSamples: 4, qkRopeDim: 32, kvLoraRank: 32, freqfold: 1, dtype: 'F32', method: 'transmla' });
  }, 300000);

  test('the DeepSeek-V3 MoE fields and expert tensors', async () => {
    const cfg = JSON.parse(readFileSync(join(out(), 'config.json'), 'utf8'));
    expect(cfg).toMatchObject({ first_k_dense_replace: 0, moe_layer_freq: 1, n_routed_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 48, n_shared_experts: 0 });
    expect(cfg).toMatchObject({ scoring_func: 'softmax', topk_method: 'greedy', n_group: 1, topk_group: 1, norm_topk_prob: true, routed_scaling_factor: 1 });
    const ck = await Checkpoint.open(out());
    const s = await Checkpoint.open(src());
    try {
      for (const [ds, mx] of [['gate_proj', 'w1'], ['up_proj', 'w3'], ['down_proj', 'w2']])
        expect(await ck.read(`model.layers.1.mlp.experts.2.${ds}.weight`)).toEqual(await s.read(`model.layers.1.block_sparse_moe.experts.2.${mx}.weight`));
      expect(await ck.read('model.layers.0.mlp.gate.weight')).toEqual(await s.read('model.layers.0.block_sparse_moe.gate.weight'));
      // the portable export's zero-size shared expert (vLLM's strict loader)
      expect(ck.info('model.layers.0.mlp.shared_experts.down_proj.weight').shape).toEqual([64, 0]);
    } finally {
      await ck.close();
      await s.close();
    }
  });

  test("our engine's logits on the converted MoE equal the original's", async () => {
    const T = 48;
    const ids = Int32Array.from({ length: 2 * T }, (_, i) => (i * 193 + SEED) % 4096);
    const logits = async (dir: string) => {
      const r = await ModelRunner.open(dir);
      try {
        const h = Float32Array.from(await r.forward(ids, 2, T));
        const norm = await r.source.read('model.norm.weight');
        const head = await r.source.read('lm_head.weight');
        return linearRef(rmsNormRef(h, norm, 2 * T, 64, 1e-6), head, 2 * T, 64, 4096);
      } finally {
        await r.close();
      }
    };
    const err = maxRelErr(await logits(out()), await logits(src()));
    expect(err).toBeLessThan(LOSSLESS_REL_TOL);
  }, 60000);

  test('each engine routes as emulated: vLLM and SGLang exactly as Mixtral, transformers by sigmoid weights', async () => {
    const diff = await engineNllDiffs(src(), out(), Int32Array.from({ length: 64 }, (_, i) => (i * 37 + SEED) % 4096));
    expect(diff.vllm).toBeLessThan(1e-4);
    expect(diff.sglang).toBeLessThan(1e-4);
    expect(diff.transformers).toBeGreaterThan(1e-3);
  }, 60000);

  test('check: routing exact for vLLM and SGLang, not for transformers (sigmoid gate)', async () => {
    await expectRoutingVerdicts(out(), MIXTRAL_GATE);
  });
});

describe(`each engine's gate on random router logits (${seedLabel()})`, () => {
  const rows = 200;
  const E = 8;
  const logits = randn(rows * E, SEED + 2, 2);
  /** Mixtral in float64: softmax over the selected logits. */
  const mixtral = (r: number, e: number, pair: number[]) => Math.exp(logits[r * E + e]) / pair.reduce((s, j) => s + Math.exp(logits[r * E + j]), 0);
  const config = (extra: Record<string, unknown>) => ({
    model_type: 'deepseek_v3', hidden_size: 64, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 48, vocab_size: 100, kv_lora_rank: 16, qk_rope_head_dim: 16,
    qk_nope_head_dim: 32, v_head_dim: 32, first_k_dense_replace: 0, n_routed_experts: E, num_experts_per_tok: 2, moe_intermediate_size: 24, n_shared_experts: 0, n_group: 1, topk_group: 1,
    norm_topk_prob: true, routed_scaling_factor: 1.0, scoring_func: 'softmax', topk_method: 'greedy', ...extra,
  });
  const gate = (engine: EngineName, extra: Record<string, unknown> = {}) => {
    const v = engineView(engine, config(extra), { names: new Set(), zero: new Set() });
    return v.spec!.moe!.routing;
  };
  /** Largest |weight - Mixtral's| and whether every row selects Mixtral's pair. */
  const against = (routing: MoeRouting, bias?: Float32Array) => {
    const c = routeTokens({ logits, rows, numExperts: E, topK: 2, routing, bias });
    let maxErr = 0;
    let samePairs = true;
    for (let r = 0; r < rows; r++) {
      const l = Array.from(logits.subarray(r * E, (r + 1) * E));
      const pair = l.map((_, e) => e).sort((a, b) => l[b] - l[a]).slice(0, 2);
      const got = Array.from(c.experts.subarray(r * 2, r * 2 + 2));
      if ([...got].sort().join() !== [...pair].sort().join()) samePairs = false;
      got.forEach((e, k) => (maxErr = Math.max(maxErr, Math.abs(c.weights[r * 2 + k] - mixtral(r, e, pair)))));
    }
    return { maxErr, samePairs };
  };

  test('the converted config: vLLM and SGLang exact, transformers selects the same pair with other weights', () => {
    for (const e of ['vllm', 'sglang'] as const) {
      const r = against(gate(e));
      expect(r.samePairs).toBe(true);
      expect(r.maxErr).toBeLessThan(1e-12);
    }
    const t = against(gate('transformers'));
    expect(t.samePairs).toBe(true);
    expect(t.maxErr).toBeGreaterThan(1e-2);
  });

  test('noaux_tc: SGLang scores by sigmoid whatever scoring_func says, vLLM follows scoring_func', () => {
    expect(gate('sglang', { topk_method: 'noaux_tc' }).scoring).toBe('sigmoid');
    expect(gate('vllm', { topk_method: 'noaux_tc' }).scoring).toBe('softmax');
    // a zero correction bias selects as no bias does: vLLM stays exact
    expect(against(gate('vllm', { topk_method: 'noaux_tc' }), new Float32Array(E)).maxErr).toBeLessThan(1e-12);
    expect(gate('sglang', { scoring_func: 'sigmoid' }).scoring).toBe('softmax');
  });

  test('groups: only the best topk_group groups are used', () => {
    const r = routeTokens({ logits, rows, numExperts: E, topK: 2, routing: { ...MIXTRAL_GATE, nGroup: 4, topkGroup: 1 } });
    for (let i = 0; i < rows; i++) expect(Math.floor(r.experts[2 * i] / 2)).toBe(Math.floor(r.experts[2 * i + 1] / 2));
    // grouping changes some rows' choice relative to the ungrouped top-2
    expect(against({ ...MIXTRAL_GATE, nGroup: 4, topkGroup: 1 }).samePairs).toBe(false);
  });
});

test("vLLM's grouped gate falls back to plain top-k when n_group cannot split the experts (softmax without a correction bias)", () => {
  const grouped: MoeRouting = { scoring: 'sigmoid', normTopkProb: true, nGroup: 4, topkGroup: 2, groupScore: 'max', correctionBias: false, routedScalingFactor: 1 };
  // 4 groups of 1 expert: not more experts than groups
  expect(engineRouting('vllm', grouped, false, 4)).toEqual({ ...grouped, nGroup: 1, topkGroup: 1, scoring: 'softmax' });
  // 4 groups of 2: grouped as written
  expect(engineRouting('vllm', grouped, false, 8)).toEqual(grouped);
  // 3 groups of 8 experts do not divide: ungrouped; with a correction bias the scoring stays
  const biased: MoeRouting = { ...grouped, nGroup: 3, correctionBias: true, groupScore: 'top2' };
  expect(engineRouting('vllm', biased, true, 8)).toEqual({ ...biased, nGroup: 1, topkGroup: 1 });
  // SGLang has no such fallback: it keeps the grouping as written
  expect(engineRouting('sglang', grouped, false, 4).nGroup).toBe(4);
});
