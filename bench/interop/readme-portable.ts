/**
 * The README's portable-interop table from a hf_check.py result (default
 * bench/results/interop-h200-portable.json): per portable case, our ppl, stock transformers
 * (float32) and the vLLM / SGLang emulations, the largest per-token NLL difference, and the
 * missing/unexpected keys of the transformers load. Also reads the combined per-model file of
 * bench/interop/device-zoo.sh calls (bench/results/interop-zoo-h200.json: { calls: [{ results:
 * { model: hf_check result } }] }; a case measured in several calls is taken from the last).
 * Cases without emulation rows (MoE in an emulation without MoE layers) are listed after the table.
 *
 *   npx tsx bench/interop/readme-portable.ts [interop.json]
 */
import { readFileSync } from 'node:fs';

interface Cmp {
  ppl_hf: number;
  ppl_ours: number;
  ppl_rel_diff: number;
  nll_max_abs_diff: number;
}
interface Case {
  name: string;
  target: string;
  load?: { missing_keys: string[]; unexpected_keys: string[] };
  nll_compare?: Cmp;
  engines?: Record<string, Cmp>;
}

const file = process.argv[2] ?? 'bench/results/interop-h200-portable.json';
interface Result {
  card: string;
  versions: Record<string, string>;
  cases: Case[];
}
const raw = JSON.parse(readFileSync(file, 'utf8')) as Result | { calls: { results: Record<string, Result> }[] };
const parts = 'calls' in raw ? raw.calls.flatMap((c) => Object.values(c.results)) : [raw];
const byName = new Map<string, Case>();
for (const p of parts) for (const c of p.cases) byName.set(c.name, c);
const j = { card: parts[0].card, versions: parts[0].versions, cases: [...byName.values()] };
const hasEmulations = (c: Case) => !!c.engines?.vllm_emulation?.ppl_hf && !!c.engines?.sglang_emulation?.ppl_hf;
const e = (x: number) => x.toExponential(1);
const rows = j.cases
  .filter((c) => c.target === 'portable' && c.nll_compare && hasEmulations(c))
  .map((c) => {
    const t = c.nll_compare!;
    const v = c.engines!.vllm_emulation;
    const s = c.engines!.sglang_emulation;
    const worst = Math.max(t.nll_max_abs_diff, v.nll_max_abs_diff, s.nll_max_abs_diff);
    const keys = (c.load?.missing_keys.length ?? 0) + (c.load?.unexpected_keys.length ?? 0);
    return `| ${c.name} | ${t.ppl_ours.toFixed(4)} | ${t.ppl_hf.toFixed(4)} | ${v.ppl_hf.toFixed(4)} | ${s.ppl_hf.toFixed(4)} | ${e(Math.max(t.ppl_rel_diff, v.ppl_rel_diff, s.ppl_rel_diff))} | ${e(worst)} | ${keys} |`;
  });
console.log(`(${j.card}; torch ${j.versions.torch}, transformers ${j.versions.transformers})\n`);
console.log('| case (portable) | ppl ours | transformers fp32 | vLLM emulation | SGLang emulation | max ppl rel. diff | max per-token NLL diff | missing/unexpected keys |');
console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
console.log(rows.join('\n'));
for (const c of j.cases.filter((x) => x.target === 'portable' && x.nll_compare && !hasEmulations(x)))
  console.log(`\n${c.name}: transformers fp32 ${c.nll_compare!.ppl_hf.toFixed(4)} against ours ${c.nll_compare!.ppl_ours.toFixed(4)} (${e(c.nll_compare!.ppl_rel_diff)}); no vLLM / SGLang emulation rows`);
