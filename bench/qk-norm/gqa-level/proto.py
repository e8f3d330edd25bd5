import os
HERE=os.path.dirname(os.path.abspath(__file__)) if '__file__' in dir() else os.getcwd()
ROOT=os.path.abspath(os.path.join(HERE,'..','..','..'))
import torch, json, math, sys, numpy as np
from transformers import AutoModelForCausalLM
from tokenizers import Tokenizer
torch.set_num_threads(1)
D=ROOT+'/bench/zoo/models/zoo-qwen3'
tok=Tokenizer.from_file(D+'/tokenizer.json')
model=AutoModelForCausalLM.from_pretrained(D,dtype=torch.float32,attn_implementation='eager').eval()
ev=tok.encode(open(ROOT+'/test/fixtures/pydocs-eval.txt').read(),add_special_tokens=False).ids
tr=tok.encode(open(ROOT+'/test/fixtures/pydocs-train-3M.txt').read()[:600000],add_special_tokens=False).ids
ev=torch.tensor(ev); tr=torch.tensor(tr)
layers=model.model.layers
eps=model.config.rms_norm_eps
class Norm(torch.nn.Module):
    def __init__(s, orig):
        super().__init__(); s.orig=orig; s.mode='exact'; s.c=None; s.cap=None
    def forward(s, y):
        if s.cap is not None: s.cap.append(y.detach().reshape(-1,y.shape[-2],y.shape[-1]).clone())
        g=s.orig.weight
        if s.mode=='exact': return s.orig(y)
        if s.mode=='const': return g*y*s.c.view(-1,1)
        if s.mode=='all':  # one rms over all heads of the token
            ms=y.pow(2).mean(dim=(-1,-2),keepdim=True)
            return g*y*torch.rsqrt(ms+s.epsall)*s.c.view(-1,1)
        raise ValueError
for L in layers:
    L.self_attn.q_norm=Norm(L.self_attn.q_norm); L.self_attn.k_norm=Norm(L.self_attn.k_norm)
def norms():
    for L in layers: yield L.self_attn.q_norm; yield L.self_attn.k_norm
@torch.no_grad()
def ppl(seq,nw):
    tot=0;n=0
    for w in range(nw):
        ids=ev[w*seq:(w+1)*seq].unsqueeze(0)
        lo=model(ids).logits[0,:-1]
        tot+=torch.nn.functional.cross_entropy(lo,ids[0,1:],reduction='sum').item(); n+=seq-1
    return math.exp(tot/n)
@torch.no_grad()
def capture(nwin=32,seq=256):
    for m in norms(): m.cap=[]; m.mode='exact'
    g=torch.Generator().manual_seed(1)
    offs=torch.randint(0,len(tr)-seq,(nwin,),generator=g)
    for o in offs: model(tr[o:o+seq].unsqueeze(0))
    caps=[]
    for m in norms(): caps.append(torch.cat(m.cap).double()); m.cap=None
    return caps
