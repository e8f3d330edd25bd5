/**
 * What stock engines compute from a DeepSeek-V3 directory, expressed over gqa2mla's engine:
 * for vLLM, SGLang and transformers, the config as the engine's DeepSeek code reads it (rotary
 * style, rope rewrite to deepseek_yarn with its mscale factors, latent norms always applied,
 * no bias tensors, never tied, its mixture-of-experts gate) and its loader's checks, as a ModelSpec plus the tensors it
 * ignores. Running gqa2mla's engine with that spec and without those tensors computes what the
 * engine computes (src/interop/engine-runner.ts); comparing with gqa2mla's own reading of the
 * directory names every difference (src/check.ts).
 *
 * The engine facts, and the commits they were read at, are in docs/engines.md.
 */
import { SWIGLU_PROJECTIONS } from '../engine/weights.js';
import { isMoeLayer, parseModelSpec } from '../model/spec.js';
import type { ModelSpec, MoeRouting } from '../model/spec-types.js';
import { modelRope, mlaSoftmaxScale } from '../model/rope.js';

/** Engines modelled here. */
export const ENGINES = ['vllm', 'sglang', 'transformers'] as const;
export type EngineName = (typeof ENGINES)[number];

/** One reason an engine does not load a directory or computes something else. */
export interface EngineProblem {
  code: string;
  /** 'load': the engine refuses or leaves weights uninitialised; 'compute': it loads and computes something else */
  effect: 'load' | 'compute';
  message: string;
}

/** What a directory's tensors look like, as far as the semantics need it. */
export interface TensorFacts {
  names: Set<string>;
  /** tensor names whose values are all zero (bias tensors only need to be checked) */
  zero: Set<string>;
}

/** An engine's reading of a directory. */
export interface EngineView {
  engine: EngineName;
  /** the config as the engine computes with it (null when it cannot be built) */
  config: Record<string, unknown> | null;
  spec: ModelSpec | null;
  /** tensors in the directory that the engine ignores */
  ignored: string[];
  problems: EngineProblem[];
}

const TORCH_DTYPES = new Set(['bfloat16', 'float16', 'float32', 'half', 'float', 'auto']);

/** yarn_get_mscale as the engines define it. */
export function yarnGetMscale(scale: number, mscale = 1): number {
  return scale <= 1 ? 1 : 0.1 * mscale * Math.log(scale) + 1;
}

/** Where rope settings come from in each engine. */
function ropeSource(engine: EngineName, c: Record<string, unknown>): { theta: number; params: Record<string, unknown> | null; problems: EngineProblem[] } {
  const problems: EngineProblem[] = [];
  const rp = (c.rope_parameters ?? null) as Record<string, unknown> | null;
  const rs = (c.rope_scaling ?? null) as Record<string, unknown> | null;
  if (engine === 'sglang') {
    // DeepseekV2AttentionMLA(rope_theta=config.rope_theta, rope_scaling=config.rope_scaling)
    let theta = c.rope_theta as number | undefined;
    if (theta === undefined) {
      theta = (rp?.rope_theta as number | undefined) ?? 10000;
      problems.push({ code: 'rope-theta-legacy-missing', effect: 'compute', message: 'rope_theta is absent (only rope_parameters): SGLang reads config.rope_theta / config.rope_scaling, which depend on the transformers version it runs on' });
    }
    const scaling = rs ?? (c.rope_theta === undefined && rp && rp.rope_type !== 'default' ? rp : null);
    return { theta, params: scaling, problems };
  }
  if (rp) return { theta: (rp.rope_theta as number) ?? 10000, params: rp.rope_type === 'default' || rp.rope_type === undefined ? null : rp, problems };
  return { theta: (c.rope_theta as number) ?? 10000, params: rs && (rs.rope_type ?? rs.type) !== 'default' ? rs : null, problems };
}

/**
 * deepseek_yarn as vLLM / SGLang build it from any non-default rope dict: YaRN frequencies
 * from factor, original_max_position_embeddings, beta_fast / beta_slow (32 / 1), cos/sin times
 * mscale(factor, mscale) / mscale(factor, mscale_all_dim) * attn_factor, softmax scale times
 * mscale(factor, mscale_all_dim)^2. Written as a transformers-style yarn dict for our engine.
 */
function deepseekYarn(theta: number, p: Record<string, unknown>, problems: EngineProblem[]): Record<string, unknown> | null {
  const factor = p.factor as number | undefined;
  const orig = p.original_max_position_embeddings as number | undefined;
  if (typeof factor !== 'number' || typeof orig !== 'number') {
    problems.push({ code: 'rope-deepseek-yarn-fields', effect: 'load', message: `rope type ${String(p.rope_type ?? p.type)} becomes deepseek_yarn, which needs factor and original_max_position_embeddings (missing: KeyError at load)` });
    return null;
  }
  const mscale = (p.mscale as number | undefined) ?? 1;
  const mad = (p.mscale_all_dim as number | undefined) ?? 0;
  const attn = (yarnGetMscale(factor, mscale) / yarnGetMscale(factor, mad)) * ((p.attn_factor as number | undefined) ?? 1);
  const type = String(p.rope_type ?? p.type);
  if (type !== 'yarn') problems.push({ code: 'rope-rewritten', effect: 'compute', message: `rope type ${type} is computed as deepseek_yarn (YaRN ramp, cos/sin x ${attn.toPrecision(6)})` });
  return {
    rope_type: 'yarn',
    rope_theta: theta,
    factor,
    original_max_position_embeddings: orig,
    beta_fast: (p.beta_fast as number | undefined) ?? 32,
    beta_slow: (p.beta_slow as number | undefined) ?? 1,
    attention_factor: attn,
    mscale_all_dim: mad,
  };
}

/** Loader checks shared by vLLM and SGLang (DeepseekV2ForCausalLM / DeepseekV2Model.load_weights). */
function servingChecks(c: Record<string, unknown>, t: TensorFacts, problems: EngineProblem[], ignored: string[]): void {
  const L = c.num_hidden_layers as number;
  for (const k of ['qk_nope_head_dim', 'qk_rope_head_dim', 'v_head_dim', 'kv_lora_rank'])
    if (typeof c[k] !== 'number') problems.push({ code: 'dimension-missing', effect: 'load', message: `${k} is absent (the engines read it with a default of 0)` });
  const experts = c.n_routed_experts;
  if (experts === null || experts === undefined) problems.push({ code: 'moe-null', effect: 'load', message: 'n_routed_experts is null: the loaders compute n_routed_experts + n_shared experts (TypeError)' });
  else {
    const first = (c.first_k_dense_replace as number | undefined) ?? 0;
    const freq = (c.moe_layer_freq as number | undefined) ?? 1;
    const moe: number[] = [];
    for (let l = 0; l < L; l++) if (l >= first && l % freq === 0) moe.push(l);
    const missing = moe.filter((l) => !expertTensorsPresent(t, l, experts as number));
    if (missing.length) problems.push({ code: 'moe-layers', effect: 'load', message: `layers ${missing.join(', ')} are built as mixture-of-experts (first_k_dense_replace ${first}, moe_layer_freq ${freq}) and their expert weights are missing` });
    else if (moe.length) sharedExpertChecks(c, t, moe, problems);
  }
  if (!t.names.has('lm_head.weight')) problems.push({ code: 'lm-head-missing', effect: 'load', message: 'lm_head.weight is absent: DeepSeek models are never tied to the embedding (tie_word_embeddings is not read), lm_head stays unloaded' });
  for (const n of t.names)
    if (n.endsWith('.bias')) {
      ignored.push(n);
      if (!t.zero.has(n)) problems.push({ code: 'bias-dropped', effect: 'compute', message: `${n} is skipped at load ("extra bias"): every DeepSeek attention linear is bias=False` });
    }
  if (c.rope_interleave === false) problems.push({ code: 'rope-layout', effect: 'compute', message: 'rope_interleave is false (half-split rope rows) but the engine rotates interleaved pairs (is_neox_style=False)' });
  if (c.qk_latent_layernorm === false) problems.push({ code: 'latent-norm', effect: 'compute', message: 'qk_latent_layernorm is false but the engine always applies kv_a_layernorm / q_a_layernorm' });
  const dtype = c.torch_dtype ?? c.dtype;
  if (dtype !== undefined && !TORCH_DTYPES.has(String(dtype))) problems.push({ code: 'dtype-name', effect: 'load', message: `dtype ${JSON.stringify(dtype)} is not a torch dtype name (bfloat16, float16, float32): the engines map config dtype names to torch dtypes and may refuse it (not read in their sources)` });
}

/** Whether layer `l` holds the router and every routed expert's three projections. */
function expertTensorsPresent(t: TensorFacts, l: number, experts: number): boolean {
  const p = `model.layers.${l}.mlp.`;
  if (!t.names.has(`${p}gate.weight`)) return false;
  for (let e = 0; e < experts; e++) for (const n of SWIGLU_PROJECTIONS) if (!t.names.has(`${p}experts.${e}.${n}.weight`)) return false;
  return true;
}

/**
 * vLLM and SGLang build `shared_experts` (of intermediate size moe_intermediate_size x
 * n_shared_experts) whenever n_shared_experts is not null, and vLLM's loader refuses
 * parameters the checkpoint leaves uninitialised. A null builds none in either (SGLang at
 * 3e4a39ee fuses shared experts only for 256 routed experts and n_shared_experts 1, so it no
 * longer adds a null to num_experts_per_tok; bench/interop/engine_moe.py, docs/engines.md).
 */
function sharedExpertChecks(c: Record<string, unknown>, t: TensorFacts, moe: number[], problems: EngineProblem[]): void {
  if (c.n_shared_experts === null || c.n_shared_experts === undefined) return;
  const lacking = moe.filter((l) => !SWIGLU_PROJECTIONS.every((n) => t.names.has(`model.layers.${l}.mlp.shared_experts.${n}.weight`)));
  if (lacking.length)
    problems.push({ code: 'shared-expert-missing', effect: 'load', message: `layers ${lacking.join(', ')} have no mlp.shared_experts.* tensors: vLLM builds the shared expert (n_shared_experts ${String(c.n_shared_experts)}) and refuses weights not initialized from the checkpoint` });
}

/**
 * The gate `engine` computes for a deepseek_v3 MoE config (`ours`: gqa2mla's reading, which
 * is vLLM's, model/spec.ts). vLLM: scoring_func (default softmax), noaux_tc adds the
 * correction bias, n_group / topk_group, norm_topk_prob, routed_scaling_factor. SGLang: the
 * same fields but scoring_func is not used: softmax grouped top-k without a correction bias,
 * sigmoid with it (noaux_tc). transformers: always sigmoid, the correction bias always added
 * (zeros when the checkpoint has none), groups scored by their best two.
 */
export function engineRouting(engine: EngineName, ours: MoeRouting, hasBias: boolean, numExperts?: number): MoeRouting {
  if (engine === 'vllm') return vllmGroupingFallback(ours, numExperts);
  if (engine === 'sglang') return { ...ours, scoring: ours.correctionBias ? 'sigmoid' : 'softmax' };
  return { ...ours, scoring: 'sigmoid', groupScore: 'top2', correctionBias: hasBias };
}

/**
 * vLLM (grouped_topk_router.py at 055e47c2, bench/interop/engine_moe.py) groups experts only
 * when there are more experts than n_group and n_group divides them; otherwise it routes by
 * plain top-k, which without a correction bias is softmax whatever scoring_func says.
 */
function vllmGroupingFallback(r: MoeRouting, numExperts: number | undefined): MoeRouting {
  if (numExperts === undefined || r.nGroup <= 1 || (numExperts > r.nGroup && numExperts % r.nGroup === 0)) return { ...r };
  return { ...r, nGroup: 1, topkGroup: 1, ...(r.correctionBias ? {} : { scoring: 'softmax' as const }) };
}

/** The differences between two gates, in words (empty: the same routing). */
export function routingDifference(ours: MoeRouting, theirs: MoeRouting): string[] {
  const out: string[] = [];
  if (ours.scoring !== theirs.scoring) {
    const sameChoice = ours.nGroup === 1 && !ours.correctionBias && !theirs.correctionBias;
    const weights = (r: MoeRouting) => (r.normTopkProb ? `${r.scoring}(l_i) / sum over the selected` : `${r.scoring}(l_i)${r.scoring === 'softmax' ? ' over all experts' : ''}`);
    out.push(
      `scores are ${theirs.scoring} instead of ${ours.scoring}: the expert weights become ${weights(theirs)} instead of ${weights(ours)}` +
        (sameChoice ? ' (the same experts are selected: both rank the logits alike)' : ''),
    );
  }
  if (ours.correctionBias !== theirs.correctionBias) out.push(`e_score_correction_bias is ${theirs.correctionBias ? 'added' : 'not added'} for the selection`);
  if (ours.nGroup > 1 && ours.groupScore !== theirs.groupScore) out.push(`groups are scored by ${theirs.groupScore === 'top2' ? 'their best two experts' : 'their best expert'}`);
  if (ours.normTopkProb !== theirs.normTopkProb || ours.routedScalingFactor !== theirs.routedScalingFactor || ours.nGroup !== theirs.nGroup || ours.topkGroup !== theirs.topkGroup)
    out.push('norm_topk_prob / routed_scaling_factor / n_group / topk_group are read differently');
  return out;
}

/** transformers' DeepseekV3ForCausalLM: what it builds and drops. */
function transformersChecks(c: Record<string, unknown>, t: TensorFacts, problems: EngineProblem[], ignored: string[]): void {
  const biasOk = c.attention_bias === true;
  const allowed = (n: string) => biasOk && /self_attn\.(q_a_proj|kv_a_proj_with_mqa|o_proj)\.bias$/.test(n);
  for (const n of t.names)
    if (n.endsWith('.bias') && !allowed(n)) {
      ignored.push(n);
      if (!t.zero.has(n)) problems.push({ code: 'bias-dropped', effect: 'compute', message: `${n} is an unexpected key (no such bias in DeepseekV3Attention with attention_bias ${String(c.attention_bias ?? false)})` });
    }
  if (c.qk_latent_layernorm === false) problems.push({ code: 'latent-norm', effect: 'compute', message: 'qk_latent_layernorm is not a transformers setting: kv_a_layernorm / q_a_layernorm are applied' });
  if (c.tie_word_embeddings !== true && !t.names.has('lm_head.weight')) problems.push({ code: 'lm-head-missing', effect: 'load', message: 'lm_head.weight is absent and tie_word_embeddings is not true' });
  for (const k of ['n_routed_experts', 'n_shared_experts', 'num_experts_per_tok', 'n_group', 'topk_group'])
    if (c[k] === null) problems.push({ code: 'moe-null', effect: 'load', message: `${k} is null: transformers 5's strict config expects an integer` });
}

/**
 * `engine`'s reading of a directory with config `config` and tensors `t`. The returned spec
 * is what the engine computes with (for gqa2mla's engine); `ignored` the tensors it skips.
 */
export function engineView(engine: EngineName, config: Record<string, unknown>, t: TensorFacts): EngineView {
  const problems: EngineProblem[] = [];
  const ignored: string[] = [];
  if (config.model_type !== 'deepseek_v3') {
    problems.push({ code: 'model-type', effect: 'load', message: `model_type ${JSON.stringify(config.model_type)} is not deepseek_v3` });
    return { engine, config: null, spec: null, ignored, problems };
  }
  const c: Record<string, unknown> = { ...config };
  if (engine === 'transformers') {
    transformersChecks(config, t, problems, ignored);
    c.qk_latent_layernorm = true;
    delete c.gqa2mla_q_bias;
  } else {
    servingChecks(config, t, problems, ignored);
    const rope = ropeSource(engine, config);
    problems.push(...rope.problems);
    const yarn = rope.params ? deepseekYarn(rope.theta, rope.params, problems) : { rope_type: 'default', rope_theta: rope.theta };
    if (!yarn) return { engine, config: null, spec: null, ignored, problems };
    Object.assign(c, { rope_interleave: true, qk_latent_layernorm: true, tie_word_embeddings: false, rope_parameters: yarn, rope_scaling: null });
    // a dense export's placeholder MoE fields (first_k_dense_replace = layers) parse as dense
    delete c.rope_theta;
    delete c.gqa2mla_q_bias;
  }
  let spec: ModelSpec | null = null;
  try {
    spec = withEngineGate(engine, parseModelSpec(c, `${engine} view of config.json`), t, problems);
  } catch (e) {
    // a load problem already named (e.g. missing expert weights) says why; gqa2mla's own refusal would only repeat it
    if (!problems.some((p) => p.effect === 'load')) problems.push({ code: 'config', effect: 'load', message: (e as Error).message });
  }
  return { engine, config: c, spec, ignored, problems };
}

/**
 * `spec` with `engine`'s MoE gate ({@link engineRouting}); transformers makes every layer
 * from first_k_dense_replace on MoE (moe_layer_freq is not read).
 */
function withEngineGate(engine: EngineName, spec: ModelSpec, t: TensorFacts, problems: EngineProblem[]): ModelSpec {
  const m = spec.moe;
  if (!m) return spec;
  const hasBias = [...t.names].some((n) => n.endsWith('.mlp.gate.e_score_correction_bias'));
  const moe = { ...m, routing: engineRouting(engine, m.routing, hasBias, m.numExperts) };
  if (engine === 'transformers' && m.layerFreq !== 1) {
    problems.push({ code: 'moe-layer-freq', effect: 'compute', message: `moe_layer_freq ${m.layerFreq} is not read: every layer from first_k_dense_replace on is MoE` });
    moe.layerFreq = 1;
  }
  const out = { ...spec, moe };
  for (let l = 0; l < spec.numLayers && engine === 'transformers'; l++)
    if (isMoeLayer(out, l) && !expertTensorsPresent(t, l, m.numExperts)) problems.push({ code: 'moe-layers', effect: 'load', message: `layer ${l} is built as mixture-of-experts and its expert weights are missing` });
  return out;
}

/** Largest relative difference of the rope frequencies, the cos/sin factor and the softmax scale of two specs. */
export function ropeDifference(a: ModelSpec, b: ModelSpec): { freq: number; cosSin: number; softmax: number } {
  const ra = modelRope(a);
  const rb = modelRope(b);
  let freq = ra.invFreq.length === rb.invFreq.length ? 0 : Infinity;
  for (let i = 0; i < Math.min(ra.invFreq.length, rb.invFreq.length); i++) freq = Math.max(freq, Math.abs(ra.invFreq[i] - rb.invFreq[i]) / Math.abs(ra.invFreq[i]));
  const rel = (x: number, y: number) => Math.abs(x - y) / Math.abs(x);
  return { freq, cosSin: rel(ra.attentionScaling, rb.attentionScaling), softmax: a.mla && b.mla ? rel(mlaSoftmaxScale(a), mlaSoftmaxScale(b)) : 0 };
}
