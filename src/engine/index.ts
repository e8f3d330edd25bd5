/** The layer-streamed CPU engine: weights, attention (GQA and MLA), decoder layers, model passes. */
export { type WeightTensor, type LayerWeights, type TensorSource, layerPrefix, layerTensorSpecs, loadLayerWeights } from './weights.js';
export { Workspace } from './workspace.js';
export { attentionForward, attentionInto, slidingWindowOf, ropeFor, type AttentionIntoOptions } from './attention.js';
export { layerForward, mlpInto, type LayerHooks, type LayerForwardOptions, type MicroBatchInfo } from './layer.js';
export {
  ModelRunner,
  embedTokens,
  finalNll,
  readLmHead,
  type RunOptions,
  type RunStep,
  type RunnerOptions,
  type ClosableSource,
} from './model.js';
export { MlaDecoder, type MlaDecoderOptions } from './mla-decoder.js';
