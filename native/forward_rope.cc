// Rotary position embedding, in place, on strided heads.
//   rope(x, positions, invFreq, {rowStride, nHeads, headStride, offset, rotDim, scale?, interleave?})
// Row r (position positions[r]) holds nHeads heads at x[r*rowStride + h*headStride]; the
// rotated part of each head is the rotDim dims starting at `offset`. Angles follow
// transformers: angle_i = float32(invFreq[i] * pos), cos/sin in float32, times `scale`
// (the rope type's attention scaling, 1 unless yarn/longrope).
//   interleave=false (HF rotate-half): dims i and i + rotDim/2 form pair i.
//   interleave=true (DeepSeek interleaved weights): dims 2i and 2i+1 form pair i. transformers
//     de-interleaves both q and k before rotate-half; rotating the pairs in place gives the
//     same values in the interleaved order, so q.k dot products are identical.
#include <cmath>
#include <vector>

#include "exports.h"
#include "forward_args.h"
#include "forward_common.h"
#include "parallel.h"

namespace g2m {
namespace {

// The parsed shape (forward_args.h), the rows and the buffers.
struct RopeParams : fwd::RopeShape {
  float* x = nullptr;
  const int32_t* pos = nullptr;
  const float* invFreq = nullptr;
  size_t rows = 0;
};

RopeParams ParseRope(const Napi::CallbackInfo& info, fwd::KeepList*) {
  RopeParams p;
  fwd::ArrayArgs in(info);
  p.x = in.F32(0, "x"), p.pos = in.I32(1, "positions"), p.invFreq = in.F32(2, "invFreq");
  p.rows = in.Length(1);
  static_cast<fwd::RopeShape&>(p) = fwd::ParseRopeShape(info.Env(), fwd::OptObject(info, 3));
  if (in.Length(2) < p.rotDim / 2)
    ThrowRangeError(info.Env(), "ERR_SHAPE",
                    "invFreq has " + std::to_string(in.Length(2)) + " entries, rotDim/2 = " + std::to_string(p.rotDim / 2));
  in.Need(0, p.extent(p.rows));
  for (size_t r = 0; r < p.rows; ++r)
    if (p.pos[r] < 0) ThrowRangeError(info.Env(), "ERR_OUT_OF_RANGE", "positions must be >= 0");
  return p;
}

G2M_HOT void RotateHalf(float* v, const float* c, const float* s, size_t half) {
  float* a = v;
  float* b = v + half;
  for (size_t i = 0; i < half; ++i) {
    const float x = a[i], y = b[i];
    a[i] = x * c[i] - y * s[i];
    b[i] = y * c[i] + x * s[i];
  }
}

G2M_HOT void RotatePairs(float* v, const float* c, const float* s, size_t half) {
  for (size_t i = 0; i < half; ++i) {
    const float x = v[2 * i], y = v[2 * i + 1];
    v[2 * i] = x * c[i] - y * s[i];
    v[2 * i + 1] = y * c[i] + x * s[i];
  }
}

void RunRope(const RopeParams& p) {
  const size_t half = p.rotDim / 2;
  ParallelFor(p.rows, 16, [&](size_t b, size_t e) {
    std::vector<float> c(half), s(half);
    int32_t last = -1;
    for (size_t r = b; r < e; ++r) {
      const int32_t pos = p.pos[r];
      if (pos != last) {
        const float fp = static_cast<float>(pos);
        for (size_t i = 0; i < half; ++i) {
          const float ang = p.invFreq[i] * fp;
          c[i] = std::cos(ang) * p.scale;
          s[i] = std::sin(ang) * p.scale;
        }
        last = pos;
      }
      float* row = p.x + r * p.rowStride + p.offset;
      for (size_t h = 0; h < p.nHeads; ++h) {
        if (p.interleave)
          RotatePairs(row + h * p.headStride, c.data(), s.data(), half);
        else
          RotateHalf(row + h * p.headStride, c.data(), s.data(), half);
      }
    }
  });
}

}  // namespace

void InitForwardRope(Napi::Env env, Napi::Object exports) {
  fwd::RegisterKernel<RopeParams, ParseRope, RunRope>(env, exports, "rope");
}

}  // namespace g2m
