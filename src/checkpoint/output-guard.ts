/**
 * What a conversion may write over, checked before any work.
 *
 * Invariant: nothing that gqa2mla did not write is ever deleted or replaced. An output path
 * may be absent, an empty directory, or a directory holding a previous gqa2mla output, which
 * carries the marker file {@link OUTPUT_MARKER} listing the top-level entries it owns; only
 * then may `overwrite` (--force) replace it. An output that is the source model, lies inside
 * it, or contains it (or any input file) is refused, with or without --force.
 */
import { existsSync, lstatSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import { usageError } from '../errors.js';

/** Marker file of a finished gqa2mla output (a conversion or a sweep). */
export const OUTPUT_MARKER = '.gqa2mla-output.json';

/** Content of {@link OUTPUT_MARKER}. */
export interface OutputMarker {
  tool: 'gqa2mla';
  kind: 'conversion' | 'sweep' | 'checkpoint';
  version: string;
  /** top-level entries of the output directory that gqa2mla wrote (the marker aside) */
  files: string[];
}

/** What {@link checkOutputTarget} checks. */
export interface OutputTargetCheck {
  /** the source checkpoint directory */
  modelDir: string;
  /** the output directory asked for */
  outDir: string;
  /** replace a previous gqa2mla output (--force) */
  overwrite?: boolean;
  /** continue an interrupted run (the partial directory is expected) */
  resume?: boolean;
  /** input files read during the run (calibration, evaluation text): must lie outside the output */
  inputs?: Array<string | undefined>;
  /** the option names to use in messages: CLI flags or API option names */
  names?: { overwrite: string; resume: string };
}

/** Absolute path with symbolic links resolved as far as the path exists. */
export function canonicalPath(p: string): string {
  let head = resolve(p);
  const tail: string[] = [];
  while (!existsSync(head)) {
    const parent = dirname(head);
    if (parent === head) break;
    tail.unshift(basename(head));
    head = parent;
  }
  return join(realpathSync(head), ...tail);
}

/** Whether `inner` is `outer` or lies inside it (both canonical). */
export function isWithin(inner: string, outer: string): boolean {
  const r = relative(outer, inner);
  return r === '' || (!r.startsWith(`..${sep}`) && r !== '..' && !r.startsWith(sep));
}

/** The marker of `dir`, or null when absent or not a gqa2mla marker. */
export function readOutputMarker(dir: string): OutputMarker | null {
  try {
    const m = JSON.parse(readFileSync(join(dir, OUTPUT_MARKER), 'utf8')) as OutputMarker;
    return m && m.tool === 'gqa2mla' && Array.isArray(m.files) ? m : null;
  } catch {
    return null;
  }
}

/** Whether `dir` is a partial directory of an interrupted gqa2mla run (it holds the journal). */
export function isOwnPartial(dir: string): boolean {
  return existsSync(join(dir, 'journal.json'));
}

/**
 * Entries of an existing directory `dir` that gqa2mla did not write: everything when it has
 * no marker, else what the marker does not list (a listed name's `.partial` sibling of an
 * interrupted sweep budget counts as written when it holds the journal).
 */
export function foreignEntries(dir: string): string[] {
  const entries = readdirSync(dir);
  const m = readOutputMarker(dir);
  if (!m) return entries;
  const own = new Set([...m.files, OUTPUT_MARKER]);
  return entries.filter((e) => !own.has(e) && !(e.endsWith('.partial') && own.has(e.slice(0, -8)) && isOwnPartial(join(dir, e))));
}

function describe(names: string[]): string {
  const shown = names.slice(0, 5).join(', ');
  return names.length > 5 ? `${shown} and ${names.length - 5} more` : shown;
}

/**
 * Throws (usage error, exit 2) unless `dir` may be replaced: absent, an empty directory, or a
 * previous gqa2mla output holding only what it wrote.
 */
export function assertReplaceable(dir: string, what = 'output directory'): void {
  if (!existsSync(dir)) return;
  if (!lstatSync(dir).isDirectory()) throw usageError('ERR_OUTPUT_FOREIGN', `${what} ${dir} exists and is not a directory; nothing was changed`);
  const foreign = foreignEntries(dir);
  if (foreign.length === 0) return;
  const why = readOutputMarker(dir) ? 'files gqa2mla did not write' : 'no gqa2mla output marker, and it is not empty';
  throw usageError('ERR_OUTPUT_FOREIGN', `${what} ${dir} holds ${why}: ${describe(foreign)}; refusing to replace it (choose another output directory or remove them yourself)`);
}

/** Refuses an output that overlaps the source model or an input file. */
function assertNoOverlap(c: OutputTargetCheck, out: string): void {
  const src = canonicalPath(c.modelDir);
  const partial = `${out}.partial`;
  for (const o of [out, partial]) {
    if (o === src) throw usageError('ERR_OUTPUT_OVERLAP', `the output directory ${c.outDir} is the source model ${c.modelDir}; choose another output directory`);
    if (isWithin(src, o)) throw usageError('ERR_OUTPUT_OVERLAP', `the output directory ${c.outDir} contains the source model ${c.modelDir}; choose another output directory`);
    if (isWithin(o, src)) throw usageError('ERR_OUTPUT_OVERLAP', `the output directory ${c.outDir} lies inside the source model ${c.modelDir}; choose a directory outside it`);
  }
  for (const input of c.inputs ?? []) {
    if (!input) continue;
    const f = canonicalPath(input);
    if (isWithin(f, out) || isWithin(f, partial)) throw usageError('ERR_OUTPUT_OVERLAP', `the input file ${input} lies inside the output directory ${c.outDir}; choose another output directory`);
  }
}

/**
 * Checks, before any work, that a run may write `outDir`: no overlap with the source or the
 * inputs; an existing output only with `overwrite` and only when it is empty or a previous
 * gqa2mla output; an existing partial directory only with `resume` or `overwrite`, and only
 * one of gqa2mla's. Throws a usage GqaError (exit 2) naming the problem; changes nothing.
 */
export function checkOutputTarget(c: OutputTargetCheck): void {
  const names = c.names ?? { overwrite: 'overwrite', resume: 'resume' };
  const out = canonicalPath(c.outDir.replace(/\/+$/, '') || c.outDir);
  assertNoOverlap(c, out);
  if (existsSync(out)) {
    const st = statSync(out);
    if (!st.isDirectory()) throw usageError('ERR_OUTPUT_FOREIGN', `output path ${c.outDir} exists and is not a directory; nothing was changed`);
    const empty = readdirSync(out).length === 0;
    if (!empty && !c.overwrite && !c.resume)
      throw usageError('ERR_OUTPUT_EXISTS', `output directory ${c.outDir} already exists (use ${names.overwrite} to replace a previous gqa2mla output)`);
    if (!empty && c.overwrite) assertReplaceable(out);
  }
  const partial = `${out}.partial`;
  if (existsSync(partial)) {
    if (!isOwnPartial(partial) && readdirSync(partial).length > 0)
      throw usageError('ERR_OUTPUT_FOREIGN', `${partial} exists but is not an interrupted gqa2mla conversion (no journal.json); refusing to touch it`);
    if (!c.resume && !c.overwrite)
      throw usageError('ERR_OUTPUT_EXISTS', `an interrupted conversion is in ${partial}: use ${names.resume} to continue it or ${names.overwrite} to start afresh`);
  }
}

/** The marker content for an output whose top-level entries are `files`. */
export function outputMarker(kind: OutputMarker['kind'], version: string, files: string[]): string {
  const m: OutputMarker = { tool: 'gqa2mla', kind, version, files: [...new Set(files)].filter((f) => f !== OUTPUT_MARKER).sort() };
  return `${JSON.stringify(m, null, 2)}\n`;
}
