import { ModelRunner } from '../../../src/engine/model.js';
import { openEngineRunner } from '../../../src/interop/engine-runner.js';
import { loadTokenizer } from '../../../src/tokenize.js';
import { readFileSync, writeFileSync } from 'node:fs';
const dir = process.argv[2];
const tok = await loadTokenizer(dir);
const ids = Int32Array.from(tok.encode(readFileSync('test/fixtures/pydocs-eval.txt', 'utf8')).slice(0, 2 * 128));
const r = await ModelRunner.open(dir);
const nll = await r.nll(ids, 2, 128); await r.close();
const out: Record<string, unknown> = { ids: Array.from(ids), ours: Array.from(nll) };
for (const e of ['vllm', 'sglang'] as const) {
  try { const { runner } = await openEngineRunner(dir, e); out[e] = Array.from(await runner.nll(ids, 2, 128)); await runner.close(); } catch (err) { out[e] = String(err); }
}
writeFileSync(process.argv[3], JSON.stringify(out));
