// Scalar micro-kernels of the CPU MLA decode (native/decode_mla_cpu.cc), and the scalar
// cache-element load that the vector kernels use for their tails.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

namespace g2m {
namespace {

inline float Bf16ToF32(uint16_t v) {
  uint32_t u = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

template <typename CT>
inline float LoadScalar(const CT* p, int i);
template <>
inline float LoadScalar<float>(const float* p, int i) {
  return p[i];
}
template <>
inline float LoadScalar<uint16_t>(const uint16_t* p, int i) {
  return Bf16ToF32(p[i]);
}

struct ScalarKernels {
  template <typename CT>
  static void Scores(int R, int n, int D, const float* Q, const CT* const* rows, float* S, int ldS) {
    for (int r = 0; r < R; ++r) {
      const float* q = Q + static_cast<size_t>(r) * D;
      for (int t = 0; t < n; ++t) {
        const CT* k = rows[t];
        float acc = 0.f;
        for (int d = 0; d < D; ++d) acc += q[d] * LoadScalar(k, d);
        S[r * ldS + t] = acc;
      }
    }
  }
  template <typename CT>
  static void PV(int R, int n, int dl, const float* P, int ldP, const CT* const* rows, float* O) {
    for (int r = 0; r < R; ++r) {
      float* o = O + static_cast<size_t>(r) * dl;
      for (int t = 0; t < n; ++t) {
        const float p = P[r * ldP + t];
        if (p == 0.f) continue;
        const CT* v = rows[t];
        for (int d = 0; d < dl; ++d) o[d] += p * LoadScalar(v, d);
      }
    }
  }
  // p[i] = exp(x[i] - m) for i < n
  static void ExpShift(float* x, int n, float m) {
    for (int i = 0; i < n; ++i) x[i] = std::exp(x[i] - m);
  }
  static void Scale(float* o, int n, float a) {
    for (int i = 0; i < n; ++i) o[i] *= a;
  }
};

}  // namespace
}  // namespace g2m
