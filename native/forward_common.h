// Shared plumbing of the forward kernels (native/forward_*.cc): sync + Promise exports
// from one parse function and one compute function, typed arrays read from option
// objects, and a runtime-dispatched SIMD attribute for the hot loops.
#pragma once
#include <napi.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common.h"

// Hot loops are compiled for AVX-512 / AVX2+FMA / baseline and picked at load time
// (GCC function multiversioning; the build flags stay portable).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define G2M_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define G2M_HOT
#endif

namespace g2m {
namespace fwd {

// 16-float vectors (GCC/Clang vector extension): one AVX-512 register in the x86-64-v4
// clone, two AVX2 registers in the v3 clone, four SSE registers otherwise. Only used inside
// always-inlined helpers and G2M_HOT functions, never across a non-inlined call.
typedef float v16 __attribute__((vector_size(64)));
typedef int32_t vi16 __attribute__((vector_size(64)));
#define G2M_VINLINE inline __attribute__((always_inline))
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

G2M_VINLINE v16 Load16(const float* p) {
  v16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
G2M_VINLINE void Store16(float* p, v16 v) { std::memcpy(p, &v, sizeof v); }
G2M_VINLINE v16 Splat(float x) { return v16{} + x; }
// Horizontal max / sum by halving shuffles.
G2M_VINLINE float HMax(v16 v) {
  v16 w = __builtin_shuffle(v, vi16{8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7});
  v = v > w ? v : w;
  w = __builtin_shuffle(v, vi16{4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3});
  v = v > w ? v : w;
  w = __builtin_shuffle(v, vi16{2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1});
  v = v > w ? v : w;
  return v[0] > v[1] ? v[0] : v[1];
}
G2M_VINLINE float HSum(v16 v) {
  v += __builtin_shuffle(v, vi16{8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7});
  v += __builtin_shuffle(v, vi16{4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3});
  v += __builtin_shuffle(v, vi16{2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1});
  return v[0] + v[1];
}

// Vector form of FastExp below (same range reduction and polynomial, branch-free).
G2M_VINLINE v16 ExpV(v16 x) {
  const v16 lo = Splat(-87.3f), hi = Splat(88.0f);
  const vi16 under = x < lo;
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const v16 t = x * Splat(1.44269504088896341f) + Splat(0.5f);
  v16 n = __builtin_convertvector(__builtin_convertvector(t, vi16), v16);  // trunc
  n = n > t ? n - Splat(1.0f) : n;                                          // floor
  v16 r = x - n * Splat(0.693359375f);
  r = r + n * Splat(2.12194440e-4f);
  v16 p = Splat(1.9875691500e-4f);
  p = p * r + Splat(1.3981999507e-3f);
  p = p * r + Splat(8.3334519073e-3f);
  p = p * r + Splat(4.1665795894e-2f);
  p = p * r + Splat(1.6666665459e-1f);
  p = p * r + Splat(5.0000001201e-1f);
  const v16 e = p * r * r + r + Splat(1.0f);
  const vi16 bits = (__builtin_convertvector(n, vi16) + 127) << 23;
  v16 scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return under ? v16{} : e * scale;
}

// exp(x) for float32 in branch-free form so loops over it vectorize: range reduction
// x = n ln2 + r, |r| <= ln2/2, degree-6 minimax polynomial for e^r (Cephes' expf
// coefficients), 2^n through the exponent bits. Relative error ~2 ulp; inputs are clamped
// to at most 88; anything below -87.3 (including -inf) gives exactly 0.
inline float FastExp(float x) {
  const bool under = x < -87.3f;
  x = under ? -87.3f : (x > 88.0f ? 88.0f : x);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return under ? 0.0f : e * scale;
}

// JS values a kernel reads in place; pinned for the lifetime of an async call.
using KeepList = std::vector<Napi::Value>;

// Float32Array property `key` of `o`; nullptr when absent/null/undefined. Throws
// TypeError when present but of another type.
inline float* OptF32(const Napi::Object& o, const char* key, size_t* length, KeepList* keep) {
  if (!o.Has(key)) return nullptr;
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return nullptr;
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    ThrowTypeError(o.Env(), "ERR_INVALID_ARG_TYPE", std::string(key) + " must be a Float32Array");
  auto a = v.As<Napi::Float32Array>();
  if (length) *length = a.ElementLength();
  if (keep) keep->push_back(v);
  return a.Data();
}

// The TypedArray arguments of a kernel, read in place (common.h's GetF32 / GetI32 /
// GetFloatArray), each remembered with its name and length so that Need() can check it
// once the options have given the shape.
class ArrayArgs {
 public:
  explicit ArrayArgs(const Napi::CallbackInfo& info) : info_(info) {}
  float* F32(size_t i, const char* name) { return GetF32(info_, i, Named(i, name), &length_[i]); }
  const int32_t* I32(size_t i, const char* name) { return GetI32(info_, i, Named(i, name), &length_[i]); }
  ArrayView Float(size_t i, const char* name) {
    ArrayView v = GetFloatArray(info_, i, Named(i, name));
    length_[i] = v.length;
    return v;
  }
  size_t Length(size_t i) const { return length_[i]; }
  // RangeError ERR_SHAPE unless argument i holds at least `want` elements.
  void Need(size_t i, size_t want) const { CheckLength(info_.Env(), length_[i], want, names_[i]); }

 private:
  static constexpr size_t kMax = 8;
  const char* Named(size_t i, const char* name) { return names_[i] = name; }
  const Napi::CallbackInfo& info_;
  const char* names_[kMax] = {};
  size_t length_[kMax] = {};
};

// Options object at info[i] (an empty object when absent or undefined).
inline Napi::Object OptObject(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length() || info[i].IsUndefined() || info[i].IsNull()) return Napi::Object::New(info.Env());
  if (!info[i].IsObject()) ThrowTypeError(info.Env(), "ERR_INVALID_ARG_TYPE", "options must be an object");
  return info[i].As<Napi::Object>();
}

// Required non-negative integer option.
inline int64_t ReqInt(const Napi::Object& o, const char* key, int64_t min, int64_t max) {
  if (!o.Has(key) || !o.Get(key).IsNumber())
    ThrowTypeError(o.Env(), "ERR_INVALID_ARG_TYPE", std::string("option ") + key + " must be a number");
  double d = o.Get(key).As<Napi::Number>().DoubleValue();
  if (d != static_cast<double>(static_cast<int64_t>(d)) || d < static_cast<double>(min) || d > static_cast<double>(max))
    ThrowRangeError(o.Env(), "ERR_OUT_OF_RANGE",
                    std::string("option ") + key + " = " + std::to_string(d) + " must be an integer in [" +
                        std::to_string(min) + ", " + std::to_string(max) + "]");
  return static_cast<int64_t>(d);
}

// Elements a strided [rows, heads, dim] view touches: (rows-1)*rowStride + (heads-1)*headStride + dim.
inline size_t Extent(size_t rows, size_t rowStride, size_t heads, size_t headStride, size_t dim) {
  if (rows == 0 || heads == 0 || dim == 0) return 0;
  return (rows - 1) * rowStride + (heads - 1) * headStride + dim;
}

// A kernel: parsed on the main thread into P (keeping the arrays it reads), run by `Run`.
template <typename P>
class KernelWorker : public PromiseWorker {
 public:
  KernelWorker(Napi::Env env, P p, void (*run)(const P&)) : PromiseWorker(env), p_(std::move(p)), run_(run) {}

 protected:
  void Run() override { run_(p_); }

 private:
  P p_;
  void (*run_)(const P&);
};

// Synchronous export: parse, run on the calling thread, undefined.
template <typename P, P (*Parse)(const Napi::CallbackInfo&, KeepList*), void (*RunFn)(const P&)>
Napi::Value SyncExport(const Napi::CallbackInfo& info) {
  P p = Parse(info, nullptr);
  try {
    RunFn(p);
  } catch (const WorkError& e) {
    throw MakeError(info.Env(), e);
  }
  return info.Env().Undefined();
}

// Promise export: parse on the main thread, run on the libuv pool.
template <typename P, P (*Parse)(const Napi::CallbackInfo&, KeepList*), void (*RunFn)(const P&)>
Napi::Value AsyncExport(const Napi::CallbackInfo& info) {
  KeepList keep;
  P p = Parse(info, &keep);
  auto* w = new KernelWorker<P>(info.Env(), std::move(p), RunFn);
  for (size_t i = 0; i < info.Length(); ++i) w->Keep(info[i]);
  for (auto& v : keep) w->Keep(v);
  return w->Start();
}

// Registers `name` and `nameAsync`.
template <typename P, P (*Parse)(const Napi::CallbackInfo&, KeepList*), void (*RunFn)(const P&)>
void RegisterKernel(Napi::Env env, Napi::Object exports, const std::string& name) {
  exports.Set(name, Napi::Function::New(env, SyncExport<P, Parse, RunFn>, name));
  exports.Set(name + "Async", Napi::Function::New(env, AsyncExport<P, Parse, RunFn>, name + "Async"));
}

}  // namespace fwd
}  // namespace g2m
