/**
 * The rows of the fidelity grid for one budget: the original model, `--method transmla` at
 * each fixed freqfold (the table reports the best per context), TransMLA-equivalent settings
 * plus each gqa2mla component alone, and the default (also with freqfold fixed).
 */
import type { ConvertOptions } from '../../src/convert/convert.js';
import { freqfoldCandidates } from '../../src/convert/rorope.js';

/** A row: `opts` null for the original model (not converted). */
export interface RowDef {
  id: string;
  label: string;
  group: 'original' | 'transmla' | 'component' | 'default';
  opts: Partial<ConvertOptions> | null;
  /** converts at the budget's `split` (the tool's, `--kv-budget`) instead of TransMLA's split */
  toolSplit?: boolean;
}

/** Fixed freqfolds tried for `--method transmla`: the allowed ones up to 8 (at least the smallest). */
export function transmlaFreqfolds(headDim: number, qkRopeDim: number): number[] {
  const all = freqfoldCandidates(headDim, qkRopeDim);
  const some = all.filter((f) => f <= 8);
  return some.length > 0 ? some : all.slice(0, 1);
}

/** TransMLA's own freqfold 2, or the smallest allowed one when 2 is not (head_dim / qk_rope_dim > 2). */
export function baseFreqfold(headDim: number, qkRopeDim: number): number {
  const all = freqfoldCandidates(headDim, qkRopeDim);
  return all.includes(2) ? 2 : all[0];
}

/** Every row of the grid for a budget of a model with `headDim` (the TransMLA split's RoPE dims `qkRopeDim`; the tool's `toolRopeDim`). */
export function rowsFor(headDim: number, qkRopeDim: number, toolRopeDim = qkRopeDim): RowDef[] {
  const ff = baseFreqfold(headDim, qkRopeDim);
  const tm: Partial<ConvertOptions> = { method: 'transmla', freqfold: ff };
  const comp = (id: string, label: string, o: Partial<ConvertOptions>): RowDef => ({ id, label, group: 'component', opts: { ...tm, ...o } });
  const otherSplit = toolRopeDim !== qkRopeDim;
  return [
    { id: 'original', label: 'original', group: 'original', opts: null },
    ...transmlaFreqfolds(headDim, qkRopeDim).map(
      (f): RowDef => ({ id: `transmla-ff${f}`, label: `--method transmla --freqfold ${f}`, group: 'transmla', opts: { method: 'transmla', freqfold: f } }),
    ),
    // the strongest baseline also at the tool's split, where it differs
    ...(otherSplit ? transmlaFreqfolds(headDim, toolRopeDim) : []).map(
      (f): RowDef => ({ id: `transmla-split-ff${f}`, label: `--method transmla --freqfold ${f} at the tool's split`, group: 'transmla', opts: { method: 'transmla', freqfold: f }, toolSplit: true }),
    ),
    comp('+freqfold-auto', `transmla ff${ff} + freqfold searched per layer`, { freqfold: 'auto' }),
    comp('+rope-qk', `transmla ff${ff} + query-aware RoPE selection`, { ropeSelection: 'qk' }),
    comp('+kv-objective', `transmla ff${ff} + objective-aware K/V metric`, { kvMetric: 'objective' }),
    comp('+kv-attention', `transmla ff${ff} + attention-aware K/V metric`, { kvMetric: 'attention' }),
    comp('+nope-shrink', `transmla ff${ff} + NoPE expected-cosine shrink`, { nopeShrink: true, nopeRotation: false }),
    comp('+nope-rotation', `transmla ff${ff} + NoPE expected rotation`, { nopeShrink: true, nopeRotation: true }),
    comp('+value-refit', `transmla ff${ff} + value refit`, { valueRefit: true }),
    comp('+output-refit', `transmla ff${ff} + output refit`, { outputRefit: true }),
    comp('+balance-auto', `transmla ff${ff} + balance searched per layer`, { balanceKv: 'auto' }),
    comp('+sequential', `transmla ff${ff} + sequential calibration`, { calibInputs: 'converted' }),
    { id: `default-ff${ff}`, label: `gqa2mla default --freqfold ${ff}`, group: 'default', opts: { freqfold: ff } },
    { id: 'default-ctx256', label: 'gqa2mla default --context 256 (choices on 256-token windows, as before --context)', group: 'default', opts: { context: 256 } },
    ...(otherSplit ? [{ id: 'default-transmla-split', label: "gqa2mla default at TransMLA's split", group: 'default', opts: {} } as RowDef] : []),
    { id: 'default', label: 'gqa2mla default', group: 'default', opts: {}, toolSplit: true },
  ];
}
