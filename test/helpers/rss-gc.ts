/**
 * Garbage collection on demand for the memory tests' child processes: their peak RSS
 * should measure what a run keeps alive, not when V8 happens to collect garbage (external
 * ArrayBuffer memory can wait tens of MB for a collection). `collect()` runs a full
 * collection; the children call it at each progress event (once per layer and stage).
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** Runs a full garbage collection. */
export function collect(): void {
  gc();
}
