/**
 * Ablation of the Qwen3 q/k-norm approximations (src/convert/qk-norm.ts) on one qwen3
 * checkpoint, CPU only:
 * 1. approximation alone: per layer, the held-out attention-output relative error of the
 *    original layer with its q/k norms replaced by each method's linear maps (no MLA
 *    compression), and the relative error of the normed query / key heads themselves;
 * 2. end to end: convertSweep() over the kv_lora_rank budgets with each method, then eval-ppl at
 *    each context length, against the original's eval-ppl.
 * Statistics windows from the training text, held-out windows from the evaluation text.
 *
 * Usage: npx tsx bench/qk-norm/ablation.ts <qwen3-dir> <out.json> [--ranks 64,128]
 *   [--seqs 512,2048] [--methods constant,scalar,regression] [--calib-seqlen 512]
 *   [--calib-samples 16] [--windows 8,4] [--no-convert]
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Checkpoint } from '../../src/checkpoint/checkpoint.js';
import { convertSweep } from '../../src/convert/convert.js';
import { relativeError } from '../../src/convert/layer-ops.js';
import { QK_NORM_METHODS, type QkNormMethod, foldQkNorm } from '../../src/convert/qk-norm.js';
import { attentionForward, loadLayerWeights, ModelRunner, type LayerWeights } from '../../src/engine/index.js';
import { evalPpl } from '../../src/eval/ppl.js';
import { loadModelSpec } from '../../src/model/spec.js';
import type { ModelSpec } from '../../src/model/spec-types.js';
import { native } from '../../src/native/binding.js';
import { MomentAccumulator } from '../../src/tensor/moments.js';
import { loadTokenizer } from '../../src/tokenize.js';

const TRAIN = 'test/fixtures/pydocs-train-3M.txt';
const EVAL = 'test/fixtures/pydocs-eval.txt';

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : dflt;
}
const nums = (s: string) => s.split(',').map(Number);

/** Normalised attention inputs of every layer for `n` windows of `seq` tokens of `ids`. */
async function layerInputs(dir: string, ids: Int32Array, n: number, seq: number): Promise<Float32Array[]> {
  const runner = await ModelRunner.open(dir);
  const spec = runner.spec;
  const H = spec.hiddenSize;
  const xs = Array.from({ length: spec.numLayers }, () => new Float32Array(n * seq * H));
  try {
    await runner.forward(ids.subarray(0, n * seq), n, seq, { onAttnInput: (l, x, info) => void xs[l].set(x.subarray(0, info.nSeq * seq * H), info.seqStart * seq * H) });
  } finally {
    await runner.close();
  }
  return xs;
}

/** `w` with q/k projections replaced by a fold and the norms removed, read as a plain GQA layer. */
function foldedLayer(w: LayerWeights, f: Awaited<ReturnType<typeof foldQkNorm>>): LayerWeights {
  const t: LayerWeights['tensors'] = {};
  for (const [k, v] of Object.entries(w.tensors)) if (k !== 'self_attn.q_norm.weight' && k !== 'self_attn.k_norm.weight') t[k] = v;
  const a = f.attention;
  t['self_attn.q_proj.weight'] = { data: a.wq, shape: w.tensors['self_attn.q_proj.weight'].shape };
  t['self_attn.k_proj.weight'] = { data: a.wk, shape: w.tensors['self_attn.k_proj.weight'].shape };
  if (a.bq) t['self_attn.q_proj.bias'] = { data: a.bq, shape: [a.bq.length] };
  if (a.bk) t['self_attn.k_proj.bias'] = { data: a.bk, shape: [a.bk.length] };
  return { layer: w.layer, tensors: t };
}

/** Normed heads of the original (per-head RMSNorm) or of a fold's linear map, [rows, heads * d]. */
async function heads(spec: ModelSpec, w: LayerWeights, x: Float32Array, rows: number, which: 'q' | 'k', normed: boolean): Promise<Float32Array> {
  const nh = which === 'q' ? spec.numHeads : spec.numKvHeads;
  const d = spec.headDim;
  const y = new Float32Array(rows * nh * d);
  const b = w.tensors[`self_attn.${which}_proj.bias`]?.data ?? null;
  await native.linearAsync(x, w.tensors[`self_attn.${which}_proj.weight`].data, y, { rows, inDim: spec.hiddenSize, outDim: nh * d, bias: b });
  if (normed) await native.rmsNormAsync(y, w.tensors[`self_attn.${which}_norm.weight`].data, y, { rows: rows * nh, dim: d, eps: spec.rmsNormEps });
  return y;
}

/** Part 1: approximation-only errors per layer and method. */
async function approximationErrors(dir: string, methods: QkNormMethod[], calibSeq: number, calibN: number, heldN: number) {
  const spec = await loadModelSpec(dir);
  const tok = await loadTokenizer(dir);
  const trainIds = Int32Array.from(tok.encode(readFileSync(TRAIN, 'utf8').slice(0, 4_000_000)));
  const evalIds = Int32Array.from(tok.encode(readFileSync(EVAL, 'utf8')));
  const xStat = await layerInputs(dir, trainIds, calibN, calibSeq);
  const xHeld = await layerInputs(dir, evalIds, heldN, calibSeq);
  const ckpt = await Checkpoint.open(dir);
  const plain: ModelSpec = { ...spec, qkNorm: false };
  const rows: Record<string, unknown>[] = [];
  try {
    for (let l = 0; l < spec.numLayers; l++) {
      const w = await loadLayerWeights(ckpt, spec, l);
      const acc = new MomentAccumulator(spec.hiddenSize);
      acc.add(xStat[l], calibN * calibSeq);
      const m = acc.moments();
      const ref = await attentionForward(spec, w, xHeld[l], heldN, calibSeq);
      const hr = heldN * calibSeq;
      const qRef = await heads(spec, w, xHeld[l], hr, 'q', true);
      const kRef = await heads(spec, w, xHeld[l], hr, 'k', true);
      const row: Record<string, unknown> = { layer: l };
      for (const method of methods) {
        const f = await foldQkNorm(spec, w, m, xStat[l], calibN * calibSeq, method);
        const fw = foldedLayer(w, f);
        const out = await attentionForward(plain, fw, xHeld[l], heldN, calibSeq);
        row[method] = {
          attnRelError: relativeError(out, ref),
          qRelError: relativeError(await heads(spec, fw, xHeld[l], hr, 'q', false), qRef),
          kRelError: relativeError(await heads(spec, fw, xHeld[l], hr, 'k', false), kRef),
        };
      }
      // the norms dropped (raw q/k projections): how much they matter
      row.ignored = { attnRelError: relativeError(await attentionForward(plain, w, xHeld[l], heldN, calibSeq), ref) };
      rows.push(row);
      console.log(JSON.stringify(row));
    }
  } finally {
    await ckpt.close();
  }
  return rows;
}

/** Part 2: convert at each budget with each method and evaluate at each context length. */
async function endToEnd(dir: string, methods: QkNormMethod[], ranks: number[], seqs: number[], windows: number[], calibSeq: number, calibN: number) {
  const calibText = readFileSync(TRAIN, 'utf8').slice(0, 4_000_000);
  const tmp = mkdtempSync(join(tmpdir(), 'qknorm-ablation-'));
  const out: Record<string, unknown>[] = [];
  const original: Record<number, number> = {};
  for (const [i, seq] of seqs.entries()) original[seq] = (await evalPpl({ modelDir: dir, textFile: EVAL, seq, windows: windows[i] })).ppl;
  console.log(JSON.stringify({ original }));
  try {
    for (const method of methods) {
      const o = join(tmp, method);
      const t0 = Date.now();
      const sw = await convertSweep({ modelDir: dir, outDir: o, calibText, calibSamples: calibN, calibSeqlen: calibSeq, heldOutSamples: 4, kvLoraRanks: ranks, qkRopeDims: [32], device: 'cpu', qkNorm: method });
      const convertSeconds = (Date.now() - t0) / 1000;
      for (const b of sw.budgets) {
        const row: Record<string, unknown> = { rank: b.kvLoraRank, method, convertSeconds, layerAttnRelError: b.report.layers.map((x) => x.attnRelError) };
        for (const [i, seq] of seqs.entries()) {
          const p = (await evalPpl({ modelDir: b.dir, textFile: EVAL, seq, windows: windows[i] })).ppl;
          row[`ppl@${seq}`] = p;
          row[`pplRatio@${seq}`] = p / original[seq];
        }
        out.push(row);
        console.log(JSON.stringify(row));
      }
      rmSync(o, { recursive: true, force: true });
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return { original, runs: out };
}

const [dir, outFile] = process.argv.slice(2);
const methods = arg('--methods', QK_NORM_METHODS.join(',')).split(',') as QkNormMethod[];
const calibSeq = Number(arg('--calib-seqlen', '512'));
const calibN = Number(arg('--calib-samples', '16'));
const approximation = await approximationErrors(dir, methods, calibSeq, calibN, 4);
const e2e = process.argv.includes('--no-convert')
  ? null
  : await endToEnd(dir, methods, nums(arg('--ranks', '64,128')), nums(arg('--seqs', '512,2048')), nums(arg('--windows', '8,4')), calibSeq, calibN);
writeFileSync(outFile, `${JSON.stringify({ model: dir, calibSeq, calibN, approximation, endToEnd: e2e }, null, 1)}\n`);
