/**
 * Writes a synthetic Llama-architecture checkpoint (config.json, one bf16 model.safetensors,
 * tokenizer files copied from a fixture) with seeded random weights, for memory tests and
 * benchmarks of the forward engine. Tensors are generated and written one at a time, so
 * writing never holds the whole model in memory.
 */
import { closeSync, copyFileSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** Shape of the synthetic model. */
export interface SyntheticModelOptions {
  layers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediate: number;
  vocab: number;
  /** std of the random linear weights (default 0.02) */
  std?: number;
  seed?: number;
  tieWordEmbeddings?: boolean;
  ropeTheta?: number;
  /** fixture whose tokenizer.json / tokenizer_config.json are copied (vocabulary must fit) */
  tokenizerFrom?: string;
}

function tensorList(o: SyntheticModelOptions): { name: string; shape: number[]; kind: 'linear' | 'norm' }[] {
  const t: { name: string; shape: number[]; kind: 'linear' | 'norm' }[] = [{ name: 'model.embed_tokens.weight', shape: [o.vocab, o.hidden], kind: 'linear' }];
  for (let l = 0; l < o.layers; l++) {
    const p = `model.layers.${l}.`;
    t.push(
      { name: `${p}input_layernorm.weight`, shape: [o.hidden], kind: 'norm' },
      { name: `${p}self_attn.q_proj.weight`, shape: [o.heads * o.headDim, o.hidden], kind: 'linear' },
      { name: `${p}self_attn.k_proj.weight`, shape: [o.kvHeads * o.headDim, o.hidden], kind: 'linear' },
      { name: `${p}self_attn.v_proj.weight`, shape: [o.kvHeads * o.headDim, o.hidden], kind: 'linear' },
      { name: `${p}self_attn.o_proj.weight`, shape: [o.hidden, o.heads * o.headDim], kind: 'linear' },
      { name: `${p}post_attention_layernorm.weight`, shape: [o.hidden], kind: 'norm' },
      { name: `${p}mlp.gate_proj.weight`, shape: [o.intermediate, o.hidden], kind: 'linear' },
      { name: `${p}mlp.up_proj.weight`, shape: [o.intermediate, o.hidden], kind: 'linear' },
      { name: `${p}mlp.down_proj.weight`, shape: [o.hidden, o.intermediate], kind: 'linear' },
    );
  }
  t.push({ name: 'model.norm.weight', shape: [o.hidden], kind: 'norm' });
  if (o.tieWordEmbeddings === false) t.push({ name: 'lm_head.weight', shape: [o.vocab, o.hidden], kind: 'linear' });
  return t;
}

/** bf16 bits (round to nearest even) of normal(0, std) samples, or 1 +- 0.1 normal for norms. */
function randomBf16(n: number, kind: 'linear' | 'norm', std: number, state: { s: number }): Uint16Array {
  const out = new Uint16Array(n);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  const next = () => {
    state.s = (Math.imul(state.s, 1664525) + 1013904223) >>> 0;
    return (state.s + 0.5) / 4294967296;
  };
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(next()));
    const th = 2 * Math.PI * next();
    for (let k = 0; k < 2 && i + k < n; k++) {
      const z = r * (k === 0 ? Math.cos(th) : Math.sin(th));
      f[0] = kind === 'norm' ? 1 + 0.1 * z : std * z;
      const b = u[0];
      out[i + k] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
    }
  }
  return out;
}

/** Writes the model into `dir` (created if needed); returns the weight file's size in bytes. */
export async function writeSyntheticModel(dir: string, o: SyntheticModelOptions): Promise<number> {
  mkdirSync(dir, { recursive: true });
  const tensors = tensorList(o);
  const header: Record<string, unknown> = { __metadata__: { format: 'pt', generator: 'gqa2mla synthetic-model' } };
  let off = 0;
  for (const t of tensors) {
    const bytes = t.shape.reduce((a, b) => a * b, 1) * 2;
    header[t.name] = { dtype: 'BF16', shape: t.shape, data_offsets: [off, off + bytes] };
    off += bytes;
  }
  let json = JSON.stringify(header);
  while ((json.length + 8) % 8 !== 0) json += ' ';
  const fd = openSync(join(dir, 'model.safetensors'), 'w');
  try {
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    writeSync(fd, len);
    writeSync(fd, Buffer.from(json, 'utf8'));
    const state = { s: (o.seed ?? 1) >>> 0 };
    for (const t of tensors) {
      const data = randomBf16(
        t.shape.reduce((a, b) => a * b, 1),
        t.kind,
        o.std ?? 0.02,
        state,
      );
      writeSync(fd, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    }
  } finally {
    closeSync(fd);
  }
  const config = {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    hidden_size: o.hidden,
    intermediate_size: o.intermediate,
    num_hidden_layers: o.layers,
    num_attention_heads: o.heads,
    num_key_value_heads: o.kvHeads,
    head_dim: o.headDim,
    vocab_size: o.vocab,
    max_position_embeddings: 2048,
    rms_norm_eps: 1e-5,
    hidden_act: 'silu',
    attention_bias: false,
    mlp_bias: false,
    tie_word_embeddings: o.tieWordEmbeddings !== false,
    rope_parameters: { rope_type: 'default', rope_theta: o.ropeTheta ?? 10000 },
    bos_token_id: 0,
    eos_token_id: 0,
    dtype: 'bfloat16',
  };
  await writeFile(join(dir, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  if (o.tokenizerFrom) for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(o.tokenizerFrom, f), join(dir, f));
  return 8 + json.length + off;
}
