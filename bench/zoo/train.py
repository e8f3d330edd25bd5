"""Trains one development-zoo model (bench/zoo/zoo.json) from scratch and writes it in
Hugging Face format with its training log and transformers float32 reference perplexities.

Runs on the GPU machine (PyTorch + transformers 5). Usage:
  python3 bench/zoo/train.py --name zoo-llama31 --corpus pydocs-train.txt.xz --out DIR
The evaluation text (test/fixtures/pydocs-eval.txt) is never trained on; the training text
is the pydocs train split (disjoint files).

Reference protocol (same as `gqa2mla eval-ppl`): tokenize the whole eval text without
special tokens; non-overlapping windows of `seq` tokens from offset 0, the first `windows`
(fewer when the text is shorter); feed each window, score tokens 1..seq-1 from their
prefixes; ppl = exp(mean NLL). Weights as stored (bf16) upcast to float32, float32 compute,
eager attention, TF32 off. NLL is also reported per position bucket.
"""
import argparse
import json
import lzma
import math
import os
import shutil
import time

import torch
import transformers
from tokenizers import Tokenizer

BUCKETS = [(0, 64), (64, 256), (256, 1024), (1024, 2048), (2048, 4096), (4096, 1 << 30)]


def build_config(m, vocab):
    rope = {"rope_type": "default", "rope_theta": m["theta"]}
    if m.get("rope_scaling"):
        rope = {**m["rope_scaling"], "rope_theta": m["theta"]}
    common = dict(
        vocab_size=vocab, hidden_size=m["hidden"], intermediate_size=m["inter"], num_hidden_layers=m["layers"],
        num_attention_heads=m["heads"], num_key_value_heads=m["kv_heads"], head_dim=m["head_dim"],
        max_position_embeddings=m["max_pos"], rms_norm_eps=1e-6, tie_word_embeddings=m["tie"],
        rope_parameters=rope, bos_token_id=0, eos_token_id=0, hidden_act="silu",
    )
    if m["arch"] == "llama":
        return transformers.LlamaConfig(attention_bias=m["bias"], mlp_bias=False, **common)
    if m["arch"] == "qwen2":
        return transformers.Qwen2Config(use_sliding_window=False, sliding_window=None, **common)
    if m["arch"] == "mistral":
        return transformers.MistralConfig(sliding_window=None, **common)
    if m["arch"] == "qwen3":
        return transformers.Qwen3Config(attention_bias=m["bias"], use_sliding_window=False, sliding_window=None, **common)
    if m["arch"] == "mixtral":
        # the router's load-balancing loss joins the training loss (output_router_logits), as in Mixtral's training
        return transformers.MixtralConfig(num_local_experts=m["experts"], num_experts_per_tok=m["top_k"], output_router_logits=True,
                                          router_aux_loss_coef=0.02, sliding_window=None, **common)
    if m["arch"] == "qwen3_moe":
        return transformers.Qwen3MoeConfig(num_experts=m["experts"], num_experts_per_tok=m["top_k"], moe_intermediate_size=m["moe_inter"],
                                           mlp_only_layers=m["mlp_only_layers"], decoder_sparse_step=1, norm_topk_prob=m["norm_topk_prob"],
                                           output_router_logits=True, router_aux_loss_coef=0.02, attention_bias=m["bias"],
                                           use_sliding_window=False, sliding_window=None, **common)
    raise ValueError(m["arch"])


def model_class(arch):
    return {"llama": transformers.LlamaForCausalLM, "qwen2": transformers.Qwen2ForCausalLM, "qwen3": transformers.Qwen3ForCausalLM,
            "mistral": transformers.MistralForCausalLM, "mixtral": transformers.MixtralForCausalLM,
            "qwen3_moe": transformers.Qwen3MoeForCausalLM}[arch]


def train(model, ids, t, log):
    dev = "cuda"
    model.to(dev).train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}], lr=t["lr"], betas=(0.9, 0.95), fused=True)
    g = torch.Generator().manual_seed(t["seed"])
    data = torch.tensor(ids, dtype=torch.long)
    seq, batch = t["seq"], t["batch"]
    t0 = time.time()
    step = 0
    while step < t["max_steps"]:
        frac = (time.time() - t0) / t["seconds"]
        if frac >= 1:
            break
        lr = t["lr"] * min(1.0, (step + 1) / t["warmup"]) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
        for gr in opt.param_groups:
            gr["lr"] = lr
        off = torch.randint(0, len(ids) - seq - 1, (batch,), generator=g)
        x = torch.stack([data[o : o + seq] for o in off.tolist()]).to(dev, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=x, labels=x).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 100 == 0:
            log.append({"step": step, "loss": float(loss), "lr": lr, "seconds": round(time.time() - t0, 1)})
        step += 1
    return step, time.time() - t0


@torch.no_grad()
def reference(model_dir, arch, eval_ids, seq, windows):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = model_class(arch).from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").to("cuda").eval()
    n = min(windows, len(eval_ids) // seq)
    nll_pos = torch.zeros(seq - 1, dtype=torch.float64)
    win_nll = []
    first = None
    for w0 in range(0, n, 4):
        x = torch.tensor([eval_ids[(w0 + i) * seq : (w0 + i + 1) * seq] for i in range(min(4, n - w0))], device="cuda")
        logits = model(input_ids=x).logits.float()
        lp = torch.log_softmax(logits[:, :-1], dim=-1)
        nll = -lp.gather(-1, x[:, 1:, None])[..., 0].double().cpu()
        if first is None:
            first = nll[0, :64].tolist()
        nll_pos += nll.sum(0)
        win_nll += nll.mean(1).tolist()
    mean = float(nll_pos.sum() / (n * (seq - 1)))
    buckets = []
    for lo, hi in BUCKETS:
        # scored position p predicts token p+1 from the p+1 tokens before it; bucket by p+1
        pos = torch.arange(1, seq)
        sel = (pos >= lo) & (pos < hi)
        if sel.any():
            buckets.append({"from": lo, "to": min(hi, seq) - 1, "count": int(sel.sum()) * n, "meanNll": float(nll_pos[sel].sum() / (int(sel.sum()) * n))})
    return {"seq": seq, "windows": n, "tokensScored": n * (seq - 1), "meanNll": mean, "ppl": math.exp(mean), "buckets": buckets,
            "ppl_per_window_first8": [round(math.exp(v), 6) for v in win_nll[:8]], "window0_nll_first64": [round(v, 6) for v in first]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo", default="bench/zoo/zoo.json")
    ap.add_argument("--name", required=True)
    ap.add_argument("--corpus", required=True, help="training text (.txt or .txt.xz)")
    ap.add_argument("--eval", default="test/fixtures/pydocs-eval.txt")
    ap.add_argument("--tokenizer-dir", default="test/fixtures/tiny-llama-gqa")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    zoo = json.load(open(a.zoo))
    m, t = zoo["models"][a.name], zoo["train"]
    torch.manual_seed(t["seed"])
    tok = Tokenizer.from_file(os.path.join(a.tokenizer_dir, "tokenizer.json"))
    text = lzma.open(a.corpus, "rt").read() if a.corpus.endswith(".xz") else open(a.corpus).read()
    ids = tok.encode(text, add_special_tokens=False).ids
    eval_ids = tok.encode(open(a.eval).read(), add_special_tokens=False).ids
    cfg = build_config(m, tok.get_vocab_size())
    model = model_class(m["arch"])(cfg)
    params = sum(p.numel() for p in model.parameters())
    log = []
    steps, secs = train(model, ids, t, log)
    out = os.path.join(a.out, a.name)
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(a.tokenizer_dir, f), out)
    refs = [reference(out, m["arch"], eval_ids, s, zoo["eval"]["windows"]) for s in zoo["eval"]["seqs"]]
    json.dump({"model": a.name, "spec": m, "train": t, "params": params, "steps": steps, "train_seconds": round(secs, 1),
               "train_tokens_seen": steps * t["batch"] * t["seq"], "corpus_tokens": len(ids), "log": log,
               "torch": torch.__version__, "transformers": transformers.__version__, "card": torch.cuda.get_device_name()},
              open(os.path.join(out, "train-log.json"), "w"), indent=1)
    json.dump({"protocol": __doc__.split("Reference protocol")[1].strip(), "eval_text": os.path.basename(a.eval),
               "num_tokens": len(eval_ids), "first_32_token_ids": eval_ids[:32], "contexts": refs},
              open(os.path.join(out, "reference.json"), "w"), indent=1)
    print(json.dumps({"model": a.name, "params": params, "steps": steps, "ppl": {r["seq"]: round(r["ppl"], 3) for r in refs}}), flush=True)


if __name__ == "__main__":
    main()
