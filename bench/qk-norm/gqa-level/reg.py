import os
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)),'proto.py')).read())
xs=[[] for _ in layers]
hooks=[L.self_attn.register_forward_pre_hook(lambda m,a,kw,i=i: xs[i].append(kw['hidden_states'][0].detach().double().clone()) if cap_on[0] else None, with_kwargs=True) for i,L in enumerate(layers)]
cap_on=[True]
caps=capture(32,256)
cap_on[0]=False
X=[torch.cat(x) for x in xs]
class Lin(torch.nn.Module):
    def __init__(s,A,b): super().__init__(); s.A=A.float(); s.b=b.float()
    def forward(s,hs): return hs@s.A.T+s.b
# regression of normed heads on [x,1]; replace via pre-hook stash
stash=[None]*len(layers)
for i,L in enumerate(layers):
    L.self_attn.register_forward_pre_hook(lambda m,a,kw,i=i: stash.__setitem__(i,kw['hidden_states']), with_kwargs=True)
class RegNorm(torch.nn.Module):
    def __init__(s,li,A): super().__init__(); s.li=li; s.A=A.float()
    def forward(s,y):
        x=stash[s.li]; out=x@s.A.T
        return out.view(y.shape)
def fit(i, lam=0.0):
    x=X[i//2]; y=caps[i]; m=list(norms())[i]; g=m.orig.weight.double()
    n=(g*y*torch.rsqrt(y.pow(2).mean(-1,keepdim=True)+eps)).reshape(len(x),-1)
    S=x.T@x/len(x); C=n.T@x/len(x)
    return C@torch.linalg.inv(S+lam*S.diagonal().mean()*torch.eye(len(S),dtype=S.dtype))
orig=[(L.self_attn.q_norm,L.self_attn.k_norm) for L in layers]
def run(kmode, lam=0.0, qmode='exact'):
    for li,L in enumerate(layers):
        qn,kn=orig[li]; qn.mode='exact'; kn.mode='exact'
        L.self_attn.q_norm=qn; L.self_attn.k_norm=kn
        if kmode=='reg': L.self_attn.k_norm=RegNorm(li,fit(2*li+1,lam))
        if qmode=='reg': L.self_attn.q_norm=RegNorm(li,fit(2*li,lam))
    return ppl(512,10),ppl(2048,3)
if not globals().get("NO_REG_PRINTS"):
    print("k reg", run('reg'),flush=True)
if not globals().get("NO_REG_PRINTS"):
    print("k ridge1e-2", run('reg',1e-2),flush=True)
if not globals().get("NO_REG_PRINTS"):
    print("q reg", run('none',0,'reg'),flush=True)
# q const + k reg ; q all + k reg
def qset(li, mode):
    qn=orig[li][0]; y=caps[2*li]; g=qn.orig.weight.double()
    n=g*y*torch.rsqrt(y.pow(2).mean(-1,keepdim=True)+eps)
    if mode=='const': qn.mode='const'; qn.c=torch.rsqrt(y.pow(2).mean(-1).mean(0)+eps).float()
    if mode=='all':
        gy=g*y*torch.rsqrt(y.pow(2).mean((-1,-2),keepdim=True)+eps); qn.mode='all'; qn.epsall=eps; qn.c=((n*gy).sum((0,2))/(gy*gy).sum((0,2))).float()
    layers[li].self_attn.q_norm=qn
for qm in ['const','all']:
    run('reg')
    for li in range(len(layers)): qset(li,qm)
    print('q',qm,'k reg',ppl(512,10),ppl(2048,3),flush=True)
