// Linear projections through BLAS sgemm, and the SwiGLU activation.
//   linear(x, w, out, {rows, inDim, outDim, bias?, xStride?, outStride?, accumulate?}):
//     out[r, :] (+)= x[r, :inDim] W^T + b   with W [outDim, inDim] row-major as stored
//   swiglu(gate, up, out, n): out = silu(gate) * up  (out may alias gate or up)
#include <cblas.h>

#include <cmath>

#include "exports.h"
#include "forward_args.h"
#include "forward_common.h"
#include "parallel.h"

namespace g2m {
namespace {

// The parsed shape (forward_args.h) and the buffers.
struct LinearParams : fwd::LinearShape {
  const float *x = nullptr, *w = nullptr;
  const float* bias = nullptr;  // or none
  float* out = nullptr;
};

LinearParams ParseLinear(const Napi::CallbackInfo& info, fwd::KeepList* keep) {
  LinearParams p;
  fwd::ArrayArgs in(info);
  p.x = in.F32(0, "x"), p.w = in.F32(1, "w"), p.out = in.F32(2, "out");
  auto o = fwd::OptObject(info, 3);
  static_cast<fwd::LinearShape&>(p) = fwd::ParseLinearShape(info.Env(), o, int64_t(1) << 40, int64_t(1) << 30);
  size_t blen = 0;
  p.bias = fwd::OptF32(o, "bias", &blen, keep);
  in.Need(1, p.inDim * p.outDim);
  if (in.Length(1) != p.inDim * p.outDim)
    ThrowRangeError(info.Env(), "ERR_SHAPE",
                    "w has " + std::to_string(in.Length(1)) + " elements, expected outDim x inDim = " +
                        std::to_string(p.outDim * p.inDim));
  if (p.bias) CheckLength(info.Env(), blen, p.outDim, "bias");
  in.Need(0, p.xExtent());
  in.Need(2, p.outExtent());
  return p;
}

G2M_HOT void AddBias(float* y, const float* b, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] += b[i];
}

void RunLinear(const LinearParams& p) {
  if (p.rows == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(p.rows), static_cast<blasint>(p.outDim),
              static_cast<blasint>(p.inDim), 1.0f, p.x, static_cast<blasint>(p.xStride), p.w,
              static_cast<blasint>(p.inDim), p.accumulate ? 1.0f : 0.0f, p.out, static_cast<blasint>(p.outStride));
  if (p.bias) {
    ParallelFor(p.rows, 64, [&](size_t b, size_t e) {
      for (size_t r = b; r < e; ++r) AddBias(p.out + r * p.outStride, p.bias, p.outDim);
    });
  }
}

struct SwigluParams {
  const float* gate = nullptr;
  const float* up = nullptr;
  float* out = nullptr;
  size_t n = 0;
};

SwigluParams ParseSwiglu(const Napi::CallbackInfo& info, fwd::KeepList*) {
  SwigluParams p;
  fwd::ArrayArgs in(info);
  p.gate = in.F32(0, "gate"), p.up = in.F32(1, "up"), p.out = in.F32(2, "out");
  p.n = static_cast<size_t>(GetInt(info, 3, "n", 0, int64_t(1) << 40));
  for (size_t i = 0; i < 3; ++i) in.Need(i, p.n);
  return p;
}

G2M_HOT void SwigluSpan(const float* g, const float* u, float* y, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const fwd::v16 x = fwd::Load16(g + i);
    fwd::Store16(y + i, x / (fwd::Splat(1.0f) + fwd::ExpV(-x)) * fwd::Load16(u + i));
  }
  for (; i < n; ++i) {
    const float x = g[i];
    y[i] = x / (1.0f + fwd::FastExp(-x)) * u[i];
  }
}

void RunSwiglu(const SwigluParams& p) {
  ParallelFor(p.n, 1 << 14, [&](size_t b, size_t e) { SwigluSpan(p.gate + b, p.up + b, p.out + b, e - b); });
}

}  // namespace

void InitForwardLinear(Napi::Env env, Napi::Object exports) {
  fwd::RegisterKernel<LinearParams, ParseLinear, RunLinear>(env, exports, "linear");
  fwd::RegisterKernel<SwigluParams, ParseSwiglu, RunSwiglu>(env, exports, "swiglu");
}

}  // namespace g2m
