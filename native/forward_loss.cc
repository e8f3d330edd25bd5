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

// The output of a loss: a Float64Array or Float32Array, one value per row.
struct NllOut {
  void* data = nullptr;
  bool f64 = true;
  NllOut() = default;
  explicit NllOut(const ArrayView& v) : data(v.data), f64(v.dtype == DType::F64) {}
  void Set(size_t r, double v) const {
    if (f64)
      static_cast<double*>(data)[r] = v;
    else
      static_cast<float*>(data)[r] = static_cast<float>(v);
  }
};

// What both losses share: a target per row (< 0: none) and the output.
struct NllRows {
  const int32_t* targets = nullptr;
  NllOut out;
  size_t rows = 0, vocab = 0;
};

// Checks targets (argument t) and out (argument t + 1) against p.rows, and the targets
// against p.vocab.
void CheckTargetsAndOut(Napi::Env env, const fwd::ArrayArgs& in, size_t t, const NllRows& p) {
  in.Need(t, p.rows);
  in.Need(t + 1, p.rows);
  for (size_t r = 0; r < p.rows; ++r)
    if (p.targets[r] >= 0 && static_cast<size_t>(p.targets[r]) >= p.vocab)
      ThrowRangeError(env, "ERR_OUT_OF_RANGE",
                      "target " + std::to_string(p.targets[r]) + " at row " + std::to_string(r) + " is >= vocab " +
                          std::to_string(p.vocab));
}

struct LsmParams : NllRows {
  const float* logits = nullptr;
};

LsmParams ParseLsm(const Napi::CallbackInfo& info, fwd::KeepList*) {
  LsmParams p;
  fwd::ArrayArgs in(info);
  p.logits = in.F32(0, "logits"), p.targets = in.I32(1, "targets"), p.out = NllOut(in.Float(2, "out"));
  auto o = fwd::OptObject(info, 3);
  p.rows = static_cast<size_t>(fwd::ReqInt(o, "rows", 0, int64_t(1) << 40));
  p.vocab = static_cast<size_t>(fwd::ReqInt(o, "vocab", 1, int64_t(1) << 30));
  in.Need(0, p.rows * p.vocab);
  CheckTargetsAndOut(info.Env(), in, 1, p);
  return p;
}

void RunLsm(const LsmParams& p) {
  ParallelFor(p.rows, 8, [&](size_t b, size_t e) {
    for (size_t r = b; r < e; ++r)
      p.out.Set(r, p.targets[r] < 0 ? 0.0 : RowNll(p.logits + r * p.vocab, p.vocab, p.targets[r]));
  });
}

struct HeadParams : NllRows {
  const float* hidden = nullptr;
  const float* w = nullptr;
  size_t hiddenDim = 0, chunk = 0;
};

HeadParams ParseHead(const Napi::CallbackInfo& info, fwd::KeepList*) {
  HeadParams p;
  fwd::ArrayArgs in(info);
  p.hidden = in.F32(0, "hidden"), p.w = in.F32(1, "w"), p.targets = in.I32(2, "targets");
  p.out = NllOut(in.Float(3, "out"));
  auto o = fwd::OptObject(info, 4);
  p.rows = static_cast<size_t>(fwd::ReqInt(o, "rows", 0, int64_t(1) << 40));
  p.hiddenDim = static_cast<size_t>(fwd::ReqInt(o, "hiddenDim", 1, int64_t(1) << 30));
  p.vocab = static_cast<size_t>(fwd::ReqInt(o, "vocab", 1, int64_t(1) << 30));
  // default: ~32 MiB of logits per chunk (sgemm efficiency drops below ~128 rows)
  const int64_t dflt = std::max<int64_t>(32, std::min<int64_t>(1024, (int64_t(1) << 23) / static_cast<int64_t>(p.vocab)));
  p.chunk = static_cast<size_t>(OptInt(o, "chunkRows", dflt));
  if (p.chunk == 0) ThrowRangeError(info.Env(), "ERR_OUT_OF_RANGE", "chunkRows must be >= 1");
  if (in.Length(1) != p.vocab * p.hiddenDim)
    ThrowRangeError(info.Env(), "ERR_SHAPE",
                    "w has " + std::to_string(in.Length(1)) + " elements, expected vocab x hiddenDim = " +
                        std::to_string(p.vocab * p.hiddenDim));
  in.Need(0, p.rows * p.hiddenDim);
  CheckTargetsAndOut(info.Env(), in, 2, p);
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
