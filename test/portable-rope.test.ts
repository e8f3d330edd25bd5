/**
 * The exported rope (src/export/rope-yarn.ts): what the stock engines compute from it
 * (deepseek_yarn, src/interop/engine-semantics.ts) against the source model's own frequencies
 * at the kept rope slots, for default / dynamic / linear / llama3 / yarn sources.
 */
import { parseModelSpec } from '../src/model/spec.js';
import { computeRope } from '../src/model/rope.js';
import { portableRope, keptSourceFrequencies, yarnRopeForRamp, engineYarnFrequencies } from '../src/export/rope-yarn.js';
import { engineView, ropeDifference } from '../src/interop/engine-semantics.js';

/** A source llama config with `rope` as rope_scaling (head_dim 128, Llama-3.1-8B's rope base). */
function source(rope: Record<string, unknown> | null, maxPos = 131072) {
  return parseModelSpec({
    model_type: 'llama', hidden_size: 1024, num_attention_heads: 8, num_key_value_heads: 2, head_dim: 128,
    num_hidden_layers: 2, intermediate_size: 2048, vocab_size: 1000, max_position_embeddings: maxPos,
    rope_theta: 500000, rope_scaling: rope,
  });
}

/** A DeepSeek-V3 config carrying an exported rope, as the portable export writes it. */
function exported(r: ReturnType<typeof portableRope>, ropeDim: number) {
  return {
    model_type: 'deepseek_v3', architectures: ['DeepseekV3ForCausalLM'], hidden_size: 1024, num_attention_heads: 8,
    num_key_value_heads: 8, num_hidden_layers: 2, intermediate_size: 2048, vocab_size: 1000, q_lora_rank: null,
    kv_lora_rank: 256, qk_rope_head_dim: ropeDim, qk_nope_head_dim: 128, v_head_dim: 128, head_dim: ropeDim,
    rope_interleave: true, tie_word_embeddings: false, first_k_dense_replace: 2, n_routed_experts: 1, n_shared_experts: 1,
    moe_layer_freq: 1, max_position_embeddings: r.maxPositionEmbeddings, rope_theta: r.ropeTheta, rope_scaling: r.ropeScaling,
    rope_parameters: r.ropeParameters, dtype: 'bfloat16',
  };
}

const facts = { names: new Set(['lm_head.weight']), zero: new Set<string>() };

test.each([
  ['default', null],
  ['dynamic', { rope_type: 'dynamic', factor: 4.0 }],
])('%s source: written as default, every kept frequency exact, engines agree', (_n, rope) => {
  const spec = source(rope);
  const r = portableRope(spec, 64);
  expect(r.ropeParameters.rope_type).toBe('default');
  expect(r.ropeScaling).toBeNull(); // SGLang turns any non-null rope_scaling into deepseek_yarn
  expect(r.report.exact).toBe(true);
  expect(r.report.maxFrequencyRelError).toBe(0);
  const cfg = exported(r, 64);
  const ours = parseModelSpec(cfg);
  for (const e of ['vllm', 'sglang', 'transformers'] as const) {
    const v = engineView(e, cfg, facts);
    expect(v.problems).toEqual([]);
    expect(ropeDifference(ours, v.spec!)).toEqual({ freq: 0, cosSin: 0, softmax: 0 });
  }
});

test.each([
  ['llama3 (Llama-3.1)', { rope_type: 'llama3', factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 }],
  ['linear', { rope_type: 'linear', factor: 4.0 }],
  ['yarn', { rope_type: 'yarn', factor: 4.0, original_max_position_embeddings: 32768 }],
])('%s source: deepseek_yarn config; the report is what the engines compute against the source', (_n, rope) => {
  const spec = source(rope);
  const r = portableRope(spec, 64);
  const cfg = exported(r, 64);
  const ours = parseModelSpec(cfg);
  // the three engines compute the same rope from the exported config as gqa2mla's engine
  for (const e of ['vllm', 'sglang', 'transformers'] as const) {
    const v = engineView(e, cfg, facts);
    expect(v.problems.filter((p) => p.code.startsWith('rope'))).toEqual([]);
    const d = ropeDifference(ours, v.spec!);
    expect(d.freq).toBeLessThan(1e-6);
    expect(d.cosSin).toBeLessThan(1e-6);
    expect(d.softmax).toBeLessThan(1e-6);
  }
  // the reported per-frequency error is the engine's frequencies against the source's kept ones
  const engine = computeRope(ours.rope, { rotDim: 64, maxPositionEmbeddings: ours.maxPositionEmbeddings }).invFreq;
  const { inv: src } = keptSourceFrequencies(spec, 64);
  let maxRel = 0;
  for (let i = 0; i < 32; i++) {
    const rel = Math.abs(engine[i] - src[i]) / src[i];
    expect(r.report.perFrequencyRelError[i]).toBeCloseTo(rel, 12);
    maxRel = Math.max(maxRel, rel);
  }
  expect(r.report.maxFrequencyRelError).toBeCloseTo(maxRel, 12);
  // the unscaled (high-frequency) and fully scaled (low-frequency) ends are reproduced
  expect(r.report.perFrequencyRelError[31]).toBeLessThan(1e-6);
  expect(r.report.maxPhaseErrorAtMaxContext).toBeCloseTo(Math.max(...Array.from(engine, (v, i) => Math.abs(v - src[i]))) * (spec.maxPositionEmbeddings - 1), 6);
  // transformers 4 derives the yarn factor as max_position_embeddings / original: consistent
  expect(r.maxPositionEmbeddings / (r.ropeParameters.original_max_position_embeddings as number)).toBe(r.ropeParameters.factor);
  console.log(`${_n}: max per-frequency rel error ${r.report.maxFrequencyRelError.toExponential(3)}, phase error at ${spec.maxPositionEmbeddings} tokens ${r.report.maxPhaseErrorAtMaxContext.toExponential(3)} rad, ramp ${JSON.stringify(r.report.ramp)}`);
});

test('llama3 source: slots outside the llama3 blend band are exact', () => {
  const spec = source({ rope_type: 'llama3', factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 });
  const r = portableRope(spec, 64);
  const { inv } = keptSourceFrequencies(spec, 64);
  const base = computeRope({ type: 'default', theta: 500000, factor: 1, partialRotaryFactor: 1 }, { rotDim: 128, maxPositionEmbeddings: 131072 }).invFreq;
  for (let i = 0; i < 32; i++) {
    const wavelen = (2 * Math.PI) / base[i * 2];
    const outside = wavelen < 8192 / 4 || wavelen > 8192 / 1;
    if (outside) expect(r.report.perFrequencyRelError[i]).toBeLessThan(1e-6);
    expect(inv[i]).toBeGreaterThan(0);
  }
});

test('yarnRopeForRamp: the fitted ramp gives the exported parameters; another ramp moves only the ramp slots', () => {
  const spec = source({ rope_type: 'llama3', factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 });
  const r = portableRope(spec, 64);
  const { low, high } = r.report.ramp!;
  expect(yarnRopeForRamp(spec, 64, low, high)).toEqual(r.ropeParameters);
  const fitted = engineYarnFrequencies(r.ropeParameters, 64);
  const other = engineYarnFrequencies(yarnRopeForRamp(spec, 64, low - 1, high + 1), 64);
  for (let i = 0; i < 32; i++) {
    if (i <= low - 1 || i >= high + 1) expect(other[i]).toBe(fitted[i]);
    else expect(other[i]).not.toBe(fitted[i]);
  }
});
