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
#include <cstring>
#include <limits>
#include <vector>

#include "exports.h"
#include "forward_args.h"
#include "forward_common.h"
#include "parallel.h"

namespace g2m {
namespace {

constexpr size_t kBq = 32;  // queries per block
constexpr size_t kBk = 64;  // keys per block

// The parsed shape (forward_args.h) and the buffers.
struct AttnParams : fwd::AttnShape {
  const float *q = nullptr, *k = nullptr, *v = nullptr;
  const float* kRope = nullptr;  // MLA's shared rope key, or none
  float* out = nullptr;
};

AttnParams ParseAttention(const Napi::CallbackInfo& info, fwd::KeepList* keep) {
  AttnParams p;
  fwd::ArrayArgs in(info);
  p.q = in.F32(0, "q"), p.k = in.F32(1, "k"), p.v = in.F32(2, "v"), p.out = in.F32(3, "out");
  auto o = fwd::OptObject(info, 4);
  size_t krlen = 0;
  p.kRope = fwd::OptF32(o, "kRope", &krlen, keep);
  static_cast<fwd::AttnShape&>(p) = fwd::ParseAttnShape(info.Env(), o, p.kRope != nullptr, {1 << 16, 1 << 16, 1 << 16});
  const size_t lengths[5] = {in.Length(0), in.Length(1), in.Length(2), krlen, in.Length(3)};
  fwd::ForEachAttnBuffer(p, [&](int i, size_t extent, const char* name) { CheckLength(info.Env(), lengths[i], extent, name); });
  return p;
}

using fwd::Load16;
using fwd::Splat;
using fwd::Store16;
using fwd::v16;
using fwd::vi16;
constexpr size_t kRb = 4;  // query rows per register block

// O[r, 0:64] = (load ? O[r, 0:64] : 0) + sum_{j < n} A[r * lda + j] B[j * ldb + 0:64] for the kRb
// rows at o (row stride ldo); 16 accumulators. Scores: A = Q, B = the transposed keys, O = S
// from 0 (ScoreBlock); values: A = P, B = V, O = the running output (PvBlock4).
G2M_HOT void Block4(const float* __restrict a, size_t lda, const float* __restrict b, size_t ldb, size_t n, float* __restrict o,
                    size_t ldo, bool load) {
  v16 acc[kRb][4];
  for (size_t r = 0; r < kRb; ++r)
    for (size_t u = 0; u < 4; ++u) acc[r][u] = load ? Load16(o + r * ldo + 16 * u) : v16{};
  for (size_t j = 0; j < n; ++j) {
    const float* br = b + j * ldb;
    const v16 b0 = Load16(br), b1 = Load16(br + 16), b2 = Load16(br + 32), b3 = Load16(br + 48);
    for (size_t r = 0; r < kRb; ++r) {
      const v16 av = Splat(a[r * lda + j]);
      acc[r][0] += av * b0;
      acc[r][1] += av * b1;
      acc[r][2] += av * b2;
      acc[r][3] += av * b3;
    }
  }
  for (size_t r = 0; r < kRb; ++r)
    for (size_t u = 0; u < 4; ++u) Store16(o + r * ldo + 16 * u, acc[r][u]);
}

// S[r, 0:kBk] = sum_c Q[r, c] Kt[c, 0:kBk] for the kRb rows at q (row stride ldq), Kt rows ldk apart.
inline void ScoreBlock(const float* q, size_t ldq, const float* kt, size_t ldk, size_t d, float* s) {
  Block4(q, ldq, kt, ldk, d, s, kBk, false);
}

// O[r, c0:c0+64] += sum_j P[r, j] V[j, c0:...] for kRb rows.
inline void PvBlock4(const float* pm, const float* vb, size_t ldv, size_t nk, float* o, size_t ldo) {
  Block4(pm, kBk, vb, ldv, nk, o, ldo, true);
}

// Same for 16 columns (the tail of a value row padded to a multiple of 16).
G2M_HOT void PvBlock1(const float* __restrict pm, const float* __restrict vb, size_t ldv, size_t nk, float* __restrict o, size_t ldo) {
  v16 a[kRb];
  for (size_t r = 0; r < kRb; ++r) a[r] = Load16(o + r * ldo);
  for (size_t j = 0; j < nk; ++j) {
    const v16 v0 = Load16(vb + j * ldv);
    for (size_t r = 0; r < kRb; ++r) a[r] += Splat(pm[r * kBk + j]) * v0;
  }
  for (size_t r = 0; r < kRb; ++r) Store16(o + r * ldo, a[r]);
}

// Online-softmax step of one row of kBk scores: scale, new running max, p = exp(s - m) in
// place (masked entries must already be -inf: they give exactly 0); returns the correction
// factor exp(m_old - m_new) to apply to the row's running sum (done here) and output.
G2M_HOT float SoftmaxRow(float* __restrict s, float scale, float* m, float* l) {
  static_assert(kBk == 64, "SoftmaxRow handles 4 x 16 keys");
  const v16 sc = Splat(scale);
  const v16 x0 = Load16(s) * sc, x1 = Load16(s + 16) * sc, x2 = Load16(s + 32) * sc, x3 = Load16(s + 48) * sc;
  v16 a = x0 > x1 ? x0 : x1;
  const v16 b = x2 > x3 ? x2 : x3;
  a = a > b ? a : b;
  const float mnew = std::max(*m, fwd::HMax(a));
  const float corr = (*m == -std::numeric_limits<float>::infinity()) ? 0.0f : fwd::FastExp(*m - mnew);
  const v16 mv = Splat(mnew);
  const v16 e0 = fwd::ExpV(x0 - mv), e1 = fwd::ExpV(x1 - mv), e2 = fwd::ExpV(x2 - mv), e3 = fwd::ExpV(x3 - mv);
  Store16(s, e0);
  Store16(s + 16, e1);
  Store16(s + 32, e2);
  Store16(s + 48, e3);
  *l = *l * corr + fwd::HSum((e0 + e1) + (e2 + e3));
  *m = mnew;
  return corr;
}

G2M_HOT void Scale(float* y, float a, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] *= a;
}

// Per-thread scratch. A "unit" is one sequence's keys/values of one KV head: its keys are
// transposed once into kt [dq][tPad] (zero columns past seqLen) and its values packed into
// vb [tPad][dvPad], then reused by every query block of every query head of the group.
struct Scratch {
  size_t dq = 0, dvPad = 0, tPad = 0;
  std::vector<float> qb, kt, vb, s, acc, m, l;
  size_t unit = static_cast<size_t>(-1);
  Scratch(size_t dq_, size_t dv, size_t seqLen)
      : dq(dq_), dvPad((dv + 15) / 16 * 16), tPad((seqLen + kBk - 1) / kBk * kBk) {
    qb.assign(kBq * dq, 0.0f);
    kt.assign(dq * tPad, 0.0f);
    vb.assign(tPad * dvPad, 0.0f);
    s.assign(kBq * kBk, 0.0f);
    acc.assign(kBq * dvPad, 0.0f);
    m.assign(kBq, 0.0f);
    l.assign(kBq, 0.0f);
  }
};

void PrepareUnit(const AttnParams& p, size_t seq, size_t g, Scratch& w) {
  const size_t base = seq * p.seqLen;
  const size_t T = p.seqLen;
  float* kt = w.kt.data();
  for (size_t t = 0; t < T; ++t) {
    const float* kr = p.k + (base + t) * p.kRow + g * p.kHead;
    for (size_t c = 0; c < p.qkDim; ++c) kt[c * w.tPad + t] = kr[c];
    if (p.kRope) {
      const float* rr = p.kRope + (base + t) * p.kRopeRow;
      for (size_t c = 0; c < p.ropeDim; ++c) kt[(p.qkDim + c) * w.tPad + t] = rr[c];
    }
    const float* vr = p.v + (base + t) * p.vRow + g * p.vHead;
    std::copy(vr, vr + p.vDim, w.vb.data() + t * w.dvPad);
  }
  // columns past T stay zero (scores there are masked anyway; zero keeps them finite)
  for (size_t c = 0; c < w.dq; ++c) std::fill(kt + c * w.tPad + T, kt + (c + 1) * w.tPad, 0.0f);
}

void AttendBlock(const AttnParams& p, size_t seq, size_t h, size_t qb, Scratch& w) {
  const size_t dq = w.dq;
  const size_t dvPad = w.dvPad;
  const size_t base = seq * p.seqLen;
  const size_t q0 = qb * kBq;
  const size_t q1 = std::min(p.seqLen, q0 + kBq);
  const size_t nq = q1 - q0;
  const size_t nqPad = (nq + kRb - 1) / kRb * kRb;
  const float ninf = -std::numeric_limits<float>::infinity();
  for (size_t i = 0; i < nqPad; ++i) {
    float* dst = w.qb.data() + i * dq;
    if (i < nq) {
      const float* src = p.q + (base + q0 + i) * p.qRow + h * p.qHead;
      std::copy(src, src + dq, dst);
    } else {
      std::fill(dst, dst + dq, 0.0f);
    }
    w.m[i] = ninf;
    w.l[i] = 0.0f;
  }
  std::fill(w.acc.begin(), w.acc.begin() + nqPad * dvPad, 0.0f);
  size_t kStart = 0;
  if (p.window > 0 && q0 + 1 > p.window) kStart = (q0 + 1 - p.window) / kBk * kBk;
  for (size_t k0 = kStart; k0 < q1; k0 += kBk) {
    const size_t nk = std::min(kBk, q1 - k0);
    for (size_t i0 = 0; i0 < nqPad; i0 += kRb)
      ScoreBlock(w.qb.data() + i0 * dq, dq, w.kt.data() + k0, w.tPad, dq, w.s.data() + i0 * kBk);
    for (size_t i = 0; i < nqPad; ++i) {
      float* srow = w.s.data() + i * kBk;
      size_t lo = 0, hi = 0;
      if (i < nq) {
        const size_t t = q0 + i;
        // valid keys u = k0 + j: u <= t and t - u < window
        hi = std::min(nk, t + 1 > k0 ? t + 1 - k0 : 0);
        if (p.window > 0 && t + 1 > p.window + k0) lo = std::min(hi, t + 1 - p.window - k0);
      }
      if (lo >= hi) {
        std::fill(srow, srow + kBk, 0.0f);
        continue;
      }
      if (lo > 0 || hi < kBk) {  // diagonal / window-edge / last block: mask
        std::fill(srow, srow + lo, ninf);
        std::fill(srow + hi, srow + kBk, ninf);
      }
      const float corr = SoftmaxRow(srow, p.scale, &w.m[i], &w.l[i]);
      if (corr != 1.0f) Scale(w.acc.data() + i * dvPad, corr, dvPad);
    }
    const float* vb = w.vb.data() + k0 * dvPad;
    for (size_t i0 = 0; i0 < nqPad; i0 += kRb) {
      size_t c0 = 0;
      for (; c0 + 64 <= dvPad; c0 += 64)
        PvBlock4(w.s.data() + i0 * kBk, vb + c0, dvPad, nk, w.acc.data() + i0 * dvPad + c0, dvPad);
      for (; c0 < dvPad; c0 += 16) PvBlock1(w.s.data() + i0 * kBk, vb + c0, dvPad, nk, w.acc.data() + i0 * dvPad + c0, dvPad);
    }
  }
  const size_t outRow = p.nHeads * p.vDim;
  for (size_t i = 0; i < nq; ++i) {
    float* dst = p.out + (base + q0 + i) * outRow + h * p.vDim;
    const float inv = 1.0f / w.l[i];
    const float* acc = w.acc.data() + i * dvPad;
    for (size_t c = 0; c < p.vDim; ++c) dst[c] = acc[c] * inv;
  }
}

void RunAttention(const AttnParams& p) {
  if (p.nSeq == 0) return;
  const size_t nqb = (p.seqLen + kBq - 1) / kBq;
  const size_t grp = p.nHeads / p.nKvHeads;
  const size_t perUnit = nqb * grp;
  const size_t total = p.nSeq * p.nKvHeads * perUnit;
  const size_t dq = p.qkDim + p.ropeDim;
  std::atomic<size_t> next{0};
  const size_t threads = std::min<size_t>(static_cast<size_t>(NumThreads()), total);
  // Dynamic scheduling over (unit, query block, head of the group), most expensive query
  // blocks of a unit first; threads move through the units together, so each unit's keys
  // are transposed about once per thread.
  ParallelFor(threads, 1, [&](size_t, size_t) {
    Scratch w(dq, p.vDim, p.seqLen);
    for (;;) {
      const size_t task = next.fetch_add(1);
      if (task >= total) break;
      const size_t unit = task / perUnit;
      const size_t rest = task % perUnit;
      const size_t seq = unit / p.nKvHeads;
      const size_t g = unit % p.nKvHeads;
      if (w.unit != unit) {
        PrepareUnit(p, seq, g, w);
        w.unit = unit;
      }
      const size_t qb = nqb - 1 - rest / grp;
      AttendBlock(p, seq, g * grp + rest % grp, qb, w);
    }
  });
}

}  // namespace

void InitForwardAttention(Napi::Env env, Napi::Object exports) {
  fwd::RegisterKernel<AttnParams, ParseAttention, RunAttention>(env, exports, "attention");
}

}  // namespace g2m
