import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const root = new URL('..', import.meta.url).pathname;
const fixtures = join(root, 'test', 'fixtures');
const tsx = join(root, 'node_modules', '.bin', 'tsx');

// Same width, 4 vs 16 layers: eval-ppl streams the layers, so its peak RSS must not grow
// with depth. Each layer is ~6.9 MB in float32; keeping the 12 extra layers resident
// would add ~83 MB, far beyond the 15% margin.
test('peak RSS of eval-ppl differs by < 15% between 4-layer and 16-layer models of the same width', async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'g2m-mem-'));
  try {
    const shape = { hidden: 384, heads: 6, kvHeads: 2, headDim: 64, intermediate: 1152, vocab: 4096, tokenizerFrom: join(fixtures, 'tiny-llama-gqa') };
    const layerF32Bytes = 4 * (384 * (384 + 128 + 128 + 384) + 3 * 384 * 1152 + 2 * 384);
    const rss: number[] = [];
    for (const layers of [4, 16]) {
      const dir = join(tmp, `m${layers}`);
      await run(tsx, [join(root, 'test', 'helpers', 'write-synthetic-model.ts'), dir, JSON.stringify({ ...shape, layers, seed: layers })], { cwd: root });
      const { stdout } = await run(
        tsx,
        [join(root, 'test', 'helpers', 'rss-eval-ppl.ts'), dir, join(fixtures, 'pydocs-eval.txt'), '128', '4'],
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
}, 300_000);
