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

// Same width, 8 vs 32 layers: the conversion streams layers (one layer's weights, the
// calibration hidden states and one layer's statistics in memory), so its peak RSS must not
// grow with depth. Bound on the growth: half the bytes of the 24 extra layers in float32
// (3.15 MB each: 37.8 MB), so keeping their float32 weights resident (75.5 MB) fails; their
// stored bf16 bytes would sit at the bound. The children collect garbage at each progress
// event and run with a fixed malloc mmap threshold (test/helpers/rss-gc.ts, rss-env.ts). Measured growth
// in 10 consecutive runs under load (another conversion looping, load average 13-29):
// +0.1 to +18.1 MiB (the 8-layer peak is bimodal, 133-137 or 146-151 MiB), hence not the
// stored-bytes bound (18.9 MB = 18.0 MiB), which one of the 10 runs would have failed.
test('peak RSS of convert: 32 layers minus 8 layers < half the 24 extra layers\' float32 bytes', async () => {
  const tmp = mkdtempSync(join(tmpdir(), 'g2m-cmem-'));
  try {
    const shape = { hidden: 256, heads: 4, kvHeads: 2, headDim: 64, intermediate: 768, vocab: 4096, tokenizerFrom: join(fixtures, 'tiny-llama-gqa') };
    const layerParams = 256 * (256 + 128 + 128 + 256) + 3 * 256 * 768 + 2 * 256;
    const bound = 0.5 * 24 * 4 * layerParams;
    const rss: number[] = [];
    for (const layers of [8, 32]) {
      const dir = join(tmp, `m${layers}`);
      await run(tsx, [join(root, 'test', 'helpers', 'write-synthetic-model.ts'), dir, JSON.stringify({ ...shape, layers, seed: layers })], { cwd: root });
      const { stdout } = await run(
        tsx,
        [join(root, 'test', 'helpers', 'rss-convert.ts'), dir, join(tmp, `o${layers}`), join(fixtures, 'pydocs-eval.txt')],
        { cwd: root, env: rssChildEnv() },
      );
      const r = JSON.parse(stdout.trim().split('\n').pop()!) as { layers: number; maxRssKiB: number };
      expect(r.layers).toBe(layers);
      rss.push(r.maxRssKiB * 1024);
      rmSync(join(tmp, `o${layers}`), { recursive: true, force: true });
    }
    const [shallow, deep] = rss;
    const mib = (b: number) => (b / 2 ** 20).toFixed(1);
    console.log(`convert peak RSS: 8 layers ${mib(shallow)} MiB, 32 layers ${mib(deep)} MiB, growth ${mib(deep - shallow)} MiB (bound ${mib(bound)} MiB)`);
    expect(deep - shallow).toBeLessThan(bound);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}, 900_000);
