/**
 * What the engine's model holders (ModelRunner, GqaDecoder, MlaDecoder) share: opening a
 * model directory for them, and growing the caches they keep resident.
 */
import { Checkpoint } from '../checkpoint/checkpoint.js';
import { loadModelSpec } from '../model/spec.js';
import type { ModelSpec } from '../model/spec-types.js';

/**
 * Reads `<modelDir>/config.json`, opens the checkpoint and hands both to `build`; when
 * `build` fails the checkpoint is closed again and the error rethrown.
 */
export async function openModelDir<T>(modelDir: string, build: (ckpt: Checkpoint, spec: ModelSpec) => T | Promise<T>): Promise<T> {
  const spec = await loadModelSpec(modelDir);
  const ckpt = await Checkpoint.open(modelDir);
  try {
    return await build(ckpt, spec);
  } catch (e) {
    await ckpt.close();
    throw e;
  }
}

/** A zeroed array of `length` values that starts with a copy of `old` (a cache, grown). */
export function grown(old: Float32Array, length: number): Float32Array {
  const a = new Float32Array(length);
  a.set(old);
  return a;
}
