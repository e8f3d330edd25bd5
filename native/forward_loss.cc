// Log-softmax cross-entropy (negative log-likelihood of a target token per row).
//   logSoftmaxNll(logits, targets, out, {rows, vocab}):
//     out[r] = logsumexp(logits[r, :]) - logits[r, targets[r]]; rows with target < 0 get 0.
//   lmHeadNll(hidden, w, targets, out, {rows, hiddenDim, vocab, chunkRows?}):
//     the same on logits = hidden W^T (W [vocab, hiddenDim], the lm_head), computed
//     `chunkRows` rows at a time so only chunkRows x vocab logits ever exist.
// `out` is a Float64Array or Float32Array; the log-sum-exp is accumulated in double.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "exports.h"
#include "forward_common.h"
#include "parallel.h"

namespace g2m {
namespace {

constexpr size_t kLanes = 16;

// Row maximum over 16 independent lanes.
G2M_HOT float RowMax(const float* x, size_t n) {
  fwd::v16 m = fwd::Splat(-std::numeric_limits<float>::infinity());
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const fwd::v16 v = fwd::Load16(x + i);
    m = v > m ? v : m;
  }
  float r = fwd::HMax(m);
  for (; i < n; ++i) r = std::max(r, x[i]);
  return r;
}

// sum_i exp(x[i] - mx): 16 lanes of float partial sums (each over vocab/16 terms <= 1),
// combined in double.
G2M_HOT double SumExp(const float* x, size_t n, float mx) {
  fwd::v16 s = fwd::v16{};
  const fwd::v16 m = fwd::Splat(mx);
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) s += fwd::ExpV(fwd::Load16(x + i) - m);
  double r = 0;
  for (size_t k = 0; k < kLanes; ++k) r += s[k];
  for (; i < n; ++i) r += std::exp(static_cast<double>(x[i]) - mx);
  return r;
}

inline double RowNll(const float* x, size_t vocab, int32_t target) {
  const float mx = RowMax(x, vocab);
  const double lse = static_cast<double>(mx) + std::log(SumExp(x, vocab, mx));
  return lse - static_cast<double>(x[target]);
}

struct NllOut {
  void* data = nullptr;
  bool f64 = true;
  void Set(size_t r, double v) const {
    if (f64)
      static_cast<double*>(data)[r] = v;
    else
      static_cast<float*>(data)[r] = static_cast<float>(v);
  }
};

void CheckTargets(Napi::Env env, const int32_t* t, size_t rows, size_t vocab) {
  for (size_t r = 0; r < rows; ++r)
    if (t[r] >= 0 && static_cast<size_t>(t[r]) >= vocab)
      ThrowRangeError(env, "ERR_OUT_OF_RANGE",
                      "target " + std::to_string(t[r]) + " at row " + std::to_string(r) + " is >= vocab " +
                          std::to_string(vocab));
}

struct LsmParams {
  const float* logits = nullptr;
  const int32_t* targets = nullptr;
  NllOut out;
  size_t rows = 0, vocab = 0;
};

LsmParams ParseLsm(const Napi::CallbackInfo& info, fwd::KeepList*) {
  LsmParams p;
  size_t llen = 0, tlen = 0;
  p.logits = GetF32(info, 0, "logits", &llen);
  p.targets = GetI32(info, 1, "targets", &tlen);
  ArrayView ov = GetFloatArray(info, 2, "out");
  p.out.data = ov.data;
  p.out.f64 = ov.dtype == DType::F64;
  auto o = fwd::OptObject(info, 3);
  p.rows = static_cast<size_t>(fwd::ReqInt(o, "rows", 0, int64_t(1) << 40));
  p.vocab = static_cast<size_t>(fwd::ReqInt(o, "vocab", 1, int64_t(1) << 30));
  CheckLength(info.Env(), llen, p.rows * p.vocab, "logits");
  CheckLength(info.Env(), tlen, p.rows, "targets");
  CheckLength(info.Env(), ov.length, p.rows, "out");
  CheckTargets(info.Env(), p.targets, p.rows, p.vocab);
  return p;
}

void RunLsm(const LsmParams& p) {
  ParallelFor(p.rows, 8, [&](size_t b, size_t e) {
    for (size_t r = b; r < e; ++r)
      p.out.Set(r, p.targets[r] < 0 ? 0.0 : RowNll(p.logits + r * p.vocab, p.vocab, p.targets[r]));
  });
}

struct HeadParams {
  const float* hidden = nullptr;
  const float* w = nullptr;
  const int32_t* targets = nullptr;
  NllOut out;
  size_t rows = 0, hiddenDim = 0, vocab = 0, chunk = 0;
};

HeadParams ParseHead(const Napi::CallbackInfo& info, fwd::KeepList*) {
  HeadParams p;
  size_t hlen = 0, wlen = 0, tlen = 0;
  p.hidden = GetF32(info, 0, "hidden", &hlen);
  p.w = GetF32(info, 1, "w", &wlen);
  p.targets = GetI32(info, 2, "targets", &tlen);
  ArrayView ov = GetFloatArray(info, 3, "out");
  p.out.data = ov.data;
  p.out.f64 = ov.dtype == DType::F64;
  auto o = fwd::OptObject(info, 4);
  p.rows = static_cast<size_t>(fwd::ReqInt(o, "rows", 0, int64_t(1) << 40));
  p.hiddenDim = static_cast<size_t>(fwd::ReqInt(o, "hiddenDim", 1, int64_t(1) << 30));
  p.vocab = static_cast<size_t>(fwd::ReqInt(o, "vocab", 1, int64_t(1) << 30));
  // default: ~32 MiB of logits per chunk (sgemm efficiency drops below ~128 rows)
  const int64_t dflt = std::max<int64_t>(32, std::min<int64_t>(1024, (int64_t(1) << 23) / static_cast<int64_t>(p.vocab)));
  p.chunk = static_cast<size_t>(OptInt(o, "chunkRows", dflt));
  if (p.chunk == 0) ThrowRangeError(info.Env(), "ERR_OUT_OF_RANGE", "chunkRows must be >= 1");
  if (wlen != p.vocab * p.hiddenDim)
    ThrowRangeError(info.Env(), "ERR_SHAPE",
                    "w has " + std::to_string(wlen) + " elements, expected vocab x hiddenDim = " +
                        std::to_string(p.vocab * p.hiddenDim));
  CheckLength(info.Env(), hlen, p.rows * p.hiddenDim, "hidden");
  CheckLength(info.Env(), tlen, p.rows, "targets");
  CheckLength(info.Env(), ov.length, p.rows, "out");
  CheckTargets(info.Env(), p.targets, p.rows, p.vocab);
  return p;
}

void RunHead(const HeadParams& p) {
  std::vector<float> logits(std::min(p.chunk, p.rows) * p.vocab);
  for (size_t r0 = 0; r0 < p.rows; r0 += p.chunk) {
    const size_t n = std::min(p.chunk, p.rows - r0);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(n), static_cast<blasint>(p.vocab),
                static_cast<blasint>(p.hiddenDim), 1.0f, p.hidden + r0 * p.hiddenDim,
                static_cast<blasint>(p.hiddenDim), p.w, static_cast<blasint>(p.hiddenDim), 0.0f, logits.data(),
                static_cast<blasint>(p.vocab));
    ParallelFor(n, 4, [&](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) {
        const int32_t t = p.targets[r0 + i];
        p.out.Set(r0 + i, t < 0 ? 0.0 : RowNll(logits.data() + i * p.vocab, p.vocab, t));
      }
    });
  }
}

}  // namespace

void InitForwardLoss(Napi::Env env, Napi::Object exports) {
  fwd::RegisterKernel<LsmParams, ParseLsm, RunLsm>(env, exports, "logSoftmaxNll");
  fwd::RegisterKernel<HeadParams, ParseHead, RunHead>(env, exports, "lmHeadNll");
}

}  // namespace g2m
