/**
 * Test order: the slowest files first, so that the two workers of `npm test` finish together
 * (a long file started last would run on alone). Jest's own order uses the durations of an
 * earlier run when its cache has them, else file size; a clean CI machine has no cache, and
 * file size does not track duration here (test/fidelity-fixtures.test.ts is short and the
 * slowest). SLOWEST: the slowest files by their per-file times in `npm test` on the 2-core
 * CI-sized machine (clean clone; CPU times of the files given short contexts), slowest first;
 * files not listed follow in Jest's order.
 */
import Sequencer from '@jest/test-sequencer';

const SLOWEST = [
  'fidelity-fixtures',
  'pinned-outputs',
  'convert-context',
  'convert-sweep',
  'convert-fixtures',
  'engine-mla-decode',
  'linalg',
  'portable-export',
  'convert-memory',
  'eval-contexts',
  'eval-ppl',
  'pack-install',
  'zoo-reference',
  'check',
  'decode-mla-cpu',
  'eval-convert',
  'generate',
  'cli-convert-extras',
].map((n) => `/test/${n}.test.ts`);

const rank = (path) => {
  const i = SLOWEST.findIndex((s) => path.endsWith(s));
  return i < 0 ? SLOWEST.length : i;
};

export default class SlowestFirst extends Sequencer {
  sort(tests) {
    const listed = tests.filter((t) => rank(t.path) < SLOWEST.length).sort((a, b) => rank(a.path) - rank(b.path));
    const rest = super.sort(tests.filter((t) => rank(t.path) === SLOWEST.length));
    return [...listed, ...rest];
  }
}
