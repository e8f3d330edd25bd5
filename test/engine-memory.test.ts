import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { writeSyntheticModel } from './helpers/synthetic-model.js';

const run = promisify(execFile);
const root = new URL('..', import.meta.url).pathname;
const fixtures = join(root, 'test', 'fixtures');

// Same width, 4 vs 16 layers: eval-ppl streams the layers, so its peak RSS must not grow
// with depth. Each layer is ~12.6 MB in float32; keeping the 12 extra layers resident
// would add ~150 MB, far beyond the 15% margin.
test('peak RSS of eval-ppl differs by < 15% between 4-layer and 16-layer models of the same width', async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'g2m-mem-'));
  try {
    const shape = { hidden: 512, heads: 8, kvHeads: 2, headDim: 64, intermediate: 1536, vocab: 4096, tokenizerFrom: join(fixtures, 'tiny-llama-gqa') };
    const layerF32Bytes = 4 * (512 * (512 + 128 + 128 + 512) + 3 * 512 * 1536 + 2 * 512);
    const rss: number[] = [];
    for (const layers of [4, 16]) {
      const dir = join(tmp, `m${layers}`);
      await writeSyntheticModel(dir, { ...shape, layers, seed: layers });
      const { stdout } = await run(
        join(root, 'node_modules', '.bin', 'tsx'),
        [join(root, 'test', 'helpers', 'rss-eval-ppl.ts'), dir, join(fixtures, 'pydocs-eval.txt'), '256', '4'],
        { cwd: root, env: { ...process.env, GQA2MLA_THREADS: '2' } },
      );
      const r = JSON.parse(stdout.trim().split('\n').pop()!) as { ppl: number; windows: number; maxRssKiB: number };
      expect(r.windows).toBe(4);
      expect(Number.isFinite(r.ppl)).toBe(true);
      rss.push(r.maxRssKiB * 1024);
    }
    const [shallow, deep] = rss;
    // the test can fail: 12 extra resident layers would be a large fraction of the shallow peak
    expect((12 * layerF32Bytes) / shallow).toBeGreaterThan(0.3);
    expect(Math.abs(deep - shallow) / shallow).toBeLessThan(0.15);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
