/** Runs the real CLI entry point in-process with stdout/stderr captured. */
import { jest } from '@jest/globals';
import { main } from '../../src/cli/main.js';

/** Exit status and captured output of one CLI run. */
export interface CliRun {
  code: number;
  out: string;
  err: string;
}

/** `gqa2mla <args...>` in-process. */
export async function runCli(...args: string[]): Promise<CliRun> {
  let out = '';
  let err = '';
  const o = jest.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => {
    out += String(s);
    return true;
  });
  const e = jest.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => {
    err += String(s);
    return true;
  });
  try {
    const code = await main(['node', 'gqa2mla', ...args]);
    return { code, out, err };
  } finally {
    o.mockRestore();
    e.mockRestore();
  }
}

/** Progress lines on a non-TTY stderr (src/cli/progress.ts): notes and per-step lines, not errors. */
const PROGRESS_LINE = /^gqa2mla: (tokenizing the calibration text|embedding the calibration windows|\w+ \d+\/\d+ done, elapsed .*)$/;

/** A GqaError reaches the user as exactly one line mentioning `mention` (after any progress lines). */
export function expectOneLineError(r: CliRun, mention: string): void {
  const lines = r.err.trimEnd().split('\n').filter((l) => !PROGRESS_LINE.test(l));
  expect(lines).toHaveLength(1);
  expect(lines[0].startsWith('gqa2mla: ')).toBe(true);
  expect(lines[0]).toContain(mention);
}
