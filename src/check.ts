/**
 * `gqa2mla check`: for a DeepSeek-V3 directory, whether each stock engine loads it, whether it
 * computes what gqa2mla's engine computes (and every reason why not), whether its
 * mixture-of-experts gate routes as gqa2mla does (MoE outputs, e.g. converted Mixtral), and
 * which of its fast MLA attention backends accept the budget (kv_lora_rank + qk_rope_head_dim).
 */
import { Checkpoint } from './checkpoint/checkpoint.js';
import { GqaError } from './errors.js';
import { parseModelSpec, readConfigJson } from './model/spec.js';
import type { ModelSpec, MoeRouting } from './model/spec-types.js';
import { ENGINES, type EngineName, type EngineProblem, engineView, ropeDifference, routingDifference } from './interop/engine-semantics.js';
import { tensorFacts } from './interop/engine-runner.js';

/** Whether one attention backend of an engine takes the budget. */
export interface BackendVerdict {
  backend: string;
  /** null: not known from the sources read (docs/engines.md) */
  accepts: boolean | null;
  note: string;
}

/** Whether an engine's MoE gate computes the routing gqa2mla computes (the source's, for a converted Mixtral or Qwen3-MoE). */
export interface RoutingVerdict {
  /** the gate gqa2mla's engine computes from the config */
  ours: MoeRouting;
  /** the gate the engine computes */
  engine: MoeRouting;
  exact: boolean;
  /** what differs, in words */
  differences: string[];
}

/** One engine's verdict. */
export interface EngineVerdict {
  engine: EngineName;
  loads: boolean;
  computesSame: boolean;
  problems: EngineProblem[];
  /** largest relative differences of rope frequencies, cos/sin factor and softmax scale (null: not comparable) */
  rope: { freq: number; cosSin: number; softmax: number } | null;
  /** the MoE routing verdict (null: a dense directory, or a spec that could not be built) */
  routing: RoutingVerdict | null;
  backends: BackendVerdict[];
}

/** The result of {@link checkDirectory} (the `--json` output). */
export interface CheckResult {
  dir: string;
  budget: { kvLoraRank: number; qkRopeDim: number; cacheHeadSize: number } | null;
  engines: EngineVerdict[];
  /** every checked engine loads the directory and computes what gqa2mla computes */
  ok: boolean;
  /** why gqa2mla's own engine refuses the directory (then nothing computes "what gqa2mla computes") */
  gqa2mlaRefuses?: string;
}

/** vLLM head sizes of the MLA backends built on MLACommonBackend (read at the commit in docs/engines.md). */
export const VLLM_MLA_HEAD_SIZES = [320, 576];

/**
 * The fast MLA backends of `engine` that accept a budget. Exported for `plan` (one column per
 * budget): the cache head size is kv_lora_rank + qk_rope_head_dim.
 */
export function mlaBackends(engine: EngineName, kvLoraRank: number, qkRopeDim: number): BackendVerdict[] {
  const size = kvLoraRank + qkRopeDim;
  if (engine === 'vllm')
    return [
      { backend: 'MLA backends (TRITON_MLA, FLASHMLA, CUTLASS_MLA, FLASHINFER_MLA, ...)', accepts: VLLM_MLA_HEAD_SIZES.includes(size), note: `MLACommonBackend head sizes ${VLLM_MLA_HEAD_SIZES.join(', ')}; this budget's ${size}` },
      { backend: 'FLASHMLA kernel', accepts: size === 576, note: 'the FlashMLA kernel is built for 512 + 64 (not re-read here)' },
      { backend: 'VLLM_MLA_DISABLE=1 (expanded K/V cache)', accepts: true, note: 'any size; stores per-head keys and values, losing the latent cache' },
    ];
  if (engine === 'sglang')
    return [
      { backend: 'triton MLA', accepts: null, note: 'reported to take other sizes; not read in the sources (docs/engines.md)' },
      { backend: 'flashmla / cutlass_mla / trtllm_mla', accepts: size === 576 ? true : null, note: 'built for 512 + 64; other sizes not read in the sources' },
    ];
  return [{ backend: 'eager / sdpa (no latent cache kernel)', accepts: true, note: 'computes per-head keys and values' }];
}

function verdict(engine: EngineName, raw: Record<string, unknown>, facts: Awaited<ReturnType<typeof tensorFacts>>, ours: ModelSpec | null): EngineVerdict {
  const view = engineView(engine, raw, facts);
  const problems = [...view.problems];
  const rope = view.spec && ours ? ropeDifference(ours, view.spec) : null;
  if (rope && (rope.freq > 1e-6 || rope.cosSin > 1e-6 || rope.softmax > 1e-6))
    problems.push({
      code: 'rope-frequencies',
      effect: 'compute',
      message: `the engine's rope differs: frequencies up to ${rope.freq.toExponential(2)} relative, cos/sin factor ${rope.cosSin.toExponential(2)}, softmax scale ${rope.softmax.toExponential(2)}`,
    });
  const routing = ours?.moe && view.spec?.moe ? routingVerdict(ours.moe.routing, view.spec.moe.routing) : null;
  if (routing && !routing.exact) problems.push({ code: 'moe-routing', effect: 'compute', message: `the engine's MoE gate differs: ${routing.differences.join('; ')}` });
  return {
    engine,
    loads: view.spec !== null && !problems.some((p) => p.effect === 'load'),
    computesSame: view.spec !== null && ours !== null && problems.length === 0,
    problems,
    rope,
    routing,
    backends: mlaBackends(engine, raw.kv_lora_rank as number, raw.qk_rope_head_dim as number),
  };
}

function routingVerdict(ours: MoeRouting, engine: MoeRouting): RoutingVerdict {
  const differences = routingDifference(ours, engine);
  return { ours, engine, exact: differences.length === 0, differences };
}

/** One line of a gate: `softmax top-k, renormalised, factor 1`. */
function gateText(r: MoeRouting): string {
  const groups = r.nGroup > 1 ? `, ${r.topkGroup} of ${r.nGroup} groups` : '';
  return `${r.scoring}${r.correctionBias ? ' + correction bias' : ''}${groups}, ${r.normTopkProb ? 'renormalised' : 'not renormalised'}, factor ${r.routedScalingFactor}`;
}

/** Checks directory `dir` against `engines` (default all). */
export async function checkDirectory(dir: string, engines: readonly EngineName[] = ENGINES): Promise<CheckResult> {
  const { config: raw, path } = await readConfigJson(dir);
  if (raw.model_type !== 'deepseek_v3')
    throw new GqaError('ERR_MODEL_TYPE', `${dir} is a ${String(raw.model_type)} checkpoint, not DeepSeek-V3 (MLA): nothing to check`, 'input');
  // gqa2mla's own reading (null when its engine refuses the directory, e.g. shared experts)
  let ours: ModelSpec | null = null;
  let refusal: string | null = null;
  try {
    ours = parseModelSpec(raw, path);
  } catch (e) {
    refusal = (e as Error).message;
  }
  const ckpt = await Checkpoint.open(dir);
  let facts;
  try {
    facts = await tensorFacts(ckpt);
  } finally {
    await ckpt.close();
  }
  const verdicts = engines.map((e) => verdict(e, raw, facts, ours));
  const R = raw.kv_lora_rank as number;
  const r = raw.qk_rope_head_dim as number;
  return {
    dir,
    budget: Number.isInteger(R) && Number.isInteger(r) ? { kvLoraRank: R, qkRopeDim: r, cacheHeadSize: R + r } : null,
    engines: verdicts,
    ok: verdicts.every((v) => v.loads && v.computesSame),
    ...(refusal ? { gqa2mlaRefuses: refusal } : {}),
  };
}

/** Human-readable form of a {@link CheckResult}. */
export function formatCheck(r: CheckResult): string {
  const yn = (b: boolean | null) => (b === null ? '?' : b ? 'yes' : 'no');
  const lines = [`${r.dir}: kv_lora_rank ${r.budget?.kvLoraRank} + qk_rope_head_dim ${r.budget?.qkRopeDim} = cache head size ${r.budget?.cacheHeadSize}`];
  for (const v of r.engines) {
    lines.push(`${v.engine}: loads ${yn(v.loads)}; computes what gqa2mla computes: ${yn(v.computesSame)}`);
    if (v.routing) lines.push(`  MoE routing: ${v.routing.exact ? 'exact' : 'NOT exact'} (engine: ${gateText(v.routing.engine)}; gqa2mla: ${gateText(v.routing.ours)})`);
    for (const p of v.problems) lines.push(`  - [${p.effect}] ${p.code}: ${p.message}`);
    for (const b of v.backends) lines.push(`  backend ${b.backend}: ${yn(b.accepts)} (${b.note})`);
  }
  if (r.gqa2mlaRefuses) lines.push(`gqa2mla's engine refuses it: ${r.gqa2mlaRefuses}`);
  lines.push(r.ok ? 'ok: every engine computes what gqa2mla computes' : 'NOT ok: see the problems above');
  return `${lines.join('\n')}\n`;
}
