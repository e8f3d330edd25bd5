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
  size_t tlen = 0, olen = 0;
  p.table = GetF32(info, 0, "table", &tlen);
  p.ids = GetI32(info, 1, "ids", &p.n);
  p.out = GetF32(info, 2, "out", &olen);
  p.hidden = static_cast<size_t>(GetInt(info, 3, "hidden", 1, 1 << 24));
  if (tlen % p.hidden != 0)
    ThrowRangeError(info.Env(), "ERR_SHAPE", "table length " + std::to_string(tlen) + " is not a multiple of hidden");
  p.vocab = tlen / p.hidden;
  CheckLength(info.Env(), olen, p.n * p.hidden, "out");
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
  size_t xlen = 0, olen = 0, wlen = 0;
  p.x = GetF32(info, 0, "x", &xlen);
  if (info.Length() > 1 && !info[1].IsNull() && !info[1].IsUndefined()) p.w = GetF32(info, 1, "weight", &wlen);
  p.out = GetF32(info, 2, "out", &olen);
  auto o = fwd::OptObject(info, 3);
  static_cast<fwd::NormShape&>(p) = fwd::ParseNormShape(info.Env(), o, int64_t(1) << 40);
  if (p.w) CheckLength(info.Env(), wlen, p.dim, "weight");
  CheckLength(info.Env(), xlen, p.xExtent(), "x");
  CheckLength(info.Env(), olen, p.outExtent(), "out");
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
