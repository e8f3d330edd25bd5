// Reductions the conversion runs over large float32 arrays (per layer, per candidate),
// multithreaded, accumulated in double:
//   squaredDiffSums(a, b, out: Float64Array(2)): out = [sum (a - b)^2, sum b^2] over b.length
//     (a at least as long as b): the relative error ||a - b|| / ||b||
//   latentRowStats(c, bias | null, out: Float64Array(2), {rows, dim}): with v = c[t, :] + bias,
//     out = [max over rows t of mean(v^2) (NaN when any v is NaN), smallest non-zero |v|]
//     (Infinity when none)
#include <algorithm>
#include <cmath>
#include <limits>
#include <mutex>

#include "exports.h"
#include "forward_common.h"
#include "parallel.h"

namespace g2m {
namespace {

double* GetOut2(const Napi::CallbackInfo& info, size_t i) {
  ArrayView v = GetFloatArray(info, i, "out");
  if (v.dtype != DType::F64) ThrowTypeError(info.Env(), "ERR_INVALID_ARG_TYPE", "out must be a Float64Array");
  if (v.length < 2) ThrowRangeError(info.Env(), "ERR_SHAPE", "out must hold 2 values");
  return v.as<double>();
}

struct DiffParams {
  const float* a = nullptr;
  const float* b = nullptr;
  size_t n = 0;
  double* out = nullptr;
};

DiffParams ParseDiff(const Napi::CallbackInfo& info, fwd::KeepList*) {
  DiffParams p;
  size_t alen = 0;
  p.a = GetF32(info, 0, "a", &alen);
  p.b = GetF32(info, 1, "b", &p.n);
  p.out = GetOut2(info, 2);
  if (alen < p.n)
    ThrowRangeError(info.Env(), "ERR_SHAPE", "a has " + std::to_string(alen) + " values, b " + std::to_string(p.n));
  return p;
}

void RunDiff(const DiffParams& p) {
  std::mutex mu;
  double num = 0, den = 0;
  ParallelFor(p.n, size_t(1) << 16, [&](size_t b, size_t e) {
    // 8 partial sums per chunk (vectorisable, and less rounding than one running sum)
    double sn[8] = {}, sd[8] = {};
    size_t i = b;
    for (; i + 8 <= e; i += 8)
      for (int k = 0; k < 8; ++k) {
        const double d = static_cast<double>(p.a[i + k]) - static_cast<double>(p.b[i + k]);
        sn[k] += d * d;
        sd[k] += static_cast<double>(p.b[i + k]) * p.b[i + k];
      }
    for (; i < e; ++i) {
      const double d = static_cast<double>(p.a[i]) - static_cast<double>(p.b[i]);
      sn[0] += d * d;
      sd[0] += static_cast<double>(p.b[i]) * p.b[i];
    }
    double tn = 0, td = 0;
    for (int k = 0; k < 8; ++k) {
      tn += sn[k];
      td += sd[k];
    }
    std::lock_guard<std::mutex> lock(mu);
    num += tn;
    den += td;
  });
  p.out[0] = num;
  p.out[1] = den;
}

struct RowParams {
  const float* c = nullptr;
  const float* bias = nullptr;
  size_t rows = 0, dim = 0;
  double* out = nullptr;
};

RowParams ParseRow(const Napi::CallbackInfo& info, fwd::KeepList*) {
  RowParams p;
  size_t clen = 0, blen = 0;
  p.c = GetF32(info, 0, "c", &clen);
  if (info.Length() > 1 && !info[1].IsNull() && !info[1].IsUndefined()) p.bias = GetF32(info, 1, "bias", &blen);
  p.out = GetOut2(info, 2);
  auto o = fwd::OptObject(info, 3);
  p.rows = static_cast<size_t>(fwd::ReqInt(o, "rows", 0, int64_t(1) << 40));
  p.dim = static_cast<size_t>(fwd::ReqInt(o, "dim", 1, int64_t(1) << 30));
  if (clen < p.rows * p.dim)
    ThrowRangeError(info.Env(), "ERR_SHAPE", "c has " + std::to_string(clen) + " values, rows x dim = " + std::to_string(p.rows * p.dim));
  if (p.bias) CheckLength(info.Env(), blen, p.dim, "bias");
  return p;
}

void RunRow(const RowParams& p) {
  std::mutex mu;
  double maxMs = 0, minAbs = std::numeric_limits<double>::infinity();
  bool nan = false;
  ParallelFor(p.rows, 64, [&](size_t b, size_t e) {
    double mx = 0, mn = std::numeric_limits<double>::infinity();
    bool bad = false;
    for (size_t t = b; t < e; ++t) {
      const float* row = p.c + t * p.dim;
      double ss = 0;
      for (size_t i = 0; i < p.dim; ++i) {
        const double v = static_cast<double>(row[i]) + (p.bias ? static_cast<double>(p.bias[i]) : 0.0);
        ss += v * v;
        const double a = std::fabs(v);
        if (a > 0 && a < mn) mn = a;
      }
      if (std::isnan(ss)) bad = true;
      mx = std::max(mx, ss / static_cast<double>(p.dim));
    }
    std::lock_guard<std::mutex> lock(mu);
    nan = nan || bad;
    maxMs = std::max(maxMs, mx);
    minAbs = std::min(minAbs, mn);
  });
  p.out[0] = nan ? std::numeric_limits<double>::quiet_NaN() : maxMs;  // a NaN latent is not hidden by max()
  p.out[1] = minAbs;
}

}  // namespace

void InitConversionReduce(Napi::Env env, Napi::Object exports) {
  fwd::RegisterKernel<DiffParams, ParseDiff, RunDiff>(env, exports, "squaredDiffSums");
  fwd::RegisterKernel<RowParams, ParseRow, RunRow>(env, exports, "latentRowStats");
}

}  // namespace g2m
