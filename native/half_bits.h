// float32 <-> IEEE half / bfloat16 bit conversions, one definition for the host (the addon's
// dtype_convert.cc) and the GPU (native/cuda/*.cu). Round to nearest even, NaN stays NaN with
// the quiet bit set, half overflows to infinity and keeps subnormals: bit-exact with
// src/checkpoint/dtype.ts (test/dtype-convert.test.ts, test/forward-cuda.test.ts). Plain C++
// (no Node-API), so CUDA sources may include it.
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define G2M_HALF_FN __host__ __device__ __forceinline__
#else
#define G2M_HALF_FN inline
#endif

namespace g2m {
namespace half_bits {

// float32 bits of IEEE half bits h (NaN keeps its payload with the quiet bit set).
G2M_HALF_FN uint32_t HalfToFloatBits(uint32_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu;
  const uint32_t m = h & 0x3ffu;
  if (e == 0x1f) return m ? (sign | 0x7fc00000u | (m << 13)) : (sign | 0x7f800000u);
  if (e == 0) {
    if (m == 0) return sign;
    // subnormal m * 2^-24, normalised (exact)
    uint32_t shift = 0;
    uint32_t mm = m;
    while (!(mm & 0x400u)) {
      mm <<= 1;
      ++shift;
    }
    return sign | ((113u - shift) << 23) | ((mm & 0x3ffu) << 13);
  }
  return sign | ((e + 112u) << 23) | (m << 13);
}

// IEEE half bits of float32 bits x.
G2M_HALF_FN uint16_t FloatBitsToHalf(uint32_t x) {
  const uint32_t sign = (x >> 16) & 0x8000u;
  const int32_t exp = static_cast<int32_t>((x >> 23) & 0xffu);
  const uint32_t mant = x & 0x7fffffu;
  if (exp == 0xff) return static_cast<uint16_t>(sign | 0x7c00u | (mant ? (0x200u | (mant >> 13)) : 0u));
  const int32_t e = exp - 112;
  if (e >= 0x1f) return static_cast<uint16_t>(sign | 0x7c00u);
  if (e <= 0) {
    if (e < -10) return static_cast<uint16_t>(sign);
    const uint32_t full = mant | 0x800000u;
    const uint32_t shift = static_cast<uint32_t>(14 - e);
    uint32_t h = full >> shift;
    const uint32_t rem = full & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (h & 1u))) ++h;
    return static_cast<uint16_t>(sign | h);
  }
  uint32_t h = (static_cast<uint32_t>(e) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry into the exponent is right
  return static_cast<uint16_t>(sign | h);
}

// bfloat16 bits of float32 bits b.
G2M_HALF_FN uint16_t FloatBitsToBf16(uint32_t b) {
  if ((b & 0x7f800000u) == 0x7f800000u && (b & 0x7fffffu)) return static_cast<uint16_t>((b >> 16) | 0x40u);
  return static_cast<uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

}  // namespace half_bits
}  // namespace g2m
