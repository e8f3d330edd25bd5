// The AVX2/FMA and AVX-512 micro-kernels of the CPU MLA decode (native/decode_mla_cpu.cc):
// avx2::Kernels and avx512::Kernels, each the body in decode_mla_cpu_simd.h compiled under
// its own `#pragma GCC target` over that set's primitives (the callers pick one at run
// time). G2M_HAVE_X86 is defined where they exist.
#pragma once
#if defined(__x86_64__) || defined(__i386__)
#define G2M_HAVE_X86 1

// GCC 12 reports its own AVX-512 intrinsics (`__m512i __Y = __Y;` in the _undefined_
// helpers) as uninitialized once they are inlined under a target pragma; the warnings
// point into the header, so silence them for the header's lines only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "decode_mla_cpu_scalar.h"

namespace g2m {
namespace {

// ---- AVX2/FMA: 16 vector registers, 4 x 3 score and 4 x 3 output blocks ------------------
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#define G2M_MM(op) _mm256_##op
using V = __m256;
inline float Reduce(V v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline V Broadcast(const float* p) { return _mm256_broadcast_ss(p); }
inline __m256i WidenU16(const uint16_t* p) { return _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
// Exp's cut-off: all ones where x < lo, so a NaN argument is not cut off (Exp clamps it to
// lo first).
using Mask = __m256;
inline Mask Underflow(V x, V lo) { return _mm256_cmp_ps(x, lo, _CMP_LT_OQ); }
inline V ZeroUnderflow(Mask under, V y) { return _mm256_andnot_ps(under, y); }
inline V Floor(V x) { return _mm256_floor_ps(x); }
constexpr int kScoreRows = 4, kScoreCols = 3, kPVRows = 4, kPVVecs = 3;

#include "decode_mla_cpu_simd.h"
#undef G2M_MM
}  // namespace avx2
#pragma GCC pop_options

// ---- AVX-512: 32 vector registers, 4 x 6 score and 6 x 4 output blocks -------------------
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")
namespace avx512 {
#define G2M_MM(op) _mm512_##op
using V = __m512;
inline float Reduce(V v) { return _mm512_reduce_add_ps(v); }
inline V Broadcast(const float* p) { return _mm512_set1_ps(*p); }
inline __m512i WidenU16(const uint16_t* p) { return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
// Exp's cut-off: set where x >= lo, so that (unlike AVX2's) a NaN argument is cut off to 0.
using Mask = __mmask16;
inline Mask Underflow(V x, V lo) { return _mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ); }
inline V ZeroUnderflow(Mask ok, V y) { return _mm512_maskz_mov_ps(ok, y); }
inline V Floor(V x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
constexpr int kScoreRows = 4, kScoreCols = 6, kPVRows = 6, kPVVecs = 4;

#include "decode_mla_cpu_simd.h"
#undef G2M_MM
}  // namespace avx512
#pragma GCC pop_options

}  // namespace
}  // namespace g2m

#endif  // x86
