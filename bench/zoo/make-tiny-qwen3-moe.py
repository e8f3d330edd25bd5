"""Builds test/fixtures/tiny-qwen3-moe: a tiny random-weight Qwen3MoeForCausalLM written by
transformers' own save_pretrained (float32), with transformers float32 reference values.

CPU only, seed fixed; about 0.7 MB. Usage (from the repository root):
  python3 bench/zoo/make-tiny-qwen3-moe.py [--out test/fixtures/tiny-qwen3-moe]

The model: 3 layers, hidden 32, 2 query heads and 1 KV head of head_dim 32 (head_dim =
hidden_size), q_norm / k_norm, layer 0 dense (mlp_only_layers [0], intermediate_size 64),
layers 1-2 sparse MoE (4 experts of moe_intermediate_size 24, top 2, norm_topk_prob false as
saved), tied embeddings, the tokenizer of test/fixtures/tiny-llama-gqa (vocabulary 4096).

Weights are random with one structure on purpose: every input_layernorm weight is 1 and each
head's q_proj / k_proj block is a scaled orthogonal 32 x 32 matrix, so |W_h x| is the same
for every token (x = input_layernorm(h) has rms 1 up to eps / mean(h^2), about 1e-6 here)
and Qwen3's per-head 1/rms is a constant: the q/k norm is then exactly linear, every
`--qk-norm` stand-in (src/convert/qk-norm.ts) is exact, and a conversion at lossless
attention settings must reproduce the original's logits. The norm weights (gamma), the
router, the experts and everything else are generic random values; the routing varies by token.

reference.json (protocol in its `protocol` field): for the model as saved (norm_topk_prob
false) and for the same weights with norm_topk_prob true, the logits of window 0 at every
position for the vocabulary ids 0, 128, ..., 3968, the per-position NLL of window 0 and the
ppl over the windows; window 0's token ids.
"""
import argparse
import json
import math
import os
import re
import shutil

import torch
import transformers
from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, 'test', 'fixtures')
SEED = 20261202
TEXT_CHARS = 8000
SEQ = 128
WINDOWS = 4
VOCAB_STRIDE = 128


def build(out):
    torch.manual_seed(SEED)
    cfg = transformers.Qwen3MoeConfig(
        vocab_size=4096, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
        head_dim=32, moe_intermediate_size=24, num_experts=4, num_experts_per_tok=2, mlp_only_layers=[0], decoder_sparse_step=1,
        norm_topk_prob=False, tie_word_embeddings=True, rms_norm_eps=1e-6, max_position_embeddings=4096,
        rope_parameters={'rope_type': 'default', 'rope_theta': 1000000.0}, bos_token_id=0, eos_token_id=0,
    )
    m = transformers.Qwen3MoeForCausalLM(cfg).float()
    H, d = 32, 32
    n = lambda *shape: torch.randn(*shape, dtype=torch.float32)
    orth = lambda scale: scale * torch.linalg.qr(n(d, H))[0]
    with torch.no_grad():
        m.model.embed_tokens.weight.copy_(n(4096, H))
        m.model.norm.weight.copy_(0.2 * (1 + 0.1 * n(H)))  # moderate logits from the tied, unit-scale embeddings
        for layer in m.model.layers:
            a = layer.self_attn
            a.q_proj.weight.copy_(torch.cat([orth(0.8), orth(1.3)], 0))
            a.k_proj.weight.copy_(orth(1.1))
            a.v_proj.weight.copy_(n(d, H) / math.sqrt(H))
            a.o_proj.weight.copy_(n(H, 2 * d) / math.sqrt(2 * d))
            a.q_norm.weight.copy_(1 + 0.3 * n(d))
            a.k_norm.weight.copy_(1 + 0.3 * n(d))
            layer.input_layernorm.weight.fill_(1.0)
            layer.post_attention_layernorm.weight.copy_(1 + 0.2 * n(H))
            mlp = layer.mlp
            if hasattr(mlp, 'experts'):
                mlp.gate.weight.copy_(2 * n(4, H) / math.sqrt(H))
                mlp.experts.gate_up_proj.copy_(n(*mlp.experts.gate_up_proj.shape) / math.sqrt(H))
                mlp.experts.down_proj.copy_(n(*mlp.experts.down_proj.shape) / math.sqrt(24))
            else:
                mlp.gate_proj.weight.copy_(n(64, H) / math.sqrt(H))
                mlp.up_proj.weight.copy_(n(64, H) / math.sqrt(H))
                mlp.down_proj.weight.copy_(n(H, 64) / math.sqrt(64))
    os.makedirs(out, exist_ok=True)
    m.save_pretrained(out)
    for f in ('tokenizer.json', 'tokenizer_config.json'):
        shutil.copy(os.path.join(FIX, 'tiny-llama-gqa', f), os.path.join(out, f))


def measure(model, ids):
    """Window 0's logits (strided vocabulary ids) and NLL, and the ppl over all windows."""
    wins = [ids[i * SEQ:(i + 1) * SEQ] for i in range(WINDOWS)]
    nll_sum, count, nll0, logits0 = 0.0, 0, None, None
    with torch.no_grad():
        for w, win in enumerate(wins):
            x = torch.tensor([win])
            logits = model(input_ids=x).logits[0].double()
            nll = torch.nn.functional.cross_entropy(logits[:-1], x[0, 1:], reduction='none')
            nll_sum += nll.sum().item()
            count += nll.numel()
            if w == 0:
                nll0 = nll
                logits0 = logits[:, ::VOCAB_STRIDE]
    return {
        'ppl': math.exp(nll_sum / count),
        'window0_nll': [float(f'{v:.7g}') for v in nll0.tolist()],
        'window0_logits': [[float(f'{v:.7g}') for v in row] for row in logits0.tolist()],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', default=os.path.join(FIX, 'tiny-qwen3-moe'))
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    build(args.out)
    text = open(os.path.join(FIX, 'pydocs-eval.txt'), encoding='utf-8').read()[:TEXT_CHARS]
    assert all(ord(c) < 128 for c in text), 'the prefix must be ASCII (JavaScript slices UTF-16 units)'
    ids = Tokenizer.from_file(os.path.join(args.out, 'tokenizer.json')).encode(text, add_special_tokens=False).ids
    assert len(ids) >= SEQ * WINDOWS, len(ids)
    model = transformers.Qwen3MoeForCausalLM.from_pretrained(args.out, dtype=torch.float32, attn_implementation='eager').eval()
    saved = measure(model, ids)
    for layer in model.model.layers:
        if hasattr(layer.mlp, 'gate'):
            layer.mlp.gate.norm_topk_prob = True
    renorm = measure(model, ids)
    ref = {
        'protocol': (
            f'the first {TEXT_CHARS} characters of test/fixtures/pydocs-eval.txt tokenized with tokenizer.json, no special tokens; '
            f'the first {WINDOWS} non-overlapping windows of {SEQ} tokens from offset 0; each window fed whole, tokens 1..{SEQ - 1} '
            'predicted from their prefixes; ppl = exp(mean NLL over the predicted tokens). transformers '
            f'{transformers.__version__} Qwen3MoeForCausalLM.from_pretrained of this directory, float32, eager attention, CPU, '
            f'torch {torch.__version__}. window0_logits[t][j]: the logit of vocabulary id {VOCAB_STRIDE} * j at position t of window 0; '
            'window0_nll[t]: the NLL of token t + 1 of window 0. `norm_topk_prob_true`: the same weights with every router '
            'renormalising its top-k weights (config norm_topk_prob true).'
        ),
        'text_chars': TEXT_CHARS,
        'seq': SEQ,
        'windows': WINDOWS,
        'vocab_stride': VOCAB_STRIDE,
        'window0_ids': ids[:SEQ],
        'seed': SEED,
        'as_saved': saved,
        'norm_topk_prob_true': renorm,
    }
    text = json.dumps(ref, indent=1)
    # number lists on one line each
    text = re.sub(r'\[\s+([-0-9.e+,\s]+?)\s+\]', lambda m: '[' + ' '.join(m.group(1).split()) + ']', text)
    with open(os.path.join(args.out, 'reference.json'), 'w') as f:
        f.write(text + '\n')
    print(f"ppl as saved {saved['ppl']:.6f}, with norm_topk_prob true {renorm['ppl']:.6f}; {len(ids)} tokens in the prefix")


if __name__ == '__main__':
    main()
