import os
NO_REG_PRINTS=True
# key regression weighted by the attention each key receives in the original model
# (column sums of the softmax over the query heads of its KV group, calibration windows)
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)),'reg.py')).read().split("# q const + k reg ; q all + k reg")[0])
G=model.config.num_key_value_heads; H=model.config.num_attention_heads
for m in norms(): m.mode='exact'
g=torch.Generator().manual_seed(1)
offs=torch.randint(0,len(tr)-256,(32,),generator=g)
wts=[[] for _ in layers]
with torch.no_grad():
    for o in offs:
        out=model(tr[o:o+256].unsqueeze(0),output_attentions=True)
        for li,a in enumerate(out.attentions):  # [1,H,T,T]
            col=a[0].sum(1)  # [H,T]: attention mass each key gets, per query head
            wts[li].append(col.view(G,H//G,-1).mean(1).T.double())  # [T,G]
W=[torch.cat(w) for w in wts]
def wfit(li, power):
    i=2*li+1; x=X[li]; y=caps[i]; m=orig[li][1]; gm=m.orig.weight.double()
    n=gm*y*torch.rsqrt(y.pow(2).mean(-1,keepdim=True)+eps)  # [N,G,d]
    A=[]
    for gi in range(G):
        w=W[li][:,gi].pow(power); w=w/w.mean()
        S=(x*w[:,None]).T@x/len(x); C=(n[:,gi]*w[:,None]).T@x/len(x)
        A.append(C@torch.linalg.inv(S))
    return torch.cat(A)
for power in [0.5,1.0]:
    for li,L in enumerate(layers):
        qn,kn=orig[li]; qn.mode='exact'; L.self_attn.q_norm=qn
        L.self_attn.k_norm=RegNorm(li,wfit(li,power))
    print('k weighted reg power',power,ppl(512,10),ppl(2048,3),flush=True)
