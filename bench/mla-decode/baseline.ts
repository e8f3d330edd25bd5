/**
 * Shared by report.ts and readme-table.ts: rows of a decode run, the bandwidth ceilings
 * measured in it, and the MLA/GQA comparison against the faster GQA baseline of the same
 * run (our GQA kernel or PyTorch SDPA, whichever took less time for that shape).
 */

/** One benchmark row (bench/mla-decode/cuda.ts or torch_ref.py). */
export interface Row {
  kind: string;
  batch: number;
  sk: number;
  heads: number;
  qLen: number;
  varied: boolean;
  ms: number;
  gbps: number;
  tflops: number;
  pctCopy: number;
  pctRead?: number;
  kernel?: string;
  numParts?: number;
  numSlots?: number;
  backend?: string;
  form?: string;
  kernels?: string[];
  error?: string | null;
}

/** KV bytes per token and layer, GQA (2 x 8 x 128) over MLA (512 + 64). */
export const KV_RATIO = 2048 / 576;

export const key = (r: { batch: number; sk: number; heads: number; qLen: number; varied: boolean }) =>
  `${r.batch}/${r.sk}/${r.heads}/${r.qLen}/${r.varied ? 'v' : 'f'}`;

export const find = (rows: Row[], kind: string, k: string) => rows.find((r) => r.kind === kind && key(r) === k);

/** Percent of a ceiling, or NaN when either is unknown. */
export const pct = (gbps: number, ceiling: number | undefined) =>
  ceiling !== undefined && Number.isFinite(ceiling) && Number.isFinite(gbps) ? (100 * gbps) / ceiling : NaN;

/** One MLA/GQA comparison at a shape (heads 32, the Llama-3-8B layer). */
export interface Comparison {
  batch: number;
  sk: number;
  qLen: number;
  varied: boolean;
  mla?: Row;
  gqaOurs: Row;
  sdpa?: Row;
  /** the faster of gqaOurs and sdpa (sdpa only when it ran without error) */
  baseline: Row;
  baselineName: string;
  /** baseline ms / MLA ms */
  speedup: number;
  /** our GQA kernel's ms / MLA ms */
  speedupVsOurs: number;
}

/** The name of a baseline row: "ours" or "SDPA <backend>/<form>" (runs before torch_ref.py recorded it: "SDPA (backend not recorded)"). */
export function baselineName(r: Row): string {
  if (r.kind === 'gqa') return 'ours';
  return r.backend ? `SDPA ${r.backend}/${r.form}` : 'SDPA (backend not recorded)';
}

/** Every GQA shape of our run with its MLA row, its SDPA row (fixed lengths) and the faster baseline. */
export function comparisons(rows: Row[]): Comparison[] {
  return rows
    .filter((g) => g.kind === 'gqa')
    .map((g) => {
      const mla = find(rows, 'mla', key({ ...g, heads: 32 }));
      const s = g.varied ? undefined : find(rows, 'gqa-torch-sdpa', key(g));
      const sdpa = s && !s.error && Number.isFinite(s.ms) ? s : undefined;
      const baseline = sdpa && sdpa.ms < g.ms ? sdpa : g;
      return {
        batch: g.batch,
        sk: g.sk,
        qLen: g.qLen,
        varied: g.varied,
        mla,
        gqaOurs: g,
        sdpa,
        baseline,
        baselineName: baselineName(baseline),
        speedup: mla ? baseline.ms / mla.ms : NaN,
        speedupVsOurs: mla ? g.ms / mla.ms : NaN,
      };
    });
}

/** Bandwidth ceilings of a run: copy (read + write) and read-only stream, GB/s. */
export interface Ceilings {
  copy: number;
  /** undefined for runs before the read-only measurement existed */
  read?: number;
}

/** Fills pctRead of every row from the read ceiling. */
export function withPctRead(rows: Row[], c: Ceilings): Row[] {
  return rows.map((r) => ({ ...r, pctRead: pct(r.gbps, c.read) }));
}

/** min-max of a list as "a-b" (or "a" when equal) with d decimals; "—" when empty. */
export function range(xs: number[], d: number): string {
  const v = xs.filter(Number.isFinite);
  if (!v.length) return '—';
  const lo = Math.min(...v).toFixed(d);
  const hi = Math.max(...v).toFixed(d);
  return lo === hi ? lo : `${lo}-${hi}`;
}
