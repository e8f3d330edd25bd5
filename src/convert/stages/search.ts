/**
 * Stage 4, candidate search: factorize the layer for each candidate (freqfold, K/V balance,
 * RoPE selection, K/V metric), evaluate each on the held-out windows, keep the best.
 *
 * Invariant: every candidate is evaluated as it would be written (rounded to the stored
 * dtype, exact latent norm applied), and the one kept has the lowest held-out error on the
 * judge windows of those judged there (the first of equals): every candidate when the judge
 * windows are the short ones, the best of each freqfold (and the balance walk's best) when
 * they are the serving-context windows; the search order is fixed, so the choice is
 * deterministic.
 */
import type { LayerReport } from '../../report-types.js';
import { cachedAttentionMoments } from '../attention-stats.js';
import { expectedDriftRotation } from '../rope-drift.js';
import { factorizeLayer, type KvMetric } from '../factorize.js';
import { mlaLayerWeights } from '../mla-layer.js';
import { type Chosen, checkAbort, heldOutError, type LayerInputs, type RunContext, type Target } from './context.js';

/** One point of the search space. */
interface Candidate {
  freqfold: number;
  balance: number;
  sel: 'key' | 'qk';
  metric: KvMetric;
}

/** Output of {@link searchCandidates}: the best candidate and every one tried. */
export interface SearchResult {
  chosen: Chosen;
  candidates: LayerReport['candidates'];
}

/** A candidate tried, its evaluated layer, and its row in the report's candidate list. */
interface Tried {
  c: Candidate;
  r: Chosen;
  row: number;
}

/** Factorizes one candidate of target `tg`'s layer and evaluates it on windows `on`. */
async function tryCandidate(ctx: RunContext, li: LayerInputs, tg: Target, c: Candidate, on: 'judge' | 'short'): Promise<Chosen> {
  const { spec, backend, clock, options } = ctx;
  const { calib, seqlen: S, statRows } = ctx.windows;
  const { opt, mlaSpec } = tg;
  checkAbort(options.signal);
  // attention-aware statistics: once per layer (shared by the targets of a sweep)
  const am = c.metric === 'attention' ? await cachedAttentionMoments(li.lm, spec, li.gqa, li.moments, li.x, calib.samples, S, li.layer) : undefined;
  const at = { layer: li.layer, message: `freqfold ${c.freqfold}, balance ${c.balance}, rope ${c.sel}, metric ${c.metric}` };
  const { f, weights, norm } = await clock.run('candidate', tg.times, at, async () => {
    const factorization = factorizeLayer(
      spec,
      li.gqa,
      li.moments,
      {
        qkRopeDim: opt.qkRopeDim,
        kvLoraRank: opt.kvLoraRank,
        freqfold: c.freqfold,
        balanceKv: c.balance,
        ropeSelection: c.sel,
        kvMetric: c.metric,
        nopeCos: opt.nopeShrink && li.profile ? li.profile.cos : undefined,
        nopeSin: opt.nopeShrink && opt.nopeRotation && li.profile ? li.profile.sin : undefined,
        attention: am,
        ropeDrift: tg.ropeDrift && opt.nopeShrink && li.profile ? expectedDriftRotation(li.profile.mass, tg.ropeDrift) : undefined,
      },
      li.lm,
    );
    const m = await mlaLayerWeights({ spec, w: li.w, f: factorization, opt, dtype: tg.exportSettings.dtype, x: li.x, statRows, backend });
    return { f: factorization, ...m };
  });
  const err = await clock.run('evaluateCandidate', tg.times, at, () => heldOutError(ctx, li, mlaSpec, weights, on));
  return { f, mw: weights, err, balance: c.balance, norm, sel: c.sel, metric: c.metric };
}

/** The first of the lowest-error entries. */
function lowest(xs: Tried[]): Tried {
  return xs.reduce((a, b) => (b.r.err < a.r.err ? b : a));
}

/**
 * Searches target `tg`'s candidates for layer `li`: every freqfold when only the freqfold
 * varies; otherwise greedily, the structure (RoPE selection, metric, freqfold) at balance 1
 * with freqfolds in increasing order until the error rises (more folding only loses RoPE
 * precision), then the balance, walked from 1 over the sorted candidates while the error falls.
 * With context windows longer than the short held-out ones, the candidates are ranked on the
 * short windows first and the best of each freqfold is re-judged at the serving context
 * (the freqfold is what long distances decide); the balance walk then starts from the winner.
 */
export async function searchCandidates(ctx: RunContext, li: LayerInputs, tg: Target): Promise<SearchResult> {
  const { opt } = tg;
  const on = li.judge === li.short ? 'judge' : 'short';
  const tried: Tried[] = [];
  const candidates: LayerReport['candidates'] = [];
  const attempt = async (c: Candidate): Promise<number> => {
    const r = await tryCandidate(ctx, li, tg, c, on);
    tried.push({ c, r, row: candidates.length });
    candidates.push({ freqfold: c.freqfold, balanceKv: c.balance, ropeSelection: c.sel, kvMetric: c.metric, attnRelError: r.err });
    return r.err;
  };
  const sels = opt.ropeSelection === 'auto' ? (['qk', 'key'] as const) : [opt.ropeSelection];
  const metrics: KvMetric[] = opt.kvMetric === 'auto' ? ['attention', 'objective', 'plain'] : [opt.kvMetric];
  const single = sels.length * metrics.length * opt.balanceCandidates.length === 1;
  const b0 = opt.balanceCandidates.includes(1) ? 1 : opt.balanceCandidates[0];
  if (single) for (const ff of opt.freqfoldCandidates) await attempt({ freqfold: ff, balance: opt.balanceCandidates[0], sel: sels[0], metric: metrics[0] });
  else
    for (const sel of sels)
      for (const metric of metrics) {
        let prev = Infinity;
        for (const ff of opt.freqfoldCandidates) {
          const e = await attempt({ freqfold: ff, balance: b0, sel, metric });
          if (e > prev) break;
          prev = e;
        }
      }
  if (on === 'judge') {
    if (!single) await walkBalance(lowest(tried).r, b0, opt.balanceCandidates, attempt);
    return { chosen: lowest(tried).r, candidates };
  }
  const pick = await rejudge(ctx, li, tg, tried, candidates, [...new Set(tried.map((t) => t.c.freqfold))]);
  if (single) return { chosen: pick.chosen, candidates };
  const before = tried.length;
  await walkBalance(pick.short, b0, opt.balanceCandidates, attempt);
  const walked = tried.slice(before).filter((t) => t.r.err < pick.short.err);
  if (walked.length === 0) return { chosen: pick.chosen, candidates };
  const w = lowest(walked);
  const alt = await rejudge(ctx, li, tg, [w], candidates, [w.c.freqfold]);
  return { chosen: alt.chosen.err < pick.chosen.err ? alt.chosen : pick.chosen, candidates };
}

/**
 * Re-judges at the serving context the best short-window candidate of each freqfold in
 * `freqfolds` (in that order); returns the one with the lowest error there (as chosen, its
 * error the context error) and its short-window self.
 */
async function rejudge(ctx: RunContext, li: LayerInputs, tg: Target, tried: Tried[], candidates: LayerReport['candidates'], freqfolds: number[]) {
  let best: { chosen: Chosen; short: Chosen } | null = null;
  for (const ff of freqfolds) {
    const t = lowest(tried.filter((x) => x.c.freqfold === ff));
    const at = { layer: li.layer, message: `freqfold ${ff} at the serving context` };
    const err = await ctx.clock.run('evaluateCandidate', tg.times, at, () => heldOutError(ctx, li, tg.mlaSpec, t.r.mw, 'judge'));
    candidates[t.row].contextRelError = err;
    if (!best || err < best.chosen.err) best = { chosen: { ...t.r, err }, short: t.r };
  }
  return best!;
}
/** Walks the sorted balances from `b0` (one direction, then the other unless the first helped) while the error falls. */
async function walkBalance(s0: Chosen, b0: number, balances: number[], attempt: (c: Candidate) => Promise<number>): Promise<void> {
  const bs = [...balances].sort((a, b) => a - b);
  const i0 = bs.indexOf(b0);
  for (const dir of [-1, 1]) {
    let last = s0.err;
    let moved = false;
    for (let i = i0 + dir; i >= 0 && i < bs.length; i += dir) {
      const e = await attempt({ freqfold: s0.f.freqfold, balance: bs[i], sel: s0.sel, metric: s0.metric });
      if (e >= last) break;
      last = e;
      moved = true;
    }
    if (moved) break;
  }
}
