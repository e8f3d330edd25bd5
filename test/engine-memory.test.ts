import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { rssChildEnv } from './helpers/rss-env.js';

const run = promisify(execFile);
const root = new URL('..', import.meta.url).pathname;
const fixtures = join(root, 'test', 'fixtures');
const tsx = join(root, 'node_modules', '.bin', 'tsx');

// Same width, 4 vs 16 layers: eval-ppl streams the layers, so its peak RSS must not grow
// with depth. Bound on the growth: half the bytes of the 12 extra layers in float32 (6.88 MB
// each: 41.3 MB), so keeping their float32 weights resident (82.6 MB) fails; their stored
// bf16 bytes would sit at the bound. The child collects garbage at each progress event and
// runs with a fixed malloc mmap threshold (test/helpers/rss-gc.ts, rss-env.ts). Measured growth in 10
// consecutive runs under load (another conversion looping): -9.4 to +7.3 MiB.
test('peak RSS of eval-ppl: 16 layers minus 4 layers < half the 12 extra layers\' float32 bytes', async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'g2m-mem-'));
  try {
    const shape = { hidden: 384, heads: 6, kvHeads: 2, headDim: 64, intermediate: 1152, vocab: 4096, tokenizerFrom: join(fixtures, 'tiny-llama-gqa') };
    const layerParams = 384 * (384 + 128 + 128 + 384) + 3 * 384 * 1152 + 2 * 384;
    const bound = 0.5 * 12 * 4 * layerParams;
    const rss: number[] = [];
    for (const layers of [4, 16]) {
      const dir = join(tmp, `m${layers}`);
      await run(tsx, [join(root, 'test', 'helpers', 'write-synthetic-model.ts'), dir, JSON.stringify({ ...shape, layers, seed: layers })], { cwd: root });
      const { stdout } = await run(tsx, [join(root, 'test', 'helpers', 'rss-eval-ppl.ts'), dir, join(fixtures, 'pydocs-eval.txt'), '128', '4'], {
        cwd: root,
        env: rssChildEnv(),
      });
      const r = JSON.parse(stdout.trim().split('\n').pop()!) as { ppl: number; windows: number; maxRssKiB: number };
      expect(r.windows).toBe(4);
      expect(Number.isFinite(r.ppl)).toBe(true);
      rss.push(r.maxRssKiB * 1024);
    }
    const [shallow, deep] = rss;
    const mib = (b: number) => (b / 2 ** 20).toFixed(1);
    console.log(`eval-ppl peak RSS: 4 layers ${mib(shallow)} MiB, 16 layers ${mib(deep)} MiB, growth ${mib(deep - shallow)} MiB (bound ${mib(bound)} MiB)`);
    expect(deep - shallow).toBeLessThan(bound);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}, 900_000);
