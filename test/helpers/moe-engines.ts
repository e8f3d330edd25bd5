/**
 * Per-engine checks of a converted mixture-of-experts directory, shared by the MoE tests:
 * each engine's emulated NLL against the source's, and `gqa2mla check`'s routing verdicts.
 */
import { checkDirectory, type CheckResult } from '../../src/check.js';
import { ModelRunner } from '../../src/engine/model.js';
import { openEngineRunner } from '../../src/interop/engine-runner.js';
import type { EngineName } from '../../src/interop/engine-semantics.js';
import type { MoeRouting } from '../../src/model/spec-types.js';

/** Largest per-token |NLL(engine's emulation of `converted`) - NLL(`source`)| over one sequence `ids`, per engine. */
export async function engineNllDiffs(source: string, converted: string, ids: Int32Array): Promise<Record<EngineName, number>> {
  const orig = await ModelRunner.open(source);
  const ref = Float64Array.from(await orig.nll(ids, 1, ids.length));
  await orig.close();
  const diff = {} as Record<EngineName, number>;
  for (const e of ['vllm', 'sglang', 'transformers'] as const) {
    const { runner } = await openEngineRunner(converted, e);
    const nll = await runner.nll(ids, 1, ids.length);
    await runner.close();
    diff[e] = Math.max(...nll.map((v, i) => Math.abs(v - ref[i])));
  }
  return diff;
}

/**
 * Expects `check` of `dir` to find the source's `gate` exact and no problem in vLLM and SGLang,
 * and in transformers a loading directory whose sigmoid gate is the only problem; returns the result.
 */
export async function expectRoutingVerdicts(dir: string, gate: MoeRouting): Promise<CheckResult> {
  const r = await checkDirectory(dir);
  const by = Object.fromEntries(r.engines.map((v) => [v.engine, v]));
  for (const e of ['vllm', 'sglang']) {
    expect(by[e].loads).toBe(true);
    expect(by[e].routing).toMatchObject({ exact: true, engine: gate });
    expect(by[e].problems).toEqual([]);
  }
  expect(by.transformers.loads).toBe(true);
  expect(by.transformers.routing!.exact).toBe(false);
  expect(by.transformers.routing!.engine.scoring).toBe('sigmoid');
  expect(by.transformers.problems.map((p) => p.code)).toEqual(['moe-routing']);
  expect(r.ok).toBe(false);
  return r;
}
