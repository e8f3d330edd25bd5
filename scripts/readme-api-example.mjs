// The README's Node API example, verbatim (run from the repository root after `npm run build:ts`:
// `node scripts/readme-api-example.mjs`); kept here so it is run, not only read.
import { argmax, convert, evalPpl, generate, loadTokenizer, MlaDecoder, plan } from 'gqa2mla';

const modelDir = 'test/fixtures/tiny-llama-gqa';
const outDir = '/tmp/tiny-mla-api'; // not the CLI demo's directory

const { budgets } = await plan({ modelDir, kvLoraRanks: [96], qkRopeDims: [32] });
console.log(budgets[0].valid, budgets[0].compressionRatio); // true 2

const report = await convert({
  modelDir,
  outDir,
  calibFile: 'test/fixtures/pydocs-train-3M.txt',
  qkRopeDim: 32,
  kvLoraRank: 96,
  overwrite: true, // replace this example's previous output
  onProgress: (p) => console.error(p.stage, p.layer ?? ''),
});
console.log(report.layers.map((l) => l.attnRelError));
const { ppl } = await evalPpl({ modelDir: outDir, textFile: 'test/fixtures/pydocs-eval.txt' });
console.log('ppl', ppl);

// text: greedy by default (temperature, topP and seed sample), streamed token by token
const g = await generate({ modelDir: outDir, prompt: 'The json module', maxNewTokens: 24, onToken: (t) => process.stdout.write(t.text) });
console.log(`\n${g.tokens.length} tokens, ${g.tokensPerSecond.toFixed(1)} tokens/s`);

// incremental decoding in the absorbed form (latent cache, W_UK folded into the query)
const tok = await loadTokenizer(outDir);
const dec = await MlaDecoder.open(outDir);
const V = dec.spec.vocabSize;
const promptIds = tok.encode('The json module');
let logits = await dec.append(promptIds); // [promptIds.length, vocab]
let nextId = argmax(logits.subarray((promptIds.length - 1) * V));
const ids = [nextId];
for (let i = 0; i < 8; i++) {
  logits = await dec.append(Int32Array.of(nextId)); // [1, vocab]
  nextId = argmax(logits);
  ids.push(nextId);
}
console.log(tok.decode(ids));
await dec.close();
