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
 * The converted model keeps, in rope slot i, the source's frequency number i * head_dim / r
 * (theta_i above with the source's base: the set the engines compute, so the conversion's
 * choice already matches it). What remains free is (factor, original_max, beta_fast,
 * beta_slow, mscale): this module picks the integer ramp ends (low, high) that reproduce the
 * source's scaled frequencies best (exact for default and for dynamic within
 * max_position_embeddings; exact outside the blend region for llama3 and yarn), sets
 * mscale_all_dim 0 (softmax unchanged) and mscale / attention_factor to the source's cos/sin
 * factor, and reports the per-frequency relative error and the phase error at the model's
 * max context.
 */
import { computeRope } from '../model/rope.js';
import type { ModelSpec, RopeSpec } from '../model/spec-types.js';
import type { RopeExportReport } from '../report-types.js';

export type { RopeExportReport };


/** The rope part of the exported config. */
export interface RopeExport {
  /** transformers-5 style rope_parameters (rope_theta and rope_type included) */
  ropeParameters: Record<string, number | string>;
  /** legacy rope_scaling (null for default: SGLang turns any non-null rope_scaling into deepseek_yarn) */
  ropeScaling: Record<string, number | string> | null;
  ropeTheta: number;
  maxPositionEmbeddings: number;
  report: RopeExportReport;
}

const f32 = Math.fround;

/** The source's inverse frequencies at the kept rope slots (every (headDim / ropeDim)-th). */
export function keptSourceFrequencies(spec: ModelSpec, ropeDim: number): { inv: Float64Array; attentionScaling: number } {
  const d = spec.headDim;
  const src = computeRope(spec.rope, { rotDim: d, maxPositionEmbeddings: spec.maxPositionEmbeddings });
  const step = d / ropeDim;
  const inv = new Float64Array(ropeDim / 2);
  for (let i = 0; i < ropeDim / 2; i++) inv[i] = src.invFreq[i * step];
  return { inv, attentionScaling: src.attentionScaling };
}

/** beta whose correction dim (for `r` rotated dims) is `corr`: the inverse of corr(beta). */
function betaFor(corr: number, r: number, base: number, origMax: number): number {
  return (origMax / (2 * Math.PI)) * Math.exp((-2 * corr * Math.log(base)) / r);
}

function errors(engine: Float32Array, target: Float64Array, maxContext: number): { rel: number[]; maxRel: number; phase: number } {
  const rel: number[] = [];
  let maxRel = 0;
  let phase = 0;
  for (let i = 0; i < target.length; i++) {
    const d = Math.abs(engine[i] - target[i]);
    rel.push(d / target[i]);
    maxRel = Math.max(maxRel, d / target[i]);
    phase = Math.max(phase, d * (maxContext - 1));
  }
  return { rel, maxRel, phase };
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

/**
 * The exported rope of a conversion of `spec` keeping `ropeDim` rotated dims per head, for
 * sequences up to `spec.maxPositionEmbeddings`.
 */
export function portableRope(spec: ModelSpec, ropeDim: number): RopeExport {
  const r = spec.rope;
  const maxContext = spec.maxPositionEmbeddings;
  const { inv: target, attentionScaling: attn } = keptSourceFrequencies(spec, ropeDim);
  if (r.type === 'default' || r.type === 'dynamic') {
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
      report: report(r.type, 'default', e, maxContext, attn, 1, undefined, note),
    };
  }
  const { factor, origMax, maxPos } = yarnFrame(spec);
  let best: { low: number; high: number; p: Record<string, number | string>; e: ReturnType<typeof errors> } | null = null;
  for (let low = 0; low <= ropeDim / 2; low++)
    for (let high = low; high <= ropeDim - 1; high++) {
      const p = yarnParams(low, high, ropeDim, r.theta, factor, origMax, attn);
      const e = errors(engineYarnFrequencies(p, ropeDim), target, maxContext);
      if (!best || e.maxRel < best.e.maxRel || (e.maxRel === best.e.maxRel && e.phase < best.e.phase)) best = { low, high, p, e };
    }
  const b = best!;
  const note =
    `${r.type} written as yarn (what vLLM/SGLang compute as deepseek_yarn): ramp slots ${b.low}..${b.high}, ` +
    `factor ${factor}, original_max_position_embeddings ${origMax}, mscale_all_dim 0 (softmax scale unchanged)`;
  return {
    ropeParameters: b.p,
    ropeScaling: { ...b.p },
    ropeTheta: r.theta,
    maxPositionEmbeddings: maxPos,
    report: report(r.type, 'yarn', b.e, maxContext, attn, attn, { low: b.low, high: b.high }, note),
  };
}

function report(
  sourceType: RopeSpec['type'],
  exportedType: 'default' | 'yarn',
  e: ReturnType<typeof errors>,
  maxContext: number,
  srcAttn: number,
  engineAttn: number,
  ramp: { low: number; high: number } | undefined,
  note: string,
): RopeExportReport {
  // float32 rounding of the frequency computation: a few ulps
  const exact = e.maxRel <= 4 * 2 ** -23 && f32(srcAttn) === f32(engineAttn);
  return {
    sourceType,
    exportedType,
    exact,
    perFrequencyRelError: e.rel,
    maxFrequencyRelError: e.maxRel,
    maxPhaseErrorAtMaxContext: e.phase,
    maxContext,
    attentionFactor: { source: srcAttn, engine: engineAttn },
    ...(ramp ? { ramp } : {}),
    note,
  };
}
