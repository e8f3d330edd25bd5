/**
 * A rope configuration that stock DeepSeek engines compute as the source model did.
 *
 * vLLM's and SGLang's DeepSeek-V2/V3 code replace every rope type other than `default` by
 * `deepseek_yarn` (src/interop/engine-semantics.ts, docs/engines.md): YaRN frequencies of
 * qk_rope_head_dim rotated dims, inv_i = theta_i ((1 - ramp_i) + ramp_i / factor) with
 * theta_i = base^(-2i / r) and ramp_i = clamp((i - low) / (high - low), 0, 1), where
 * low = floor(corr(beta_fast)), high = ceil(corr(beta_slow)),
 * corr(beta) = r ln(original_max / (2 pi beta)) / (2 ln base); cos/sin times
 * mscale(factor, mscale) / mscale(factor, mscale_all_dim); the softmax scale times
 * mscale(factor, mscale_all_dim)^2. transformers' `yarn` computes the same frequencies.
 *
 * Slot i of the converted model carries the source's frequency number i * head_dim / r
 * (theta_i above with the source's base: the set the engines compute), so the slots outside a
 * scaled band are exact once factor and base are the source's. What remains free is (factor,
 * original_max, beta_fast, beta_slow, mscale): this module picks the integer ramp ends (low,
 * high) that reproduce the source's scaled frequencies best (the smallest largest relative
 * error; exact for default and for dynamic within max_position_embeddings, exact outside the
 * blend region for llama3 and yarn), sets mscale_all_dim 0 (softmax unchanged) and mscale /
 * attention_factor to the source's cos/sin factor, and reports every slot's source frequency,
 * relative error and phase error at the model's max context. The conversion judges its choices
 * with this rope; with its ropeDriftCorrection option (off by default) it also gives the queries
 * of the slots the engine gets wrong their expected residual rotation (src/convert/rope-drift.ts).
 * With `bandSlots` (off by default; no conversion path sets it), the slots of llama3's blend
 * band instead carry the source frequencies nearest the engine's (rope-slots.ts): the ramp and
 * a strictly increasing assignment of the band's slots chosen together for the smallest largest
 * phase error at max_position_embeddings.
 */
import { computeRope } from '../model/rope.js';
import type { ModelSpec, RopeSpec } from '../model/spec-types.js';
import type { RopeExportReport } from '../report-types.js';
import { type BandSlots, assignBandSlots, betterAssignment, blendBandSlots } from './rope-slots.js';

export type { RopeExportReport };


/** The rope part of the exported config. */
export interface RopeExport {
  /** transformers-5 style rope_parameters (rope_theta and rope_type included) */
  ropeParameters: Record<string, number | string>;
  /** legacy rope_scaling (null for default: SGLang turns any non-null rope_scaling into deepseek_yarn) */
  ropeScaling: Record<string, number | string> | null;
  ropeTheta: number;
  maxPositionEmbeddings: number;
  /** the source frequency index each rope slot carries (the conversion's RoRoPE follows it) */
  slotFrequencies: Int32Array;
  report: RopeExportReport;
}

const f32 = Math.fround;

/** The default slot-to-source-frequency map: slot i carries source frequency i * headDim / ropeDim. */
export function defaultSlotFrequencies(headDim: number, ropeDim: number): Int32Array {
  const step = headDim / ropeDim;
  return Int32Array.from({ length: ropeDim / 2 }, (_, i) => i * step);
}

/** Whether `slots` is the default map (every slot at i * headDim / ropeDim). */
export function isDefaultSlotMap(slots: ArrayLike<number>, headDim: number, ropeDim: number): boolean {
  const step = headDim / ropeDim;
  for (let i = 0; i < slots.length; i++) if (slots[i] !== i * step) return false;
  return true;
}

/**
 * The source's inverse frequencies at the kept rope slots: slot i carries source frequency
 * `slots[i]` (default every (headDim / ropeDim)-th).
 */
export function keptSourceFrequencies(
  spec: ModelSpec,
  ropeDim: number,
  slots: ArrayLike<number> = defaultSlotFrequencies(spec.headDim, ropeDim),
): { inv: Float64Array; attentionScaling: number } {
  const src = computeRope(spec.rope, { rotDim: spec.headDim, maxPositionEmbeddings: spec.maxPositionEmbeddings });
  const inv = new Float64Array(ropeDim / 2);
  for (let i = 0; i < ropeDim / 2; i++) inv[i] = src.invFreq[slots[i]];
  return { inv, attentionScaling: src.attentionScaling };
}

/** beta whose correction dim (for `r` rotated dims) is `corr`: the inverse of corr(beta). */
function betaFor(corr: number, r: number, base: number, origMax: number): number {
  return (origMax / (2 * Math.PI)) * Math.exp((-2 * corr * Math.log(base)) / r);
}

/** Per-slot relative and phase errors (at maxContext) of the engine's frequencies against the carried source ones. */
function errors(engine: Float32Array, target: Float64Array, maxContext: number): { rel: number[]; maxRel: number; phases: number[]; phase: number } {
  const rel: number[] = [];
  const phases: number[] = [];
  for (let i = 0; i < target.length; i++) {
    const d = Math.abs(engine[i] - target[i]);
    rel.push(d / target[i]);
    phases.push(d * (maxContext - 1));
  }
  return { rel, maxRel: Math.max(...rel), phases, phase: Math.max(...phases) };
}

/** YaRN rope parameters whose floor/ceil correction range is exactly (low, high). */
function yarnParams(low: number, high: number, r: number, base: number, factor: number, origMax: number, attn: number): Record<string, number | string> {
  // corr(beta_fast) = low + 0.5 floors to low; corr(beta_slow) = high - 0.5 ceils to high
  const betaFast = betaFor(low + 0.5, r, base, origMax);
  const betaSlow = betaFor(high - 0.5, r, base, origMax);
  const mscale = factor > 1 ? (attn - 1) / (0.1 * Math.log(factor)) : 0;
  return {
    rope_type: 'yarn',
    rope_theta: base,
    factor,
    original_max_position_embeddings: origMax,
    beta_fast: betaFast,
    beta_slow: betaSlow,
    mscale,
    mscale_all_dim: 0,
    attention_factor: attn,
  };
}

function yarnSpec(p: Record<string, number | string>): RopeSpec {
  return {
    type: 'yarn',
    theta: p.rope_theta as number,
    factor: p.factor as number,
    originalMaxPositionEmbeddings: p.original_max_position_embeddings as number,
    betaFast: p.beta_fast as number,
    betaSlow: p.beta_slow as number,
    mscale: p.mscale as number,
    mscaleAllDim: 0,
    attentionFactor: p.attention_factor as number,
    partialRotaryFactor: 1,
  };
}

/** The engine's inverse frequencies for yarn parameters `p` (transformers' / our engine's computation). */
export function engineYarnFrequencies(p: Record<string, number | string>, ropeDim: number): Float32Array {
  const origMax = p.original_max_position_embeddings as number;
  return computeRope(yarnSpec(p), { rotDim: ropeDim, maxPositionEmbeddings: origMax * (p.factor as number) }).invFreq;
}

/** factor, original_max_position_embeddings and max_position_embeddings of the exported yarn rope. */
function yarnFrame(spec: ModelSpec): { factor: number; origMax: number; maxPos: number } {
  const factor = spec.rope.factor;
  // transformers 4 derives the yarn factor as max_position_embeddings / original_max: keep them consistent
  let origMax = spec.maxPositionEmbeddings / factor;
  let maxPos = spec.maxPositionEmbeddings;
  if (!Number.isInteger(origMax)) {
    origMax = Math.max(1, Math.round(origMax));
    maxPos = Math.round(origMax * factor);
  }
  return { factor, origMax, maxPos };
}

/**
 * The yarn rope parameters that portableRope would write for a scaled source `spec` if its fit
 * had chosen the ramp (low, high): for measuring other ramps than the fitted one.
 */
export function yarnRopeForRamp(spec: ModelSpec, ropeDim: number, low: number, high: number): Record<string, number | string> {
  const { factor, origMax } = yarnFrame(spec);
  return yarnParams(low, high, ropeDim, spec.rope.theta, factor, origMax, keptSourceFrequencies(spec, ropeDim).attentionScaling);
}

/** How portableRope fits a scaled rope. */
export interface PortableRopeOptions {
  /**
   * llama3: move the blend band's slots to the source frequencies nearest the engine's
   * (rope-slots.ts). Off by default: on zoo-llama31 it lowered the phase errors (11.9 -> 2.0 rad
   * at 8192) but raised the ppl (+7.8% against +3.0% with the default slots and the drift
   * correction, docs/engines.md): the band frequencies no slot carries lose their rotation.
   */
  bandSlots: boolean;
}

/** The config.json fields of an exported rope: both config styles and the max context they are for. */
export function ropeConfigFields(rope: RopeExport): Record<string, unknown> {
  return { max_position_embeddings: rope.maxPositionEmbeddings, rope_theta: rope.ropeTheta, rope_scaling: rope.ropeScaling, rope_parameters: rope.ropeParameters };
}

/** A fitted yarn rope: its ramp, parameters, slot map and errors. */
interface YarnFit {
  low: number;
  high: number;
  p: Record<string, number | string>;
  slots: Int32Array;
  e: ReturnType<typeof errors>;
  moved: number;
}

/** Default slots; the integer ramp with the smallest largest relative error (then phase error). */
function fitDefaultSlots(spec: ModelSpec, ropeDim: number): YarnFit {
  const { factor, origMax } = yarnFrame(spec);
  const slots = defaultSlotFrequencies(spec.headDim, ropeDim);
  const { inv: target, attentionScaling: attn } = keptSourceFrequencies(spec, ropeDim, slots);
  let best: YarnFit | null = null;
  for (let low = 0; low <= ropeDim / 2; low++)
    for (let high = low; high <= ropeDim - 1; high++) {
      const p = yarnParams(low, high, ropeDim, spec.rope.theta, factor, origMax, attn);
      const e = errors(engineYarnFrequencies(p, ropeDim), target, spec.maxPositionEmbeddings);
      if (!best || e.maxRel < best.e.maxRel || (e.maxRel === best.e.maxRel && e.phase < best.e.phase)) best = { low, high, p, slots, e, moved: 0 };
    }
  return best!;
}

/**
 * llama3: the integer ramp and the band's slot assignment (rope-slots.ts) with the smallest
 * largest phase error at max_position_embeddings over all slots, then the smallest sum of
 * squared phase errors, then the fewest moved slots.
 */
function fitBandSlots(spec: ModelSpec, ropeDim: number, band: BandSlots): YarnFit {
  const { factor, origMax } = yarnFrame(spec);
  const maxContext = spec.maxPositionEmbeddings;
  const src = computeRope(spec.rope, { rotDim: spec.headDim, maxPositionEmbeddings: maxContext });
  const step = spec.headDim / ropeDim;
  let best: (YarnFit & { sumSq: number }) | null = null;
  // a ramp ending past the last slot leaves the slots below the band unscaled: not tried
  for (let low = 0; low < ropeDim / 2; low++)
    for (let high = low + 1; high <= ropeDim / 2; high++) {
      const p = yarnParams(low, high, ropeDim, spec.rope.theta, factor, origMax, src.attentionScaling);
      const engine = engineYarnFrequencies(p, ropeDim);
      const a = assignBandSlots(engine, src.invFreq, band, step, maxContext);
      const e = errors(engine, keptSourceFrequencies(spec, ropeDim, a.slots).inv, maxContext);
      const cand = { low, high, p, slots: a.slots, e, moved: a.moved, sumSq: e.phases.reduce((t, v) => t + v * v, 0) };
      if (!best || betterAssignment({ maxPhase: e.phase, sumSq: cand.sumSq, moved: cand.moved }, { maxPhase: best.e.phase, sumSq: best.sumSq, moved: best.moved })) best = cand;
    }
  return best!;
}

/**
 * The exported rope of a conversion of `spec` keeping `ropeDim` rotated dims per head, for
 * sequences up to `spec.maxPositionEmbeddings`, and the source frequency each slot carries.
 */
export function portableRope(spec: ModelSpec, ropeDim: number, o: PortableRopeOptions = { bandSlots: false }): RopeExport {
  const r = spec.rope;
  const maxContext = spec.maxPositionEmbeddings;
  if (r.type === 'default' || r.type === 'dynamic') {
    const slots = defaultSlotFrequencies(spec.headDim, ropeDim);
    const { inv: target, attentionScaling: attn } = keptSourceFrequencies(spec, ropeDim, slots);
    const p = { rope_type: 'default', rope_theta: r.theta };
    const engine = computeRope({ type: 'default', theta: r.theta, factor: 1, partialRotaryFactor: 1 }, { rotDim: ropeDim, maxPositionEmbeddings: maxContext }).invFreq;
    const e = errors(engine, target, maxContext);
    const note =
      r.type === 'dynamic'
        ? 'dynamic NTK equals the unscaled rope up to max_position_embeddings; written as default (beyond it the engines do not grow the base)'
        : 'unchanged';
    return {
      ropeParameters: p,
      ropeScaling: null,
      ropeTheta: r.theta,
      maxPositionEmbeddings: maxContext,
      slotFrequencies: slots,
      report: report(r.type, 'default', e, { maxContext, srcAttn: attn, engineAttn: 1, slots, note }),
    };
  }
  const { factor, origMax, maxPos } = yarnFrame(spec);
  const band = o.bandSlots ? blendBandSlots(spec, ropeDim) : null;
  const b = band ? fitBandSlots(spec, ropeDim, band) : fitDefaultSlots(spec, ropeDim);
  const attn = keptSourceFrequencies(spec, ropeDim, b.slots).attentionScaling;
  const step = spec.headDim / ropeDim;
  const movedSlots = Array.from(b.slots, (k, i) => (k === i * step ? null : `${i}->${k}`)).filter((v) => v !== null);
  const note =
    `${r.type} written as yarn (what vLLM/SGLang compute as deepseek_yarn): ramp slots ${b.low}..${b.high}, ` +
    `factor ${factor}, original_max_position_embeddings ${origMax}, mscale_all_dim 0 (softmax scale unchanged)` +
    (movedSlots.length ? `; blend-band slots carrying another source frequency (slot->frequency): ${movedSlots.join(', ')}` : '');
  return {
    ropeParameters: b.p,
    ropeScaling: { ...b.p },
    ropeTheta: r.theta,
    maxPositionEmbeddings: maxPos,
    slotFrequencies: b.slots,
    report: report(r.type, 'yarn', b.e, { maxContext, srcAttn: attn, engineAttn: attn, ramp: { low: b.low, high: b.high }, slots: b.slots, note }),
  };
}

/** What the report adds to the errors. */
interface ReportFacts {
  maxContext: number;
  srcAttn: number;
  engineAttn: number;
  ramp?: { low: number; high: number };
  slots: Int32Array;
  note: string;
}

function report(sourceType: RopeSpec['type'], exportedType: 'default' | 'yarn', e: ReturnType<typeof errors>, f: ReportFacts): RopeExportReport {
  // float32 rounding of the frequency computation: a few ulps
  const exact = e.maxRel <= 4 * 2 ** -23 && f32(f.srcAttn) === f32(f.engineAttn);
  return {
    sourceType,
    exportedType,
    exact,
    perFrequencyRelError: e.rel,
    maxFrequencyRelError: e.maxRel,
    maxPhaseErrorAtMaxContext: e.phase,
    perFrequencyPhaseError: e.phases,
    slotSourceFrequencies: Array.from(f.slots),
    maxContext: f.maxContext,
    attentionFactor: { source: f.srcAttn, engine: f.engineAttn },
    ...(f.ramp ? { ramp: f.ramp } : {}),
    note: f.note,
  };
}
