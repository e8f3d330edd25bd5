#!/usr/bin/env python3
"""Cross-check of the MoE gates of engine_moe.py (vLLM / SGLang emulation) against stock
transformers' DeepseekV3 router, on variants of one converted MoE directory whose config makes
the two compute the same thing: sigmoid scores, a (random) e_score_correction_bias for the choice,
groups scored by their best two, routed_scaling_factor, a real shared expert. transformers 5 is
an independent implementation of that gate, so agreement (per-token NLL < 1e-4) checks the
grouped / biased / scaled / shared paths that a converted Mixtral (one group, softmax, no bias,
scale 1, no shared expert) does not reach. Also lists what the emulation refuses or flags on
configs the engines mis-handle.

  python3 bench/interop/moe_crosscheck.py --dir <converted MoE dir> --ids <case>.ours.safetensors [--work DIR] [--out FILE]
      [--ts-ref DIR=REF.json ...]

--ts-ref compares the emulation on DIR (e.g. one of the variants written under --work) with the
TypeScript engine semantics and our engine, REF.json written by
`npx tsx bench/interop/selfcheck/emul-ref.ts DIR REF.json` (2 windows of 128 tokens).
"""
import argparse
import json
import math
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_emul import EngineLoadError, EngineModel  # noqa: E402

NLL_TARGET = 1e-4
ABSENT = "<absent>"  # a config patch value: remove the field
# (name, config patch, extra tensors, engines compared with transformers)
AGREE = [
    ("sigmoid, one group", {"scoring_func": "sigmoid"}, (), ("vllm",)),
    ("noaux_tc bias, one group", {"topk_method": "noaux_tc", "scoring_func": "sigmoid"}, ("bias",), ("vllm", "sglang")),
    ("noaux_tc bias, 2 groups keep 1, scale 2.5", {"topk_method": "noaux_tc", "scoring_func": "sigmoid", "n_group": 2, "topk_group": 1,
                                                   "routed_scaling_factor": 2.5}, ("bias",), ("vllm", "sglang")),
    ("noaux_tc, 2 groups, scale 2.5, 1 shared expert", {"topk_method": "noaux_tc", "scoring_func": "sigmoid", "n_group": 2, "topk_group": 1,
                                                        "routed_scaling_factor": 2.5, "n_shared_experts": 1}, ("bias", "shared"), ("vllm", "sglang")),
]
# configs an engine refuses or computes otherwise than the config says: (name, patch, extra)
FLAGGED = [
    ("sigmoid without bias (SGLang computes softmax)", {"scoring_func": "sigmoid"}, ()),
    ("noaux_tc with softmax (SGLang computes sigmoid)", {"topk_method": "noaux_tc"}, ("bias",)),
    ("noaux_tc without the bias tensor", {"topk_method": "noaux_tc", "scoring_func": "sigmoid"}, ()),
    ("n_group = experts (vLLM: invalid grouping)", {"scoring_func": "sigmoid", "n_group": 4, "topk_group": 2}, ()),
    ("n_group not dividing the experts", {"n_group": 3, "topk_group": 1}, ()),
    ("moe_layer_freq and topk_method absent", {"moe_layer_freq": ABSENT, "topk_method": ABSENT}, ()),
    ("n_shared_experts null (zero-width tensors left in)", {"n_shared_experts": None}, ()),
    ("n_shared_experts absent (DeepseekV3Config: 1)", {"n_shared_experts": ABSENT}, ()),
]


def variant(src, dst, patch, extra, seed=1):
    """src with config.json patched (ABSENT: field removed) and extra tensors in zz-extra.safetensors."""
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    for f in os.listdir(src):
        if f not in ("config.json", "model.safetensors.index.json"):
            os.symlink(os.path.abspath(os.path.join(src, f)), os.path.join(dst, f))
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    for k, v in patch.items():
        if v == ABSENT:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    g = torch.Generator().manual_seed(seed)
    E, H, W = cfg["n_routed_experts"], cfg["hidden_size"], cfg["moe_intermediate_size"]
    t = {}
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}.mlp."
        if "bias" in extra:
            t[p + "gate.e_score_correction_bias"] = torch.randn(E, generator=g) * 0.05
        if "shared" in extra:
            for n, shape in (("gate_proj", (W, H)), ("up_proj", (W, H)), ("down_proj", (H, W))):
                t[f"{p}shared_experts.{n}.weight"] = torch.randn(*shape, generator=g) * 0.02
    with open(os.path.join(src, "model.safetensors.index.json")) as f:
        index = json.load(f)
    if t:
        save_file(t, os.path.join(dst, "zz-extra.safetensors"))  # loaded last by engine_emul (sorted names)
        index["weight_map"].update({k: "zz-extra.safetensors" for k in t})
    with open(os.path.join(dst, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f)
    return dst


def nll(logits, ids):
    lp = torch.log_softmax(logits[:, :-1].double(), -1)
    return -lp.gather(-1, ids[:, 1:, None]).squeeze(-1)


def agree_rows(src, work, ids):
    rows = []
    for i, (name, patch, extra, engines) in enumerate(AGREE):
        d = variant(src, os.path.join(work, f"agree{i}"), patch, extra)
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
        with torch.no_grad():
            ref = nll(model(input_ids=ids, use_cache=False).logits.float(), ids)
        del model
        for e in engines:
            m = EngineModel.load(d, engine=e)
            got = nll(m(ids), ids)
            d_max = (got - ref).abs().max().item()
            rows.append({"case": name, "engine": e, "ppl_emulation": math.exp(got.mean().item()), "ppl_transformers": math.exp(ref.mean().item()),
                         "ppl_rel_diff": abs(math.exp((got.mean() - ref.mean()).item()) - 1), "nll_max_abs_diff": d_max,
                         "pass": d_max < NLL_TARGET, "caveats": m.caveats})
    return rows


def flagged_rows(src, work):
    rows = []
    for i, (name, patch, extra) in enumerate(FLAGGED):
        d = variant(src, os.path.join(work, f"flag{i}"), patch, extra)
        for e in ("vllm", "sglang"):
            try:
                rows.append({"case": name, "engine": e, "loads": True, "caveats": EngineModel.load(d, engine=e).caveats})
            except EngineLoadError as err:
                rows.append({"case": name, "engine": e, "loads": False, "refusal": str(err)})
    return rows


def ts_rows(refs):
    """Per DIR=REF.json and engine: max per-token NLL difference from the TypeScript emulation and our engine."""
    rows = []
    for spec in refs:
        d, ref_path = spec.split("=", 1)
        with open(ref_path) as f:
            ref = json.load(f)
        ids = torch.tensor(ref["ids"], dtype=torch.long).view(2, -1)
        ours = torch.tensor(ref["ours"], dtype=torch.float64)
        for e in ("vllm", "sglang"):
            row = {"dir": d, "engine": e, "ppl_ours": math.exp(ours.mean().item())}
            try:
                got = nll(EngineModel.load(d, engine=e)(ids), ids).reshape(-1)
            except EngineLoadError as err:
                rows.append({**row, "refusal": str(err), "ts": ref[e] if isinstance(ref[e], str) else "loads"})
                continue
            ts = ref[e]
            row.update(ppl_emulation=math.exp(got.mean().item()), nll_max_abs_diff_ours=(got - ours).abs().max().item())
            if isinstance(ts, list):
                t = torch.tensor(ts, dtype=torch.float64)
                row.update(ppl_ts=math.exp(t.mean().item()), nll_max_abs_diff_ts=(got - t).abs().max().item())
            else:
                row["ts"] = ts
            rows.append(row)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--ids", required=True, help="<case>.ours.safetensors of bench/interop/ours.ts (input_ids)")
    ap.add_argument("--work", default="/tmp/moe-crosscheck")
    ap.add_argument("--out", default=None)
    ap.add_argument("--ts-ref", action="append", default=[], help="DIR=REF.json (bench/interop/selfcheck/emul-ref.ts output)")
    args = ap.parse_args()
    torch.set_float32_matmul_precision("highest")
    ids = load_file(args.ids)["input_ids"].long()
    res = {"what": __doc__.split("\n\n")[0], "dir": args.dir, "windows_x_seq": list(ids.shape), "nll_target": NLL_TARGET,
           "agree_with_transformers": agree_rows(args.dir, args.work, ids), "flagged": flagged_rows(args.dir, args.work)}
    res["vs_typescript_semantics"] = ts_rows(args.ts_ref)
    for r in res["vs_typescript_semantics"]:
        print(f"{os.path.basename(r['dir']):<10} {r['engine']:<7} " + (f"refused: {r['refusal'][:100]}" if "refusal" in r else
              f"ppl {r['ppl_emulation']:.5f} TS {r.get('ppl_ts', float('nan')):.5f} ours {r['ppl_ours']:.5f} "
              f"max|dNLL| vs TS {r.get('nll_max_abs_diff_ts', float('nan')):.2e} vs ours {r['nll_max_abs_diff_ours']:.2e}"))
    for r in res["agree_with_transformers"]:
        print(f"{r['case']:<48} {r['engine']:<7} ppl {r['ppl_emulation']:.5f} vs transformers {r['ppl_transformers']:.5f} "
              f"max|dNLL| {r['nll_max_abs_diff']:.2e} {'ok' if r['pass'] else 'FAIL'}")
    for r in res["flagged"]:
        what = ("loads; " + " | ".join(r["caveats"])) if r["loads"] else "refused: " + r["refusal"]
        print(f"{r['case']:<48} {r['engine']:<7} {what[:220]}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)
    return 0 if all(r["pass"] for r in res["agree_with_transformers"]) else 1


if __name__ == "__main__":
    sys.exit(main())
