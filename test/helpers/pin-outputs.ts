/**
 * The acceptance pin of the pipeline refactor (issue 19): fixture conversions whose output
 * bytes must not change. Each case converts on the CPU backend with small calibration
 * settings and hashes (sha256) every deterministic output file: the safetensors shards,
 * the index, config.json, and conversion-report.json with its timings (`times`, `seconds`)
 * and directories (`dir`) removed.
 *
 * `npx tsx test/helpers/pin-outputs.ts --write` records the hashes into
 * test/pinned-outputs.json (`--check` compares instead); test/pinned-outputs.test.ts
 * recomputes and compares them.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convert, convertSweep } from '../../src/convert/convert.js';
import type { ConvertOptions } from '../../src/convert/options.js';

const FIX = join(new URL('..', import.meta.url).pathname, 'fixtures');
const LLAMA = join(FIX, 'tiny-llama-gqa');
const QWEN = join(FIX, 'tiny-qwen2-gqa');

/** Where the committed hashes live. */
export const PIN_FILE = join(new URL('..', import.meta.url).pathname, 'pinned-outputs.json');

/** Hashes by case name, then by output file (relative path). */
export type PinnedHashes = Record<string, Record<string, string>>;

let calibText: string | null = null;
function calib(): string {
  calibText ??= readFileSync(join(FIX, 'pydocs-train-3M.txt'), 'utf8').slice(0, 400_000);
  return calibText;
}

/**
 * target 'transformers' and context = calibSeqlen: the layout the pinned (pre-refactor) code
 * wrote and the held-out windows it judged on; the portable export and the serving-context
 * windows that became the defaults later are deliberate changes of the bytes, tested on their
 * own (test/portable-export.test.ts, test/convert-context.test.ts).
 */
function small(modelDir: string): Omit<ConvertOptions, 'outDir'> {
  return { modelDir, calibText: calib(), calibSamples: 16, calibSeqlen: 128, heldOutSamples: 4, context: 128, qkRopeDim: 32, kvLoraRank: 96, device: 'cpu', target: 'transformers' };
}

/** Removes the run-dependent fields (timings, directories) from a parsed report, recursively. */
function stripRunFields(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(stripRunFields);
  if (v && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) if (k !== 'times' && k !== 'seconds' && k !== 'dir') out[k] = stripRunFields(x);
    return out;
  }
  return v;
}

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/** sha256 of every deterministic file of a converted directory, keyed by `prefix` + file name. */
export function hashOutputs(dir: string, prefix = ''): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of readdirSync(dir).sort()) {
    const p = join(dir, f);
    if (f.endsWith('.safetensors') || f === 'model.safetensors.index.json' || f === 'config.json') out[prefix + f] = sha(readFileSync(p));
    else if (f === 'conversion-report.json') out[prefix + f] = sha(JSON.stringify(stripRunFields(JSON.parse(readFileSync(p, 'utf8')))));
  }
  return out;
}

/** Converts, aborts when layer 2's statistics start, then resumes the partial output. */
async function abortAndResume(o: ConvertOptions): Promise<void> {
  const ac = new AbortController();
  const aborted = await convert({
    ...o,
    signal: ac.signal,
    onProgress: (p) => {
      if (p.stage === 'statistics' && p.layer === 2) ac.abort();
    },
  }).then(
    () => false,
    (e: Error) => /aborted/.test(e.message),
  );
  if (!aborted || !existsSync(`${o.outDir}.partial`)) throw new Error('pin: the conversion was not interrupted as planned');
  const report = await convert({ ...o, resume: true });
  if (report.resumedFromLayer !== 2) throw new Error(`pin: resumed from layer ${report.resumedFromLayer}, expected 2`);
}

/** A pinned case: runs into `dir` and returns its hashes. */
export interface PinCase {
  name: string;
  run: (dir: string) => Promise<Record<string, string>>;
}

/** The pinned conversions. */
export const PIN_CASES: PinCase[] = [
  ...[
    ['llama', LLAMA],
    ['qwen2', QWEN],
  ].flatMap(([n, m]) =>
    (['gqa2mla', 'transmla'] as const).map((method) => ({
      name: `${n}-${method}`,
      run: async (dir: string) => {
        await convert({ ...small(m), method, outDir: dir });
        return hashOutputs(dir);
      },
    })),
  ),
  {
    name: 'llama-sweep',
    run: async (dir: string) => {
      const { kvLoraRank: _r, qkRopeDim: _p, ...o } = small(LLAMA);
      const s = await convertSweep({ ...o, kvLoraRanks: [64, 96], qkRopeDims: [32], outDir: dir });
      return Object.assign({}, ...s.budgets.map((b) => hashOutputs(b.dir, `r${b.kvLoraRank}-p${b.qkRopeDim}/`)));
    },
  },
  {
    name: 'llama-resume',
    run: async (dir: string) => {
      await abortAndResume({ ...small(LLAMA), calibInputs: 'converted', checkpointSeconds: 0, outDir: dir });
      return hashOutputs(dir);
    },
  },
];

/** Runs every case in a temporary directory. */
export async function computePins(): Promise<PinnedHashes> {
  const tmp = mkdtempSync(join(tmpdir(), 'gqa2mla-pin-'));
  try {
    const out: PinnedHashes = {};
    for (const c of PIN_CASES) out[c.name] = await c.run(join(tmp, c.name));
    return out;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[1] && process.argv[1].endsWith('pin-outputs.ts')) {
  const t0 = performance.now();
  const pins = await computePins();
  const json = `${JSON.stringify(pins, null, 2)}\n`;
  if (process.argv.includes('--write')) writeFileSync(PIN_FILE, json);
  else if (process.argv.includes('--check')) {
    const same = json === readFileSync(PIN_FILE, 'utf8');
    process.stderr.write(same ? 'pinned outputs: identical\n' : 'pinned outputs: DIFFERENT\n');
    if (!same) process.stdout.write(json);
    process.exitCode = same ? 0 : 1;
  } else process.stdout.write(json);
  process.stderr.write(`pinned ${Object.keys(pins).length} cases in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
}
