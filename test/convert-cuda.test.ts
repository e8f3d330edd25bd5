/**
 * CPU and CUDA conversions of both fixtures agree: every layer's held-out attention error
 * within 1e-3 (relative) of the other device's (device run 6 measured at most 9.6e-5), and
 * the converted models' perplexities within 0.5% (measured: 0.01% llama, 0.21% qwen2; the
 * qwen2 gap is larger than its layer gap suggests: see QWEN2_GAP below).
 * Skipped unless the addon was built with CUDA and a GPU answers.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { lastBackendInfo } from '../src/backend/select.js';
import { convert } from '../src/convert/convert.js';
import { evalPpl } from '../src/eval/ppl.js';
import { native } from '../src/native/binding.js';

/*
 * QWEN2_GAP: why qwen2's ppl gap between the devices (0.21%) is ~35x its layer gap, while
 * llama's is not. Hypothesis, from the code and measured on the CPU by perturbing a CPU
 * conversion (calibration 32 x 128, r64/p32, eval seq 256 x 16 windows, this machine):
 *  1. The per-layer error ||A' - A|| / ||A|| is nearly stationary at the factorization's
 *     optimum: a device difference d in the weights moves it at second order, the outputs and
 *     so the ppl at first order. The layer gap does not bound the model gap.
 *  2. The CUDA backend propagates the calibration hidden states with bf16-rounded operands
 *     (src/backend/cuda.ts), the CPU in float32: every layer after the first is calibrated on
 *     inputs that differ at bf16 level. Emulated on the CPU (a scratch build rounding the
 *     propagated hidden states to bf16): llama layer gap 1.1e-4 (CUDA run 6: 9.6e-5), ppl gap
 *     1.4e-5; qwen2 layer gap 1.4e-3, ppl gap 2.2e-2. A float32-level perturbation instead
 *     (OpenBLAS Sandybridge vs Haswell kernels) gives layer / ppl gaps of 4.1e-6 / 8.7e-6
 *     (llama) and 5.1e-6 / 2.5e-6 (qwen2): rounding at float32 level does not explain it.
 *  3. Qwen2-only amplifiers, both seen in that emulation: (a) its biases force the lossless
 *     q_lora_rank (257): a full-rank PCA of the query inputs, whose basis inside clusters of
 *     near-equal eigenvalues is arbitrary, so the perturbed statistics give another basis
 *     (q_a_proj 4-39%, q_b_proj 13% different) and q_a / q_b are each rounded to bf16 in it:
 *     the effective query map q_b diag(w) q_a differs by 0.15-0.23% (llama's q_proj: 0.01-0.04%)
 *     while those layers' errors differ by 2e-5 - 6e-5; (b) keep-if-lower decisions at near
 *     ties flip (layer 1's value refit: kept in one run only, kv_b_proj 17% different, layer
 *     error 1.4e-3 different). The bias paths (k/v through kv_a's bias) and the exact latent
 *     norm (bound 5e-7 on both devices) are exact and not involved.
 * Remedies (not in this test): a basis-free lossless q_lora (q_a a power-of-two multiple of
 * the identity plus the bias channel, q_b = q_proj / alpha: bit-exact in bf16); float32
 * operands in the CUDA propagation; device agreement judged on outputs, not error scalars.
 */
const cu = native.convertCuda;
const enabled = native.buildInfo().cuda && cu !== undefined && cu.available();
const suite = enabled ? describe : describe.skip;
const verbose = process.env.GQA2MLA_TEST_VERBOSE === '1';
const fixture = (name: string) => new URL(`./fixtures/${name}`, import.meta.url).pathname;
const calibFile = fixture('pydocs-train-3M.txt');
const evalFile = fixture('pydocs-eval.txt');

suite('convert: CUDA vs CPU on the fixtures', () => {
  const tmp = enabled ? mkdtempSync(join(tmpdir(), 'g2m-cuda-')) : '';
  afterAll(() => {
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  test.each(['tiny-llama-gqa', 'tiny-qwen2-gqa'])('%s: per-layer errors within 1e-3 relative, ppl within 0.5%', async (name) => {
    const base = { modelDir: fixture(name), calibFile, calibSamples: 32, calibSeqlen: 128, kvLoraRank: 64, qkRopeDim: 32, overwrite: true };
    const cpu = await convert({ ...base, outDir: join(tmp, `${name}-cpu`), device: 'cpu' });
    expect(lastBackendInfo()?.device).toBe('cpu');
    const gpu = await convert({ ...base, outDir: join(tmp, `${name}-cuda`), device: 'cuda' });
    const info = lastBackendInfo()!;
    expect(info.device).toBe('cuda');
    expect(info.stats.passthroughTensors).toBeGreaterThan(0);
    expect(gpu.layers.length).toBe(cpu.layers.length);
    const rel = gpu.layers.map((l, i) => Math.abs(l.attnRelError - cpu.layers[i].attnRelError) / cpu.layers[i].attnRelError);
    const [pc, pg] = await Promise.all(
      ['cpu', 'cuda'].map((d) => evalPpl({ modelDir: join(tmp, `${name}-${d}`), textFile: evalFile, seq: 256, windows: 16 })),
    );
    const pplRel = Math.abs(pg.ppl - pc.ppl) / pc.ppl;
    if (verbose)
      console.log(
        `${name}: layer errors cpu ${cpu.layers.map((l) => l.attnRelError.toFixed(4)).join(' ')} | cuda ${gpu.layers.map((l) => l.attnRelError.toFixed(4)).join(' ')} | max rel ${Math.max(...rel).toExponential(2)}; ppl cpu ${pc.ppl.toFixed(4)} cuda ${pg.ppl.toFixed(4)} rel ${pplRel.toExponential(2)}; times cpu ${cpu.times.total.toFixed(1)} s cuda ${gpu.times.total.toFixed(1)} s`,
      );
    for (const r of rel) expect(r).toBeLessThan(1e-3);
    expect(pplRel).toBeLessThan(0.005);
  });
});
