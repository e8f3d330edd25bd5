/**
 * gqa2mla's Node API. Each line re-exports one feature's public surface.
 */
export { GqaError, usageError, type ErrorKind } from './errors.js';
export type { ModelSpec, RopeSpec, MlaSpec } from './model/spec-types.js';
export { computeRope, modelRope, ropeDimOf, mlaSoftmaxScale, type RopeTables, type RopeContext } from './model/rope.js';
export * from './engine/index.js';
export { loadTokenizer, type ModelTokenizer } from './tokenize.js';
export { evalPpl, type EvalPplOptions, type PplResult, type PplProgress } from './eval/ppl.js';
