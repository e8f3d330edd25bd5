# Minimal numpy stand-in for the torch API engine_emul.py uses (local validation only).
import numpy as np
float32 = np.float32; float64 = np.float64; bfloat16 = 'bf16'; bool = np.bool_; int64 = np.int64
def _a(x): return x.a if isinstance(x, Tensor) else x
class Tensor:
    def __init__(self, a): self.a = np.asarray(a)
    shape = property(lambda s: s.a.shape)
    dtype = property(lambda s: s.a.dtype)
    T = property(lambda s: Tensor(s.a.T))
    def float(self): return Tensor(self.a.astype(np.float32))
    def double(self): return Tensor(self.a.astype(np.float64))
    def to(self, *args, device=None, dtype=None):
        for x in args:
            if not isinstance(x, str): dtype = x
        return Tensor(self.a.astype(dtype)) if dtype is not None and dtype != 'bf16' else self
    def cpu(self): return self
    def view(self, *s): return Tensor(self.a.reshape(s))
    reshape = view
    def transpose(self, i, j): return Tensor(np.swapaxes(self.a, i, j))
    def unsqueeze(self, d): return Tensor(np.expand_dims(self.a, d))
    def expand(self, *s): return Tensor(np.broadcast_to(self.a, s))
    def flatten(self, d): s = self.a.shape; d = d % len(s); return Tensor(self.a.reshape(s[:d] + (-1,)))
    def pow(self, p): return Tensor(self.a ** p)
    def mean(self, d, keepdim=False): return Tensor(self.a.mean(axis=d, keepdims=keepdim))
    def cos(self): return Tensor(np.cos(self.a))
    def sin(self): return Tensor(np.sin(self.a))
    def exp(self): return Tensor(np.exp(self.a))
    def triu(self, k): return Tensor(np.triu(self.a, k))
    def masked_fill(self, m, v): b = self.a.copy(); b[np.broadcast_to(_a(m), b.shape)] = v; return Tensor(b)
    def softmax(self, d): z = self.a - self.a.max(axis=d, keepdims=True); e = np.exp(z); return Tensor(e / e.sum(axis=d, keepdims=True))
    def log_softmax(self, d): z = self.a - self.a.max(axis=d, keepdims=True); return Tensor(z - np.log(np.exp(z).sum(axis=d, keepdims=True)))
    def __getitem__(self, k): return Tensor(self.a[tuple(_a(x) for x in k) if isinstance(k, tuple) else _a(k)])
    def __setitem__(self, k, v): self.a[k] = _a(v)
    def __matmul__(self, o): return Tensor(np.matmul(self.a, _a(o)))
    def __mul__(self, o): return Tensor(self.a * _a(o))
    __rmul__ = __mul__
    def __add__(self, o): return Tensor(self.a + _a(o))
    __radd__ = __add__
    def __sub__(self, o): return Tensor(self.a - _a(o))
    def __rsub__(self, o): return Tensor(_a(o) - self.a)
    def __truediv__(self, o): return Tensor(self.a / _a(o))
    def __rtruediv__(self, o): return Tensor(_a(o) / self.a)
    def __pow__(self, o): return Tensor(self.a ** _a(o))
    def __rpow__(self, o): return Tensor(np.float32(_a(o)) ** self.a)
    def __neg__(self): return Tensor(-self.a)
    def __len__(self): return len(self.a)
def arange(a, b=None, c=1, dtype=np.int64, device=None):
    if b is None: a, b = 0, a
    return Tensor(np.arange(a, b, c).astype(dtype))
def tensor(x, dtype=None): return Tensor(np.asarray(x, dtype=dtype))
def clamp(x, lo, hi): return Tensor(np.clip(_a(x), lo, hi))
def stack(xs, dim): return Tensor(np.stack([_a(x) for x in xs], axis=dim))
def cat(xs, dim): return Tensor(np.concatenate([_a(x) for x in xs], axis=dim))
def ones(*s, dtype=np.float32, device=None): return Tensor(np.ones(s, dtype=dtype))
def rsqrt(x): return Tensor(1 / np.sqrt(_a(x)))
def no_grad():
    def deco(f): return f
    return deco
Tensor.device = property(lambda s: 'cpu')
from . import nn  # noqa: E402
