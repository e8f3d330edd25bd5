/**
 * Greedy samples for the conversion report: three prompts cut from the calibration text
 * (at 0, 1/3 and 2/3 of it, from the next line start), continued by the source model and by
 * the converted model with the same token ids, stored as `report.samples` in
 * conversion-report.json and shown side by side in report.html.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { freemem } from 'node:os';
import { join } from 'node:path';
import { Checkpoint } from './checkpoint/checkpoint.js';
import { numelOf } from './checkpoint/dtype.js';
import type { ConversionReport } from './report-types.js';
import { decodeLoop, eosIds, firstDivergence, openDecoder } from './generate.js';
import { loadModelSpec } from './model/spec.js';
import { writeReportHtml } from './report/html.js';
import { REPORT_JSON } from './report/read.js';
import { loadTokenizer, type ModelTokenizer } from './tokenize.js';

/** One prompt and both continuations. */
export interface SampleItem {
  /** character offset of the prompt in the calibration text */
  offset: number;
  prompt: string;
  promptIds: number[];
  source: { text: string; tokens: number[] };
  converted: { text: string; tokens: number[] };
  /** first generated position where the two differ (null: identical) */
  firstDivergence: number | null;
}

/** `report.samples`: greedy continuations of calibration-text prompts, source beside converted. */
export interface ReportSamples {
  /** the text the prompts were cut from */
  from: string;
  promptTokens: number;
  maxNewTokens: number;
  decoding: 'greedy';
  items: SampleItem[];
  /** why no samples were made (e.g. the resident float32 weights would not fit in free memory) */
  skipped?: string;
}

/** Options of {@link attachSamples}. */
export interface SampleOptions {
  report: ConversionReport;
  sourceDir: string;
  convertedDir: string;
  /** text the prompts are cut from (the calibration text) */
  calibFile: string;
  /** tokens per prompt (default 24) */
  promptTokens?: number;
  /** generated tokens per sample (default 32) */
  maxNewTokens?: number;
  /** free memory to plan against (default os.freemem()); samples are skipped when a model's float32 weights exceed 80% of it */
  freeBytes?: number;
}

/** Three prompts of `n` tokens from `text`, each starting at a line start near 0, 1/3, 2/3 of it. */
export function samplePrompts(text: string, tok: ModelTokenizer, n: number): Array<{ offset: number; ids: number[] }> {
  const out: Array<{ offset: number; ids: number[] }> = [];
  for (let k = 0; k < 3; k++) {
    let off = Math.floor((k * text.length) / 3);
    const nl = text.indexOf('\n', off);
    if (k > 0 && nl >= 0 && nl - off < 4000) off = nl + 1;
    while (off < text.length && /\s/.test(text[off])) off++;
    const ids = Array.from(tok.encode(text.slice(off, off + 40 * n))).slice(0, n);
    if (ids.length > 0) out.push({ offset: off, ids });
  }
  return out;
}

async function continueAll(dir: string, prompts: number[][], maxNewTokens: number, tok: ModelTokenizer) {
  const spec = await loadModelSpec(dir);
  const eos = await eosIds(dir, spec);
  const { decoder } = await openDecoder(dir, spec);
  try {
    const runs = [];
    for (const prompt of prompts)
      runs.push(await decodeLoop({ decoder, vocabSize: spec.vocabSize, tok, prompt, maxNewTokens, eos, sampling: { temperature: 0, topP: 1, random: Math.random } }));
    return runs;
  } finally {
    await decoder.close();
  }
}

/** Bytes of a checkpoint's weights held as float32 (the decoders keep every layer resident). */
export async function residentBytes(dir: string): Promise<number> {
  const ck = await Checkpoint.open(dir);
  try {
    return ck.names().reduce((s, name) => s + 4 * numelOf(ck.info(name).shape), 0);
  } finally {
    await ck.close();
  }
}

/** Greedy samples of the source and the converted model on calibration-text prompts (neither file is written). */
export async function greedySamples(o: Omit<SampleOptions, 'report'>): Promise<ReportSamples> {
  const n = o.promptTokens ?? 24;
  const maxNewTokens = o.maxNewTokens ?? 32;
  const need = Math.max(await residentBytes(o.sourceDir), await residentBytes(o.convertedDir));
  const free = o.freeBytes ?? freemem();
  if (need > 0.8 * free) {
    const gib = (b: number) => (b / 2 ** 30).toFixed(1);
    return { from: o.calibFile, promptTokens: n, maxNewTokens, decoding: 'greedy', items: [], skipped: `the decoders need ${gib(need)} GiB of float32 weights in memory, ${gib(free)} GiB is free` };
  }
  const tok = await loadTokenizer(o.sourceDir);
  const prompts = samplePrompts(await readFile(o.calibFile, 'utf8'), tok, n);
  const ids = prompts.map((p) => p.ids);
  const src = await continueAll(o.sourceDir, ids, maxNewTokens, tok);
  const cvt = await continueAll(o.convertedDir, ids, maxNewTokens, tok);
  return {
    from: o.calibFile,
    promptTokens: n,
    maxNewTokens,
    decoding: 'greedy',
    items: prompts.map((p, i) => ({
      offset: p.offset,
      prompt: tok.decode(p.ids),
      promptIds: p.ids,
      source: { text: src[i].text, tokens: src[i].tokens },
      converted: { text: cvt[i].text, tokens: cvt[i].tokens },
      firstDivergence: firstDivergence(src[i].tokens, cvt[i].tokens),
    })),
  };
}

/** Computes {@link greedySamples}, stores them as `report.samples` (conversion-report.json) and rewrites report.html. */
export async function attachSamples(o: SampleOptions): Promise<ReportSamples> {
  const samples = await greedySamples(o);
  (o.report as ConversionReport & { samples?: ReportSamples }).samples = samples;
  await writeFile(join(o.convertedDir, REPORT_JSON), `${JSON.stringify(o.report, null, 2)}\n`);
  await writeReportHtml(o.convertedDir);
  return samples;
}
