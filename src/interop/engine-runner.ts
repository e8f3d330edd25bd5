/**
 * gqa2mla's engine computing what a stock engine computes from a directory: the engine's
 * view (engine-semantics.ts) as the spec, its ignored tensors hidden from the reader.
 */
import { Checkpoint } from '../checkpoint/checkpoint.js';
import { GqaError } from '../errors.js';
import { ModelRunner } from '../engine/model.js';
import { loadModelSpec } from '../model/spec.js';
import { type EngineName, type EngineView, engineView, type TensorFacts } from './engine-semantics.js';

/** Names and all-zero bias tensors of an open checkpoint. */
export async function tensorFacts(ckpt: Checkpoint): Promise<TensorFacts> {
  const names = new Set(ckpt.names());
  const zero = new Set<string>();
  for (const n of names)
    if (n.endsWith('.bias')) {
      const v = await ckpt.read(n);
      if (v.every((x) => x === 0)) zero.add(n);
    }
  return { names, zero };
}

/** `engine`'s view of directory `dir`. */
export async function viewOf(dir: string, engine: EngineName): Promise<EngineView> {
  const spec = await loadModelSpec(dir);
  const ckpt = await Checkpoint.open(dir);
  try {
    return engineView(engine, spec.raw, await tensorFacts(ckpt));
  } finally {
    await ckpt.close();
  }
}

/**
 * A runner that computes what `engine` computes from `dir`; throws ERR_ENGINE_LOAD (naming the
 * problems) when the engine would not load the directory.
 */
export async function openEngineRunner(dir: string, engine: EngineName): Promise<{ runner: ModelRunner; view: EngineView }> {
  const view = await viewOf(dir, engine);
  const load = view.problems.filter((p) => p.effect === 'load');
  if (!view.spec || load.length)
    throw new GqaError('ERR_ENGINE_LOAD', `${engine} would not load ${dir}: ${load.map((p) => p.message).join('; ') || 'no spec'}`, 'input');
  const ckpt = await Checkpoint.open(dir);
  const hidden = new Set(view.ignored);
  const source = {
    has: (n: string) => !hidden.has(n) && ckpt.has(n),
    read: (n: string, into?: Float32Array) => ckpt.read(n, into),
    close: () => ckpt.close(),
  };
  return { runner: new ModelRunner(source, view.spec), view };
}
