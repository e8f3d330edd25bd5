/**
 * Reading conversion-report.json (a converted directory) and sweep.json (a budget sweep)
 * back, with one-line errors naming the file and field at fault.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { ConversionReport } from '../report-types.js';
import type { SweepSummary } from '../report-types.js';
import { GqaError } from '../errors.js';

/** File name of the conversion report inside a converted directory. */
export const REPORT_JSON = 'conversion-report.json';

/** File name of a sweep's summary inside its output directory. */
export const SWEEP_JSON = 'sweep.json';

function isObj(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isNumArray(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'number');
}

/**
 * Checks that `data` has the fields the HTML report draws; throws GqaError
 * `ERR_REPORT_SHAPE` naming `file` and the first missing or mistyped field.
 */
export function validateConversionReport(data: unknown, file: string): ConversionReport {
  const bad = (field: string, what: string): never => {
    throw new GqaError('ERR_REPORT_SHAPE', `${file}: ${field} ${what}`);
  };
  if (!isObj(data)) return bad('(root)', 'is not a JSON object');
  for (const k of ['source', 'settings', 'kvValuesPerToken', 'times'] as const) if (!isObj(data[k])) bad(k, 'is missing or not an object');
  const src = data.source as Record<string, unknown>;
  for (const k of ['numLayers', 'numHeads', 'numKvHeads', 'headDim']) if (typeof src[k] !== 'number') bad(`source.${k}`, 'is missing or not a number');
  const st = data.settings as Record<string, unknown>;
  for (const k of ['qkRopeDim', 'kvLoraRank']) if (typeof st[k] !== 'number') bad(`settings.${k}`, 'is missing or not a number');
  const kv = data.kvValuesPerToken as Record<string, unknown>;
  for (const k of ['before', 'after', 'perLayerBefore', 'perLayerAfter']) if (typeof kv[k] !== 'number') bad(`kvValuesPerToken.${k}`, 'is missing or not a number');
  if (!Array.isArray(data.layers)) bad('layers', 'is missing or not an array');
  (data.layers as unknown[]).forEach((l, i) => {
    const f = `layers[${i}]`;
    if (!isObj(l)) return bad(f, 'is not an object');
    for (const k of ['layer', 'freqfold', 'attnRelError']) if (typeof l[k] !== 'number') bad(`${f}.${k}`, 'is missing or not a number');
    if (!Array.isArray(l.ropeSpectrum) || !l.ropeSpectrum.every(isNumArray)) bad(`${f}.ropeSpectrum`, 'is missing or not an array of number arrays');
    if (!isNumArray(l.pcaSpectrum)) bad(`${f}.pcaSpectrum`, 'is missing or not an array of numbers');
    if (l.candidates !== undefined && !Array.isArray(l.candidates)) bad(`${f}.candidates`, 'is not an array');
  });
  if (data.ppl !== undefined) {
    if (!isObj(data.ppl)) bad('ppl', 'is not an object');
    const p = data.ppl as Record<string, unknown>;
    for (const k of ['before', 'after']) if (p[k] !== undefined && typeof p[k] !== 'number') bad(`ppl.${k}`, 'is not a number');
  }
  return data as unknown as ConversionReport;
}

/**
 * Checks that `data` has the fields the sweep page draws; throws GqaError
 * `ERR_REPORT_SHAPE` naming `file` and the first missing or mistyped field.
 */
export function validateSweepSummary(data: unknown, file: string): SweepSummary {
  const bad = (field: string, what: string): never => {
    throw new GqaError('ERR_REPORT_SHAPE', `${file}: ${field} ${what}`);
  };
  if (!isObj(data)) return bad('(root)', 'is not a JSON object');
  for (const k of ['source', 'outDir']) if (typeof data[k] !== 'string') bad(k, 'is missing or not a string');
  for (const k of ['seconds', 'kvValuesPerTokenPerLayerBefore']) if (typeof data[k] !== 'number') bad(k, 'is missing or not a number');
  if (data.pplBefore !== undefined && typeof data.pplBefore !== 'number') bad('pplBefore', 'is not a number');
  if (data.protocol !== undefined && typeof data.protocol !== 'string') bad('protocol', 'is not a string');
  if (data.model !== undefined) {
    if (!isObj(data.model)) bad('model', 'is not an object');
    const m = data.model as Record<string, unknown>;
    for (const k of ['numLayers', 'numHeads', 'numKvHeads', 'headDim']) if (typeof m[k] !== 'number') bad(`model.${k}`, 'is missing or not a number');
  }
  if (data.settings !== undefined && !isObj(data.settings)) bad('settings', 'is not an object');
  if (!Array.isArray(data.budgets) || data.budgets.length === 0) bad('budgets', 'is missing, not an array or empty');
  (data.budgets as unknown[]).forEach((b, i) => {
    const f = `budgets[${i}]`;
    if (!isObj(b)) return bad(f, 'is not an object');
    if (typeof b.dir !== 'string') bad(`${f}.dir`, 'is missing or not a string');
    for (const k of ['kvLoraRank', 'qkRopeDim', 'kvValuesPerTokenPerLayer', 'compression', 'meanAttnRelError'])
      if (typeof b[k] !== 'number') bad(`${f}.${k}`, 'is missing or not a number');
    if (!isNumArray(b.attnRelError)) bad(`${f}.attnRelError`, 'is missing or not an array of numbers');
    for (const k of ['kvValuesPerToken', 'ppl']) if (b[k] !== undefined && typeof b[k] !== 'number') bad(`${f}.${k}`, 'is not a number');
  });
  return data as unknown as SweepSummary;
}

/** Reads `<dir>/<name>` as JSON: GqaError ERR_NOT_FOUND (no such directory), `missing` (no file), ERR_REPORT_JSON (malformed). */
async function readJsonIn(dir: string, name: string, missing: { code: string; hint: string }): Promise<{ file: string; data: unknown }> {
  const st = await stat(dir).catch(() => null);
  if (!st) throw new GqaError('ERR_NOT_FOUND', `${dir}: no such directory`);
  if (!st.isDirectory()) throw new GqaError('ERR_NOT_FOUND', `${dir}: not a directory`);
  const file = join(dir, name);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new GqaError(missing.code, `${file}: ${code === 'ENOENT' ? `not found (${missing.hint})` : `cannot read (${code ?? String(e)})`}`, 'input', { cause: e });
  }
  try {
    return { file, data: JSON.parse(text) };
  } catch (e) {
    throw new GqaError('ERR_REPORT_JSON', `${file}: malformed JSON (${(e as Error).message})`, 'input', { cause: e });
  }
}

/**
 * Reads and checks `<dir>/conversion-report.json`. Throws GqaError (input, exit 3):
 * `ERR_NOT_FOUND` (no such directory), `ERR_REPORT_MISSING`, `ERR_REPORT_JSON` (malformed),
 * `ERR_REPORT_SHAPE` (fields missing).
 */
export async function readConversionReport(dir: string): Promise<{ file: string; report: ConversionReport }> {
  const { file, data } = await readJsonIn(dir, REPORT_JSON, { code: 'ERR_REPORT_MISSING', hint: 'is this a converted directory?' });
  return { file, report: validateConversionReport(data, file) };
}

/**
 * Reads and checks `<dir>/sweep.json`. Throws GqaError (input, exit 3): `ERR_NOT_FOUND`
 * (no such directory), `ERR_SWEEP_MISSING`, `ERR_REPORT_JSON` (malformed), `ERR_REPORT_SHAPE`.
 */
export async function readSweepSummary(dir: string): Promise<{ file: string; sweep: SweepSummary }> {
  const { file, data } = await readJsonIn(dir, SWEEP_JSON, { code: 'ERR_SWEEP_MISSING', hint: 'is this the output directory of a budget sweep?' });
  return { file, sweep: validateSweepSummary(data, file) };
}
