/**
 * Does the conversion's criterion rank candidates the way perplexity does (issue 14,
 * deliverable 3)? For every zoo model at the half budget, `--method transmla --freqfold N`
 * for each allowed N is converted twice: judged on the short held-out windows (`--context`
 * = calib-seqlen, the criterion before issue 14) and on the default context windows
 * (min(max_position_embeddings, 4096), position-weighted). The criterion of a conversion is
 * its mean held-out attention error over the layers (conversion-report.json
 * meanAttnRelError). TransMLA's settings make no per-layer choice, so each conversion is the
 * same checkpoint under both criteria (checked: equal shard hashes) and its perplexity is
 * the one the grid measured (bench/results/fidelity-zoo-cpu.json rows transmla-ffN, written
 * with `--target transformers` as here).
 * Agreement: Kendall's tau between the criterion's ranking and the ppl ranking at 512 and
 * at 2048 tokens, and whether the criterion's best is the ppl's best.
 *
 *   npx tsx bench/fidelity/criterion.ts [--model a,b] [--out bench/results/fidelity-criterion-cpu.json]
 */
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convert } from '../../src/convert/convert.js';
import { freqfoldCandidates } from '../../src/convert/rorope.js';
import { budgetsOf, findModels } from './models.js';
import { kendallTau } from './rank.js';

const root = join(import.meta.dirname, '..', '..');
const gridFile = join(root, 'bench', 'results', 'fidelity-zoo-cpu.json');
const CALIB = join(root, 'test', 'fixtures', 'pydocs-train-3M.txt');

interface Cell {
  freqfold: number;
  shortCriterion: number;
  contextCriterion: number;
  context: number;
  ppl: Record<string, number>;
}


function shardHash(dir: string): string {
  const h = createHash('sha256');
  for (const f of readdirSync(dir).sort()) if (f.endsWith('.safetensors')) h.update(readFileSync(join(dir, f)));
  return h.digest('hex');
}

async function criterionOf(modelDir: string, tmp: string, o: { qkRopeDim: number; kvLoraRank: number; freqfold: number; context?: number }) {
  const outDir = join(tmp, `ff${o.freqfold}-${o.context ?? 'default'}`);
  const r = await convert({ modelDir, outDir, calibFile: CALIB, calibSamples: 128, calibSeqlen: 256, seed: 42, method: 'transmla', target: 'transformers', device: 'cpu', ...o });
  const hash = shardHash(outDir);
  rmSync(outDir, { recursive: true, force: true });
  return { err: r.meanAttnRelError, context: r.settings.context?.tokens ?? r.settings.calibSeqlen, hash };
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const arg = (f: string) => (argv.includes(f) ? argv[argv.indexOf(f) + 1] : undefined);
  const only = arg('--model')?.split(',');
  const out = arg('--out') ?? join(root, 'bench', 'results', 'fidelity-criterion-cpu.json');
  const grid = JSON.parse(readFileSync(gridFile, 'utf8')) as { rows: Record<string, { ppl: Record<string, number> }> };
  const models = (await findModels(root, join(root, 'bench', 'zoo', 'models'))).filter((m) => m.kind === 'zoo' && (!only || only.includes(m.name)));
  const tmp = mkdtempSync(join(tmpdir(), 'gqa2mla-criterion-'));
  const result: Record<string, unknown> = {};
  try {
    for (const m of models) {
      const b = budgetsOf(m).find((x) => x.name === 'half')!;
      const cells: Cell[] = [];
      for (const ff of freqfoldCandidates(m.headDim, b.qkRopeDim)) {
        const row = grid.rows[`${m.name}/half/transmla-ff${ff}`];
        if (!row) continue;
        const short = await criterionOf(m.dir, tmp, { qkRopeDim: b.qkRopeDim, kvLoraRank: b.kvLoraRank, freqfold: ff, context: 256 });
        const long = await criterionOf(m.dir, tmp, { qkRopeDim: b.qkRopeDim, kvLoraRank: b.kvLoraRank, freqfold: ff });
        if (short.hash !== long.hash) throw new Error(`${m.name} ff${ff}: transmla output depends on --context`);
        cells.push({ freqfold: ff, shortCriterion: short.err, contextCriterion: long.err, context: long.context, ppl: row.ppl });
        process.stderr.write(`${m.name} ff${ff}: short ${short.err.toFixed(4)}  context(${long.context}) ${long.err.toFixed(4)}  ppl ${JSON.stringify(row.ppl)}\n`);
      }
      result[m.name] = summarise(cells, b);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  writeFileSync(out, `${JSON.stringify({ about: 'bench/fidelity/criterion.ts', calib: { file: 'test/fixtures/pydocs-train-3M.txt', samples: 128, seqlen: 256, seed: 42 }, models: result }, null, 1)}\n`);
  process.stderr.write(`wrote ${out}\n`);
}

function summarise(cells: Cell[], b: { qkRopeDim: number; kvLoraRank: number }) {
  const best = (xs: number[]) => xs.indexOf(Math.min(...xs));
  const agree = (crit: number[]) =>
    Object.fromEntries(
      ['512', '2048'].map((L) => {
        const ppl = cells.map((c) => c.ppl[L]);
        return [L, { kendallTau: kendallTau(crit, ppl), sameBest: best(crit) === best(ppl) }];
      }),
    );
  return {
    budget: `${b.qkRopeDim}+${b.kvLoraRank}`,
    cells,
    short: agree(cells.map((c) => c.shortCriterion)),
    context: agree(cells.map((c) => c.contextCriterion)),
  };
}

await main();
