import os
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)),'proto.py')).read())
caps=capture(32,256)
# caps: [q0,k0,q1,k1,...] each [N,heads,d] raw y
ms=[c.pow(2).mean(-1) for c in caps]  # [N,heads]
def setmode(qm,km):
    for i,m in enumerate(norms()):
        mode = qm if i%2==0 else km
        y=caps[i]; g=m.orig.weight.double()
        n=g*y*torch.rsqrt(y.pow(2).mean(-1,keepdim=True)+eps)
        if mode=='exact': m.mode='exact'; continue
        if mode=='const':
            m.mode='const'; m.c=torch.rsqrt(ms[i].mean(0)+eps).float()
        elif mode=='scalar':
            gy=g*y; m.mode='const'; m.c=((n*gy).sum((0,2))/(gy*gy).sum((0,2))).float()
        elif mode=='all':
            msall=y.pow(2).mean((-1,-2),keepdim=True); m.epsall=eps
            gy=g*y*torch.rsqrt(msall+eps); m.mode='all'; m.c=((n*gy).sum((0,2))/(gy*gy).sum((0,2))).float()
res={}
for qm,km in [('exact','exact'),('const','exact'),('exact','const'),('const','const'),('scalar','scalar'),('all','exact'),('exact','all'),('all','const'),('all','all')]:
    setmode(qm,km)
    res[f'{qm}/{km}']=(ppl(512,10),ppl(2048,3))
    print(qm,km,res[f'{qm}/{km}'],flush=True)
# per-head rms variation stats
for i in range(len(caps)):
    r=ms[i].sqrt(); lr=r.log()
    allr=caps[i].pow(2).mean((-1,-2)).sqrt().log()
    resid=lr-allr.unsqueeze(1)
    print('layer',i//2,'qk'[i%2],'std log rms per head',[round(v,3) for v in lr.std(0).tolist()],'resid after all-head',[round(v,3) for v in resid.std(0).tolist()])
