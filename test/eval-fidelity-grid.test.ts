/** bench/fidelity: the grid's budgets, rows and summary (the conversions themselves run in bench/fidelity/run.ts). */
import { join } from 'node:path';
import { budgetsOf, findModels, ropeDimFor } from '../bench/fidelity/models.js';
import { baseFreqfold, rowsFor, transmlaFreqfolds } from '../bench/fidelity/rows.js';
import { loadGrid, markdown, saveGrid } from '../bench/fidelity/summary.js';
import type { GridRow, GridSettings } from '../bench/fidelity/task.js';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';

const root = join(import.meta.dirname, '..');

test("budgets: about 1/2 and 1/4 of the source's KV values, RoPE dims as in the issue's and the README's tables", async () => {
  const models = await findModels(root, join(root, 'no-such-zoo'));
  expect(models.map((m) => m.name)).toEqual(['tiny-llama-gqa', 'tiny-qwen2-gqa']);
  const b = (name: string) => budgetsOf(models.find((m) => m.name === name)!).map((x) => `${x.qkRopeDim}+${x.kvLoraRank}`);
  expect(b('tiny-llama-gqa')).toEqual(['32+96', '32+32']); // README fixture budgets
  expect(b('tiny-qwen2-gqa')).toEqual(['64+64', '32+32']);
  // the table: Llama-3.1-style (head_dim 128, 2 KV heads) and MHA 6 x 64
  expect(budgetsOf({ headDim: 128, kvPerLayer: 2 * 2 * 128 }).map((x) => `${x.qkRopeDim}+${x.kvLoraRank}`)).toEqual(['64+192', '64+64']);
  expect(budgetsOf({ headDim: 64, kvPerLayer: 2 * 6 * 64 }).map((x) => `${x.qkRopeDim}+${x.kvLoraRank}`)).toEqual(['32+352', '32+160']);
  expect(ropeDimFor(64, 32)).toBe(16);
  expect(models[0].reference['512']).toBeCloseTo(15.925, 2); // the fixture's transformers reference
  expect(models.map((m) => m.trainSeq)).toEqual([512, 512]); // train-log.json
});

test('rows: transmla at each allowed fixed freqfold up to 8, components on TransMLA settings, the default', () => {
  expect(transmlaFreqfolds(64, 32)).toEqual([2, 4, 8]);
  expect(transmlaFreqfolds(128, 32)).toEqual([4, 8]);
  expect(baseFreqfold(128, 32)).toBe(4);
  const rows = rowsFor(64, 32);
  expect(rows[0]).toMatchObject({ id: 'original', opts: null });
  expect(rows.filter((r) => r.group === 'transmla').map((r) => r.id)).toEqual(['transmla-ff2', 'transmla-ff4', 'transmla-ff8']);
  for (const r of rows.filter((r) => r.group === 'component')) expect(r.opts).toMatchObject({ method: 'transmla' });
  expect(rows.find((r) => r.id === 'default')).toMatchObject({ opts: {}, toolSplit: true });
  expect(new Set(rows.map((r) => r.id)).size).toBe(rows.length);
  // where the tool's split (--kv-budget) differs: TransMLA also at it, and the default at TransMLA's split
  const other = rowsFor(64, 32, 64);
  expect(other.filter((r) => r.toolSplit).map((r) => r.id)).toEqual(['transmla-split-ff1', 'transmla-split-ff2', 'transmla-split-ff4', 'transmla-split-ff8', 'default']);
  expect(other.find((r) => r.id === 'default-transmla-split')).toMatchObject({ opts: {}, group: 'default' });
  expect(budgetsOf({ headDim: 64, kvPerLayer: 2 * 6 * 64 }).map((b) => `${b.split.qkRopeDim}+${b.split.kvLoraRank}`)).toEqual(['64+320', '64+128']);
});

test('summary: best fixed-freqfold TransMLA per length, gaps as its fraction, the acceptance checks; settings must match', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gqa2mla-grid-'));
  try {
    const s: GridSettings = { calibFile: 'c', calibSamples: 1, calibSeqlen: 2, seed: 3, evalFile: 'e', seqs: [512, 2048], windows: 4, device: 'cpu' };
    const file = join(dir, 'g.json');
    const g = loadGrid(file, s);
    g.models.m = { name: 'm', kind: 'fixture', headDim: 64, numKvHeads: 2, numLayers: 4, maxPositionEmbeddings: 2048, trainSeq: 2048, kvPerLayer: 256, reference: {}, budgets: budgetsOf({ headDim: 64, kvPerLayer: 256 }) };
    const row = (key: string, rowId: string, group: GridRow['group'], ppl: [number, number], ff?: number): GridRow =>
      ({ key, model: 'm', budget: rowId === 'original' ? null : 'half', row: rowId, group, opts: ff ? { method: 'transmla', freqfold: ff } : {}, ppl: { 512: ppl[0], 2048: ppl[1] } }) as unknown as GridRow;
    g.rows['m/original'] = row('m/original', 'original', 'original', [16, 14]);
    g.rows['m/half/transmla-ff2'] = row('m/half/transmla-ff2', 'transmla-ff2', 'transmla', [28, 40], 2);
    g.rows['m/half/transmla-ff4'] = row('m/half/transmla-ff4', 'transmla-ff4', 'transmla', [30, 34], 4);
    g.rows['m/half/default'] = row('m/half/default', 'default', 'default', [21, 24]);
    saveGrid(file, g);
    const back = JSON.parse(readFileSync(file, 'utf8')) as typeof g;
    const c512 = back.summary.find((c) => c.budget === 'half' && c.seq === 512)!;
    const c2048 = back.summary.find((c) => c.budget === 'half' && c.seq === 2048)!;
    expect(c512.transmlaBest).toEqual({ freqfold: 2, ppl: 28, row: 'transmla-ff2' });
    expect(c2048.transmlaBest).toEqual({ freqfold: 4, ppl: 34, row: 'transmla-ff4' });
    expect(c512.rows.default.gapRatio).toBeCloseTo((21 - 16) / (28 - 16), 12);
    expect(c2048.rows.default.gapRatio).toBeCloseTo((24 - 14) / (34 - 14), 12);
    expect(c512.defaultMeetsHalfGap).toBe(true);
    expect(c2048.defaultMeetsHalfGap).toBe(true);
    expect(c512.defaultWithin1_6x).toBeNull();
    expect(c2048.defaultWithin1_6x).toBe(24 <= 1.6 * 14);
    expect(back.summary.find((c) => c.budget === 'quarter')!.transmlaBest).toBeNull();
    const md = markdown(back, () => rowsFor(64, 32));
    expect(md).toContain('| best fixed-freqfold TransMLA | 28.00 (ff 2) | 34.00 (ff 4) |');
    expect(md).toContain('| **gqa2mla default** | 21.00 (0.42) | 24.00 (0.50) |');
    expect(() => loadGrid(file, { ...s, windows: 40 })).toThrow(/other settings/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
