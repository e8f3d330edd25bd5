import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Checkpoint } from '../src/checkpoint/checkpoint.js';
import { ModelRunner, embedTokens, finalNll, layerPrefix, loadLayerWeights, readLmHead, type TensorSource } from '../src/engine/index.js';
import { loadModelSpec } from '../src/model/spec.js';
import { native } from '../src/native/binding.js';
import { loadTokenizer } from '../src/tokenize.js';

const fixtures = new URL('./fixtures/', import.meta.url).pathname;
const evalText = readFileSync(join(fixtures, 'pydocs-eval.txt'), 'utf8');

interface Reference {
  window0: { nll_first64: number[]; top5_pos0: number[]; logits_pos0_first8: number[] };
  hidden_states_window0: { layer_output: number; mean: number; rms: number }[];
}

function stats(a: Float32Array): { mean: number; rms: number } {
  let s = 0;
  let q = 0;
  for (const v of a) {
    s += v;
    q += v * v;
  }
  return { mean: s / a.length, rms: Math.sqrt(q / a.length) };
}

/** Records every tensor read (name, order) of a source. */
class Recording implements TensorSource {
  reads: string[] = [];
  constructor(private readonly inner: Checkpoint) {}
  has(n: string) {
    return this.inner.has(n);
  }
  read(n: string) {
    this.reads.push(n);
    return this.inner.read(n);
  }
}

describe.each(['tiny-llama-gqa', 'tiny-qwen2-gqa'])('layer-streamed model on %s vs PyTorch reference', (name) => {
  const dir = join(fixtures, name);
  const ref = JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8')) as Reference;

  test('residual stream statistics after each layer, logits and NLL at the start of window 0', async () => {
    const spec = await loadModelSpec(dir);
    const ckpt = await Checkpoint.open(dir);
    try {
      const rec = new Recording(ckpt);
      const runner = new ModelRunner(rec, spec);
      const ids = (await loadTokenizer(dir)).encode(evalText).slice(0, 512);
      const seen: { mean: number; rms: number }[] = [];
      const steps: string[] = [];
      const emb = await embedTokens(ckpt, spec, ids);
      seen.push(stats(emb));
      const h = await runner.forward(ids, 1, 512, {
        onLayerOutput: (_l, hs) => void seen.push(stats(hs)),
        onStep: (s) => void steps.push(`${s.stage}${s.layer ?? ''}:${s.done}/${s.total}`),
      });
      expect(steps).toEqual(['embed:1/5', 'layer0:2/5', 'layer1:3/5', 'layer2:4/5', 'layer3:5/5']);
      // transformers' hidden_states: embeddings, then each layer's output (the last one after the final norm)
      for (let l = 0; l < 4; l++) {
        const r = ref.hidden_states_window0[l];
        expect(r.layer_output).toBe(l);
        expect(Math.abs(seen[l].rms - r.rms) / r.rms).toBeLessThan(1e-4);
        expect(Math.abs(seen[l].mean - r.mean)).toBeLessThan(1e-4 * r.rms);
      }
      const H = spec.hiddenSize;
      const normed = new Float32Array(H);
      await native.rmsNormAsync(h.subarray(0, H), await ckpt.read('model.norm.weight'), normed, { rows: 1, dim: H, eps: spec.rmsNormEps });
      const last = ref.hidden_states_window0[4];
      const full = new Float32Array(512 * H);
      await native.rmsNormAsync(h, await ckpt.read('model.norm.weight'), full, { rows: 512, dim: H, eps: spec.rmsNormEps });
      expect(Math.abs(stats(full).rms - last.rms) / last.rms).toBeLessThan(1e-4);
      const logits = new Float32Array(spec.vocabSize);
      native.linear(normed, await readLmHead(ckpt, spec), logits, { rows: 1, inDim: H, outDim: spec.vocabSize });
      for (let i = 0; i < 8; i++) expect(Math.abs(logits[i] - ref.window0.logits_pos0_first8[i])).toBeLessThan(1e-3);
      const top5 = Array.from(logits.keys())
        .sort((a, b) => logits[b] - logits[a])
        .slice(0, 5);
      expect(top5).toEqual(ref.window0.top5_pos0);
      const nll = await finalNll(ckpt, spec, h, ids, 1, 512);
      for (let i = 0; i < 64; i++) expect(Math.abs(nll[i] - ref.window0.nll_first64[i])).toBeLessThan(2e-3);
      // streaming: the layers were read in order, each exactly once, one after the other
      const layerOf = (n: string) => (n.startsWith('model.layers.') ? Number(n.split('.')[2]) : -1);
      const order = rec.reads.map(layerOf).filter((l) => l >= 0);
      expect(order).toEqual([...order].sort((a, b) => a - b));
      for (let l = 0; l < 4; l++) {
        const names = rec.reads.filter((n) => n.startsWith(layerPrefix(l)));
        expect(new Set(names).size).toBe(names.length);
        expect(names.length).toBeGreaterThanOrEqual(9);
      }
    } finally {
      await ckpt.close();
    }
  });
});

describe('engine input checks', () => {
  const dir = join(fixtures, 'tiny-llama-gqa');

  test('loadLayerWeights names what is missing or mis-sized', async () => {
    const spec = await loadModelSpec(dir);
    const ckpt = await Checkpoint.open(dir);
    try {
      await expect(loadLayerWeights(ckpt, spec, 4)).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
      const w = await loadLayerWeights(ckpt, spec, 1);
      expect(w.tensors['self_attn.k_proj.weight'].shape).toEqual([128, 256]);
      expect(w.tensors['self_attn.q_proj.bias']).toBeUndefined();
      const without: TensorSource = { has: (n) => n !== 'model.layers.2.mlp.up_proj.weight' && ckpt.has(n), read: (n) => ckpt.read(n) };
      await expect(loadLayerWeights(without, spec, 2)).rejects.toMatchObject({
        code: 'ERR_TENSOR_MISSING',
        message: expect.stringContaining('model.layers.2.mlp.up_proj.weight'),
      });
      const wider = { ...spec, intermediateSize: 800 };
      await expect(loadLayerWeights(ckpt, wider, 0)).rejects.toMatchObject({ code: 'ERR_TENSOR_SHAPE', message: expect.stringContaining('model.layers.0.mlp') });
      await expect(embedTokens(ckpt, spec, new Int32Array([1, 4096]))).rejects.toMatchObject({ code: 'ERR_TOKEN_ID' });
    } finally {
      await ckpt.close();
    }
  });
});
