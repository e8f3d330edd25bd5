/**
 * The conversion's stage list and the calibrate stage, each on its own (the whole pipeline
 * is pinned byte for byte by pinned-outputs.test.ts).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_CONTEXT_QUERIES, drawHeldOutWindows } from '../src/convert/held-out-context.js';
import { drawCalibration } from '../src/convert/calibration.js';
import type { ConvertProgress } from '../src/convert/options.js';
import { calibrate } from '../src/convert/stages/calibrate.js';
import { STAGES, StageClock, type StageName, zeroTimes } from '../src/convert/stages/stage-list.js';
import { loadTokenizer } from '../src/tokenize.js';

const FIX = join(new URL('.', import.meta.url).pathname, 'fixtures');
const LLAMA = join(FIX, 'tiny-llama-gqa');

test('every progress event but done is announced by exactly the stages that name it', () => {
  const events: Array<ConvertProgress['stage']> = ['tokenize', 'embed', 'statistics', 'factorize', 'evaluate', 'write', 'propagate'];
  const named = new Set(Object.values(STAGES).map((s) => s.event).filter((e) => e !== null));
  expect([...named].sort()).toEqual([...events].sort());
});

test('the clock announces a stage with its event and adds its seconds to its bucket only', async () => {
  const seen: ConvertProgress[] = [];
  const clock = new StageClock(4, (p) => seen.push(p));
  for (const name of Object.keys(STAGES) as StageName[]) {
    const times = zeroTimes();
    const t0 = performance.now();
    const got = await clock.run(name, times, { layer: 2, message: 'm' }, async () => {
      while (performance.now() - t0 < 3); // a measurable wait
      return name;
    });
    expect(got).toBe(name);
    const bucket = STAGES[name].time;
    expect(times[bucket]).toBeGreaterThanOrEqual(0.002);
    for (const [k, v] of Object.entries(times)) if (k !== bucket) expect(v).toBe(0);
    const ev = STAGES[name].event;
    if (ev) expect(seen.pop()).toEqual({ stage: ev, layer: 2, layers: 4, message: 'm' });
    expect(seen).toHaveLength(0);
  }
  clock.done();
  expect(seen).toEqual([{ stage: 'done', layer: 4, layers: 4 }]);
});

test('calibrate: the windows of one encode of the whole text, with consistent row counts', async () => {
  const text = readFileSync(join(FIX, 'pydocs-train-3M.txt'), 'utf8').slice(0, 200_000);
  const opt = { calibSamples: 12, heldOutSamples: 3, calibSeqlen: 64, seed: 7, context: 64, contextWindows: null, contextQueries: DEFAULT_CONTEXT_QUERIES };
  const w = await calibrate({ modelDir: LLAMA, calibText: text, maxPositionEmbeddings: 2048, opt });
  const ids = (await loadTokenizer(LLAMA)).encode(text);
  const ref = drawCalibration(ids, 12, 3, 64, 7);
  expect(w.tokens).toBe(ids.length);
  expect(w.calib.offsets).toEqual(ref.offsets);
  expect(Buffer.compare(Buffer.from(w.calib.ids.buffer), Buffer.from(ref.ids.buffer))).toBe(0);
  expect({ statRows: w.statRows, allRows: w.allRows, count: w.count, seqlen: w.seqlen }).toEqual({ statRows: 12 * 64, allRows: 15 * 64, count: 15, seqlen: 64 });
  expect(w.long).toBeNull(); // context = calibSeqlen: judged on the short held-out windows
  await expect(calibrate({ modelDir: LLAMA, maxPositionEmbeddings: 2048, opt })).rejects.toThrow(/calibration text is required/);
  // the default context: min(max_position_embeddings, 4096, 2 x held-out tokens); windows drawn from the same text, same draw as drawHeldOutWindows
  const d = await calibrate({ modelDir: LLAMA, calibText: text, maxPositionEmbeddings: 1024, opt: { ...opt, heldOutSamples: 12, context: null } });
  const ref2 = drawHeldOutWindows(ids, 2, 1024, 7); // max(2, round(12 x 64 / 1024))
  expect(d.long).toMatchObject({ seqlen: 1024, count: 2, rows: 2 * 1024, from: 'max_position_embeddings', offsets: ref2.offsets });
  const small = await calibrate({ modelDir: LLAMA, calibText: text, maxPositionEmbeddings: 1024, opt: { ...opt, context: null } });
  expect(small.long).toMatchObject({ seqlen: 384, count: 2, from: 'held-out budget' }); // 2 x 3 x 64
  expect(Buffer.compare(Buffer.from(d.long!.ids.buffer), Buffer.from(ref2.ids.buffer))).toBe(0);
  expect(d.calib.offsets.slice(0, 15)).toEqual(ref.offsets); // the statistics draw is unchanged
  const given = await calibrate({ modelDir: LLAMA, calibText: text, maxPositionEmbeddings: 1024, opt: { ...opt, context: 300, contextWindows: 5 } });
  expect(given.long).toMatchObject({ seqlen: 300, count: 5, from: 'option' });
});
