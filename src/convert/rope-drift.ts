/**
 * Rope slots that rotate at another frequency than the source frequency they carry: the
 * portable export of a llama3 source, where the engines' deepseek_yarn cannot reproduce
 * llama3's blend band (src/export/rope-yarn.ts). A source logit term Re(conj(q) k e^{-i delta f})
 * computed by the engine as Re(conj(q') k e^{-i delta e}) is best replaced, in least squares
 * over head h's attention distances p_h(delta) (distance.ts), by q' = q E_h[e^{i delta (f - e)}]:
 * per query head, the query's (re, im) rope rows of the slot take the expected residual
 * rotation [[c, -s], [s, c]], c = E_h[cos((f - e) delta)], s = E_h[sin((f - e) delta)] (the
 * query-side counterpart of the NoPE shrink, whose residual rotation is the whole f).
 */
import { computeRope } from '../model/rope.js';
import type { ModelSpec } from '../model/spec-types.js';
import { expectedRotation } from './distance.js';

/** Per query head and rope slot, the expected residual rotation (qkRopeDim / 2 entries each). */
export interface RopeDriftRotation {
  cos: Float64Array[];
  sin: Float64Array[];
}

/** Per rope slot: the carried source frequency minus the engine's (0 where they agree). */
export function ropeSlotDrift(source: ModelSpec, engine: ModelSpec, slots: ArrayLike<number>): Float64Array {
  const src = computeRope(source.rope, { rotDim: source.headDim, maxPositionEmbeddings: source.maxPositionEmbeddings }).invFreq;
  const r = slots.length * 2;
  const eng = computeRope(engine.rope, { rotDim: r, maxPositionEmbeddings: engine.maxPositionEmbeddings }).invFreq;
  return Float64Array.from({ length: slots.length }, (_, j) => src[slots[j]] - eng[j]);
}

/** The expected residual rotation of every slot under each head's distance distribution `mass` (p_h(delta), delta = 0..). */
export function expectedDriftRotation(mass: Float64Array[], drift: Float64Array): RopeDriftRotation {
  const cos: Float64Array[] = [];
  const sin: Float64Array[] = [];
  for (const m of mass) {
    const c = new Float64Array(drift.length).fill(1);
    const s = new Float64Array(drift.length);
    for (let j = 0; j < drift.length; j++) if (drift[j] !== 0) [c[j], s[j]] = expectedRotation(m, drift[j]);
    cos.push(c);
    sin.push(s);
  }
  return { cos, sin };
}

/**
 * In place: the rope rows j (re) and j + r/2 (im, rotate-half layout) of one head's query side
 * (r rows of `cols` values) times the expected residual rotation [[c, -s], [s, c]] of slot j.
 */
export function driftRows(q: Float64Array, cols: number, r: number, cos: Float64Array, sin: Float64Array): void {
  for (let j = 0; j < r / 2; j++) {
    const c = cos[j];
    const s = sin[j];
    if (c === 1 && s === 0) continue;
    const re = j * cols;
    const im = (j + r / 2) * cols;
    for (let i = 0; i < cols; i++) {
      const a = q[re + i];
      const b = q[im + i];
      q[re + i] = c * a - s * b;
      q[im + i] = s * a + c * b;
    }
  }
}
