/**
 * One decode launch per MLA kernel variant, for a profiler (Nsight Compute) to look at:
 * batch 128, s_k 8K, fixed lengths, paged bf16 cache of 64-token pages (the benchmark's
 * layout). Each configuration runs once (kernel + LSE combine) after one warm-up launch.
 *
 *   ncu --kernel-name regex:DecodeKernel --launch-skip-before-match 0 ... \
 *     node node_modules/.bin/tsx bench/mla-decode/profile.ts heads:qLen:kernel ...
 * e.g. 32:1:mla576x512.m32.w8 (the kernel name goes to the plan's `kernel` option).
 */
import { getDecodeCuda } from '../../src/decode.js';

const PAGE = 64;
const batch = 128;
const sk = 8192;
const specs = process.argv.slice(2).map((s) => {
  const [h, q, kernel] = s.split(':');
  return { heads: Number(h), qLen: Number(q), kernel };
});
if (!specs.length || specs.some((s) => !(s.heads > 0) || !(s.qLen > 0) || !s.kernel)) {
  console.error('usage: profile.ts heads:qLen:kernel ...');
  process.exit(2);
}

async function main() {
  const dc = getDecodeCuda();
  const pages = (batch * sk) / PAGE;
  const cache = dc.alloc(pages * PAGE * 576 * 2);
  dc.fillRandomBf16(cache, pages * PAGE * 576, 11, 1);
  const maxRows = Math.max(...specs.map((s) => batch * s.qLen * s.heads));
  const qLat = dc.alloc(maxRows * 512 * 2);
  const qRope = dc.alloc(maxRows * 64 * 2);
  dc.fillRandomBf16(qLat, maxRows * 512, 12, 1);
  dc.fillRandomBf16(qRope, maxRows * 64, 13, 1);
  const out = dc.alloc(maxRows * 512 * 2);
  const lse = dc.alloc(maxRows * 4);
  const maxBlocks = sk / PAGE;
  const bt = new Int32Array(batch * maxBlocks);
  for (let i = 0; i < bt.length; i++) bt[i] = (i * 7919) % pages; // scattered pages, a permutation
  const table = dc.alloc(bt.byteLength);
  dc.upload(table, bt);
  const lens = new Int32Array(batch).fill(sk);
  for (const s of specs) {
    const plan = dc.plan({ kind: 'mla', seqLens: lens, batch, qLen: s.qLen, heads: s.heads, pageSize: PAGE, maxBlocks, kernel: s.kernel });
    const t = { qLat, qRope, cache, blockTable: table, out, lse };
    const r = await dc.benchAsync(plan, t, 1 / Math.sqrt(192), { warmup: 0, iters: 1 });
    console.log(`profile: heads ${s.heads} q_len ${s.qLen} ${plan.kernel}: parts ${plan.numParts}, ${r.medianMs.toFixed(3)} ms`);
  }
  for (const b of [cache, qLat, qRope, out, lse, table]) dc.free(b);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
