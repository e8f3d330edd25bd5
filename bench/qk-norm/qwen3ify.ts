/**
 * Turns a trained llama checkpoint into a Qwen3-architecture stand-in for measuring the
 * q/k-norm approximations before a trained Qwen3 exists: every tensor copied, model_type
 * qwen3, and per layer q_norm / k_norm weights set to the measured RMS of the layer's query /
 * key heads (sqrt of the mean over heads, tokens and dims of y^2 on `windows` windows of the
 * training text), so the normed heads keep the original's average scale. It is NOT a trained
 * Qwen3: the norms were never trained with the rest of the weights.
 * Usage: npx tsx bench/qk-norm/qwen3ify.ts <llama-dir> <out-dir> [windows] [seq]
 */
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Checkpoint } from '../../src/checkpoint/checkpoint.js';
import { CheckpointWriter } from '../../src/checkpoint/safetensors-writer.js';
import { ModelRunner } from '../../src/engine/index.js';
import { native } from '../../src/native/binding.js';
import { loadTokenizer } from '../../src/tokenize.js';

const [src, out, win = '8', sq = '512'] = process.argv.slice(2);
const windows = Number(win);
const seq = Number(sq);
const runner = await ModelRunner.open(src);
const spec = runner.spec;
const ids = Int32Array.from((await loadTokenizer(src)).encode(readFileSync('test/fixtures/pydocs-train-3M.txt', 'utf8').slice(0, 2_000_000))).subarray(0, windows * seq);
const ckpt = await Checkpoint.open(src);
const { hiddenSize: H, numHeads: nH, numKvHeads: G, headDim: d } = spec;
const rms: { q: number; k: number }[] = [];
const acc = Array.from({ length: spec.numLayers }, () => ({ q: 0, k: 0, n: 0 }));
const weights = await Promise.all(Array.from({ length: spec.numLayers }, async (_, l) => ({ q: await ckpt.read(`model.layers.${l}.self_attn.q_proj.weight`), k: await ckpt.read(`model.layers.${l}.self_attn.k_proj.weight`) })));
await runner.forward(ids, windows, seq, {
  onAttnInput: async (l, x, info) => {
    const rows = info.nSeq * seq;
    for (const [p, n] of [['q', nH], ['k', G]] as const) {
      const y = new Float32Array(rows * n * d);
      await native.linearAsync(x.subarray(0, rows * H), weights[l][p], y, { rows, inDim: H, outDim: n * d });
      let s = 0;
      for (const v of y) s += v * v;
      acc[l][p] += s / (n * d);
    }
    acc[l].n += rows;
  },
});
for (const a of acc) rms.push({ q: Math.sqrt(a.q / a.n), k: Math.sqrt(a.k / a.n) });
const w = await CheckpointWriter.create(out, { overwrite: true });
for (const name of ckpt.names()) await w.add(name, ckpt.info(name).dtype, ckpt.info(name).shape, await ckpt.read(name));
for (let l = 0; l < spec.numLayers; l++) {
  await w.add(`model.layers.${l}.self_attn.q_norm.weight`, 'F32', [d], new Float32Array(d).fill(rms[l].q));
  await w.add(`model.layers.${l}.self_attn.k_norm.weight`, 'F32', [d], new Float32Array(d).fill(rms[l].k));
}
const cfg = { ...spec.raw, model_type: 'qwen3', architectures: ['Qwen3ForCausalLM'], attention_bias: false, head_dim: d, use_sliding_window: false, sliding_window: null };
await w.addFile('config.json', `${JSON.stringify(cfg, null, 2)}\n`);
await w.finish();
for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(src, f), join(out, f));
writeFileSync(join(out, 'qwen3ify.json'), `${JSON.stringify({ source: src, windows, seq, rms }, null, 1)}\n`);
await ckpt.close();
await runner.close();
console.log(JSON.stringify(rms));
