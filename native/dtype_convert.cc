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
#include "half_bits.h"
#include "parallel.h"

namespace g2m {
namespace {

using half_bits::FloatBitsToBf16;
using half_bits::FloatBitsToHalf;
using half_bits::HalfToFloatBits;

enum class Half { BF16, F16 };

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

// One conversion call: `n` elements of src (uint16_t bits or float) into out, for one dtype.
template <typename S, typename D>
struct Conversion {
  const S* src = nullptr;
  D* out = nullptr;
  size_t n = 0;
  Half dtype = Half::BF16;
};

template <typename T>
T* Elements(const Napi::CallbackInfo& info, size_t i, const char* name, size_t* length);
template <>
float* Elements<float>(const Napi::CallbackInfo& info, size_t i, const char* name, size_t* length) {
  return GetF32(info, i, name, length);
}
template <>
uint16_t* Elements<uint16_t>(const Napi::CallbackInfo& info, size_t i, const char* name, size_t* length) {
  return GetU16(info, i, name, length);
}

// (src, dtype, out): out as long as src; they may not overlap, except exactly when kSameOk.
template <typename S, typename D, bool kSameOk>
Conversion<S, D> ParseConversion(const Napi::CallbackInfo& info, fwd::KeepList*) {
  Conversion<S, D> p;
  size_t olen = 0;
  p.src = Elements<S>(info, 0, "src", &p.n);
  p.dtype = ParseHalf(info, 1);
  p.out = Elements<D>(info, 2, "out", &olen);
  CheckLength(info.Env(), olen, p.n, "out");
  CheckAlias(info.Env(), p.src, sizeof(S) * p.n, p.out, sizeof(D) * p.n, kSameOk);
  return p;
}

using Widen = Conversion<uint16_t, float>;
using Narrow = Conversion<float, uint16_t>;
using Round = Conversion<float, float>;

void RunWiden(const Widen& p) {
  ParallelFor(p.n, kGrain, [&](size_t b, size_t e) {
    uint32_t* o = reinterpret_cast<uint32_t*>(p.out);
    if (p.dtype == Half::BF16) {
      for (size_t i = b; i < e; ++i) o[i] = static_cast<uint32_t>(p.src[i]) << 16;
    } else {
      for (size_t i = b; i < e; ++i) o[i] = HalfToFloatBits(p.src[i]);
    }
  });
}

void RunNarrow(const Narrow& p) {
  ParallelFor(p.n, kGrain, [&](size_t b, size_t e) {
    const uint32_t* s = reinterpret_cast<const uint32_t*>(p.src);
    if (p.dtype == Half::BF16) {
      for (size_t i = b; i < e; ++i) p.out[i] = FloatBitsToBf16(s[i]);
    } else {
      for (size_t i = b; i < e; ++i) p.out[i] = FloatBitsToHalf(s[i]);
    }
  });
}

void RunRound(const Round& p) {
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
  fwd::RegisterKernel<Widen, ParseConversion<uint16_t, float, false>, RunWiden>(env, exports, "widen16");
  fwd::RegisterKernel<Narrow, ParseConversion<float, uint16_t, false>, RunNarrow>(env, exports, "narrow16");
  fwd::RegisterKernel<Round, ParseConversion<float, float, true>, RunRound>(env, exports, "roundFloat32");
}

}  // namespace g2m
