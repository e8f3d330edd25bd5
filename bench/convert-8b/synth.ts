/**
 * Writes a synthetic Llama-3-8B-shaped checkpoint (32 layers, hidden 4096, 32 query / 8 KV
 * heads of 128, intermediate 14336, vocab 128256, llama3 rope scaling, untied lm_head) as
 * sharded bf16 safetensors with an index, plus the tiny-llama fixture's tokenizer (its ids
 * all fit the vocabulary). Weights are uniform random with the std of a trained model's
 * projections (0.02), drawn on the GPU (decodeCuda.fillRandomBf16, one seed per tensor);
 * norm weights are 1 +- 0.1. Needs the CUDA build.
 *   tsx bench/convert-8b/synth.ts <dir> [--layers 32]
 */
import { closeSync, copyFileSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { native } from '../../src/native/binding.js';

const args = process.argv.slice(2);
const dir = args[0];
if (!dir) throw new Error('usage: tsx bench/convert-8b/synth.ts <dir> [--layers N]');
const li = args.indexOf('--layers');
const L = li >= 0 ? Number(args[li + 1]) : 32;
const H = 4096;
const nH = 32;
const G = 8;
const d = 128;
const I = 14336;
const V = 128256;
const STD = 0.02;
const SHARD_BYTES = 4.9e9;

const dc = native.decodeCuda;
if (!dc) throw new Error('synth.ts needs the CUDA build (decodeCuda)');

interface T {
  name: string;
  shape: number[];
  norm: boolean;
}
const tensors: T[] = [{ name: 'model.embed_tokens.weight', shape: [V, H], norm: false }];
for (let l = 0; l < L; l++) {
  const p = `model.layers.${l}.`;
  tensors.push(
    { name: `${p}input_layernorm.weight`, shape: [H], norm: true },
    { name: `${p}self_attn.q_proj.weight`, shape: [nH * d, H], norm: false },
    { name: `${p}self_attn.k_proj.weight`, shape: [G * d, H], norm: false },
    { name: `${p}self_attn.v_proj.weight`, shape: [G * d, H], norm: false },
    { name: `${p}self_attn.o_proj.weight`, shape: [H, nH * d], norm: false },
    { name: `${p}post_attention_layernorm.weight`, shape: [H], norm: true },
    { name: `${p}mlp.gate_proj.weight`, shape: [I, H], norm: false },
    { name: `${p}mlp.up_proj.weight`, shape: [I, H], norm: false },
    { name: `${p}mlp.down_proj.weight`, shape: [H, I], norm: false },
  );
}
tensors.push({ name: 'model.norm.weight', shape: [H], norm: true }, { name: 'lm_head.weight', shape: [V, H], norm: false });

const numel = (t: T) => t.shape.reduce((a, b) => a * b, 1);
// shards of consecutive tensors
const shards: T[][] = [[]];
let acc = 0;
for (const t of tensors) {
  const b = 2 * numel(t);
  if (acc + b > SHARD_BYTES && shards[shards.length - 1].length > 0) {
    shards.push([]);
    acc = 0;
  }
  shards[shards.length - 1].push(t);
  acc += b;
}

mkdirSync(dir, { recursive: true });
const t0 = performance.now();
const maxNumel = Math.max(...tensors.map(numel));
const devBuf = dc.alloc(2 * maxNumel);
const host = new Uint16Array(maxNumel);
const f = new Float32Array(1);
const u = new Uint32Array(f.buffer);
const weightMap: Record<string, string> = {};
let total = 0;
let seed = 1;
for (let s = 0; s < shards.length; s++) {
  const file = `model-${String(s + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`;
  const header: Record<string, unknown> = { __metadata__: { format: 'pt', generator: 'gqa2mla bench/convert-8b/synth.ts' } };
  let off = 0;
  for (const t of shards[s]) {
    const b = 2 * numel(t);
    header[t.name] = { dtype: 'BF16', shape: t.shape, data_offsets: [off, off + b] };
    off += b;
    weightMap[t.name] = file;
  }
  total += off;
  let json = JSON.stringify(header);
  while ((json.length + 8) % 8 !== 0) json += ' ';
  const fd = openSync(join(dir, file), 'w');
  try {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    writeSync(fd, len);
    writeSync(fd, Buffer.from(json, 'utf8'));
    for (const t of shards[s]) {
      const n = numel(t);
      const view = host.subarray(0, n);
      if (t.norm) {
        dc.fillRandomBf16(devBuf, n, seed++, 0.1);
        dc.download(devBuf, view);
        for (let i = 0; i < n; i++) {
          u[0] = view[i] << 16;
          f[0] = 1 + f[0];
          const bb = u[0];
          view[i] = (bb + 0x7fff + ((bb >>> 16) & 1)) >>> 16;
        }
      } else {
        dc.fillRandomBf16(devBuf, n, seed++, STD * Math.sqrt(3));
        dc.download(devBuf, view);
      }
      const bytes = new Uint8Array(view.buffer, 0, 2 * n);
      for (let o = 0; o < bytes.length; o += 1 << 30) writeSync(fd, bytes, o, Math.min(1 << 30, bytes.length - o));
    }
  } finally {
    closeSync(fd);
  }
}
dc.free(devBuf);
await writeFile(join(dir, 'model.safetensors.index.json'), `${JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2)}\n`);
const config = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  hidden_size: H,
  intermediate_size: I,
  num_hidden_layers: L,
  num_attention_heads: nH,
  num_key_value_heads: G,
  head_dim: d,
  vocab_size: V,
  max_position_embeddings: 131072,
  rms_norm_eps: 1e-5,
  hidden_act: 'silu',
  attention_bias: false,
  mlp_bias: false,
  tie_word_embeddings: false,
  rope_parameters: { rope_type: 'llama3', rope_theta: 500000, factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
  bos_token_id: 0,
  eos_token_id: 0,
  dtype: 'bfloat16',
};
await writeFile(join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
const fx = new URL('../../test/fixtures/tiny-llama-gqa', import.meta.url).pathname;
for (const name of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(fx, name), join(dir, name));
console.log(
  JSON.stringify({ dir, layers: L, shards: shards.length, bytes: total, params: total / 2, seconds: (performance.now() - t0) / 1000 }),
);
