/**
 * Rotary position embedding frequencies as transformers computes them
 * (`modeling_rope_utils`, rope types default / linear / llama3 / dynamic / yarn), in float32
 * like PyTorch's tensors, plus the attention scaling that multiplies cos/sin.
 */
import { GqaError } from '../errors.js';
import type { ModelSpec, RopeSpec } from './spec-types.js';

/** inv_freq (rotDim/2 entries) and the cos/sin multiplier for one rotary head size. */
export interface RopeTables {
  /** number of rotated dims per head */
  rotDim: number;
  invFreq: Float32Array;
  /** cos/sin multiplier (1 except yarn) */
  attentionScaling: number;
}

/** What the frequency computation needs beyond the RopeSpec. */
export interface RopeContext {
  /** rotated dims per head (head_dim x partial_rotary_factor, or qk_rope_head_dim for MLA) */
  rotDim: number;
  /** config.max_position_embeddings */
  maxPositionEmbeddings: number;
  /**
   * Longest sequence of the call (max position + 1). Only `dynamic` uses it: above
   * max_position_embeddings the base grows as transformers' dynamic NTK update does
   * (computed per call here, without transformers' cached-growth state).
   */
  seqLen?: number;
  /** yarn: floor/ceil the correction range (transformers' `truncate`, default true) */
  truncate?: boolean;
}

const f32 = Math.fround;

/** float32 `1 / base ** (arange(0, dim, 2) / dim)` as torch evaluates it. */
function defaultInvFreq(base: number, dim: number): Float32Array {
  const out = new Float32Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) {
    const e = f32((2 * i) / dim);
    out[i] = f32(1 / f32(Math.pow(base, e)));
  }
  return out;
}

function yarnMscale(scale: number, mscale = 1): number {
  return scale <= 1 ? 1 : 0.1 * mscale * Math.log(scale) + 1;
}

function requireNum(v: number | undefined, name: string, type: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v))
    throw new GqaError('ERR_ROPE_CONFIG', `rope type ${type} needs ${name} in rope_parameters/rope_scaling`);
  return v;
}

/** inv_freq and attention scaling of `rope` for `ctx.rotDim` rotated dims. */
export function computeRope(rope: RopeSpec, ctx: RopeContext): RopeTables {
  const dim = ctx.rotDim;
  if (!Number.isInteger(dim) || dim < 2 || dim % 2 !== 0)
    throw new GqaError('ERR_ROPE_CONFIG', `rotary dimension ${dim} must be an even integer >= 2`);
  const base = rope.theta;
  switch (rope.type) {
    case 'default':
      return { rotDim: dim, invFreq: defaultInvFreq(base, dim), attentionScaling: 1 };
    case 'linear': {
      const inv = defaultInvFreq(base, dim);
      const factor = requireNum(rope.factor, 'factor', 'linear');
      for (let i = 0; i < inv.length; i++) inv[i] = f32(inv[i] / factor);
      return { rotDim: dim, invFreq: inv, attentionScaling: 1 };
    }
    case 'dynamic': {
      const factor = requireNum(rope.factor, 'factor', 'dynamic');
      const maxPos = ctx.maxPositionEmbeddings;
      const seqLen = Math.max(ctx.seqLen ?? maxPos, maxPos);
      const b = base * Math.pow((factor * seqLen) / maxPos - (factor - 1), dim / (dim - 2));
      return { rotDim: dim, invFreq: defaultInvFreq(b, dim), attentionScaling: 1 };
    }
    case 'llama3': {
      const inv = defaultInvFreq(base, dim);
      const factor = requireNum(rope.factor, 'factor', 'llama3');
      const low = requireNum(rope.lowFreqFactor, 'low_freq_factor', 'llama3');
      const high = requireNum(rope.highFreqFactor, 'high_freq_factor', 'llama3');
      const oldCtx = requireNum(rope.originalMaxPositionEmbeddings, 'original_max_position_embeddings', 'llama3');
      const lowWavelen = oldCtx / low;
      const highWavelen = oldCtx / high;
      const out = new Float32Array(inv.length);
      for (let i = 0; i < inv.length; i++) {
        const wavelen = f32((2 * Math.PI) / inv[i]);
        let v = wavelen > lowWavelen ? f32(inv[i] / factor) : inv[i];
        if (!(wavelen < highWavelen) && !(wavelen > lowWavelen)) {
          const smooth = f32((oldCtx / wavelen - low) / (high - low));
          v = f32(f32(((1 - smooth) * v) / factor) + f32(smooth * v));
        }
        out[i] = v;
      }
      return { rotDim: dim, invFreq: out, attentionScaling: 1 };
    }
    case 'yarn': {
      const factor = requireNum(rope.factor, 'factor', 'yarn');
      const origMax = rope.originalMaxPositionEmbeddings ?? ctx.maxPositionEmbeddings;
      let attn = rope.attentionFactor;
      if (attn === undefined || attn === null) {
        attn =
          rope.mscale && rope.mscaleAllDim
            ? yarnMscale(factor, rope.mscale) / yarnMscale(factor, rope.mscaleAllDim)
            : yarnMscale(factor);
      }
      const betaFast = rope.betaFast || 32;
      const betaSlow = rope.betaSlow || 1;
      const corrDim = (rot: number) => (dim * Math.log(origMax / (rot * 2 * Math.PI))) / (2 * Math.log(base));
      let lo = corrDim(betaFast);
      let hi = corrDim(betaSlow);
      if (ctx.truncate !== false) {
        lo = Math.floor(lo);
        hi = Math.ceil(hi);
      }
      lo = Math.max(lo, 0);
      hi = Math.min(hi, dim - 1);
      if (lo === hi) hi += 0.001;
      const out = new Float32Array(dim / 2);
      for (let i = 0; i < dim / 2; i++) {
        const pos = f32(Math.pow(base, f32((2 * i) / dim)));
        const extra = f32(1 / pos);
        const inter = f32(1 / f32(factor * pos));
        const ramp = Math.min(1, Math.max(0, f32((i - lo) / (hi - lo))));
        const extraFactor = f32(1 - ramp);
        out[i] = f32(f32(inter * f32(1 - extraFactor)) + f32(extra * extraFactor));
      }
      return { rotDim: dim, invFreq: out, attentionScaling: attn };
    }
    default:
      throw new GqaError('ERR_ROPE_CONFIG', `unsupported rope type ${(rope as RopeSpec).type}`);
  }
}

/** Rotated dims per head of a model: qk_rope_head_dim for MLA, else head_dim x partial_rotary_factor. */
export function ropeDimOf(spec: ModelSpec): number {
  if (spec.mla) return spec.mla.qkRopeHeadDim;
  const d = Math.floor(spec.headDim * (spec.rope.partialRotaryFactor ?? 1));
  return d - (d % 2);
}

/** The model's rope tables for sequences up to `seqLen` tokens. */
export function modelRope(spec: ModelSpec, seqLen?: number): RopeTables {
  const raw = (spec.raw.rope_parameters ?? spec.raw.rope_scaling) as Record<string, unknown> | null | undefined;
  const truncate = raw && typeof raw === 'object' && raw.truncate === false ? false : true;
  return computeRope(spec.rope, { rotDim: ropeDimOf(spec), maxPositionEmbeddings: spec.maxPositionEmbeddings, seqLen, truncate });
}

/**
 * DeepSeek-V3's softmax scale: qk_head_dim^-0.5, times mscale^2 when the rope parameters
 * carry mscale_all_dim (yarn-style configs), as transformers' DeepseekV3Attention does.
 */
export function mlaSoftmaxScale(spec: ModelSpec): number {
  if (!spec.mla) throw new GqaError('ERR_MODEL_TYPE', 'mlaSoftmaxScale needs a deepseek_v3 spec');
  let scale = 1 / Math.sqrt(spec.mla.qkNopeHeadDim + spec.mla.qkRopeHeadDim);
  const r = spec.rope;
  if (r.type !== 'default' && r.mscaleAllDim) {
    const m = yarnMscale(r.factor, r.mscaleAllDim);
    scale *= m * m;
  }
  return scale;
}
