/**
 * One timed conversion for the 8B benchmark: prints and writes (JSON) the report's stage
 * times, the backend's counters (eigh, uploads, downloads, read wait), peak GPU memory
 * (convertCuda accounting and device-wide) and peak host RSS (VmHWM).
 *   tsx bench/convert-8b/run.ts --model <dir> --out <dir> --json <file> [--device cuda|cpu]
 *     [--samples 128] [--seqlen 256] [--rank 512] [--rope 64] [--method transmla|gqa2mla|default] [--freqfold 4]
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { lastBackendInfo } from '../../src/backend/select.js';
import { convert } from '../../src/convert/convert.js';
import { native } from '../../src/native/binding.js';

function arg(name: string, dflt?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0) return process.argv[i + 1];
  if (dflt === undefined) throw new Error(`--${name} is required`);
  return dflt;
}

function vmHwm(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
}

const device = arg('device', 'cuda') as 'cuda' | 'cpu';
// --method default: the tool's own defaults (method, freqfold candidates, metric, refits)
const method = arg('method', 'transmla') as 'transmla' | 'gqa2mla' | 'default';
const ff = arg('freqfold', '4');
const settings = {
  calibSamples: Number(arg('samples', '128')),
  calibSeqlen: Number(arg('seqlen', '256')),
  kvLoraRank: Number(arg('rank', '512')),
  qkRopeDim: Number(arg('rope', '64')),
  ...(method === 'default' ? {} : { method, freqfold: ff === 'auto' ? ('auto' as const) : Number(ff) }),
};
const cu = native.convertCuda;
cu?.resetPeak();
const t0 = performance.now();
let lastLayer = -1;
const report = await convert({
  modelDir: arg('model'),
  outDir: arg('out'),
  calibFile: new URL('../../test/fixtures/pydocs-train-3M.txt', import.meta.url).pathname,
  overwrite: true,
  device,
  ...settings,
  onProgress: (p) => {
    if (p.layer !== undefined && p.layer !== lastLayer && p.stage === 'statistics') {
      lastLayer = p.layer;
      process.stderr.write(`[${((performance.now() - t0) / 1000).toFixed(1)} s] layer ${p.layer}\n`);
    }
  },
});
const wall = (performance.now() - t0) / 1000;
const backend = lastBackendInfo();
const mem = cu?.memStats();
const result = {
  device,
  backend: backend ? { device: backend.device, name: backend.name } : null,
  settings: (({ method, freqfold, kvMetric, ropeSelection, nopeShrink, valueRefit, outputRefit, qLoraRank, heldOutSamples, latentNorm }) => ({
    ...settings,
    method,
    freqfold,
    kvMetric,
    ropeSelection,
    nopeShrink,
    valueRefit,
    outputRefit,
    qLoraRank,
    heldOutSamples,
    latentNorm,
  }))(report.settings),
  model: { layers: report.source.numLayers, heads: report.source.numHeads, kvHeads: report.source.numKvHeads, headDim: report.source.headDim },
  wallSeconds: wall,
  times: report.times,
  split: {
    read: report.times.read,
    forward: report.times.forward,
    statistics: report.times.statistics,
    eigh: backend?.stats.eighSeconds ?? null,
    factorizeOther: backend ? report.times.factorize - backend.stats.eighSeconds : null,
    evaluate: report.times.evaluate,
    write: report.times.write,
  },
  backendStats: backend?.stats ?? null,
  peakHostRssBytes: vmHwm(),
  gpuMemory: mem ? { peakAllocatedBytes: mem.peakAllocated, peakDeviceUsedBytes: mem.peakDeviceUsed, deviceTotalBytes: mem.deviceTotal } : null,
  meanAttnRelError: report.meanAttnRelError,
  layerErrors: report.layers.map((l) => l.attnRelError),
  outputBytes: report.output.totalBytes,
};
writeFileSync(arg('json'), `${JSON.stringify(result, null, 2)}\n`);
const g = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;
console.log(`conversion on ${backend?.name ?? device}: ${wall.toFixed(1)} s wall (report total ${report.times.total.toFixed(1)} s)`);
console.log('| stage | seconds |\n| --- | --- |');
for (const [k, v] of Object.entries(result.split)) console.log(`| ${k} | ${v === null ? '-' : v.toFixed(2)} |`);
console.log(`| tokenize | ${report.times.tokenize.toFixed(2)} |`);
console.log(`peak host RSS ${g(result.peakHostRssBytes)}${mem ? `, GPU peak allocated ${g(mem.peakAllocated)}, device-wide peak used ${g(mem.peakDeviceUsed)}` : ''}`);
console.log(`mean held-out attention error ${report.meanAttnRelError.toFixed(4)}`);
