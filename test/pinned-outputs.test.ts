/**
 * Acceptance pin of issue 19: the fixture conversions (both fixtures with the default and
 * the 'transmla' method, a two-budget sweep, an interrupted and resumed run) produce the
 * same bytes as the code before the pipeline refactor. The hashes in pinned-outputs.json
 * were measured by test/helpers/pin-outputs.ts on that code.
 */
import { readFileSync } from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PIN_CASES, PIN_FILE, type PinnedHashes } from './helpers/pin-outputs.js';

const pinned = JSON.parse(readFileSync(PIN_FILE, 'utf8')) as PinnedHashes;
let tmp: string;

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'gqa2mla-pin-test-'));
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

test('every pinned case is in pinned-outputs.json', () => {
  expect(Object.keys(pinned).sort()).toEqual(PIN_CASES.map((c) => c.name).sort());
});

test.each(PIN_CASES.map((c) => [c.name, c] as const))('%s: output bytes equal the pinned hashes', async (name, c) => {
  const hashes = await c.run(join(tmp, name));
  expect(Object.keys(hashes).length).toBeGreaterThan(5);
  expect(hashes).toEqual(pinned[name]);
}, 1_200_000); // a case takes 30-200 s on the idle 2-core machine, several minutes under load
