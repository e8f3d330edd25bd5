#!/usr/bin/env python3
"""A PyTorch emulation of how stock vLLM and SGLang compute a DeepSeek-V3 directory.

Written from the engine facts in docs/engines.md (not from the engines' code): the DeepSeek-V2/V3
attention as both engines build it --
  * every attention linear without a bias; `.bias` tensors in the checkpoint are skipped;
  * q_a_layernorm / kv_a_layernorm always applied (qk_latent_layernorm is not read);
  * rope on q_pe / k_pe with interleaved (GPT-J) pairs whatever rope_interleave says;
  * any rope type other than `default` computed as deepseek_yarn: YaRN frequencies over
    qk_rope_head_dim from factor / original_max_position_embeddings / beta_fast (32) /
    beta_slow (1), cos/sin times mscale(f, mscale) / mscale(f, mscale_all_dim) * attn_factor,
    softmax scale times mscale(f, mscale_all_dim)^2. vLLM reads rope_parameters; SGLang reads
    rope_theta and rope_scaling (a non-null rope_scaling is always deepseek_yarn there);
  * lm_head never tied; loads refused when lm_head.weight is absent or n_routed_experts is null;
  * mixture-of-experts layers (engine_moe below: layer >= first_k_dense_replace and
    layer % moe_layer_freq == 0) with each engine's gate; what an engine refuses raises
    EngineLoadError, what it computes differently from the config's meaning or what was not
    verified on the engine is listed in EngineModel.caveats (never silently computed).
Computes in float32 (or the given dtype), eager, causal.

  from engine_emul import EngineModel
  m = EngineModel.load(dir, engine="vllm", device="cuda")   # raises EngineLoadError
  logits = m(input_ids)                                      # [B, S, vocab] float32
  m.caveats                                                  # [str]: see above
"""
import json
import math
import os

import torch
from safetensors.torch import load_file

from engine_moe import MoeGate, check_tensors, expected_mlp_names, field, moe_forward, moe_layers


class EngineLoadError(Exception):
    """The emulated engine would not load the directory (the reasons in .args[0])."""


def mscale_of(scale, m=1.0):
    return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0


def _rope_dict(engine, cfg):
    """(base, non-default rope dict or None) as the engine reads the config."""
    rp = cfg.get("rope_parameters")
    rs = cfg.get("rope_scaling")
    if engine == "sglang":
        base = cfg.get("rope_theta", (rp or {}).get("rope_theta", 10000.0))
        return base, (rs or None)
    if rp:
        return rp.get("rope_theta", 10000.0), (None if rp.get("rope_type", "default") == "default" else rp)
    base = cfg.get("rope_theta", 10000.0)
    if rs and rs.get("rope_type", rs.get("type")) != "default":
        return base, rs
    return base, None


def rope_tables(engine, cfg, dim):
    """inv_freq [dim/2] (float32), cos/sin factor, softmax factor."""
    base, p = _rope_dict(engine, cfg)
    idx = torch.arange(0, dim, 2, dtype=torch.float32) / dim
    pos_freqs = torch.tensor(base, dtype=torch.float32) ** idx
    if p is None:
        return 1.0 / pos_freqs, 1.0, 1.0
    if "factor" not in p or "original_max_position_embeddings" not in p:
        raise EngineLoadError(f"deepseek_yarn needs factor and original_max_position_embeddings (rope dict {p})")
    f = float(p["factor"])
    omax = float(p["original_max_position_embeddings"])
    bf, bs = float(p.get("beta_fast", 32)), float(p.get("beta_slow", 1))

    def corr(rot):
        return dim * math.log(omax / (rot * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(corr(bf)), 0)
    high = min(math.ceil(corr(bs)), dim - 1)
    if low == high:
        high += 0.001
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    mask = 1 - ramp  # 1: unscaled (extrapolation), 0: interpolated by the factor
    inv = (1.0 / (f * pos_freqs)) * (1 - mask) + (1.0 / pos_freqs) * mask
    mad = float(p.get("mscale_all_dim", 0) or 0)
    cos_sin = mscale_of(f, float(p.get("mscale", 1))) / mscale_of(f, mad) * float(p.get("attn_factor", 1))
    soft = mscale_of(f, mad) ** 2
    return inv, cos_sin, soft


def rotate_pairs(x, cos, sin):
    """GPT-J rotation: pairs (2i, 2i+1) by frequency i. x [..., S, dim], cos/sin [S, dim/2]."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    o1 = x1 * cos - x2 * sin
    o2 = x2 * cos + x1 * sin
    return torch.stack((o1, o2), dim=-1).flatten(-2)


def rms_norm(x, w, eps):
    v = x.float().pow(2).mean(-1, keepdim=True)
    return (x.float() * torch.rsqrt(v + eps)).to(x.dtype) * w


def _moe_reading(engine, cfg, tensors, problems, caveats):
    """(gate, MoE layer indices) as the engine reads the config; refusals into problems."""
    if field(cfg, "n_routed_experts") is None:
        problems.append("n_routed_experts is null (the loaders compute n_routed_experts + ...: TypeError)")
        return None, []
    layers = moe_layers(engine, cfg, problems)
    if not layers:
        return None, []
    gate = MoeGate(engine, cfg)
    problems += gate.problems + check_tensors(engine, gate, layers, tensors)
    caveats += gate.caveats
    return gate, layers


def _attention_names(cfg, l):
    p = f"model.layers.{l}."
    q = ["q_a_proj", "q_a_layernorm", "q_b_proj"] if cfg.get("q_lora_rank") else ["q_proj"]
    names = {f"{p}self_attn.{n}.weight" for n in q + ["kv_a_proj_with_mqa", "kv_a_layernorm", "kv_b_proj", "o_proj"]}
    return names | {p + "input_layernorm.weight", p + "post_attention_layernorm.weight"}


def _unknown_tensors(engine, cfg, tensors, gate, moe, problems, caveats):
    """Checkpoint tensors the engine has no parameter for (biases aside: both skip those).
    vLLM's load_weights looks every other name up in its parameters (KeyError). SGLang renames
    gate_proj / up_proj to gate_up_proj and looks that up (KeyError); other names it logs as
    '<name> not found in params_dict' and skips."""
    known = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
    for l in range(cfg["num_hidden_layers"]):
        known |= _attention_names(cfg, l) | expected_mlp_names(gate, l, l in moe)
    extra = sorted(k for k in tensors if k not in known and not k.endswith(".bias") and "rotary_emb.inv_freq" not in k)
    stacked = [k for k in extra if engine == "vllm" or "gate_proj" in k or "up_proj" in k]
    if stacked:
        problems.append(f"{len(stacked)} tensor(s) with no {engine} parameter (load_weights KeyError), first {stacked[0]}")
    elif extra:
        caveats.append(f"SGLang skips {len(extra)} tensor(s) it has no parameter for (warning), first {extra[0]}")


class EngineModel:
    """The emulated engine's forward over a converted directory."""

    def __init__(self, cfg, tensors, engine, device, dtype):
        self.cfg, self.t, self.engine, self.device, self.dtype = cfg, tensors, engine, device, dtype
        c = cfg
        self.L = c["num_hidden_layers"]
        self.H = c["num_attention_heads"]
        self.dn, self.dr, self.dv = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
        self.R = c["kv_lora_rank"]
        self.qlr = c.get("q_lora_rank")
        self.eps = c.get("rms_norm_eps", 1e-6)
        self.inv, self.cos_sin, soft = rope_tables(engine, c, self.dr)
        self.scale = (self.dn + self.dr) ** -0.5 * soft

    @staticmethod
    def load(path, engine="vllm", device="cpu", dtype=torch.float32):
        with open(os.path.join(path, "config.json")) as f:
            cfg = json.load(f)
        tensors = {}
        for f in sorted(os.listdir(path)):
            if f.endswith(".safetensors"):
                tensors.update(load_file(os.path.join(path, f)))
        problems, caveats = [], []
        if cfg.get("model_type") != "deepseek_v3":
            problems.append(f"model_type {cfg.get('model_type')}")
        if "lm_head.weight" not in tensors:
            problems.append("lm_head.weight absent (never tied)")
        if cfg.get("hidden_act", "silu") != "silu":
            problems.append(f"hidden_act {cfg.get('hidden_act')!r}: only silu is supported (ValueError)")
        gate, moe = _moe_reading(engine, cfg, tensors, problems, caveats)
        if not problems:
            _unknown_tensors(engine, cfg, tensors, gate, moe, problems, caveats)
        if problems:
            raise EngineLoadError("; ".join(problems))
        dropped = sorted(k for k in tensors if k.endswith(".bias"))
        keep = {k: v.to(device=device, dtype=dtype) for k, v in tensors.items() if not k.endswith(".bias")}
        m = EngineModel(cfg, keep, engine, device, dtype)
        m.dropped, m.caveats, m.gate, m.moe = dropped, caveats, gate, set(moe)
        return m

    def _w(self, name):
        return self.t[name]

    def attention(self, l, x):
        p = f"model.layers.{l}.self_attn."
        B, S, _ = x.shape
        H, dn, dr, dv, R = self.H, self.dn, self.dr, self.dv, self.R
        if self.qlr:
            qa = rms_norm(x @ self._w(p + "q_a_proj.weight").T, self._w(p + "q_a_layernorm.weight"), self.eps)
            q = qa @ self._w(p + "q_b_proj.weight").T
        else:
            q = x @ self._w(p + "q_proj.weight").T
        q = q.view(B, S, H, dn + dr).transpose(1, 2)
        lat = x @ self._w(p + "kv_a_proj_with_mqa.weight").T
        c = rms_norm(lat[..., :R], self._w(p + "kv_a_layernorm.weight"), self.eps)
        kpe = lat[..., R:].unsqueeze(1)  # [B, 1, S, dr]
        kv = (c @ self._w(p + "kv_b_proj.weight").T).view(B, S, H, dn + dv).transpose(1, 2)
        pos = torch.arange(S, device=x.device, dtype=torch.float32)
        ang = pos[:, None] * self.inv.to(x.device)[None, :]
        cos, sin = (ang.cos() * self.cos_sin).to(x.dtype), (ang.sin() * self.cos_sin).to(x.dtype)
        qpe = rotate_pairs(q[..., dn:], cos, sin)
        kpe = rotate_pairs(kpe, cos, sin).expand(B, H, S, dr)
        qf = torch.cat([q[..., :dn], qpe], -1)
        kf = torch.cat([kv[..., :dn], kpe], -1)
        att = (qf @ kf.transpose(-1, -2)).float() * self.scale
        mask = torch.ones(S, S, dtype=torch.bool, device=x.device).triu(1)
        att = att.masked_fill(mask, float("-inf")).softmax(-1).to(x.dtype)
        o = (att @ kv[..., dn:]).transpose(1, 2).reshape(B, S, H * dv)
        return o @ self._w(p + "o_proj.weight").T

    def mlp(self, l, x):
        if l in self.moe:
            return moe_forward(self.gate, self.t, l, x)
        p = f"model.layers.{l}.mlp."
        g = x @ self._w(p + "gate_proj.weight").T
        u = x @ self._w(p + "up_proj.weight").T
        return (torch.nn.functional.silu(g) * u) @ self._w(p + "down_proj.weight").T

    @torch.no_grad()
    def __call__(self, ids):
        h = self._w("model.embed_tokens.weight")[ids.to(self.device)]
        for l in range(self.L):
            p = f"model.layers.{l}."
            h = h + self.attention(l, rms_norm(h, self._w(p + "input_layernorm.weight"), self.eps))
            h = h + self.mlp(l, rms_norm(h, self._w(p + "post_attention_layernorm.weight"), self.eps))
        h = rms_norm(h, self._w("model.norm.weight"), self.eps)
        return (h @ self._w("lm_head.weight").T).float()
