/**
 * Which source frequency each rope slot of llama3's blend band carries in the portable export.
 *
 * The engines' deepseek_yarn gives slot i the frequency theta_i ((1 - ramp_i) + ramp_i / factor),
 * with a ramp linear in the slot index between integer ends; llama3 blends linearly in the
 * frequency. With slot i carrying the source's frequency number i * step (step = head_dim /
 * qk_rope_head_dim), the band's slots are off by 10-40%. The conversion keeps RoPE on whichever
 * source frequency a slot carries (src/convert/rorope.ts), so inside the band the slots may
 * carry other source frequencies: a strictly increasing assignment of the band's slots to the
 * band's source frequencies, the one whose engine frequencies are nearest in phase at the
 * model's max context. A band frequency no slot carries becomes position-free, like the
 * frequencies FreqFold folds away.
 */
import { computeRope } from '../model/rope.js';
import type { ModelSpec } from '../model/spec-types.js';

/** Slots `first..last` (inclusive) whose carried source frequency may move. */
export interface BandSlots {
  first: number;
  last: number;
}

/** An assignment of rope slots to source frequencies and its phase errors. */
export interface SlotAssignment {
  /** source frequency index per rope slot */
  slots: Int32Array;
  /** largest |inv_engine - inv_source| x (maxContext - 1) over the band's slots */
  maxPhase: number;
  /** sum of the squared phase errors over the band's slots */
  sumSq: number;
  /** band slots that do not carry their default frequency */
  moved: number;
}

/**
 * The slots around llama3's blend band of a llama3 source (one default slot beyond each end of
 * the band), or null when the source is not llama3 or no source frequency lies in the band.
 */
export function blendBandSlots(spec: ModelSpec, ropeDim: number): BandSlots | null {
  const r = spec.rope;
  if (r.type !== 'llama3' || !r.originalMaxPositionEmbeddings || !r.lowFreqFactor || !r.highFreqFactor) return null;
  const base = computeRope({ type: 'default', theta: r.theta, factor: 1, partialRotaryFactor: 1 }, { rotDim: spec.headDim, maxPositionEmbeddings: spec.maxPositionEmbeddings }).invFreq;
  const lowWavelen = r.originalMaxPositionEmbeddings / r.lowFreqFactor;
  const highWavelen = r.originalMaxPositionEmbeddings / r.highFreqFactor;
  const band: number[] = [];
  for (let k = 0; k < base.length; k++) {
    // llama3's own test (src/model/rope.ts): blended unless below the high or above the low wavelength
    const wavelen = Math.fround((2 * Math.PI) / base[k]);
    if (!(wavelen < highWavelen) && !(wavelen > lowWavelen)) band.push(k);
  }
  if (band.length === 0) return null;
  const step = spec.headDim / ropeDim;
  const first = Math.max(0, Math.floor((band[0] - 1) / step));
  const last = Math.min(ropeDim / 2 - 1, Math.ceil((band[band.length - 1] + 1) / step));
  return { first, last };
}

/** (a) better than (b): smaller largest phase error, then smaller sum of squares, then fewer moved slots. */
export function betterAssignment(a: { maxPhase: number; sumSq: number; moved: number }, b: { maxPhase: number; sumSq: number; moved: number }): boolean {
  if (a.maxPhase !== b.maxPhase) return a.maxPhase < b.maxPhase;
  if (a.sumSq !== b.sumSq) return a.sumSq < b.sumSq;
  return a.moved < b.moved;
}

/**
 * The best strictly increasing assignment of slots `band.first..band.last` to source frequencies
 * `band.first * step..band.last * step` for the engine frequencies `engine` (per slot) against
 * the source's `source` (all head_dim / 2 frequencies); the other slots keep i * step.
 */
export function assignBandSlots(engine: ArrayLike<number>, source: ArrayLike<number>, band: BandSlots, step: number, maxContext: number): SlotAssignment {
  const slots = Int32Array.from({ length: engine.length }, (_, i) => i * step);
  const kLo = band.first * step;
  const kHi = band.last * step;
  const phase = (j: number, k: number) => Math.abs(engine[j] - source[k]) * (maxContext - 1);
  const cur = new Int32Array(band.last - band.first + 1);
  let best: SlotAssignment | null = null;
  const visit = (pos: number, kMin: number, maxPhase: number, sumSq: number, moved: number) => {
    if (best && maxPhase > best.maxPhase) return;
    if (pos === cur.length) {
      const cand = { maxPhase, sumSq, moved };
      if (!best || betterAssignment(cand, best)) {
        const s = slots.slice();
        s.set(cur, band.first);
        best = { slots: s, ...cand };
      }
      return;
    }
    const j = band.first + pos;
    // leave room for the remaining slots
    for (let k = kMin; k <= kHi - (cur.length - 1 - pos); k++) {
      const e = phase(j, k);
      cur[pos] = k;
      visit(pos + 1, k + 1, Math.max(maxPhase, e), sumSq + e * e, moved + (k === j * step ? 0 : 1));
    }
  };
  visit(0, kLo, 0, 0, 0);
  return best!;
}
