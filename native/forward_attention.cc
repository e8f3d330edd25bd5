// Causal multi-head attention (GQA/MHA, and DeepSeek-V3 MLA's split keys) with an online
// softmax over key blocks: per (sequence, head, query block) the working set is
// O(queryBlock x (keyBlock + dims)); no [seq, seq] score matrix is ever formed.
//
//   attention(q, k, v, out, opts)
// opts: {nSeq, seqLen, nHeads, nKvHeads, qkDim, vDim, scale,
//        qRowStride?, qHeadStride?, kRowStride?, kHeadStride?, vRowStride?, vHeadStride?,
//        kRope?: Float32Array, ropeDim?, kRopeRowStride?, window?}
// Row r = s*seqLen + t is position t of sequence s. Query head h uses KV head
// h / (nHeads / nKvHeads). score(t, u) = scale * (q[t,h,:qkDim] . k[u,g,:qkDim]
//   + q[t,h,qkDim:qkDim+ropeDim] . kRope[u,:ropeDim])   (the second term only with kRope:
// MLA's rope key shared by all heads), masked to u <= t (and t - u < window when window > 0).
// out[r, h*vDim : (h+1)*vDim] = softmax(scores) . v[:, g, :vDim]   (out is [rows, nHeads*vDim]).
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "exports.h"
#include "forward_common.h"
#include "parallel.h"

namespace g2m {
namespace {

constexpr size_t kBq = 32;  // queries per block
constexpr size_t kBk = 64;  // keys per block

struct AttnParams {
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  const float* kRope = nullptr;
  float* out = nullptr;
  size_t nSeq = 0, seqLen = 0, nHeads = 0, nKvHeads = 0, qkDim = 0, ropeDim = 0, vDim = 0;
  size_t qRow = 0, qHead = 0, kRow = 0, kHead = 0, vRow = 0, vHead = 0, kRopeRow = 0;
  size_t window = 0;
  float scale = 1.0f;
};

AttnParams ParseAttention(const Napi::CallbackInfo& info, fwd::KeepList* keep) {
  AttnParams p;
  Napi::Env env = info.Env();
  size_t qlen = 0, klen = 0, vlen = 0, olen = 0, krlen = 0;
  p.q = GetF32(info, 0, "q", &qlen);
  p.k = GetF32(info, 1, "k", &klen);
  p.v = GetF32(info, 2, "v", &vlen);
  p.out = GetF32(info, 3, "out", &olen);
  auto o = fwd::OptObject(info, 4);
  const int64_t big = int64_t(1) << 30;
  p.nSeq = static_cast<size_t>(fwd::ReqInt(o, "nSeq", 0, big));
  p.seqLen = static_cast<size_t>(fwd::ReqInt(o, "seqLen", 1, big));
  p.nHeads = static_cast<size_t>(fwd::ReqInt(o, "nHeads", 1, 1 << 16));
  p.nKvHeads = static_cast<size_t>(fwd::ReqInt(o, "nKvHeads", 1, 1 << 16));
  p.qkDim = static_cast<size_t>(fwd::ReqInt(o, "qkDim", 0, 1 << 16));
  p.vDim = static_cast<size_t>(fwd::ReqInt(o, "vDim", 1, 1 << 16));
  if (!o.Has("scale") || !o.Get("scale").IsNumber())
    ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", "option scale must be a number");
  p.scale = static_cast<float>(o.Get("scale").As<Napi::Number>().DoubleValue());
  p.kRope = fwd::OptF32(o, "kRope", &krlen, keep);
  p.ropeDim = p.kRope ? static_cast<size_t>(fwd::ReqInt(o, "ropeDim", 1, 1 << 16)) : 0;
  const size_t dq = p.qkDim + p.ropeDim;
  if (dq == 0) ThrowRangeError(env, "ERR_SHAPE", "qkDim + ropeDim must be > 0");
  if (p.nHeads % p.nKvHeads != 0)
    ThrowRangeError(env, "ERR_SHAPE",
                    "nHeads " + std::to_string(p.nHeads) + " is not a multiple of nKvHeads " + std::to_string(p.nKvHeads));
  p.qHead = static_cast<size_t>(OptInt(o, "qHeadStride", static_cast<int64_t>(dq)));
  p.qRow = static_cast<size_t>(OptInt(o, "qRowStride", static_cast<int64_t>(p.nHeads * p.qHead)));
  p.kHead = static_cast<size_t>(OptInt(o, "kHeadStride", static_cast<int64_t>(p.qkDim)));
  p.kRow = static_cast<size_t>(OptInt(o, "kRowStride", static_cast<int64_t>(p.nKvHeads * p.kHead)));
  p.vHead = static_cast<size_t>(OptInt(o, "vHeadStride", static_cast<int64_t>(p.vDim)));
  p.vRow = static_cast<size_t>(OptInt(o, "vRowStride", static_cast<int64_t>(p.nKvHeads * p.vHead)));
  p.kRopeRow = static_cast<size_t>(OptInt(o, "kRopeRowStride", static_cast<int64_t>(p.ropeDim)));
  p.window = static_cast<size_t>(OptInt(o, "window", 0));
  const size_t rows = p.nSeq * p.seqLen;
  CheckLength(env, qlen, fwd::Extent(rows, p.qRow, p.nHeads, p.qHead, dq), "q");
  if (p.qkDim > 0) CheckLength(env, klen, fwd::Extent(rows, p.kRow, p.nKvHeads, p.kHead, p.qkDim), "k");
  CheckLength(env, vlen, fwd::Extent(rows, p.vRow, p.nKvHeads, p.vHead, p.vDim), "v");
  if (p.kRope) CheckLength(env, krlen, fwd::Extent(rows, p.kRopeRow, 1, 0, p.ropeDim), "kRope");
  CheckLength(env, olen, rows * p.nHeads * p.vDim, "out");
  return p;
}

// s[0:kBk] = sum_c q[c] * kt[c*kBk : (c+1)*kBk]
G2M_HOT void ScoreRow(const float* __restrict q, const float* __restrict kt, float* __restrict s, size_t d) {
  for (size_t j = 0; j < kBk; ++j) s[j] = 0.0f;
  for (size_t c = 0; c < d; ++c) {
    const float qc = q[c];
    const float* kr = kt + c * kBk;
    for (size_t j = 0; j < kBk; ++j) s[j] += qc * kr[j];
  }
}

G2M_HOT void Axpy(float* __restrict y, const float* __restrict x, float a, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] += a * x[i];
}

// s[j] = exp(s[j] - m) for j < n; returns the sum.
G2M_HOT float ExpShift(float* s, size_t n, float m) {
  for (size_t j = 0; j < n; ++j) s[j] = fwd::FastExp(s[j] - m);
  float sum = 0.0f;
  for (size_t j = 0; j < n; ++j) sum += s[j];
  return sum;
}

G2M_HOT void Scale(float* y, float a, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] *= a;
}

struct Scratch {
  std::vector<float> qb, kt, s, acc, m, l;
};

void AttendBlock(const AttnParams& p, size_t seq, size_t h, size_t qb, Scratch& w) {
  const size_t dq = p.qkDim + p.ropeDim;
  const size_t g = h / (p.nHeads / p.nKvHeads);
  const size_t base = seq * p.seqLen;
  const size_t q0 = qb * kBq;
  const size_t q1 = std::min(p.seqLen, q0 + kBq);
  const size_t nq = q1 - q0;
  const float ninf = -std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < nq; ++i) {
    const float* src = p.q + (base + q0 + i) * p.qRow + h * p.qHead;
    std::copy(src, src + dq, w.qb.data() + i * dq);
    w.m[i] = ninf;
    w.l[i] = 0.0f;
  }
  std::fill(w.acc.begin(), w.acc.begin() + nq * p.vDim, 0.0f);
  size_t kStart = 0;
  if (p.window > 0 && q0 + 1 > p.window) kStart = q0 + 1 - p.window;
  float* s = w.s.data();
  for (size_t k0 = kStart; k0 < q1; k0 += kBk) {
    const size_t nk = std::min(kBk, q1 - k0);
    // Transposed key block (zero-padded to kBk columns).
    float* kt = w.kt.data();
    for (size_t j = 0; j < kBk; ++j) {
      if (j < nk) {
        const float* kr = p.k + (base + k0 + j) * p.kRow + g * p.kHead;
        for (size_t c = 0; c < p.qkDim; ++c) kt[c * kBk + j] = kr[c];
        if (p.kRope) {
          const float* rr = p.kRope + (base + k0 + j) * p.kRopeRow;
          for (size_t c = 0; c < p.ropeDim; ++c) kt[(p.qkDim + c) * kBk + j] = rr[c];
        }
      } else {
        for (size_t c = 0; c < dq; ++c) kt[c * kBk + j] = 0.0f;
      }
    }
    for (size_t i = 0; i < nq; ++i) {
      const size_t t = q0 + i;
      // valid keys u in [lo, hi): u <= t and t - u < window
      size_t hi = std::min(nk, t + 1 > k0 ? t + 1 - k0 : 0);
      size_t lo = 0;
      if (p.window > 0 && t + 1 > p.window + k0) lo = t + 1 - p.window - k0;
      if (lo >= hi) continue;
      ScoreRow(w.qb.data() + i * dq, kt, s, dq);
      float mx = ninf;
      for (size_t j = lo; j < hi; ++j) {
        s[j] *= p.scale;
        mx = std::max(mx, s[j]);
      }
      const float mnew = std::max(w.m[i], mx);
      float* acc = w.acc.data() + i * p.vDim;
      if (w.m[i] != ninf && mnew != w.m[i]) {
        const float corr = fwd::FastExp(w.m[i] - mnew);
        w.l[i] *= corr;
        Scale(acc, corr, p.vDim);
      }
      w.l[i] += ExpShift(s + lo, hi - lo, mnew);
      for (size_t j = lo; j < hi; ++j) Axpy(acc, p.v + (base + k0 + j) * p.vRow + g * p.vHead, s[j], p.vDim);
      w.m[i] = mnew;
    }
  }
  const size_t outRow = p.nHeads * p.vDim;
  for (size_t i = 0; i < nq; ++i) {
    float* dst = p.out + (base + q0 + i) * outRow + h * p.vDim;
    const float inv = 1.0f / w.l[i];
    const float* acc = w.acc.data() + i * p.vDim;
    for (size_t c = 0; c < p.vDim; ++c) dst[c] = acc[c] * inv;
  }
}

void RunAttention(const AttnParams& p) {
  if (p.nSeq == 0) return;
  const size_t nqb = (p.seqLen + kBq - 1) / kBq;
  const size_t perBlock = p.nSeq * p.nHeads;
  const size_t total = nqb * perBlock;
  const size_t dq = p.qkDim + p.ropeDim;
  std::atomic<size_t> next{0};
  const size_t threads = std::min<size_t>(static_cast<size_t>(NumThreads()), total);
  // Dynamic scheduling, most expensive (last) query blocks first.
  ParallelFor(threads, 1, [&](size_t, size_t) {
    Scratch w;
    w.qb.resize(kBq * dq);
    w.kt.resize(dq * kBk);
    w.s.resize(kBk);
    w.acc.resize(kBq * p.vDim);
    w.m.resize(kBq);
    w.l.resize(kBq);
    for (;;) {
      const size_t task = next.fetch_add(1);
      if (task >= total) break;
      const size_t qb = nqb - 1 - task / perBlock;
      const size_t rest = task % perBlock;
      AttendBlock(p, rest / p.nHeads, rest % p.nHeads, qb, w);
    }
  });
}

}  // namespace

void InitForwardAttention(Napi::Env env, Napi::Object exports) {
  fwd::RegisterKernel<AttnParams, ParseAttention, RunAttention>(env, exports, "attention");
}

}  // namespace g2m
