"""vLLM's and SGLang's DeepSeek-V2/V3 mixture-of-experts layers, as their code reads (an emulation
for bench/interop/engine_emul.py, written from the facts below, not from the engines' code).

Sources read (stored snapshots, December 2026):
  vLLM   vllm/model_executor/models/deepseek_v2.py at 002d6073aa034d4f5545d45021b0e56d1f3c3593
           (DeepseekV2MoE, DeepseekV2DecoderLayer, DeepseekV2Model.load_weights);
         vllm/model_executor/layers/fused_moe/router/grouped_topk_router.py at
           055e47c28003156421365af985d676fc921cb075 (grouped_topk, GroupedTopKRouter);
         .../router/fused_topk_router.py at 04b27e946bb714dcafdb20588a82050295d0bbb1;
         .../router/router_factory.py at 033da35c5c42b17d59960d97e9974ee6fe15ec65.
  SGLang python/sglang/srt/models/deepseek_v2.py at 3e4a39ee73308590c5c753108bdcb8d333f7f1c6
           (MoEGate, DeepseekV2MoE, DeepseekV2DecoderLayer._is_layer_sparse,
           determine_num_fused_shared_experts, load_weights);
         python/sglang/srt/layers/moe/topk.py at 06c48ca8da0b2c8aac15df74a768e6a012444064
           (TopK, select_experts, grouped_topk_gpu, biased_grouped_topk_impl).

Facts used:
  * Absent config fields take transformers' DeepseekV3Config defaults (both engines load the
    config through it): n_routed_experts 256, n_shared_experts 1, num_experts_per_tok 8,
    n_group 8, topk_group 4, first_k_dense_replace 3, norm_topk_prob true,
    routed_scaling_factor 2.5, moe_intermediate_size 2048; moe_layer_freq, topk_method and
    scoring_func are not fields of that class.
  * MoE layer: n_routed_experts not null, layer >= first_k_dense_replace and
    layer % moe_layer_freq == 0 (vLLM: getattr default 1; SGLang reads config.moe_layer_freq).
  * Router logits: hidden @ gate.weight^T (no bias). e_score_correction_bias is a parameter only
    for topk_method "noaux_tc" (vLLM: getattr default None; SGLang reads config.topk_method).
  * vLLM: scores softmax or sigmoid by scoring_func (default softmax; anything else raises).
    Grouping is valid when experts > n_group and experts % n_group == 0; then groups are scored
    by their best expert (no bias) or by their best two of scores + bias, the best topk_group
    groups kept, top-k experts of scores (+ bias) among them, weights the unbiased scores.
    Invalid grouping falls back to ungrouped top-k: with a bias by scoring_func + bias, without
    one by fused_topk called without scoring_func (softmax). Renormalised over the selected
    when norm_topk_prob; routed output times routed_scaling_factor.
  * SGLang: scoring_func is not used. Without a correction bias: softmax, groups scored by their
    best expert (scores.view(tokens, n_group, -1): n_group must divide the experts), other groups
    masked to 0, top-k. With one (noaux_tc): sigmoid, scores + bias for the choice, groups by
    their best two, weights the unbiased sigmoid scores. Renormalised when norm_topk_prob;
    routed output times routed_scaling_factor.
  * Shared experts: built when n_shared_experts is not null, a SwiGLU MLP of width
    moe_intermediate_size * n_shared_experts added after the routed sum (not scaled). SGLang
    fuses it into the routed top-k only for 256 routed experts with n_shared_experts 1 on CUDA;
    otherwise num_fused_shared_experts is 0, so a null n_shared_experts loads there as well.
  * Loading: vLLM refuses parameters the checkpoint does not fill ("weights were not initialized
    from checkpoint"); SGLang's loader skips unknown names with a warning and does not check that
    every parameter was filled (a missing expert leaves torch.empty memory).
"""
import torch

# transformers' DeepseekV3Config defaults for fields absent from config.json (5.18, read from the package)
CONFIG_DEFAULTS = {
    "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8, "n_group": 8, "topk_group": 4,
    "first_k_dense_replace": 3, "norm_topk_prob": True, "routed_scaling_factor": 2.5, "moe_intermediate_size": 2048,
}
PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
# what is known of a zero-width SwiGLU MLP (d = 0) in each engine
ZERO_WIDTH = {
    "vllm": "vLLM's CUDA silu_and_mul launcher (csrc/activation_kernels.cu at 5500c76d, and a later stored launch macro alike) computes "
            "num_tokens = numel / size(-1), an integer division by zero at d = 0, and block(min(d, 1024)) = 0 threads; "
            "whether SiluAndMul dispatches to it or to torch's silu depends on vLLM's custom_ops compilation setting (not read)",
    "sglang": "SGLang's SiluAndMul (sgl_kernel silu_and_mul) at d = 0 was not read",
}


def field(cfg, k):
    """config.json value, or DeepseekV3Config's default when absent."""
    return cfg[k] if k in cfg else CONFIG_DEFAULTS.get(k)


def moe_layers(engine, cfg, problems):
    """Indices of the layers the engine builds as MoE (problems: appended load refusals)."""
    if field(cfg, "n_routed_experts") is None:
        return []
    first = field(cfg, "first_k_dense_replace")
    L = cfg["num_hidden_layers"]
    if "moe_layer_freq" not in cfg and any(l >= first for l in range(L)):
        if engine == "sglang":
            problems.append("moe_layer_freq absent: SGLang reads config.moe_layer_freq for every layer >= first_k_dense_replace (AttributeError)")
            return []
    freq = cfg.get("moe_layer_freq", 1)
    return [l for l in range(L) if l >= first and l % freq == 0]


class MoeGate:
    """The gate one engine computes for one config (with the caveats of that reading)."""

    def __init__(self, engine, cfg):
        self.engine = engine
        self.E = field(cfg, "n_routed_experts")
        self.k = field(cfg, "num_experts_per_tok")
        self.n_group, self.topk_group = field(cfg, "n_group"), field(cfg, "topk_group")
        self.renorm = bool(field(cfg, "norm_topk_prob"))
        self.scale = float(field(cfg, "routed_scaling_factor"))
        self.scoring = cfg.get("scoring_func", "softmax")
        self.biased = cfg.get("topk_method") == "noaux_tc"
        self.shared = field(cfg, "n_shared_experts")
        self.width = field(cfg, "moe_intermediate_size")
        self.caveats, self.problems = [], []
        (self._vllm_reading if engine == "vllm" else self._sglang_reading)(cfg)
        if self.k > self.E:
            self.problems.append(f"num_experts_per_tok {self.k} exceeds n_routed_experts {self.E} (top-k fails)")
        self._shared_caveats()

    def _vllm_reading(self, cfg):
        if self.scoring not in ("softmax", "sigmoid"):
            self.problems.append(f"scoring_func {self.scoring!r}: vLLM's grouped_topk raises 'Unsupported scoring function'")
        self.grouped = self.E > self.n_group and self.E % self.n_group == 0
        if not self.grouped:
            what = "scoring_func + correction bias" if self.biased else "softmax (fused_topk is called without scoring_func)"
            self.caveats.append(f"vLLM: {self.E} experts in n_group {self.n_group} is not a valid grouping: ungrouped top-k by {what}"
                                + (", topk_group ignored" if self.topk_group < self.n_group else ""))
            if not self.biased and self.scoring != "softmax":
                self.scoring = "softmax"

    def _sglang_reading(self, cfg):
        if "topk_method" not in cfg:
            self.problems.append("topk_method absent: SGLang's MoEGate reads config.topk_method (AttributeError)")
        want = "sigmoid" if self.biased else "softmax"
        if self.scoring != want:
            self.caveats.append(f"SGLang ignores scoring_func {self.scoring!r}: its {'biased ' if self.biased else ''}grouped top-k is {want}")
        self.scoring = want
        self.grouped = True
        if self.E % self.n_group != 0:
            self.problems.append(f"n_group {self.n_group} does not divide {self.E} experts: SGLang's grouped top-k view fails")
        elif self.biased and self.E // self.n_group < 2:
            self.problems.append("groups of one expert: SGLang's biased grouped top-k takes the best two per group (fails)")
        if not self.renorm and self.scale != 1.0:
            self.caveats.append("SGLang: norm_topk_prob false with routed_scaling_factor != 1: where the scale is applied depends on the MoE "
                                "runner (apply_routed_scaling_factor_on_output only acts under renormalize); emulated as applied once")

    def _shared_caveats(self):
        if self.shared == 0:
            self.caveats.append(f"{self.engine}: n_shared_experts 0 builds a zero-width shared_experts MLP (intermediate size 0), "
                                "emulated as adding zeros; not run on the engine: " + ZERO_WIDTH[self.engine])
        elif self.shared and self.engine == "sglang" and self.E == 256 and self.shared == 1:
            self.caveats.append("SGLang on CUDA fuses the shared expert into the routed top-k (256 experts, 1 shared); emulated unfused")

    def route(self, logits, bias):
        """(weights [T, k], ids [T, k]) of router logits [T, E] (float)."""
        scores = logits.softmax(-1) if self.scoring == "softmax" else logits.sigmoid()
        choice = scores + bias[None, :] if self.biased else scores
        if self.grouped and self.n_group > 1:
            T = scores.shape[0]
            g = choice.view(T, self.n_group, -1)
            gs = g.topk(2, dim=-1)[0].sum(-1) if self.biased else g.max(-1).values
            keep = torch.zeros_like(gs).scatter_(1, gs.topk(self.topk_group, dim=-1)[1], 1.0)
            keep = keep[:, :, None].expand(g.shape).reshape(T, -1).bool()
            fill = 0.0 if (self.engine == "sglang" and not self.biased) else float("-inf")
            choice = choice.masked_fill(~keep, fill)
        ids = choice.topk(self.k, dim=-1)[1]
        w = scores.gather(1, ids)
        if self.renorm:
            w = w / w.sum(-1, keepdim=True)
        return w * self.scale, ids


def swiglu(x, gate, up, down):
    return (torch.nn.functional.silu(x @ gate.T) * (x @ up.T)) @ down.T


def check_tensors(engine, gate, layers, tensors):
    """Load refusals for MoE layers whose weights the checkpoint lacks (list of strings)."""
    out = []
    for l in layers:
        p = f"model.layers.{l}.mlp."
        need = [p + "gate.weight"] + [f"{p}experts.{e}.{n}.weight" for e in range(gate.E) for n in PROJECTIONS]
        if gate.biased:
            need.append(p + "gate.e_score_correction_bias")
        if gate.shared is not None:
            need += [f"{p}shared_experts.{n}.weight" for n in PROJECTIONS]
        missing = [n for n in need if n not in tensors]
        if missing:
            how = ("refuses weights not initialized from the checkpoint" if engine == "vllm"
                   else "would leave them uninitialised (torch.empty; its loader does not check)")
            out.append(f"layer {l} lacks {len(missing)} MoE tensor(s) (first {missing[0]}): {engine} {how}")
            continue
        out += _shape_problems(gate, p, tensors)
    return out


def _shape_problems(gate, p, tensors):
    """Expert / shared-expert weights whose shape is not the one the engine builds."""
    hidden = tensors[p + "gate.weight"].shape[1]
    want = {f"{p}experts.0.gate_proj.weight": (gate.width, hidden)}
    if gate.shared is not None:
        want[f"{p}shared_experts.gate_proj.weight"] = (gate.width * gate.shared, hidden)
        want[f"{p}shared_experts.down_proj.weight"] = (hidden, gate.width * gate.shared)
    return [f"{n} is {list(tensors[n].shape)}, the engine builds {list(s)} (weight loader shape check)"
            for n, s in want.items() if tuple(tensors[n].shape) != s]


def expected_mlp_names(gate, l, moe):
    """The parameter names (checkpoint spelling) of layer l's MLP as the engine builds it."""
    p = f"model.layers.{l}.mlp."
    if not moe:
        return {f"{p}{n}.weight" for n in PROJECTIONS}
    names = {p + "gate.weight"} | {f"{p}experts.{e}.{n}.weight" for e in range(gate.E) for n in PROJECTIONS}
    if gate.biased:
        names.add(p + "gate.e_score_correction_bias")
    if gate.shared is not None:
        names |= {f"{p}shared_experts.{n}.weight" for n in PROJECTIONS}
    return names


def moe_forward(gate, t, l, x):
    """The MoE block of layer l on x [B, S, hidden] with tensors t."""
    p = f"model.layers.{l}.mlp."
    B, S, Hd = x.shape
    h = x.reshape(B * S, Hd)
    bias = t.get(p + "gate.e_score_correction_bias")
    w, ids = gate.route((h @ t[p + "gate.weight"].T).float(), bias.float() if bias is not None else None)
    out = torch.zeros_like(h)
    for e in range(gate.E):
        rows, slot = (ids == e).nonzero(as_tuple=True)
        if rows.numel():
            y = swiglu(h[rows], *(t[f"{p}experts.{e}.{n}.weight"] for n in PROJECTIONS))
            out.index_add_(0, rows, y * w[rows, slot, None].to(h.dtype))
    if gate.shared:
        out = out + swiglu(h, *(t[f"{p}shared_experts.{n}.weight"] for n in PROJECTIONS))
    return out.view(B, S, Hd)
