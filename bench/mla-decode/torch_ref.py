"""PyTorch references for the decode benchmark (run on the GPU machine).

- MLA: eager absorbed-MLA decode, bmm + softmax + bmm over a contiguous bf16 latent
  cache [b, s, 576] (scores in fp32, LSE returned like the fused kernel).
- GQA: torch.nn.functional.scaled_dot_product_attention on the original Llama-3-8B layer
  layout (q [b, 32, q_len, 128], k/v [b, 8, s, 128]). Every SDPA backend (flash,
  memory-efficient, cuDNN, and the unforced default) is tried in each of these call forms:
    gqa:        enable_gqa=True (q_len 1), or with the bottom-right causal bias
                torch.nn.attention.bias.causal_lower_right (q_len 2);
    gqa-causal: enable_gqa=True, is_causal=True (q_len 2; correct only where the backend
                aligns the causal mask bottom-right, which the check below decides);
    folded:     the 4 query heads of each KV head as 4 x q_len query rows of 8-head
                attention (no GQA support needed); for q_len 2 an additive bf16 bias
                [1, 1, 8, s] (broadcast) masks the last key for the first query's rows.
  Each candidate is checked against a float32 reference with the bottom-right causal mask
  (query i of q_len sees s - q_len + 1 + i keys) on the first batch entry, whose last value
  row is set large so that a mask off by the last key shows; only candidates
  within 2e-2 relative error are timed. The row `gqa-torch-sdpa` is the fastest correct
  candidate and names its backend, call form and the CUDA kernels a profiler saw; every
  candidate is kept as a `gqa-torch-sdpa-candidate` row (time or refusal).
- Bandwidth ceilings measured in the same process: device-to-device copy (read + write)
  and a read-only stream (a reduction over a 2 GiB buffer, float32 sum and bf16 sum with
  float32 accumulation; the faster is the read ceiling), before and after the benchmark.
Fixed lengths only (torch needs padding and masks for varied ones). Each timed run
follows an L2 flush; times are medians of CUDA-event timings. Metric conventions as
FlashMLA (bytes = cache read once + q + out).

    python3 bench/mla-decode/torch_ref.py --out OUT.json [--quick | --focus]

--focus: batch 64 and 128, s_k 4K-32K only (the shapes the README quotes; a short device run).
"""
import argparse
import contextlib
import json
import math
import time

import torch
import torch.nn.functional as F

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel
except Exception:  # older torch
    SDPBackend = None
    sdpa_kernel = None
try:
    from torch.nn.attention.bias import causal_lower_right
except Exception:  # older torch
    causal_lower_right = None

p = argparse.ArgumentParser()
p.add_argument("--out", default="mla-decode-torch.json")
p.add_argument("--quick", action="store_true")
p.add_argument("--focus", action="store_true")
args = p.parse_args()

dev = torch.device("cuda")
BATCHES = [16, 128] if args.quick else [64, 128] if args.focus else [1, 16, 64, 128]
SKS = [4096, 8192] if args.quick else [4096, 8192, 16384, 32768] if args.focus else [1024, 4096, 8192, 16384, 32768]
HEADS = [16, 32, 128]
QLENS = [1, 2]
ITERS = 6 if args.quick else 10
CHECK_TOL = 2e-2  # bf16 inputs and output, float32 reference

flush = torch.empty(256 * 2**20, dtype=torch.uint8, device=dev)


def bench(fn, iters=ITERS, warmup=2):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for i in range(iters):
        flush.fill_(i & 0xFF)
        e0 = torch.cuda.Event(enable_timing=True)
        e1 = torch.cuda.Event(enable_timing=True)
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1))
    times.sort()
    return times[len(times) // 2], times[0]


def copy_bw(nbytes=2**31, iters=10):
    a = torch.empty(nbytes, dtype=torch.uint8, device=dev)
    b = torch.empty_like(a)
    a.fill_(1)
    ms, _ = bench(lambda: b.copy_(a), iters=iters)
    del a, b
    return 2 * nbytes / (ms * 1e-3) / 1e9


def read_bw(nbytes=2**31, iters=10):
    """Read-only stream: reductions over nbytes (no write but a scalar). GB/s per kernel."""
    out = {}
    a = torch.empty(nbytes // 4, dtype=torch.float32, device=dev).uniform_(-1, 1)
    ms, _ = bench(lambda: a.sum(), iters=iters)
    out["sum-f32"] = nbytes / (ms * 1e-3) / 1e9
    del a
    h = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=dev).uniform_(-1, 1)
    ms, _ = bench(lambda: h.sum(dtype=torch.float32), iters=iters)
    out["sum-bf16"] = nbytes / (ms * 1e-3) / 1e9
    del h
    torch.cuda.empty_cache()
    return out


def mla_eager(q, kv, scale, mask):
    # q [b, qLen*h, 576], kv [b, s, 576]
    s = torch.bmm(q, kv.transpose(1, 2)).float() * scale
    if mask is not None:
        s = s + mask
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse.unsqueeze(-1)).to(torch.bfloat16)
    return torch.bmm(p, kv[:, :, :512]), lse


def visible(q_len, sk):
    """[q_len, sk] bool: query i sees the first sk - q_len + 1 + i keys (bottom-right causal)."""
    i = torch.arange(q_len, device=dev)
    t = torch.arange(sk, device=dev)
    return t[None, :] < (sk - q_len + 1 + i)[:, None]


def gqa_reference(q, k, v, q_len):
    """float32 GQA attention of batch entry 0 with the bottom-right causal mask; [32, q_len, 128]."""
    kv_heads, sk, d = k.shape[1], k.shape[2], k.shape[3]
    g = q.shape[1] // kv_heads
    qf = q[:1].float().view(1, kv_heads, g, q_len, d)
    s = torch.einsum("bkgid,bktd->bkgit", qf, k[:1].float()) / math.sqrt(d)
    s = s.masked_fill(~visible(q_len, sk)[None, None, None], -math.inf)
    o = torch.einsum("bkgit,bktd->bkgid", torch.softmax(s, dim=-1), v[:1].float())
    return o.reshape(q.shape[1], q_len, d)


def gqa_candidates(q, k, v, q_len):
    """(form, fn, to_bhld): fn runs one SDPA call (timed as is); to_bhld(out) gives [b, 32, q_len, 128]."""
    b, h, _, d = q.shape
    kv_heads, sk = k.shape[1], k.shape[2]
    g = h // kv_heads
    qf = q.view(b, kv_heads, g * q_len, d)  # rows (head j of the group, query i)
    same = lambda o: o
    unfold = lambda o: o.reshape(b, h, q_len, d)
    c = []
    if q_len == 1:
        c.append(("gqa", lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), same))
        c.append(("folded", lambda: F.scaled_dot_product_attention(qf, k, v), unfold))
        return c
    if causal_lower_right is not None:
        bias = causal_lower_right(q_len, sk)
        c.append(("gqa", lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=True), same))
    c.append(("gqa-causal", lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), same))
    vis = visible(q_len, sk).repeat(g, 1)  # rows (j, i) -> [g * q_len, sk]
    add = torch.zeros(g * q_len, sk, dtype=q.dtype, device=dev).masked_fill(~vis, -math.inf)
    add = add[None, None].expand(b, kv_heads, g * q_len, sk)
    c.append(("folded", lambda: F.scaled_dot_product_attention(qf, k, v, attn_mask=add), unfold))
    return c


def backends():
    if SDPBackend is None:
        return [("default", None)]
    out = [("default", None)]
    for name, attr in [("flash", "FLASH_ATTENTION"), ("efficient", "EFFICIENT_ATTENTION"), ("cudnn", "CUDNN_ATTENTION")]:
        if hasattr(SDPBackend, attr):
            out.append((name, getattr(SDPBackend, attr)))
    return out


def forced(backend):
    """Context that restricts SDPA to one backend (entered once around a whole measurement,
    so its CPU cost is not inside the timed region)."""
    return contextlib.nullcontext() if backend is None else sdpa_kernel([backend])


def kernel_names(fn):
    """CUDA kernels one call launches (torch.profiler), to name the backend that really ran."""
    try:
        from torch.profiler import ProfilerActivity, profile
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        names = []
        for e in prof.key_averages():
            t = getattr(e, "device_time_total", None)
            if t is None:
                t = getattr(e, "cuda_time_total", 0)
            if t and t > 0 and e.key not in names:
                names.append(e.key)
        return [n[:120] for n in names][:8]
    except Exception as e:  # profiler unavailable
        return [f"profiler failed: {str(e)[:100]}"]


def gqa_rows(b, sk):
    """SDPA rows for the Llama-3-8B layer at (b, sk): every candidate, then the fastest correct."""
    rows = []
    k = torch.empty(b, 8, sk, 128, dtype=torch.bfloat16, device=dev).uniform_(-1, 1)
    v = torch.empty_like(k).uniform_(-1, 1)
    # batch entry 0 (the checked one): a last value far above the rest, so that a first query
    # that wrongly sees the last key (or a last query that misses it) is off by ~1000 / s_k,
    # far beyond the check's tolerance (a near-uniform softmax would hide one key out of s_k)
    v[0, :, -1, :] = 1000.0
    for q_len in QLENS:
        q = torch.empty(b, 32, q_len, 128, dtype=torch.bfloat16, device=dev).uniform_(-1, 1)
        ref = gqa_reference(q, k, v, q_len)
        total = b * sk
        nbytes = (total * 2 * 8 * 128 + b * 32 * q_len * 128 * 2) * 2
        flops = 2 * 32 * q_len * total * (128 + 128)
        base = dict(batch=b, sk=sk, heads=32, kvHeads=8, qLen=q_len, varied=False, bytes=nbytes, flops=flops)
        cands = []
        for form, fn, to_bhld in gqa_candidates(q, k, v, q_len):
            for bname, backend in backends():
                row = dict(kind="gqa-torch-sdpa-candidate", form=form, backend=bname, **base)
                try:
                    with forced(backend):
                        out = to_bhld(fn())
                        rel = ((out[0].float() - ref).norm() / ref.norm()).item()
                        row["relErr"] = rel
                        del out
                        if not rel < CHECK_TOL:
                            row["error"] = f"wrong result: rel error {rel:.3g} vs the bottom-right causal reference"
                        else:
                            ms, ms_min = bench(fn)
                            row.update(ms=ms, msMin=ms_min, gbps=nbytes / ms / 1e6, tflops=flops / ms / 1e9, error=None)
                except Exception as e:  # backend refusal or OOM
                    row["error"] = str(e).replace("\n", " ")[:200]
                    torch.cuda.empty_cache()
                rows.append(row)
                if row.get("error") is None:
                    cands.append((row, fn, backend))
        if cands:
            best, fn, backend = min(cands, key=lambda c: c[0]["ms"])
            with forced(backend):
                kernels = kernel_names(fn)
            rows.append(dict(best, kind="gqa-torch-sdpa", kernels=kernels, correctCandidates=len(cands)))
        else:
            rows.append(dict(kind="gqa-torch-sdpa", **base, ms=float("nan"), msMin=float("nan"), gbps=float("nan"),
                             tflops=float("nan"), error="no SDPA candidate ran correctly"))
        del q, ref
    del k, v
    torch.cuda.empty_cache()
    return rows


def mla_rows(b, sk):
    rows = []
    kv = torch.empty(b, sk, 576, dtype=torch.bfloat16, device=dev).uniform_(-1, 1)
    for q_len in QLENS:
        m = None
        if q_len > 1:
            m = torch.zeros(q_len, sk, device=dev).masked_fill(~visible(q_len, sk), -math.inf)
        for h in HEADS:
            R = q_len * h
            q = torch.empty(b, R, 576, dtype=torch.bfloat16, device=dev).uniform_(-1, 1)
            mk = None
            if m is not None:
                mk = m.repeat_interleave(h, dim=0).unsqueeze(0)  # [1, q_len*h, sk], rows (i, head)
            try:
                ms, ms_min = bench(lambda: mla_eager(q, kv, 1 / math.sqrt(192), mk))
                err = None
            except torch.cuda.OutOfMemoryError:
                ms, ms_min, err = float("nan"), float("nan"), "out of memory"
                torch.cuda.empty_cache()
            total = b * sk
            nbytes = (total * 576 + b * R * 576 + b * R * 512) * 2
            flops = 2 * h * q_len * total * (576 + 512)
            rows.append(dict(kind="mla-torch-eager", batch=b, sk=sk, heads=h, qLen=q_len, varied=False,
                             ms=ms, msMin=ms_min, gbps=nbytes / ms / 1e6, tflops=flops / ms / 1e9,
                             bytes=nbytes, flops=flops, error=err))
            del q
    del kv
    torch.cuda.empty_cache()
    return rows


rows = []
copy_before = copy_bw()
read_before = read_bw()
t_start = time.time()
for b in BATCHES:
    for sk in SKS:
        rows += mla_rows(b, sk)
        rows += gqa_rows(b, sk)
copy_after = copy_bw()
read_after = read_bw()
copy = max(copy_before, copy_after)
read = max(list(read_before.values()) + list(read_after.values()))
for r in rows:
    g = r.get("gbps", float("nan"))
    # a candidate that did not run (no kernel for its backend) has no bandwidth: null, not NaN (JSON)
    r["pctCopy"] = 100 * g / copy if g == g else None
    r["pctRead"] = 100 * g / read if g == g else None
info = dict(name=torch.cuda.get_device_name(0), torch=torch.__version__, cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(), sm_count=torch.cuda.get_device_properties(0).multi_processor_count)


def json_safe(v):
    """NaN (a measurement that did not run) as null: strict JSON for report.ts."""
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [json_safe(x) for x in v]
    return v


with open(args.out, "w") as f:
    json.dump(json_safe(dict(bench="mla-decode-torch", device=info, copyGBps=dict(before=copy_before, after=copy_after, used=copy),
                   readGBps=dict(before=read_before, after=read_after, used=read,
                                 method="reductions over 2 GiB (float32 sum; bf16 sum, float32 accumulation), the fastest"),
                   timing=f"median of {ITERS} CUDA-event timings, each after an L2 flush; 2 warm-up runs",
                   seconds=time.time() - t_start, rows=rows)), f, indent=1, allow_nan=False)
best = [r for r in rows if r["kind"] == "gqa-torch-sdpa"]
print(f"torch: {len(rows)} rows on {info['name']}; copy {copy:.0f} GB/s, read {read:.0f} GB/s; wrote {args.out}")
for r in best:
    if r["batch"] == max(BATCHES):
        print(f"  sdpa b{r['batch']} s{r['sk']} q{r['qLen']}: {r.get('backend')}/{r.get('form')} {r['ms']:.3f} ms "
              f"({r['pctRead']:.0f}% read) of {r.get('correctCandidates', 0)} correct; kernels {r.get('kernels', [])[:2]}")
