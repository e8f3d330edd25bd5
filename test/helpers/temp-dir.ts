/**
 * A temporary directory for the tests of one file or describe block: created before them,
 * removed after them. `const dir = useTempDir('prefix-')` then `dir()` inside a test.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Registers beforeAll/afterAll for a fresh directory under the OS temp folder; returns its getter. */
export function useTempDir(prefix: string): () => string {
  let dir = '';
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), prefix));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  return () => dir;
}
