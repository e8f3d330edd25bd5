import json, sys, math
sys.path.insert(0, 'bench/interop/selfcheck/shim'); sys.path.insert(0, 'bench/interop')
import numpy as np
import torch
from engine_emul import EngineModel, EngineLoadError
ref = json.load(open(sys.argv[2]))
ids = torch.tensor(np.array(ref['ids'], dtype=np.int64).reshape(2, 128))
for engine in ('vllm', 'sglang'):
    try:
        m = EngineModel.load(sys.argv[1], engine=engine)
    except EngineLoadError as e:
        print(engine, 'load error:', e, '| TS view:', str(ref[engine])[:150]); continue
    lg = m(ids).a.astype(np.float64)
    lp = lg[:, :-1] - lg[:, :-1].max(-1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
    nll = -np.take_along_axis(lp, ids.a[:, 1:, None], -1)[..., 0].reshape(-1)
    ours = np.array(ref['ours'])
    print(engine, 'ppl emul %.5f ours %.5f' % (math.exp(nll.mean()), math.exp(ours.mean())), 'max|dNLL| vs ours %.2e' % np.abs(nll - ours).max(),
          'vs TS emulation %.2e' % (np.abs(nll - np.array(ref[engine])).max() if isinstance(ref[engine], list) else float('nan')), 'dropped', len(m.dropped))
