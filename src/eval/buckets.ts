/**
 * NLL by position bucket. A scored token's position is its index inside the window
 * (1..seq-1: token t+1 is predicted from tokens 0..t, so position 0 is never scored). The
 * buckets are [0, 64), [64, 256), [256, 1024), [1024, 2048), then doubling: [2048, 4096),
 * [4096, 8192), ... up to the window's last position.
 */

/** Mean NLL of the scored tokens whose position lies in [from, to] (inclusive). */
export interface NllBucket {
  /** first position of the bucket (its nominal lower edge; position 0 is never scored) */
  from: number;
  /** last position of the bucket, capped at seq - 1 */
  to: number;
  /** scored tokens in the bucket over all windows (windows x positions scored in [from, to]) */
  count: number;
  /** mean NLL (nats) of those tokens */
  meanNll: number;
  /** exp(meanNll) */
  ppl: number;
}

/** Lower edges of the buckets that cover positions 0..seq-1. */
export function bucketEdges(seq: number): number[] {
  const edges = [0, 64, 256, 1024, 2048];
  while (edges[edges.length - 1] * 2 <= seq - 1) edges.push(edges[edges.length - 1] * 2);
  return edges.filter((e) => e <= seq - 1);
}

/** Accumulates per-bucket NLL sums (float64) over the windows of one length. */
export class BucketAccumulator {
  private readonly edges: number[];
  private readonly sums: Float64Array;
  private readonly counts: Float64Array;

  constructor(readonly seq: number) {
    this.edges = bucketEdges(seq);
    this.sums = new Float64Array(this.edges.length);
    this.counts = new Float64Array(this.edges.length);
  }

  /** Adds `n` windows' NLL, laid out as the engine returns it: window-major, seq-1 per window. */
  add(nll: Float64Array, n: number): void {
    const L = this.seq - 1;
    for (let b = 0; b < this.edges.length; b++) {
      const lo = Math.max(1, this.edges[b]);
      const hi = b + 1 < this.edges.length ? this.edges[b + 1] - 1 : L;
      let s = 0;
      for (let w = 0; w < n; w++) for (let p = lo; p <= hi; p++) s += nll[w * L + p - 1];
      this.sums[b] += s;
      this.counts[b] += n * (hi - lo + 1);
    }
  }

  /** The buckets holding at least one scored token. */
  result(): NllBucket[] {
    const out: NllBucket[] = [];
    for (let b = 0; b < this.edges.length; b++) {
      if (this.counts[b] === 0) continue;
      const meanNll = this.sums[b] / this.counts[b];
      const to = b + 1 < this.edges.length ? this.edges[b + 1] - 1 : this.seq - 1;
      out.push({ from: this.edges[b], to, count: this.counts[b], meanNll, ppl: Math.exp(meanNll) });
    }
    return out;
  }
}
