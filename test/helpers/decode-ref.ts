/**
 * Float64 reference and random cases for the decode-attention tests (CPU and CUDA):
 * plain loops over every (request, query, head, token), no blocking, two-pass softmax.
 */
import { seededRandom } from '../../src/generate-sampling.js';

/** Seeded uniform [0, 1) generator (mulberry32, the one of src/generate-sampling.ts). */
export const uniform = seededRandom;

/** Rounds float32 values to bf16 (nearest even), returned as float32. */
export function roundBf16(x: Float32Array): Float32Array {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Float32Array(x.length);
  const o = new Uint32Array(out.buffer);
  for (let i = 0; i < x.length; i++) {
    const v = u[i];
    o[i] = (v & 0x7fffffff) > 0x7f800000 ? v : ((v + 0x7fff + ((v >>> 16) & 1)) >>> 16) << 16;
  }
  return out;
}

/** The bf16 bit patterns of float32 values that are already bf16-exact (or NaN). */
export function bf16Bits(x: Float32Array): Uint16Array {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = u[i] >>> 16;
  return out;
}

/** Cache layout of a case: paged (page indices per request) or contiguous. */
export interface CacheLayout {
  paged: boolean;
  pageSize: number;
  /** [batch, maxBlocks]; -1 for pages a request does not use */
  blockTable?: Int32Array;
  maxBlocks: number;
  seqStride: number;
  /** rows in the cache array */
  cacheRows: number;
}

/** Row index in the cache of token t of request b. */
export function cacheRow(layout: CacheLayout, b: number, t: number): number {
  if (!layout.paged) return b * layout.seqStride + t;
  return layout.blockTable![b * layout.maxBlocks + Math.floor(t / layout.pageSize)] * layout.pageSize + (t % layout.pageSize);
}

/**
 * Builds a cache layout for the lengths: paged with shuffled pages (plus spare pages) or
 * contiguous with `slack` spare tokens per request.
 */
export function makeLayout(lens: number[], paged: boolean, pageSize: number, rand: () => number, slack = 7): CacheLayout {
  const batch = lens.length;
  if (!paged) {
    const seqStride = Math.max(1, ...lens) + slack;
    return { paged, pageSize, maxBlocks: 0, seqStride, cacheRows: batch * seqStride };
  }
  const pagesPer = lens.map((l) => Math.ceil(l / pageSize));
  const maxBlocks = Math.max(1, ...pagesPer) + 1;
  const total = pagesPer.reduce((a, b) => a + b, 0) + 3;
  const perm = Array.from({ length: total }, (_, i) => i);
  for (let i = total - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [perm[i], perm[j]] = [perm[j], perm[i]];
  }
  const blockTable = new Int32Array(batch * maxBlocks).fill(-1);
  let next = 0;
  for (let b = 0; b < batch; b++) for (let p = 0; p < pagesPer[b]; p++) blockTable[b * maxBlocks + p] = perm[next++];
  return { paged, pageSize, blockTable, maxBlocks, seqStride: 0, cacheRows: total * pageSize };
}

/**
 * Fills a cache of `layout.cacheRows` rows of `rowDim` values: NaN everywhere, then
 * uniform [-amp, amp) values in the rows of valid tokens. Rounded to bf16 when asked.
 */
export function makeCache(
  layout: CacheLayout,
  lens: number[],
  rowDim: number,
  rand: () => number,
  amp: number,
  bf16: boolean,
): Float32Array {
  const cache = new Float32Array(layout.cacheRows * rowDim).fill(NaN);
  for (let b = 0; b < lens.length; b++)
    for (let t = 0; t < lens[b]; t++) {
      const r = cacheRow(layout, b, t);
      for (let d = 0; d < rowDim; d++) cache[r * rowDim + d] = (2 * rand() - 1) * amp;
    }
  return bf16 ? roundBf16(cache) : cache;
}

/** n uniform [-amp, amp) values, optionally bf16-rounded. */
export function randomArray(n: number, rand: () => number, amp: number, bf16 = false): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = (2 * rand() - 1) * amp;
  return bf16 ? roundBf16(x) : x;
}

/** Float64 reference output and LSE of one attention problem. */
export interface RefResult {
  out: Float64Array;
  lse: Float64Array;
}

/**
 * Generic decode attention reference. Query row (b, i, h) has a key vector qk(b, i, h)
 * (length dqk) and attends over the first lens[b] - qLen + 1 + i tokens of request b with
 * key key(b, t, kvh) and value val(b, t, kvh) (length dv), kvh = floor(h / group).
 */
export function decodeRef(p: {
  batch: number;
  qLen: number;
  heads: number;
  kvHeads: number;
  dqk: number;
  dv: number;
  lens: number[];
  scale: number;
  q: (b: number, i: number, h: number, d: number) => number;
  k: (b: number, t: number, kvh: number, d: number) => number;
  v: (b: number, t: number, kvh: number, d: number) => number;
}): RefResult {
  const { batch, qLen, heads, dqk, dv } = p;
  const group = heads / p.kvHeads;
  const out = new Float64Array(batch * qLen * heads * dv);
  const lse = new Float64Array(batch * qLen * heads);
  const qv = new Float64Array(dqk);
  for (let b = 0; b < batch; b++)
    for (let kvh = 0; kvh < p.kvHeads; kvh++) {
      // gather this request's keys and values once for all heads of the group
      const len = p.lens[b];
      const K = new Float64Array(len * dqk);
      const V = new Float64Array(len * dv);
      for (let t = 0; t < len; t++) {
        for (let d = 0; d < dqk; d++) K[t * dqk + d] = p.k(b, t, kvh, d);
        for (let d = 0; d < dv; d++) V[t * dv + d] = p.v(b, t, kvh, d);
      }
      for (let i = 0; i < qLen; i++)
        for (let h = kvh * group; h < (kvh + 1) * group; h++) {
          const row = (b * qLen + i) * heads + h;
          const n = Math.max(0, len - qLen + 1 + i);
          if (n === 0) {
            lse[row] = -Infinity;
            continue;
          }
          for (let d = 0; d < dqk; d++) qv[d] = p.q(b, i, h, d);
          const s = new Float64Array(n);
          let mx = -Infinity;
          for (let t = 0; t < n; t++) {
            let acc = 0;
            const off = t * dqk;
            for (let d = 0; d < dqk; d++) acc += qv[d] * K[off + d];
            s[t] = acc * p.scale;
            if (s[t] > mx) mx = s[t];
          }
          let sum = 0;
          for (let t = 0; t < n; t++) {
            s[t] = Math.exp(s[t] - mx);
            sum += s[t];
          }
          lse[row] = mx + Math.log(sum);
          const o = out.subarray(row * dv, (row + 1) * dv);
          for (let t = 0; t < n; t++) {
            const w = s[t] / sum;
            const off = t * dv;
            for (let d = 0; d < dv; d++) o[d] += w * V[off + d];
          }
        }
    }
  return { out, lse };
}

/** ||a - ref|| / ||ref|| over all elements (NaN in `a` gives NaN). */
export function relError(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = a[i] - ref[i];
    num += d * d;
    den += ref[i] * ref[i];
  }
  return Math.sqrt(num / Math.max(den, 1e-300));
}

/** max |a - ref| over entries, treating equal infinities as 0 and a mismatch as Infinity. */
export function maxAbsLseError(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < ref.length; i++) {
    if (ref[i] === -Infinity || a[i] === -Infinity) {
      if (ref[i] !== a[i]) return Infinity;
      continue;
    }
    const d = Math.abs(a[i] - ref[i]);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

/** One random MLA decode problem with its float64 reference. */
export interface MlaCase {
  batch: number;
  qLen: number;
  heads: number;
  dl: number;
  dr: number;
  lens: number[];
  scale: number;
  layout: CacheLayout;
  qLat: Float32Array;
  qRope: Float32Array;
  /** float32 values (bf16-exact when bf16) with NaN outside valid tokens */
  cache: Float32Array;
  ref: RefResult;
}

/** Builds a random MLA case; `bf16` rounds queries and cache to bf16 first. */
export function makeMlaCase(o: {
  seed: number;
  batch?: number;
  qLen: number;
  heads: number;
  dl?: number;
  dr?: number;
  lens: number[];
  paged: boolean;
  pageSize?: number;
  bf16: boolean;
  scale?: number;
  amp?: number;
}): MlaCase {
  const rand = uniform(o.seed);
  const dl = o.dl ?? 512;
  const dr = o.dr ?? 64;
  const D = dl + dr;
  const batch = o.lens.length;
  const layout = makeLayout(o.lens, o.paged, o.pageSize ?? 64, rand);
  const amp = o.amp ?? 1;
  const cache = makeCache(layout, o.lens, D, rand, amp, o.bf16);
  const rows = batch * o.qLen * o.heads;
  const qLat = randomArray(rows * dl, rand, 1, o.bf16);
  const qRope = randomArray(rows * dr, rand, 1, o.bf16);
  const scale = o.scale ?? 1 / Math.sqrt(dl / 4 + dr);
  const ref = decodeRef({
    batch,
    qLen: o.qLen,
    heads: o.heads,
    kvHeads: 1,
    dqk: D,
    dv: dl,
    lens: o.lens,
    scale,
    q: (b, i, h, d) => {
      const row = (b * o.qLen + i) * o.heads + h;
      return d < dl ? qLat[row * dl + d] : qRope[row * dr + d - dl];
    },
    k: (b, t, _kvh, d) => cache[cacheRow(layout, b, t) * D + d],
    v: (b, t, _kvh, d) => cache[cacheRow(layout, b, t) * D + d],
  });
  return { batch, qLen: o.qLen, heads: o.heads, dl, dr, lens: o.lens, scale, layout, qLat, qRope, cache, ref };
}
