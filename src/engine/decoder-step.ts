/**
 * What the incremental decoders (GqaDecoder over a KV cache, MlaDecoder over the latent cache)
 * share: the end tensors they keep resident, and one step through the decoder layers with
 * the attention left to the caller (it reads and extends that decoder's cache).
 *
 * Invariant: for the same weights and attention, the logits equal the layer-streamed prefill
 * engine's (input norm, attention, post-attention norm, SwiGLU MLP per layer; final norm; lm_head).
 */
import { GqaError } from '../errors.js';
import type { ModelSpec } from '../model/spec-types.js';
import { native } from '../native/binding.js';
import { mlpInto } from './layer.js';
import { EMBED_NAME, NORM_NAME, readLmHead } from './model.js';
import { type LayerWeights, req, type TensorSource } from './weights.js';
import type { Workspace } from './workspace.js';

/** The embedding table, final norm and lm_head of a checkpoint, checked against the spec. */
export interface EndTensors {
  embed: Float32Array;
  norm: Float32Array;
  head: Float32Array;
}

/** Reads the {@link EndTensors} (a tied lm_head is the embedding table, read once). */
export async function readEndTensors(source: TensorSource, spec: ModelSpec): Promise<EndTensors> {
  const H = spec.hiddenSize;
  if (!source.has(NORM_NAME)) throw new GqaError('ERR_TENSOR_MISSING', `tensor ${NORM_NAME} is missing from the checkpoint`);
  const norm = await source.read(NORM_NAME);
  if (norm.length !== H) throw new GqaError('ERR_TENSOR_SHAPE', `tensor ${NORM_NAME} has ${norm.length} elements, expected ${H}`);
  const head = await readLmHead(source, spec);
  if (!source.has(EMBED_NAME)) throw new GqaError('ERR_TENSOR_MISSING', `tensor ${EMBED_NAME} is missing from the checkpoint`);
  const embed = spec.tieWordEmbeddings || !source.has('lm_head.weight') ? head : await source.read(EMBED_NAME);
  if (embed.length !== spec.vocabSize * H) throw new GqaError('ERR_TENSOR_SHAPE', `tensor ${EMBED_NAME} has ${embed.length} elements, expected ${spec.vocabSize * H}`);
  return { embed, norm, head };
}

/** Throws a usage GqaError naming the first id outside [0, vocab). */
export function checkTokenIds(ids: Int32Array, vocab: number): void {
  for (let i = 0; i < ids.length; i++)
    if (!Number.isInteger(ids[i]) || ids[i] < 0 || ids[i] >= vocab) throw new GqaError('ERR_TOKEN_ID', `token id ${ids[i]} at ${i} is outside the vocabulary [0, ${vocab})`, 'usage');
}

/** One decoding step's inputs: `attention` adds layer L's attention of the normalised rows `xn` into `h`. */
export interface DecoderStep<L extends { w: LayerWeights }> {
  spec: ModelSpec;
  ws: Workspace;
  end: EndTensors;
  layers: L[];
  ids: Int32Array;
  attention: (layer: L, xn: Float32Array, h: Float32Array) => Promise<void>;
}

/** Runs `ids` (already checked) through every layer and returns their logits [n, vocab]. */
export async function decodeThroughLayers<L extends { w: LayerWeights }>(s: DecoderStep<L>): Promise<Float32Array> {
  const { spec, ws, end, ids } = s;
  const n = ids.length;
  const H = spec.hiddenSize;
  const eps = spec.rmsNormEps;
  const h = new Float32Array(n * H);
  await native.embedGatherAsync(end.embed, ids, h, H);
  const xn = ws.get('xn', n * H);
  for (const L of s.layers) {
    await native.rmsNormAsync(h, req(L.w, 'input_layernorm.weight', H), xn, { rows: n, dim: H, eps });
    await s.attention(L, xn, h);
    await native.rmsNormAsync(h, req(L.w, 'post_attention_layernorm.weight', H), xn, { rows: n, dim: H, eps });
    await mlpInto(spec, L.w, xn, n, h, ws);
  }
  await native.rmsNormAsync(h, end.norm, xn, { rows: n, dim: H, eps });
  const logits = new Float32Array(n * spec.vocabSize);
  await native.linearAsync(xn, end.head, logits, { rows: n, inDim: H, outDim: spec.vocabSize });
  return logits;
}
