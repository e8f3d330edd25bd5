/**
 * Stage 4, candidate search: factorize the layer for each candidate (freqfold, K/V balance,
 * RoPE selection, K/V metric), evaluate each on the held-out windows, keep the best.
 *
 * Invariant: every candidate is evaluated as it would be written (rounded to the stored
 * dtype, exact latent norm applied), and the one kept has the lowest held-out error of
 * those tried (the first of equals); the search order is fixed, so the choice is
 * deterministic.
 */
import type { LayerReport } from '../../report-types.js';
import { cachedAttentionMoments } from '../attention-stats.js';
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

/** Factorizes and evaluates one candidate of target `tg`'s layer. */
async function tryCandidate(ctx: RunContext, li: LayerInputs, tg: Target, c: Candidate): Promise<Chosen> {
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
      },
      li.lm,
    );
    const m = await mlaLayerWeights({ spec, w: li.w, f: factorization, opt, dtype: tg.exportSettings.dtype, x: li.x, statRows, backend });
    return { f: factorization, ...m };
  });
  const err = await clock.run('evaluateCandidate', tg.times, at, () => heldOutError(ctx, li, mlaSpec, weights));
  return { f, mw: weights, err, balance: c.balance, norm, sel: c.sel, metric: c.metric };
}

/**
 * Searches target `tg`'s candidates for layer `li`: every freqfold when only the freqfold
 * varies; otherwise greedily, the structure (RoPE selection, metric, freqfold) at balance 1
 * with freqfolds in increasing order until the error rises (more folding only loses RoPE
 * precision), then the balance, walked from 1 over the sorted candidates while the error falls.
 */
export async function searchCandidates(ctx: RunContext, li: LayerInputs, tg: Target): Promise<SearchResult> {
  const { opt } = tg;
  let best: Chosen | null = null;
  const candidates: LayerReport['candidates'] = [];
  const attempt = async (c: Candidate): Promise<number> => {
    const r = await tryCandidate(ctx, li, tg, c);
    candidates.push({ freqfold: c.freqfold, balanceKv: c.balance, ropeSelection: c.sel, kvMetric: c.metric, attnRelError: r.err });
    if (!best || r.err < best.err) best = r;
    return r.err;
  };
  const sels = opt.ropeSelection === 'auto' ? (['qk', 'key'] as const) : [opt.ropeSelection];
  const metrics: KvMetric[] = opt.kvMetric === 'auto' ? ['attention', 'objective', 'plain'] : [opt.kvMetric];
  if (sels.length * metrics.length * opt.balanceCandidates.length === 1) {
    for (const ff of opt.freqfoldCandidates) await attempt({ freqfold: ff, balance: opt.balanceCandidates[0], sel: sels[0], metric: metrics[0] });
    return { chosen: best!, candidates };
  }
  const b0 = opt.balanceCandidates.includes(1) ? 1 : opt.balanceCandidates[0];
  for (const sel of sels)
    for (const metric of metrics) {
      let prev = Infinity;
      for (const ff of opt.freqfoldCandidates) {
        const e = await attempt({ freqfold: ff, balance: b0, sel, metric });
        if (e > prev) break;
        prev = e;
      }
    }
  await walkBalance(best!, b0, opt.balanceCandidates, attempt);
  return { chosen: best!, candidates };
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
