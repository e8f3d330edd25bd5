import json, struct
import numpy as np
from torch import Tensor
def load_file(path):
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    h = json.loads(b[8:8 + n]); base = 8 + n; out = {}
    for k, v in h.items():
        if k == '__metadata__': continue
        s, e = v['data_offsets']; raw = b[base + s: base + e]
        if v['dtype'] == 'BF16':
            a = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif v['dtype'] == 'F16': a = np.frombuffer(raw, np.float16).astype(np.float32)
        elif v['dtype'] == 'F32': a = np.frombuffer(raw, np.float32)
        elif v['dtype'] == 'F64': a = np.frombuffer(raw, np.float64)
        elif v['dtype'] == 'I64': a = np.frombuffer(raw, np.int64)
        out[k] = Tensor(a.reshape(v['shape']).copy())
    return out
