import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { writeSyntheticModel } from './helpers/synthetic-model.js';

const run = promisify(execFile);
const root = new URL('..', import.meta.url).pathname;
const fixtures = join(root, 'test', 'fixtures');

// Same width, 8 vs 32 layers: the conversion streams layers (one layer's weights, the
// calibration hidden states and one layer's statistics in memory), so its peak RSS must
// not grow with depth. 24 extra resident float32 layers would add ~75 MB.
test('peak RSS of convert differs by < 15% between 8-layer and 32-layer models of the same width', async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'g2m-cmem-'));
  try {
    const shape = { hidden: 256, heads: 4, kvHeads: 2, headDim: 64, intermediate: 768, vocab: 4096, tokenizerFrom: join(fixtures, 'tiny-llama-gqa') };
    const layerF32Bytes = 4 * (256 * (256 + 128 + 128 + 256) + 3 * 256 * 768 + 2 * 256);
    const rss: number[] = [];
    for (const layers of [8, 32]) {
      const dir = join(tmp, `m${layers}`);
      await writeSyntheticModel(dir, { ...shape, layers, seed: layers });
      // the peak of two runs: one run's peak can fall short of it by ~10% (GC timing)
      let peak = 0;
      for (let rep = 0; rep < 2; rep++) {
        const { stdout } = await run(
          join(root, 'node_modules', '.bin', 'tsx'),
          [join(root, 'test', 'helpers', 'rss-convert.ts'), dir, join(tmp, `o${layers}-${rep}`), join(fixtures, 'pydocs-eval.txt')],
          { cwd: root, env: { ...process.env, GQA2MLA_THREADS: '2' } },
        );
        const r = JSON.parse(stdout.trim().split('\n').pop()!) as { layers: number; maxRssKiB: number };
        expect(r.layers).toBe(layers);
        peak = Math.max(peak, r.maxRssKiB * 1024);
      }
      rss.push(peak);
    }
    const [shallow, deep] = rss;
    console.log(`convert peak RSS: 8 layers ${(shallow / 2 ** 20).toFixed(1)} MiB, 32 layers ${(deep / 2 ** 20).toFixed(1)} MiB`);
    expect((24 * layerF32Bytes) / shallow).toBeGreaterThan(0.3);
    expect(Math.abs(deep - shallow) / shallow).toBeLessThan(0.15);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}, 300000);
