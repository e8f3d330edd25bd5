// Embedding gather and RMSNorm (float32, multithreaded over rows).
//   embedGather(table, ids, out, hidden): out[r] = table[ids[r]]
//   rmsNorm(x, weight|null, out, {rows, dim, eps, xStride?, outStride?}):
//     out[r] = weight * x[r] / sqrt(mean(x[r]^2) + eps)  (mean accumulated in double)
#include <cmath>
#include <cstring>

#include "exports.h"
#include "forward_args.h"
#include "forward_common.h"
#include "parallel.h"

namespace g2m {
namespace {

struct GatherParams {
  const float* table = nullptr;
  size_t vocab = 0;
  size_t hidden = 0;
  const int32_t* ids = nullptr;
  size_t n = 0;
  float* out = nullptr;
};

GatherParams ParseGather(const Napi::CallbackInfo& info, fwd::KeepList*) {
  GatherParams p;
  fwd::ArrayArgs in(info);
  p.table = in.F32(0, "table"), p.ids = in.I32(1, "ids"), p.out = in.F32(2, "out");
  p.n = in.Length(1);
  p.hidden = static_cast<size_t>(GetInt(info, 3, "hidden", 1, 1 << 24));
  if (in.Length(0) % p.hidden != 0)
    ThrowRangeError(info.Env(), "ERR_SHAPE", "table length " + std::to_string(in.Length(0)) + " is not a multiple of hidden");
  p.vocab = in.Length(0) / p.hidden;
  in.Need(2, p.n * p.hidden);
  for (size_t i = 0; i < p.n; ++i)
    if (p.ids[i] < 0 || static_cast<size_t>(p.ids[i]) >= p.vocab)
      ThrowRangeError(info.Env(), "ERR_OUT_OF_RANGE",
                      "token id " + std::to_string(p.ids[i]) + " at " + std::to_string(i) + " is outside [0, " +
                          std::to_string(p.vocab) + ")");
  return p;
}

void RunGather(const GatherParams& p) {
  ParallelFor(p.n, 64, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i)
      std::memcpy(p.out + i * p.hidden, p.table + static_cast<size_t>(p.ids[i]) * p.hidden, p.hidden * sizeof(float));
  });
}

// The parsed shape (forward_args.h) and the buffers.
struct NormParams : fwd::NormShape {
  const float* x = nullptr;
  const float* w = nullptr;
  float* out = nullptr;
};

NormParams ParseNorm(const Napi::CallbackInfo& info, fwd::KeepList*) {
  NormParams p;
  fwd::ArrayArgs in(info);
  p.x = in.F32(0, "x");
  if (info.Length() > 1 && !info[1].IsNull() && !info[1].IsUndefined()) p.w = in.F32(1, "weight");
  p.out = in.F32(2, "out");
  static_cast<fwd::NormShape&>(p) = fwd::ParseNormShape(info.Env(), fwd::OptObject(info, 3), int64_t(1) << 40);
  if (p.w) in.Need(1, p.dim);
  in.Need(0, p.xExtent());
  in.Need(2, p.outExtent());
  return p;
}

G2M_HOT void NormRow(const float* x, const float* w, float* y, size_t n, double eps) {
  // sum of squares: 16 float lanes (each over n/16 terms), combined in double
  fwd::v16 acc = fwd::v16{};
  size_t i0 = 0;
  for (; i0 + 16 <= n; i0 += 16) {
    const fwd::v16 v = fwd::Load16(x + i0);
    acc += v * v;
  }
  double ss = 0;
  for (int k = 0; k < 16; ++k) ss += acc[k];
  for (size_t i = i0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  if (w) {
    for (size_t i = 0; i < n; ++i) y[i] = w[i] * (x[i] * inv);
  } else {
    for (size_t i = 0; i < n; ++i) y[i] = x[i] * inv;
  }
}

void RunNorm(const NormParams& p) {
  ParallelFor(p.rows, 32, [&](size_t b, size_t e) {
    for (size_t r = b; r < e; ++r) NormRow(p.x + r * p.xStride, p.w, p.out + r * p.outStride, p.dim, p.eps);
  });
}

}  // namespace

void InitForwardNorm(Napi::Env env, Napi::Object exports) {
  fwd::RegisterKernel<GatherParams, ParseGather, RunGather>(env, exports, "embedGather");
  fwd::RegisterKernel<NormParams, ParseNorm, RunNorm>(env, exports, "rmsNorm");
}

}  // namespace g2m
