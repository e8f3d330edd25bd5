// The `deviceInfo()` object of the CUDA exports (decodeCuda in native/decode_cuda.cc,
// convertCuda in native/memory_cuda.cc), built from the facts both CUDA modules fill.
// CUDA build only.
#pragma once
#ifdef GQA2MLA_CUDA

#include <napi.h>

#include <string>

#include "common.h"
#include "cuda/device_facts.h"

namespace g2m {

// {name, smCount, computeCapability, totalMemory, l2Bytes (when withL2), runtimeVersion, driverVersion}
inline Napi::Object DeviceFactsObject(Napi::Env env, const DeviceFacts& f, bool withL2) {
  auto o = Napi::Object::New(env);
  o.Set("name", f.name);
  o.Set("smCount", f.sm_count);
  o.Set("computeCapability", std::to_string(f.cc_major) + "." + std::to_string(f.cc_minor));
  o.Set("totalMemory", static_cast<double>(f.total_mem));
  if (withL2) o.Set("l2Bytes", static_cast<double>(f.l2_bytes));
  o.Set("runtimeVersion", f.runtime_version);
  o.Set("driverVersion", f.driver_version);
  return o;
}

// A deviceInfo() export: `Get` fills the facts and returns "" or the CUDA error (thrown as
// Error ERR_CUDA).
template <std::string (*Get)(DeviceFacts*), bool kWithL2>
Napi::Value DeviceInfoExport(const Napi::CallbackInfo& info) {
  DeviceFacts f;
  const std::string err = Get(&f);
  if (!err.empty()) ThrowError(info.Env(), "ERR_CUDA", err);
  return DeviceFactsObject(info.Env(), f, kWithL2);
}

}  // namespace g2m

#endif  // GQA2MLA_CUDA
