/**
 * The exported rope (src/export/rope-yarn.ts): what the stock engines compute from it
 * (deepseek_yarn, src/interop/engine-semantics.ts) against the source model's own frequencies
 * at the kept rope slots, for default / dynamic / linear / llama3 / yarn sources.
 */
import { parseModelSpec } from '../src/model/spec.js';
import { computeRope } from '../src/model/rope.js';
import { portableRope, keptSourceFrequencies, yarnRopeForRamp, engineYarnFrequencies, defaultSlotFrequencies, isDefaultSlotMap } from '../src/export/rope-yarn.js';
import { assignBandSlots, blendBandSlots } from '../src/export/rope-slots.js';
import { driftRows, expectedDriftRotation } from '../src/convert/rope-drift.js';
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
  expect(Array.from(r.slotFrequencies)).toEqual(Array.from(defaultSlotFrequencies(128, 64)));
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
  // the reported per-frequency error is the engine's frequencies against the source frequencies the slots carry
  const engine = computeRope(ours.rope, { rotDim: 64, maxPositionEmbeddings: ours.maxPositionEmbeddings }).invFreq;
  const all = computeRope(spec.rope, { rotDim: 128, maxPositionEmbeddings: spec.maxPositionEmbeddings }).invFreq;
  expect(r.report.slotSourceFrequencies).toEqual(Array.from(r.slotFrequencies));
  let maxRel = 0;
  for (let i = 0; i < 32; i++) {
    const src = all[r.slotFrequencies[i]];
    const rel = Math.abs(engine[i] - src) / src;
    expect(r.report.perFrequencyRelError[i]).toBeCloseTo(rel, 12);
    expect(r.report.perFrequencyPhaseError[i]).toBeCloseTo(Math.abs(engine[i] - src) * (spec.maxPositionEmbeddings - 1), 6);
    maxRel = Math.max(maxRel, rel);
  }
  expect(r.report.maxFrequencyRelError).toBeCloseTo(maxRel, 12);
  // the unscaled (high-frequency) and fully scaled (low-frequency) ends are reproduced
  expect(r.report.perFrequencyRelError[31]).toBeLessThan(1e-6);
  expect(r.report.maxPhaseErrorAtMaxContext).toBeCloseTo(Math.max(...r.report.perFrequencyPhaseError), 9);
  // by default every slot keeps frequency 2i
  expect(Array.from(r.slotFrequencies)).toEqual(Array.from(defaultSlotFrequencies(128, 64)));
  // transformers 4 derives the yarn factor as max_position_embeddings / original: consistent
  expect(r.maxPositionEmbeddings / (r.ropeParameters.original_max_position_embeddings as number)).toBe(r.ropeParameters.factor);
  console.log(`${_n}: max per-frequency rel error ${r.report.maxFrequencyRelError.toExponential(3)}, phase error at ${spec.maxPositionEmbeddings} tokens ${r.report.maxPhaseErrorAtMaxContext.toExponential(3)} rad, ramp ${JSON.stringify(r.report.ramp)}`);
});

const LLAMA31 = { rope_type: 'llama3', factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 };
const fitted = new Map<number, ReturnType<typeof portableRope>>();
/** portableRope of the Llama-3.1 source (computed once per rope dims: the band search is the slow part) */
const llama31Rope = (ropeDim: number) => fitted.get(ropeDim) ?? fitted.set(ropeDim, portableRope(source(LLAMA31), ropeDim, { bandSlots: true })).get(ropeDim)!;

test.each([64, 32])('llama3 source with bandSlots, %i rope dims: slots outside the blend band keep their default frequency and are exact; the band slots strictly increase', (ropeDim) => {
  const spec = source(LLAMA31);
  const r = llama31Rope(ropeDim);
  const step = 128 / ropeDim;
  const base = computeRope({ type: 'default', theta: 500000, factor: 1, partialRotaryFactor: 1 }, { rotDim: 128, maxPositionEmbeddings: 131072 }).invFreq;
  const band = blendBandSlots(spec, ropeDim)!;
  for (let i = 0; i < ropeDim / 2; i++) {
    const wavelen = (2 * Math.PI) / base[i * step];
    if (i < band.first || i > band.last) {
      expect(r.slotFrequencies[i]).toBe(i * step);
      expect(wavelen < 8192 / 4 || wavelen > 8192 / 1).toBe(true);
      expect(r.report.perFrequencyRelError[i]).toBeLessThan(1e-6);
    }
    if (i > 0) expect(r.slotFrequencies[i]).toBeGreaterThan(r.slotFrequencies[i - 1]);
  }
});

test.each([64, 32])('llama3 source with bandSlots, %i rope dims: the moved band slots lower the largest phase error of every default-slot ramp', (ropeDim) => {
  const spec = source(LLAMA31);
  const r = llama31Rope(ropeDim);
  expect(isDefaultSlotMap(r.slotFrequencies, 128, ropeDim)).toBe(false);
  const { inv } = keptSourceFrequencies(spec, ropeDim);
  let bestDefault = Infinity;
  for (let low = 0; low < ropeDim / 2; low++)
    for (let high = low + 1; high < ropeDim / 2; high++) {
      const e = engineYarnFrequencies(yarnRopeForRamp(spec, ropeDim, low, high), ropeDim);
      bestDefault = Math.min(bestDefault, Math.max(...Array.from(e, (v, i) => Math.abs(v - inv[i]))) * (spec.maxPositionEmbeddings - 1));
    }
  expect(r.report.maxPhaseErrorAtMaxContext).toBeLessThan(bestDefault / 3);
  console.log(`llama3, ${ropeDim} rope dims: slots ${r.report.note.split('; ')[1]}, largest phase error at ${spec.maxPositionEmbeddings} ${r.report.maxPhaseErrorAtMaxContext.toFixed(3)} rad (best default-slot ramp ${bestDefault.toFixed(3)})`);
});

test('assignBandSlots: no single band slot moved to another free frequency lowers the largest phase error', () => {
  const spec = source(LLAMA31);
  const r = llama31Rope(64);
  const engine = engineYarnFrequencies(r.ropeParameters, 64);
  const all = computeRope(spec.rope, { rotDim: 128, maxPositionEmbeddings: spec.maxPositionEmbeddings }).invFreq;
  const band = blendBandSlots(spec, 64)!;
  const a = assignBandSlots(engine, all, band, 2, spec.maxPositionEmbeddings);
  expect(Array.from(a.slots)).toEqual(Array.from(r.slotFrequencies));
  const maxPhase = (slots: ArrayLike<number>) => Math.max(...Array.from({ length: band.last - band.first + 1 }, (_, t) => Math.abs(engine[band.first + t] - all[slots[band.first + t]]) * (spec.maxPositionEmbeddings - 1)));
  expect(maxPhase(a.slots)).toBeCloseTo(a.maxPhase, 9);
  for (let j = band.first; j <= band.last; j++)
    for (let k = band.first * 2; k <= band.last * 2; k++) {
      const s = a.slots.slice();
      s[j] = k;
      const increasing = Array.from(s).every((v, i) => i === 0 || v > s[i - 1]);
      if (increasing) expect(maxPhase(s)).toBeGreaterThanOrEqual(a.maxPhase - 1e-12);
    }
});

test('yarnRopeForRamp: the fitted ramp gives the exported parameters; another ramp moves only the ramp slots', () => {
  const spec = source(LLAMA31);
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

test('rope drift: with all attention at one distance, the query-side residual rotation gives the source logit at that distance', () => {
  // one rope slot pair (re, im) in the rotate-half layout, rotated as the engine does: x_re cos - x_im sin, x_im cos + x_re sin
  const rotate = (x: [number, number], ang: number): [number, number] => [x[0] * Math.cos(ang) - x[1] * Math.sin(ang), x[1] * Math.cos(ang) + x[0] * Math.sin(ang)];
  const dot = (a: [number, number], b: [number, number]) => a[0] * b[0] + a[1] * b[1];
  const f = 0.0123; // the source frequency the slot carries
  const e = 0.0101; // the engine's frequency of the slot
  const t = 1500;
  const delta = 700;
  for (const [q0, k0] of [[[0.7, -1.3], [0.4, 2.1]], [[-1.1, 0.2], [1.9, -0.6]]] as Array<[[number, number], [number, number]]>) {
    const mass = new Float64Array(2048);
    mass[delta] = 1;
    const rot = expectedDriftRotation([mass], Float64Array.of(f - e));
    const q = Float64Array.of(q0[0], q0[1]); // r = 2: row 0 re, row 1 im, one column
    driftRows(q, 1, 2, rot.cos[0], rot.sin[0]);
    const source = dot(rotate(q0, t * f), rotate(k0, (t - delta) * f));
    const engine = dot(rotate([q[0], q[1]], t * e), rotate(k0, (t - delta) * e));
    expect(Math.abs(engine - source)).toBeLessThan(1e-12 * (1 + Math.abs(source)));
    // without the residual rotation the engine's logit differs
    expect(Math.abs(dot(rotate(q0, t * e), rotate(k0, (t - delta) * e)) - source)).toBeGreaterThan(0.1);
  }
  // a slot without drift keeps exactly its rows
  const r = expectedDriftRotation([Float64Array.of(0.5, 0.3, 0.2)], Float64Array.of(0, 0.01));
  expect([r.cos[0][0], r.sin[0][0]]).toEqual([1, 0]);
});
