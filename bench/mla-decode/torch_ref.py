"""PyTorch references for the decode benchmark (run on the GPU machine).

- MLA: eager absorbed-MLA decode, bmm + softmax + bmm over a contiguous bf16 latent
  cache [b, s, 576] (scores in fp32, LSE returned like the fused kernel).
- GQA: torch.nn.functional.scaled_dot_product_attention on the original Llama-3-8B layer
  layout (q [b, 32, q_len, 128], k/v [b, 8, s, 128], enable_gqa=True).
Fixed lengths only (torch needs padding and masks for varied ones). Each timed run
follows an L2 flush; times are medians of CUDA-event timings. Metric conventions as
FlashMLA (bytes = cache read once + q + out).

    python3 bench/mla-decode/torch_ref.py --out OUT.json [--quick | --focus]

--focus: batch 128, s_k 4K-32K only (the acceptance shapes; a short device run).
"""
import argparse
import json
import math
import time

import torch
import torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--out", default="mla-decode-torch.json")
p.add_argument("--quick", action="store_true")
p.add_argument("--focus", action="store_true")
args = p.parse_args()

dev = torch.device("cuda")
BATCHES = [16, 128] if args.quick else [128] if args.focus else [1, 16, 64, 128]
SKS = [4096, 8192] if args.quick else [4096, 8192, 16384, 32768] if args.focus else [1024, 4096, 8192, 16384, 32768]
HEADS = [16, 32, 128]
QLENS = [1, 2]
ITERS = 6 if args.quick else 10

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


def mla_eager(q, kv, scale, mask):
    # q [b, qLen*h, 576], kv [b, s, 576]
    s = torch.bmm(q, kv.transpose(1, 2)).float() * scale
    if mask is not None:
        s = s + mask
    lse = torch.logsumexp(s, dim=-1)
    p = torch.exp(s - lse.unsqueeze(-1)).to(torch.bfloat16)
    return torch.bmm(p, kv[:, :, :512]), lse


try:
    from torch.nn.attention.bias import causal_lower_right
except Exception:  # older torch
    causal_lower_right = None

rows = []
copy_before = copy_bw()
t_start = time.time()
for b in BATCHES:
    for sk in SKS:
        kv = torch.empty(b, sk, 576, dtype=torch.bfloat16, device=dev).uniform_(-1, 1)
        for q_len in QLENS:
            m = None
            if q_len > 1:
                # query i sees sk - q_len + 1 + i tokens (bottom-right causal), additive mask
                i = torch.arange(q_len, device=dev)
                t = torch.arange(sk, device=dev)
                m = torch.where(t[None, :] < (sk - q_len + 1 + i)[:, None], 0.0, -math.inf)
            for h in HEADS:
                R = q_len * h
                q = torch.empty(b, R, 576, dtype=torch.bfloat16, device=dev).uniform_(-1, 1)
                mk = None
                if m is not None:
                    mk = m.repeat_interleave(h, dim=0).unsqueeze(0)  # [1, q_len*h, sk], rows (i, head)
                try:
                    ms, ms_min = bench(lambda: mla_eager(q, kv, 1 / math.sqrt(192), mk))
                    err = None
                except torch.cuda.OutOfMemoryError as e:
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
        # GQA: Llama-3-8B layer
        k = torch.empty(b, 8, sk, 128, dtype=torch.bfloat16, device=dev).uniform_(-1, 1)
        v = torch.empty_like(k).uniform_(-1, 1)
        for q_len in QLENS:
            q = torch.empty(b, 32, q_len, 128, dtype=torch.bfloat16, device=dev).uniform_(-1, 1)
            if q_len == 1:
                fn = lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
            elif causal_lower_right is not None:
                bias = causal_lower_right(q_len, sk)
                fn = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=True)
            else:
                t = torch.arange(sk, device=dev)
                i = torch.arange(q_len, device=dev)
                bm = t[None, :] < (sk - q_len + 1 + i)[:, None]
                fn = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=bm, enable_gqa=True)
            try:
                ms, ms_min = bench(fn)
                err = None
            except Exception as e:  # backend refusal or OOM
                ms, ms_min, err = float("nan"), float("nan"), str(e)[:200]
            total = b * sk
            R = q_len * 32
            nbytes = (total * 2 * 8 * 128 + b * R * 128 * 2) * 2
            flops = 2 * 32 * q_len * total * (128 + 128)
            rows.append(dict(kind="gqa-torch-sdpa", batch=b, sk=sk, heads=32, kvHeads=8, qLen=q_len, varied=False,
                             ms=ms, msMin=ms_min, gbps=nbytes / ms / 1e6, tflops=flops / ms / 1e9,
                             bytes=nbytes, flops=flops, error=err))
            del q
        del k, v
        torch.cuda.empty_cache()
copy_after = copy_bw()
copy = max(copy_before, copy_after)
for r in rows:
    r["pctCopy"] = 100 * r["gbps"] / copy if r["gbps"] == r["gbps"] else float("nan")
info = dict(name=torch.cuda.get_device_name(0), torch=torch.__version__, cuda=torch.version.cuda,
            sm_count=torch.cuda.get_device_properties(0).multi_processor_count)
with open(args.out, "w") as f:
    json.dump(dict(bench="mla-decode-torch", device=info, copyGBps=dict(before=copy_before, after=copy_after, used=copy),
                   timing=f"median of {ITERS} CUDA-event timings, each after an L2 flush; 2 warm-up runs",
                   seconds=time.time() - t_start, rows=rows), f, indent=1, allow_nan=True)
print(f"torch: {len(rows)} configurations on {info['name']}; copy {copy:.0f} GB/s; wrote {args.out}")
