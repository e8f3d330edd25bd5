#!/usr/bin/env python3
"""Interop check, Python side (bench/interop): stock transformers on gqa2mla's output.

For every case of manifest.json (written by bench/interop/ours.ts):
  * load the directory with AutoModelForCausalLM.from_pretrained(dir) -- no trust_remote_code,
    no patches, float32, eager attention, TF32 off -- and log the load report (missing /
    unexpected / mismatched keys, warnings);
  * run the saved eval windows (<case>.ours.safetensors: input_ids [W, S]) and take the
    per-position NLL (log-softmax in float64 over the float32 logits);
  * compare with our engine's NLL saved beside them: ppl relative difference (target < 1e-3)
    and max abs per-token NLL difference (target < 1e-3).
Every converted case also goes through the vLLM / SGLang emulations (engine_emul.py, with their
mixture-of-experts gates for MoE directories such as a converted Mixtral): each row says per engine
whether it matched our engine ("matched", "matched, with caveats" where the emulation names a
reading not run on the engine, "DIFFERS", or "refused" with the engine's load error); `verdicts`
collects them with stock transformers'. A converted Mixtral is expected to differ in transformers
(its DeepSeek-V3 gate is always sigmoid, docs/engines.md) and to match in vLLM and SGLang.
For the lossless tiny-qwen2-gqa case also load the original Qwen2 model with transformers and
compare its logits with the converted model's (target: relative Frobenius error < 1e-4).

gqa2mla carries a Qwen2 query bias through q_a_proj's bias channel and q_b_proj (stock
DeepSeek-V3 has no q_proj bias). Directories written by older versions stored it as
q_proj.bias, which stock transformers drops at load (an unexpected key); for such a directory
only, as a labelled diagnostic (a patch, not the acceptance measurement), the script re-runs
it with that bias put back, which shows how much of the difference the dropped bias explains. Where stock transformers refuses a
converted directory at load (e.g. a config field its strict config rejects), the refusal is
recorded and, also labelled as a diagnostic, the comparison runs on a copy whose config.json
only has the null MoE fields (inert: every layer is dense) replaced by 1.

  python3 bench/interop/hf_check.py --work DIR [--out FILE]
"""
import argparse
import contextlib
import io
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
import warnings

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

PPL_REL_TARGET = 1e-3
NLL_ABS_TARGET = 1e-3
LOGITS_REL_TARGET = 1e-4


def card_info():
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30,
        )
        return out.stdout.strip() or out.stderr.strip()
    except Exception as e:  # no nvidia-smi: say so
        return f"nvidia-smi unavailable: {e}"


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(f"{record.levelname} {record.name}: {record.getMessage()}")


def _info_keys(info, name):
    """One field of from_pretrained's loading info (a dict or an object) as a sorted list of strings."""
    if info is None:
        return None
    v = info.get(name) if isinstance(info, dict) else getattr(info, name, None)
    if v is None:
        return None
    return sorted(str(x) for x in v)


def load_model(path, device, dtype=torch.float32):
    """from_pretrained with the load report, log records, warnings and printed output captured
    (dtype: a torch dtype, or "auto" for the config's own dtype)."""
    handler = _Collect()
    tlog = logging.getLogger("transformers")
    tlog.addHandler(handler)
    buf_out, buf_err = io.StringIO(), io.StringIO()
    info = None
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
            warnings.simplefilter("always")
            kwargs = dict(attn_implementation="eager", output_loading_info=True)
            try:
                res = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
                dtype_arg = "dtype"
            except TypeError:
                res = AutoModelForCausalLM.from_pretrained(path, torch_dtype=dtype, **kwargs)
                dtype_arg = "torch_dtype"
    finally:
        tlog.removeHandler(handler)
    if isinstance(res, tuple):
        model, info = res
    else:
        model = res
    report = {
        "class": type(model).__name__,
        "model_type": getattr(model.config, "model_type", None),
        "dtype_arg": dtype_arg,
        "param_dtype": str(next(model.parameters()).dtype),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "missing_keys": _info_keys(info, "missing_keys"),
        "unexpected_keys": _info_keys(info, "unexpected_keys"),
        "mismatched_keys": _info_keys(info, "mismatched_keys"),
        "error_msgs": _info_keys(info, "error_msgs"),
        "loading_info_type": type(info).__name__,
        "log": handler.records,
        "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
        "stdout": buf_out.getvalue()[-4000:],
        "stderr": buf_err.getvalue()[-4000:],
    }
    model.to(device).eval()
    return model, report


@torch.no_grad()
def run_logits(model, ids, device, batch=4):
    outs = []
    for i in range(0, ids.shape[0], batch):
        x = ids[i:i + batch].to(device)
        outs.append(model(input_ids=x, use_cache=False).logits.float().cpu())
    return torch.cat(outs, 0)


def nll_of(logits, ids):
    lp = torch.log_softmax(logits[:, :-1].double(), dim=-1)
    return -lp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)


def compare_nll(nll_hf, nll_ours):
    ppl_hf = math.exp(nll_hf.mean().item())
    ppl_ours = math.exp(nll_ours.mean().item())
    d = (nll_hf - nll_ours).abs()
    rel = abs(ppl_hf / ppl_ours - 1)
    return {
        "ppl_hf": ppl_hf,
        "ppl_ours": ppl_ours,
        "ppl_rel_diff": rel,
        "nll_max_abs_diff": d.max().item(),
        "nll_mean_abs_diff": d.mean().item(),
        "pass": bool(rel < PPL_REL_TARGET and d.max().item() < NLL_ABS_TARGET),
    }


def compare_logits(a, b):
    """a vs reference b: relative Frobenius error over all, and the worst position."""
    diff = (a.double() - b.double())
    rel = (diff.norm() / b.double().norm()).item()
    per_pos = (diff.norm(dim=-1) / b.double().norm(dim=-1)).max().item()
    return {
        "logits_rel_fro": rel,
        "logits_rel_max_position": per_pos,
        "logits_max_abs_diff": diff.abs().max().item(),
        "pass": bool(rel < LOGITS_REL_TARGET),
    }


def q_bias_tensors(path):
    """self_attn.q_proj.bias tensors stored in a converted directory (name -> tensor)."""
    files = [f for f in os.listdir(path) if f.endswith(".safetensors")]
    out = {}
    for f in files:
        with safe_open(os.path.join(path, f), framework="pt") as st:
            for k in st.keys():
                if k.endswith("self_attn.q_proj.bias"):
                    out[k] = st.get_tensor(k).float()
    return out


def patch_q_bias(model, biases, device):
    """Diagnostic only: put the dropped q_proj biases back into a loaded DeepseekV3 model."""
    n = 0
    for name, b in biases.items():
        mod_name = name[: -len(".bias")]
        mod = model.get_submodule(mod_name)
        mod.bias = torch.nn.Parameter(b.to(device), requires_grad=False)
        n += 1
    return n


# DeepSeek-V3 config fields that transformers 5's strict config may require as integers; with
# first_k_dense_replace = num_hidden_layers no MoE block is built, so the values are inert.
MOE_INT_FIELDS = {"n_shared_experts": 1, "n_routed_experts": 1, "num_experts_per_tok": 1, "n_group": 1, "topk_group": 1}
STOCK = "stock"
SANITIZED = "diagnostic: config.json MoE nulls replaced by 1 (NOT stock)"


def sanitized_copy(path, dst):
    """Diagnostic only: `path` with config.json's null MoE fields set to integers (weights linked)."""
    os.makedirs(dst, exist_ok=True)
    for f in os.listdir(path):
        if f != "config.json" and not os.path.exists(os.path.join(dst, f)):
            os.symlink(os.path.abspath(os.path.join(path, f)), os.path.join(dst, f))
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    changed = {k: v for k, v in MOE_INT_FIELDS.items() if k in cfg and cfg[k] is None}
    cfg.update(changed)
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    return changed


def engine_verdict(row):
    """'matched' / 'matched, with caveats' (computed alike, but the emulation lists readings not run
    on the engine) / 'DIFFERS'."""
    if not row["pass"]:
        return "DIFFERS"
    return "matched, with caveats" if row["caveats"] else "matched"


def engine_rows(path, ids, nll_ours, device):
    """The vLLM / SGLang emulations (engine_emul.py, float32) and stock transformers in the
    config's own dtype, each compared with our engine's NLL."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from engine_emul import EngineLoadError, EngineModel

    out = {}
    for engine in ("vllm", "sglang"):
        try:
            m = EngineModel.load(path, engine=engine, device=device)
            logits = torch.cat([m(ids[i:i + 4]) for i in range(0, ids.shape[0], 4)], 0).cpu()
            row = {"dropped_tensors": m.dropped, "moe_layers": sorted(m.moe), "caveats": m.caveats, **compare_nll(nll_of(logits, ids), nll_ours)}
            row["verdict"] = engine_verdict(row)
            out[f"{engine}_emulation"] = row
            del m
        except EngineLoadError as e:
            out[f"{engine}_emulation"] = {"load_error": str(e), "pass": False, "verdict": "refused"}
    try:
        model, load = load_model(path, device, dtype="auto")
        logits = run_logits(model, ids, device)
        out["transformers_config_dtype"] = {"param_dtype": load["param_dtype"], "unexpected_keys": load["unexpected_keys"], "missing_keys": load["missing_keys"], **compare_nll(nll_of(logits, ids), nll_ours)}
        del model
    except Exception as e:  # recorded, not fatal
        out["transformers_config_dtype"] = {"error": f"{type(e).__name__}: {e}", "pass": False}
    return out


def verdicts(row):
    """Per engine: whether it computes what our engine computes (see engine_verdict)."""
    out = {"transformers_fp32": "matched" if row["nll_compare"]["pass"] else "DIFFERS"}
    for k, e in (row.get("engines") or {}).items():
        out[k] = e.get("verdict") or ("matched" if e.get("pass") else "DIFFERS")
        if k == "transformers_config_dtype" and not e.get("pass") and e.get("param_dtype") not in (None, "torch.float32"):
            out[k] = f"differs in {e['param_dtype']} (the config's dtype; the targets are float32)"
    return out


def engine_lines(engines):
    """Table rows of one case's engine comparisons: numbers and a per-engine verdict, caveats below."""
    lines = []
    for k, e in engines.items():
        if "ppl_ours" not in e:
            lines.append(f"{'  ' + k:<40} {e.get('verdict', 'ERROR')}: {(e.get('load_error') or e.get('error', ''))[:160]}")
            continue
        moe = f", MoE layers {e['moe_layers']}" if e.get("moe_layers") else ""
        verdict = e.get("verdict") or ("matched" if e["pass"] else "DIFFERS")
        lines.append(f"{'  ' + k:<40} {e['ppl_ours']:>10.4f} {e['ppl_hf']:>10.4f} {e['ppl_rel_diff']:>9.2e} {e['nll_max_abs_diff']:>10.2e} {'':>16} {('yes' if e['pass'] else 'NO'):>5}  {verdict}{moe}")
        lines += [f"{'':<6}caveat: {c}" for c in e.get("caveats") or []]
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=os.path.join(os.path.dirname(__file__), "..", "..", "tmpwork", "interop"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    work = os.path.abspath(args.work)
    out_path = args.out or os.path.join(os.environ.get("OUT", work), "interop.json")

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with open(os.path.join(work, "manifest.json")) as f:
        manifest = json.load(f)

    result = {
        "what": "stock transformers (no trust_remote_code, no patches, float32, eager, TF32 off) on gqa2mla's converted checkpoints vs gqa2mla's engine",
        "targets": {"ppl_rel_diff": PPL_REL_TARGET, "nll_max_abs_diff": NLL_ABS_TARGET, "lossless_logits_rel": LOGITS_REL_TARGET},
        "card": card_info() if device == "cuda" else "cpu",
        "torch_device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "transformers": transformers.__version__,
        },
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32},
        "ours": {"protocol": manifest["protocol"], "machine": manifest["machine"], "seconds": manifest["seconds"]},
        "cases": [],
    }
    try:
        import safetensors
        result["versions"]["safetensors"] = safetensors.__version__
    except Exception:
        pass

    logits_cache = {}
    for c in manifest["cases"]:
        t0 = time.time()
        path = os.path.join(work, c["dir"])
        row = {k: c.get(k) for k in ("name", "kind", "fixture", "target", "lossless", "options", "qBias", "qLoraRank", "meanAttnRelError", "latentNorm", "convertSeconds", "biasFold", "rope")}
        try:
            saved = load_file(os.path.join(work, c["ours"]["file"]))
            ids = saved["input_ids"].long()
            nll_ours = saved["nll"].double()
            row["mode"] = STOCK
            try:
                model, load = load_model(path, device)
            except Exception as e:
                # stock transformers refused the directory: record that (the acceptance result),
                # then measure the rest on a copy whose config.json only has the MoE nulls replaced
                row["stock_load_error"] = f"{type(e).__name__}: {e}"
                if c["kind"] != "converted":
                    raise
                changed = sanitized_copy(path, os.path.join(work, "_sanitized", c["name"]))
                if not changed:
                    raise
                row["mode"] = SANITIZED
                row["config_sanitized"] = changed
                model, load = load_model(os.path.join(work, "_sanitized", c["name"]), device)
            row["load"] = load
            logits = run_logits(model, ids, device)
            row["nll_compare"] = compare_nll(nll_of(logits, ids), nll_ours)
            if c["kind"] == "converted":
                row["engines"] = engine_rows(path, ids, nll_ours, device)
            row["verdicts"] = verdicts(row)
            keys_ok = not (load["unexpected_keys"] or load["missing_keys"])
            emul_ok = all(row.get("engines", {}).get(k, {}).get("pass", True) for k in ("vllm_emulation", "sglang_emulation"))
            # portable outputs must also compute the same in the vLLM / SGLang emulations
            portable = c.get("target") == "portable"
            row["acceptance_pass"] = bool(row["mode"] == STOCK and row["nll_compare"]["pass"] and keys_ok and (emul_ok or not portable))
            row["windows"], row["seq"] = list(ids.shape)
            if c.get("lossless"):
                logits_cache["converted"] = logits
            biases = q_bias_tensors(path) if c["kind"] == "converted" else {}
            dropped = [k for k in (load["unexpected_keys"] or []) if k.endswith("q_proj.bias")]
            if biases and (dropped or load["unexpected_keys"] is None):
                n = patch_q_bias(model, biases, device)
                pl = run_logits(model, ids, device)
                row["diagnostic_patched_q_bias"] = {
                    "note": "NOT stock: q_proj.bias put back after loading, to show what the dropped bias explains",
                    "patched_modules": n,
                    **compare_nll(nll_of(pl, ids), nll_ours),
                }
                if c.get("lossless"):
                    logits_cache["converted_patched"] = pl
            del model
            if c.get("lossless"):
                src = os.path.join(work, c["sourceDir"])
                orig, oload = load_model(src, device)
                ol = run_logits(orig, ids, device)
                del orig
                row["lossless_vs_original"] = {
                    "original_load": oload,
                    "original_ppl_hf": math.exp(nll_of(ol, ids).mean().item()),
                    "mode": row["mode"],
                    "logits_compare": compare_logits(logits_cache["converted"], ol),
                }
                if "converted_patched" in logits_cache:
                    row["lossless_vs_original"]["diagnostic_patched_q_bias"] = compare_logits(logits_cache["converted_patched"], ol)
        except Exception as e:
            import traceback
            row["error"] = f"{type(e).__name__}: {e}"
            row["traceback"] = traceback.format_exc()[-4000:]
        row["seconds"] = time.time() - t0
        if device == "cuda":
            torch.cuda.empty_cache()
        result["cases"].append(row)

    # table
    lines = []
    hdr = f"{'case':<40} {'ppl ours':>10} {'ppl hf':>10} {'ppl rel':>9} {'max|dNLL|':>10} {'unexpected keys':>16} {'pass':>5}"
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for r in result["cases"]:
        if "error" in r:
            lines.append(f"{r['name']:<40} ERROR {r['error'][:120]}")
            continue
        if "stock_load_error" in r:
            lines.append(f"{r['name']:<40} STOCK LOAD FAILED: {r['stock_load_error'][:140]}")
        s = r["nll_compare"]
        unexp = r["load"]["unexpected_keys"]
        label = r["name"] if r["mode"] == STOCK else "  (diagnostic: config sanitized)"
        lines.append(
            f"{label:<40} {s['ppl_ours']:>10.4f} {s['ppl_hf']:>10.4f} {s['ppl_rel_diff']:>9.2e} {s['nll_max_abs_diff']:>10.2e} "
            f"{(len(unexp) if unexp is not None else -1):>16} {('yes' if s['pass'] else 'NO'):>5}"
        )
        lines += engine_lines(r.get("engines") or {})
        d = r.get("diagnostic_patched_q_bias")
        if d:
            lines.append(
                f"{'  (diagnostic: q bias patched back)':<40} {d['ppl_ours']:>10.4f} {d['ppl_hf']:>10.4f} {d['ppl_rel_diff']:>9.2e} "
                f"{d['nll_max_abs_diff']:>10.2e} {'':>16} {('yes' if d['pass'] else 'NO'):>5}"
            )
        lv = r.get("lossless_vs_original")
        if lv:
            st = lv["logits_compare"]
            lines.append(
                f"  lossless logits vs original Qwen2 ({lv['mode']}): rel {st['logits_rel_fro']:.3e}, worst position {st['logits_rel_max_position']:.3e}, "
                f"max abs {st['logits_max_abs_diff']:.3e} -> {'pass' if st['pass'] else 'FAIL'}"
            )
            dp = lv.get("diagnostic_patched_q_bias")
            if dp:
                lines.append(
                    f"  lossless logits vs original Qwen2 (diagnostic, q bias patched): rel {dp['logits_rel_fro']:.3e}, "
                    f"worst position {dp['logits_rel_max_position']:.3e} -> {'pass' if dp['pass'] else 'FAIL'}"
                )
    table = "\n".join(lines)
    result["table"] = table
    print(f"card: {result['card']}; torch {torch.__version__}, transformers {transformers.__version__}")
    print(table)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {out_path}")


if __name__ == "__main__":
    sys.exit(main())
