/**
 * CPU vs CUDA conversions of both fixtures: every layer's held-out attention error and the
 * perplexity of the converted model (eval-ppl on pydocs-eval.txt), with the relative
 * differences the acceptance bounds (2% per layer, 0.5% ppl). Prints a table, writes JSON.
 *   tsx bench/convert-8b/agree.ts --json <file> [--samples 64] [--seqlen 256]
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { lastBackendInfo } from '../../src/backend/select.js';
import { convert } from '../../src/convert/convert.js';
import { evalPpl } from '../../src/eval/ppl.js';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
}
const fx = (n: string) => new URL(`../../test/fixtures/${n}`, import.meta.url).pathname;
const samples = Number(arg('samples', '64'));
const seqlen = Number(arg('seqlen', '256'));
const tmp = mkdtempSync(join(tmpdir(), 'g2m-agree-'));
const rows = [];
try {
  for (const name of ['tiny-llama-gqa', 'tiny-qwen2-gqa']) {
    const base = { modelDir: fx(name), calibFile: fx('pydocs-train-3M.txt'), calibSamples: samples, calibSeqlen: seqlen, kvLoraRank: 64, qkRopeDim: 32, overwrite: true };
    const res: Record<string, { layers: number[]; seconds: number; ppl: number; name: string }> = {};
    for (const device of ['cpu', 'cuda'] as const) {
      const out = join(tmp, `${name}-${device}`);
      const r = await convert({ ...base, outDir: out, device });
      const p = await evalPpl({ modelDir: out, textFile: fx('pydocs-eval.txt'), seq: 256, windows: 32 });
      res[device] = { layers: r.layers.map((l) => l.attnRelError), seconds: r.times.total, ppl: p.ppl, name: lastBackendInfo()!.name };
    }
    const src = await evalPpl({ modelDir: fx(name), textFile: fx('pydocs-eval.txt'), seq: 256, windows: 32 });
    const layerRel = res.cuda.layers.map((e, i) => Math.abs(e - res.cpu.layers[i]) / res.cpu.layers[i]);
    rows.push({
      fixture: name,
      cpu: res.cpu,
      cuda: res.cuda,
      sourcePpl: src.ppl,
      maxLayerErrorRel: Math.max(...layerRel),
      layerErrorRel: layerRel,
      pplRel: Math.abs(res.cuda.ppl - res.cpu.ppl) / res.cpu.ppl,
    });
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
const result = { bench: 'cpu-vs-cuda agreement', settings: { calibSamples: samples, calibSeqlen: seqlen, kvLoraRank: 64, qkRopeDim: 32, method: 'gqa2mla (defaults)' }, eval: { seq: 256, windows: 32 }, rows };
const ji = process.argv.indexOf('--json');
if (ji >= 0) writeFileSync(process.argv[ji + 1], `${JSON.stringify(result, null, 2)}\n`);
console.log(`CPU vs CUDA (${rows[0]?.cuda.name}), calib ${samples} x ${seqlen}, r64/p32`);
console.log('| fixture | layer errors cpu | layer errors cuda | max layer rel diff | ppl src | ppl cpu | ppl cuda | ppl rel diff | s cpu | s cuda |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const r of rows)
  console.log(
    `| ${r.fixture} | ${r.cpu.layers.map((e) => e.toFixed(4)).join(' ')} | ${r.cuda.layers.map((e) => e.toFixed(4)).join(' ')} | ${(100 * r.maxLayerErrorRel).toFixed(3)}% | ${r.sourcePpl.toFixed(3)} | ${r.cpu.ppl.toFixed(3)} | ${r.cuda.ppl.toFixed(3)} | ${(100 * r.pplRel).toFixed(3)}% | ${r.cpu.seconds.toFixed(1)} | ${r.cuda.seconds.toFixed(1)} |`,
  );
