/**
 * The models of the fidelity grid and their budgets: both bundled fixtures, then every zoo
 * model found under bench/zoo/models/<name>/ (a directory with config.json), and for each
 * the two budgets of the issue: about 1/2 and 1/4 of the original KV values per token.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { splitKvBudget, type KvSplit } from '../../src/convert/budget-split.js';
import { loadModelSpec } from '../../src/model/spec.js';

/** A model of the grid. */
export interface GridModel {
  name: string;
  dir: string;
  kind: 'fixture' | 'zoo';
  headDim: number;
  numKvHeads: number;
  numLayers: number;
  maxPositionEmbeddings: number;
  /** values cached per token and layer by the source: 2 x kv_heads x head_dim */
  kvPerLayer: number;
  /** training context from train-log.json (args.seq or train.seq), null when unknown */
  trainSeq: number | null;
  /** transformers float32 ppl by length, from reference.json when it has them */
  reference: Record<string, number>;
}

/** One budget of a model. */
export interface Budget {
  name: 'half' | 'quarter';
  qkRopeDim: number;
  kvLoraRank: number;
  /** (kvLoraRank + qkRopeDim) / kvPerLayer */
  fraction: number;
  /**
   * the tool's own split of the same total (`--kv-budget`, src/convert/budget-split.ts): the
   * default rows convert at it; qkRopeDim / kvLoraRank above are TransMLA's split (RoPE dims at
   * most half the total), at which the TransMLA and component rows convert
   */
  split: KvSplit;
}

/** Fixture names bundled in test/fixtures. */
export const FIXTURES = ['tiny-llama-gqa', 'tiny-qwen2-gqa'];

/**
 * Reference ppl by length from reference.json: the fixtures' `{ seq, ppl }` and the zoo's
 * `contexts: [{ seq, ppl, ... }]` (absent file: {}).
 */
function readReference(dir: string): Record<string, number> {
  const file = join(dir, 'reference.json');
  if (!existsSync(file)) return {};
  const ref = JSON.parse(readFileSync(file, 'utf8')) as { seq?: unknown; ppl?: unknown; contexts?: Array<{ seq?: unknown; ppl?: unknown }> };
  const out: Record<string, number> = {};
  if (typeof ref.ppl === 'number' && typeof ref.seq === 'number') out[String(ref.seq)] = ref.ppl;
  for (const c of Array.isArray(ref.contexts) ? ref.contexts : []) if (typeof c.seq === 'number' && typeof c.ppl === 'number') out[String(c.seq)] = c.ppl;
  return out;
}

/** The training context recorded in train-log.json (fixtures: args.seq; zoo: train.seq). */
function readTrainSeq(dir: string): number | null {
  const file = join(dir, 'train-log.json');
  if (!existsSync(file)) return null;
  const log = JSON.parse(readFileSync(file, 'utf8')) as { args?: { seq?: unknown }; train?: { seq?: unknown } };
  const v = log.train?.seq ?? log.args?.seq;
  return typeof v === 'number' ? v : null;
}

async function describe(name: string, dir: string, kind: GridModel['kind']): Promise<GridModel> {
  const spec = await loadModelSpec(dir);
  return {
    name,
    dir,
    kind,
    headDim: spec.headDim,
    numKvHeads: spec.numKvHeads,
    numLayers: spec.numLayers,
    maxPositionEmbeddings: spec.maxPositionEmbeddings,
    kvPerLayer: 2 * spec.numKvHeads * spec.headDim,
    trainSeq: readTrainSeq(dir),
    reference: readReference(dir),
  };
}

/** The fixtures, then the zoo models under `zooDir` (sorted by name; none when it does not exist). */
export async function findModels(root: string, zooDir: string): Promise<GridModel[]> {
  const out: GridModel[] = [];
  // a fixture left out of the working tree (e.g. a device copy that carries only the zoo) is skipped
  for (const f of FIXTURES) if (existsSync(join(root, 'test', 'fixtures', f, 'config.json'))) out.push(await describe(f, join(root, 'test', 'fixtures', f), 'fixture'));
  if (existsSync(zooDir)) {
    const names = readdirSync(zooDir, { withFileTypes: true })
      .filter((d) => d.isDirectory() && existsSync(join(zooDir, d.name, 'config.json')))
      .map((d) => d.name)
      .sort();
    for (const n of names) out.push(await describe(n, join(zooDir, n), 'zoo'));
  }
  return out;
}

/**
 * The RoPE dims for a target of `target` values per token and layer: the largest even
 * divisor of head_dim that is at most head_dim / 2 and at most half the target (64 for
 * head_dim 128 at 1/2 of a 2-KV-head model, 32 for head_dim 64), as TransMLA's budgets do.
 */
export function ropeDimFor(headDim: number, target: number): number {
  for (let d = Math.floor(headDim / 2); d >= 2; d--) if (d % 2 === 0 && headDim % d === 0 && d <= target / 2) return d;
  return 2;
}

/** The 1/2 and 1/4 budgets of a model (kv_lora_rank = target - qk_rope_dim, at least 1). */
export function budgetsOf(m: Pick<GridModel, 'headDim' | 'kvPerLayer'>): Budget[] {
  const numKvHeads = m.kvPerLayer / (2 * m.headDim);
  return (
    [
      ['half', 2],
      ['quarter', 4],
    ] as const
  ).map(([name, div]) => {
    const target = Math.round(m.kvPerLayer / div);
    const qkRopeDim = ropeDimFor(m.headDim, target);
    const kvLoraRank = Math.max(1, target - qkRopeDim);
    const split = splitKvBudget({ headDim: m.headDim, numKvHeads, budget: kvLoraRank + qkRopeDim });
    return { name, qkRopeDim, kvLoraRank, fraction: (kvLoraRank + qkRopeDim) / m.kvPerLayer, split };
  });
}
