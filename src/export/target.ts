/**
 * The export step of a conversion per `--target` (the call sites in convert.ts are marked
 * `[export: portable]`): 'transformers' writes the conversion's tensors and config as they
 * are; 'portable' (portable.ts) rewrites them for the stock engines.
 */
import type { ExportTarget } from '../convert/options.js';
import type { OutTensor } from '../tensor/out-tensor.js';
import type { ModelSpec } from '../model/spec-types.js';
import { mlaDimsOf, portableConfig, portableLayerTensors, type PortableReport, untiedLmHead } from './portable.js';

/** One written layer's tensors for `target`. */
export function exportLayerTensors(target: ExportTarget, config: Record<string, unknown>, tensors: OutTensor[]): OutTensor[] {
  return target === 'portable' ? portableLayerTensors(tensors, mlaDimsOf(config)) : tensors;
}

/**
 * The final shard's tensors (model.norm and, untied sources, lm_head): the portable target
 * adds lm_head.weight for a tied source (a copy of the embedding: the engines never tie).
 */
export async function exportFinalTensors(target: ExportTarget, source: ModelSpec, last: OutTensor[], embedding: () => Promise<OutTensor>): Promise<OutTensor[]> {
  if (target !== 'portable' || !source.tieWordEmbeddings) return last;
  return [...last, untiedLmHead(await embedding())];
}

/** config.json to write for `target`, and the portable report block (null for 'transformers'). */
export function exportConfig(target: ExportTarget, config: Record<string, unknown>, source: ModelSpec): { config: Record<string, unknown>; report: PortableReport | null } {
  if (target !== 'portable') return { config, report: null };
  return portableConfig(config, source);
}
