// Element-type conversions of stored tensors, multithreaded, bit-exact with the
// TypeScript definitions in src/checkpoint/dtype.ts (which the tests compare against):
//   widen16(src: Uint16Array, dtype, out: Float32Array)       bf16/f16 bits -> float32
//   narrow16(src: Float32Array, dtype, out: Uint16Array)      float32 -> bf16/f16 bits,
//                                                             round to nearest even, NaN kept
//   roundFloat32(src: Float32Array, dtype, out: Float32Array) src rounded to the dtype's
//                                                             precision, as float32 (out may be src)
// dtype is 'BF16' or 'F16'. Arrays are read and written in place; partially overlapping
// source and destination memory is refused (ERR_ALIAS): the work is split across threads.
#include <cstdint>
#include <cstring>

#include "exports.h"
#include "forward_common.h"
#include "parallel.h"

namespace g2m {
namespace {

enum class Half { BF16, F16 };

// float32 bits of IEEE half bits h (NaN keeps its payload with the quiet bit set).
inline uint32_t HalfToFloatBits(uint32_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu;
  const uint32_t m = h & 0x3ffu;
  if (e == 0x1f) return m ? (sign | 0x7fc00000u | (m << 13)) : (sign | 0x7f800000u);
  if (e == 0) {
    if (m == 0) return sign;
    // subnormal: m * 2^-24, normalised (exact)
    int shift = 0;
    uint32_t mm = m;
    while (!(mm & 0x400u)) {
      mm <<= 1;
      ++shift;
    }
    return sign | ((113u - shift) << 23) | ((mm & 0x3ffu) << 13);
  }
  return sign | ((e + 112u) << 23) | (m << 13);
}

// IEEE half bits of float32 bits x, round to nearest even, overflow to infinity, NaN kept NaN.
inline uint16_t FloatBitsToHalf(uint32_t x) {
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

// bfloat16 bits of float32 bits b, round to nearest even, NaN kept NaN (quiet bit set).
inline uint16_t FloatBitsToBf16(uint32_t b) {
  if ((b & 0x7f800000u) == 0x7f800000u && (b & 0x7fffffu)) return static_cast<uint16_t>((b >> 16) | 0x40u);
  return static_cast<uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

Half ParseHalf(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length() || !info[i].IsString())
    ThrowTypeError(info.Env(), "ERR_INVALID_ARG_TYPE", "dtype must be the string 'BF16' or 'F16'");
  const std::string s = info[i].As<Napi::String>().Utf8Value();
  if (s == "BF16") return Half::BF16;
  if (s == "F16") return Half::F16;
  ThrowRangeError(info.Env(), "ERR_DTYPE", "dtype '" + s + "' is not BF16 or F16");
}

// Refuses destination memory that overlaps the source other than exactly (same start, same element size).
void CheckAlias(Napi::Env env, const void* src, size_t srcBytes, const void* dst, size_t dstBytes, bool sameOk) {
  const auto s = reinterpret_cast<uintptr_t>(src), d = reinterpret_cast<uintptr_t>(dst);
  const bool overlap = s < d + dstBytes && d < s + srcBytes;
  if (overlap && !(sameOk && s == d && srcBytes == dstBytes))
    ThrowRangeError(env, "ERR_ALIAS", "the output array overlaps the source array");
}

constexpr size_t kGrain = size_t(1) << 16;

struct WidenParams {
  const uint16_t* src = nullptr;
  float* out = nullptr;
  size_t n = 0;
  Half dtype = Half::BF16;
};

WidenParams ParseWiden(const Napi::CallbackInfo& info, fwd::KeepList*) {
  WidenParams p;
  size_t olen = 0;
  p.src = GetU16(info, 0, "src", &p.n);
  p.dtype = ParseHalf(info, 1);
  p.out = GetF32(info, 2, "out", &olen);
  CheckLength(info.Env(), olen, p.n, "out");
  CheckAlias(info.Env(), p.src, 2 * p.n, p.out, 4 * p.n, false);
  return p;
}

void RunWiden(const WidenParams& p) {
  ParallelFor(p.n, kGrain, [&](size_t b, size_t e) {
    uint32_t* o = reinterpret_cast<uint32_t*>(p.out);
    if (p.dtype == Half::BF16) {
      for (size_t i = b; i < e; ++i) o[i] = static_cast<uint32_t>(p.src[i]) << 16;
    } else {
      for (size_t i = b; i < e; ++i) o[i] = HalfToFloatBits(p.src[i]);
    }
  });
}

struct NarrowParams {
  const float* src = nullptr;
  uint16_t* out = nullptr;
  size_t n = 0;
  Half dtype = Half::BF16;
};

NarrowParams ParseNarrow(const Napi::CallbackInfo& info, fwd::KeepList*) {
  NarrowParams p;
  size_t olen = 0;
  p.src = GetF32(info, 0, "src", &p.n);
  p.dtype = ParseHalf(info, 1);
  p.out = GetU16(info, 2, "out", &olen);
  CheckLength(info.Env(), olen, p.n, "out");
  CheckAlias(info.Env(), p.src, 4 * p.n, p.out, 2 * p.n, false);
  return p;
}

void RunNarrow(const NarrowParams& p) {
  ParallelFor(p.n, kGrain, [&](size_t b, size_t e) {
    const uint32_t* s = reinterpret_cast<const uint32_t*>(p.src);
    if (p.dtype == Half::BF16) {
      for (size_t i = b; i < e; ++i) p.out[i] = FloatBitsToBf16(s[i]);
    } else {
      for (size_t i = b; i < e; ++i) p.out[i] = FloatBitsToHalf(s[i]);
    }
  });
}

struct RoundParams {
  const float* src = nullptr;
  float* out = nullptr;
  size_t n = 0;
  Half dtype = Half::BF16;
};

RoundParams ParseRound(const Napi::CallbackInfo& info, fwd::KeepList*) {
  RoundParams p;
  size_t olen = 0;
  p.src = GetF32(info, 0, "src", &p.n);
  p.dtype = ParseHalf(info, 1);
  p.out = GetF32(info, 2, "out", &olen);
  CheckLength(info.Env(), olen, p.n, "out");
  CheckAlias(info.Env(), p.src, 4 * p.n, p.out, 4 * p.n, true);
  return p;
}

void RunRound(const RoundParams& p) {
  ParallelFor(p.n, kGrain, [&](size_t b, size_t e) {
    const uint32_t* s = reinterpret_cast<const uint32_t*>(p.src);
    uint32_t* o = reinterpret_cast<uint32_t*>(p.out);
    if (p.dtype == Half::BF16) {
      for (size_t i = b; i < e; ++i) o[i] = static_cast<uint32_t>(FloatBitsToBf16(s[i])) << 16;
    } else {
      for (size_t i = b; i < e; ++i) o[i] = HalfToFloatBits(FloatBitsToHalf(s[i]));
    }
  });
}

}  // namespace

void InitDtypeConvert(Napi::Env env, Napi::Object exports) {
  fwd::RegisterKernel<WidenParams, ParseWiden, RunWiden>(env, exports, "widen16");
  fwd::RegisterKernel<NarrowParams, ParseNarrow, RunNarrow>(env, exports, "narrow16");
  fwd::RegisterKernel<RoundParams, ParseRound, RunRound>(env, exports, "roundFloat32");
}

}  // namespace g2m
