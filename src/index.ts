/**
 * gqa2mla's Node API. Each line re-exports one feature's public surface.
 */
export { GqaError, usageError, type ErrorKind } from './errors.js';
export type { ModelSpec, RopeSpec, MlaSpec } from './model/spec-types.js';
export { computeRope, modelRope, ropeDimOf, mlaSoftmaxScale, type RopeTables, type RopeContext } from './model/rope.js';
export * from './engine/index.js';
export { loadTokenizer, type ModelTokenizer } from './tokenize.js';
export { evalPpl, type EvalPplOptions, type PplResult, type PplProgress } from './eval/ppl.js';
export {
  mlaDecodeCpu,
  mlaDecodeCudaHost,
  gqaDecodeCudaHost,
  getDecodeCuda,
  cudaDecodeAvailable,
  f32ToBf16,
  bf16ToF32,
  type MlaDecodeCpuInput,
  type MlaDecodeCpuResult,
  type DecodeCudaHostInput,
  type DecodeCudaHostResult,
} from './decode.js';
export { convert, convertSweep, type ConvertOptions, type ConversionReport, type SweepOptions, type SweepResult, type Budget } from './convert/convert.js';
export type { ConvertProgress } from './convert/options.js';
export type { LayerReport, LatentNormReport, StageTimes } from './report-types.js';
export { compressQuery, losslessQLoraRank, type QueryCompression } from './convert/q-compress.js';
export { attachPpl, summarizeSweep, buildSweepSummary, type SweepSummary, type SweepRow } from './convert/sweep.js';
export { renderSweepHtml, writeSweepReportHtml, SWEEP_CHART_NAMES, type WrittenSweepReport } from './report/sweep-html.js';
export { readSweepSummary, SWEEP_JSON } from './report/read.js';
export { Checkpoint, INDEX_FILE, type CheckpointTensorInfo, type RawTensor } from './checkpoint/checkpoint.js';
export { SafetensorsFile, MAX_HEADER_BYTES, type TensorInfo } from './checkpoint/safetensors-reader.js';
export { CheckpointWriter, WRITER_JOURNAL, type WriterOptions, type WriterResult } from './checkpoint/safetensors-writer.js';
export { DTYPE_SIZE, toFloat32, encodeFloat32, floatBitsToBf16, floatBitsToHalf, halfBitsToFloat, numelOf, type Dtype } from './checkpoint/dtype.js';
export { loadModelSpec, parseModelSpec, parseRope, SUPPORTED_MODEL_TYPES, SUPPORTED_ROPE_TYPES } from './model/spec.js';
export { inspectModel, formatInspect, kvValuesPerTokenPerLayer, type InspectResult } from './cli/inspect.js';
export { renderReportHtml, writeReportHtml, REPORT_HTML, CHART_NAMES, chartsIn, kvContexts, type RenderOptions, type WrittenReport } from './report/html.js';
export { readConversionReport, validateConversionReport, REPORT_JSON } from './report/read.js';
export { kvBytesPerToken, kvGiBPerSequence, kvCacheRows, REPORT_CONTEXT_LENGTHS, type KvCacheRow } from './report/kv-cache.js';
export { plan, planForSpec, allowedFreqfolds, validQkRopeDims, type PlanOptions, type PlanRequest, type PlanResult, type PlanBudget, type KvCost } from './plan.js';
export { GqaDecoder } from './engine/gqa-decoder.js';
export { generate, decodeLoop, firstDivergence, type GenerateOptions, type GenerateResult, type GeneratedToken, type Decoder, type DecodeLoopInput, type DecodeRun } from './generate.js';
export { pickToken, seededRandom, argmax, type SamplingOptions } from './generate-sampling.js';
export { attachSamples, greedySamples, samplePrompts, type ReportSamples, type SampleItem, type SampleOptions } from './generate-samples.js';
export { verdictSection, samplesSection, enginesSection, pplRule, PPL_RULES, type ReportExtras, type EngineCheck, type ContextPpl, type NllBucket, type ReportSample } from './report/verdict.js';
