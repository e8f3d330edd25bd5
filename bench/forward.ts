/**
 * Throughput of `eval-ppl` (the layer-streamed CPU forward pass) on tiny-llama-gqa and on a
 * synthetic SmolLM-135M-shaped Llama (30 layers, hidden 576, 9 heads / 3 KV heads, head_dim
 * 64, intermediate 1536, vocab 49152, tied embeddings, seeded random bf16 weights written
 * by this script into a temporary directory), next to the sgemm GFLOP/s measured in the
 * same run at the shapes the models use. Prints a table and writes
 * bench/results/forward-cpu.json.
 *
 * FLOPs counted: 2 x (multiply-adds of every projection, MLP and lm_head over all
 * positions) + causal attention 4 x head_dim x seq(seq+1)/2 per head and window (QK^T and
 * PV). Norms, RoPE, softmax, SiLU and the log-softmax are not counted. Tokens/s counts the
 * tokens fed (windows x seq) over the forward time (first embedding to last NLL);
 * `seconds` includes tokenization and checkpoint reads.
 *
 * Run: `npm run bench:forward` [-- --windows N] (default 40 windows of 512 tokens).
 */
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { evalPpl } from '../src/eval/ppl.js';
import { loadModelSpec } from '../src/model/spec.js';
import type { ModelSpec } from '../src/model/spec-types.js';
import { native } from '../src/native/binding.js';
import { writeSyntheticModel } from '../test/helpers/synthetic-model.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const evalText = join(root, 'test', 'fixtures', 'pydocs-eval.txt');

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}

/** FLOPs of one eval-ppl pass over `windows` windows of `seq` tokens (see the module doc). */
export function forwardFlops(spec: ModelSpec, windows: number, seq: number): number {
  const H = spec.hiddenSize;
  const nH = spec.numHeads;
  const d = spec.headDim;
  const attnParams = H * nH * d * 2 + H * spec.numKvHeads * d * 2;
  const mlpParams = 3 * H * spec.intermediateSize;
  const tokens = windows * seq;
  const dense = 2 * tokens * (spec.numLayers * (attnParams + mlpParams) + spec.vocabSize * H);
  const attn = spec.numLayers * windows * nH * 4 * d * ((seq * (seq + 1)) / 2);
  return dense + attn;
}

/** Best-of-n GFLOP/s (wall) of native.linear (sgemm, x W^T) at rows x inDim -> outDim, and GFLOP per CPU-second of that run. */
function sgemmGflops(rows: number, inDim: number, outDim: number, reps = 7): { gflops: number; gflopPerCpuSecond: number } {
  const x = new Float32Array(rows * inDim).map((_, i) => Math.sin(i));
  const w = new Float32Array(outDim * inDim).map((_, i) => Math.cos(i) * 0.01);
  const y = new Float32Array(rows * outDim);
  native.linear(x, w, y, { rows, inDim, outDim });
  let best = Infinity;
  let bestCpu = Infinity;
  for (let r = 0; r < reps; r++) {
    const t = performance.now();
    const c0 = process.cpuUsage();
    native.linear(x, w, y, { rows, inDim, outDim });
    const c = process.cpuUsage(c0);
    best = Math.min(best, (performance.now() - t) / 1000);
    bestCpu = Math.min(bestCpu, (c.user + c.system) / 1e6);
  }
  const f = 2 * rows * inDim * outDim;
  return { gflops: f / best / 1e9, gflopPerCpuSecond: f / bestCpu / 1e9 };
}

interface ModelRow {
  model: string;
  layers: number;
  hidden: number;
  params: number;
  windows: number;
  seq: number;
  tokens: number;
  ppl: number;
  seconds: number;
  forwardSeconds: number;
  /** user + system CPU seconds of this process during the forward (all threads) */
  cpuSeconds: number;
  tokensPerSecond: number;
  gflop: number;
  gflopsAchieved: number;
  /** GFLOP per CPU-second: the kernels' efficiency regardless of other load on the cores */
  gflopPerCpuSecond: number;
  loadAverageAfter: number;
}

async function measure(name: string, dir: string, windows: number, seq: number): Promise<ModelRow> {
  const spec = await loadModelSpec(dir);
  let tStart = 0;
  let tEnd = 0;
  let cStart: NodeJS.CpuUsage = process.cpuUsage();
  let cpu = 0;
  const r = await evalPpl({
    modelDir: dir,
    textFile: evalText,
    seq,
    windows,
    onProgress: (p) => {
      if (p.stage === 'embed' && tStart === 0) {
        tStart = performance.now();
        cStart = process.cpuUsage();
      }
      if (p.stage === 'done') {
        tEnd = performance.now();
        const c = process.cpuUsage(cStart);
        cpu = (c.user + c.system) / 1e6;
      }
    },
  });
  const forwardSeconds = (tEnd - tStart) / 1000;
  const flops = forwardFlops(spec, r.windows, seq);
  const H = spec.hiddenSize;
  const params =
    spec.vocabSize * H * (spec.tieWordEmbeddings ? 1 : 2) +
    spec.numLayers * (2 * H + 2 * H * spec.numHeads * spec.headDim + 2 * H * spec.numKvHeads * spec.headDim + 3 * H * spec.intermediateSize) +
    H;
  return {
    model: name,
    layers: spec.numLayers,
    hidden: H,
    params,
    windows: r.windows,
    seq,
    tokens: r.windows * seq,
    ppl: r.ppl,
    seconds: r.seconds,
    forwardSeconds,
    cpuSeconds: cpu,
    tokensPerSecond: (r.windows * seq) / forwardSeconds,
    gflop: flops / 1e9,
    gflopsAchieved: flops / forwardSeconds / 1e9,
    gflopPerCpuSecond: flops / cpu / 1e9,
    loadAverageAfter: os.loadavg()[0],
  };
}

async function mainBench(): Promise<void> {
  const windows = arg('windows', 40);
  const seq = arg('seq', 512);
  const info = native.buildInfo();
  const machine = {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    threads: info.threads,
    blas: info.blasConfig,
    avx2: info.avx2,
    node: process.version,
    platform: `${os.platform()} ${os.release()}`,
    /** 1-minute load average at the start: other processes share these cores */
    loadAverage: os.loadavg()[0],
  };
  console.log(`machine: ${machine.cpu}, ${machine.cores} cores, ${machine.threads} kernel threads`);
  console.log(`BLAS: ${machine.blas}`);

  const sgemm = [
    { shape: 'tiny MLP 512x256 -> 768', rows: 512, inDim: 256, outDim: 768 },
    { shape: 'tiny lm_head 512x256 -> 4096', rows: 512, inDim: 256, outDim: 4096 },
    { shape: 'SmolLM MLP 2048x576 -> 1536', rows: 2048, inDim: 576, outDim: 1536 },
    { shape: 'SmolLM down 2048x1536 -> 576', rows: 2048, inDim: 1536, outDim: 576 },
  ].map((s) => ({ ...s, ...sgemmGflops(s.rows, s.inDim, s.outDim) }));
  console.log('\nsgemm (native.linear, best of 7):');
  for (const s of sgemm) console.log(`  ${s.shape.padEnd(32)} ${s.gflops.toFixed(1).padStart(7)} GFLOP/s  ${s.gflopPerCpuSecond.toFixed(1).padStart(7)} GFLOP/cpu-s`);

  const tmp = mkdtempSync(join(os.tmpdir(), 'g2m-bench-fwd-'));
  const rows: ModelRow[] = [];
  try {
    rows.push(await measure('tiny-llama-gqa', join(root, 'test', 'fixtures', 'tiny-llama-gqa'), windows, seq));
    const smol = join(tmp, 'smollm-135m-synthetic');
    const tw = performance.now();
    await writeSyntheticModel(smol, {
      layers: 30,
      hidden: 576,
      heads: 9,
      kvHeads: 3,
      headDim: 64,
      intermediate: 1536,
      vocab: 49152,
      seed: 135,
      tokenizerFrom: join(root, 'test', 'fixtures', 'tiny-llama-gqa'),
    });
    console.log(`\n(synthetic SmolLM-135M shape written in ${((performance.now() - tw) / 1000).toFixed(1)} s)`);
    rows.push(await measure('smollm-135m-synthetic', smol, windows, seq));
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }

  console.log(`\neval-ppl, ${windows} windows x ${seq} tokens:`);
  console.log('model                    layers  params(M)  tokens  fwd s   tokens/s  GFLOP  GFLOP/s  GFLOP/cpu-s   ppl');
  for (const r of rows)
    console.log(
      `${r.model.padEnd(24)} ${String(r.layers).padStart(6)} ${(r.params / 1e6).toFixed(1).padStart(10)} ${String(r.tokens).padStart(7)} ${r.forwardSeconds
        .toFixed(2)
        .padStart(6)} ${r.tokensPerSecond.toFixed(0).padStart(10)} ${r.gflop.toFixed(0).padStart(6)} ${r.gflopsAchieved.toFixed(1).padStart(8)} ${r.gflopPerCpuSecond.toFixed(1).padStart(11)} ${r.ppl.toFixed(3).padStart(9)}`,
    );

  const out = {
    bench: 'forward',
    date: new Date().toISOString(),
    machine,
    notes:
      'GFLOP/cpu-s divides by the CPU time of all threads of this process (kernel efficiency independent of other load; 2 threads busy = 2 cpu-s per second); ' +
      'eval-ppl protocol (tokens 1..seq-1 of each window scored); forwardSeconds = first embedding to last NLL; GFLOP counts projections, MLP, lm_head and causal attention matmuls only; synthetic model has random weights (its ppl is meaningless)',
    sgemm,
    models: rows,
  };
  const dir = join(root, 'bench', 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'forward-cpu.json'), `${JSON.stringify(out, null, 2)}\n`);
  console.log(`\nwrote bench/results/forward-cpu.json`);
}

await mainBench();
