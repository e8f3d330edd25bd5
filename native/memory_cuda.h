// Device buffers of the conversion's CUDA exports (`convertCuda`), shared by the
// native/*_cuda.cc wrappers: a buffer is a JS object {bytes, byteOffset, handle} whose
// `handle` owns one cudaMalloc allocation; views share the handle. CUDA build only.
#pragma once
#ifdef GQA2MLA_CUDA

#include <array>
#include <cstddef>
#include <cstdint>

#include "common.h"

namespace g2m {
namespace cudamem {

// A resolved device view: base pointer + byteOffset, and its length in bytes.
struct DevView {
  uint8_t* ptr = nullptr;
  size_t bytes = 0;
  template <typename T>
  T* as() const {
    return reinterpret_cast<T*>(ptr);
  }
};

// `v` as a device buffer (TypeError ERR_INVALID_ARG_TYPE otherwise, Error ERR_INVALID_STATE
// when freed). `name` names the argument in messages.
DevView Get(Napi::Env env, const Napi::Value& v, const char* name);
// Same for an optional property of `o` (null/undefined -> ptr nullptr).
DevView Opt(Napi::Env env, const Napi::Object& o, const char* key);
// RangeError ERR_SHAPE unless the view holds `elems` elements of `elemBytes`.
void Need(Napi::Env env, const DevView& d, size_t elems, size_t elemBytes, const char* name);
// Device buffer arguments info[0..N-1] (Get), `names` naming them in messages.
template <size_t N>
std::array<DevView, N> Args(const Napi::CallbackInfo& info, const std::array<const char*, N>& names) {
  std::array<DevView, N> d;
  for (size_t i = 0; i < N; ++i) d[i] = Get(info.Env(), info[i], names[i]);
  return d;
}
// Whether `v` is a device buffer object.
bool Is(const Napi::Value& v);
// The `convertCuda` namespace object on `exports` (created on first use).
Napi::Object Namespace(Napi::Env env, Napi::Object exports);
// Throws Error ERR_CUDA with `msg` when it is not empty.
void Check(Napi::Env env, const std::string& msg);

}  // namespace cudamem
}  // namespace g2m

#endif  // GQA2MLA_CUDA
