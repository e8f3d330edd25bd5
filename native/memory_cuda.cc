// convertCuda memory exports: device facts, device buffers (alloc / view / free), copies,
// dtype conversion, stream synchronisation and memory statistics. CUDA build only; the
// node-gyp CPU build compiles this file as an empty translation unit.
#ifdef GQA2MLA_CUDA

#include "memory_cuda.h"

#include <string>

#include "cuda/convert_cuda.h"
#include "device_facts_js.h"
#include "exports.h"

namespace g2m {
namespace cudamem {

namespace cc = g2m::cuconv;

namespace {

const napi_type_tag kTag = {0x3c59a1e07d4b2f18ULL, 0xa7e2915c4d3b6f02ULL};

struct Alloc {
  void* ptr = nullptr;
  size_t bytes = 0;
};

Napi::Object MakeView(Napi::Env env, Napi::Value handle, size_t byteOffset, size_t bytes) {
  auto o = Napi::Object::New(env);
  o.Set("bytes", Napi::Number::New(env, static_cast<double>(bytes)));
  o.Set("byteOffset", Napi::Number::New(env, static_cast<double>(byteOffset)));
  o.Set("handle", handle);
  return o;
}

Alloc* AllocOf(const Napi::Value& v) {
  if (!v.IsObject()) return nullptr;
  Napi::Value h = v.As<Napi::Object>().Get("handle");
  if (!h.IsExternal() || !h.As<Napi::External<Alloc>>().CheckTypeTag(&kTag)) return nullptr;
  return h.As<Napi::External<Alloc>>().Data();
}

size_t NumProp(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? static_cast<size_t>(v.As<Napi::Number>().Int64Value()) : 0;
}

cc::Dt DtypeArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsString())
    ThrowTypeError(info.Env(), "ERR_INVALID_ARG_TYPE", std::string(name) + " must be 'F32', 'BF16' or 'F16'");
  const std::string s = info[i].As<Napi::String>().Utf8Value();
  if (s == "F32") return cc::Dt::F32;
  if (s == "BF16") return cc::Dt::BF16;
  if (s == "F16") return cc::Dt::F16;
  ThrowRangeError(info.Env(), "ERR_DTYPE", std::string(name) + " must be 'F32', 'BF16' or 'F16' (got " + s + ")");
}

size_t DtSize(cc::Dt d) { return d == cc::Dt::F32 ? 4 : 2; }

int64_t OffsetArg(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length() || info[i].IsUndefined()) return 0;
  return GetInt(info, i, "byteOffset", 0, int64_t(1) << 46);
}

// ---- exports ------------------------------------------------------------------------------

Napi::Value Available(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), cc::DeviceCount() > 0); }

Napi::Value MemStatsFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const cc::MemStats s = cc::Stats();
  auto o = Napi::Object::New(env);
  o.Set("allocated", static_cast<double>(s.allocated));
  o.Set("peakAllocated", static_cast<double>(s.peak_allocated));
  o.Set("deviceUsed", static_cast<double>(s.device_used));
  o.Set("peakDeviceUsed", static_cast<double>(s.peak_device_used));
  o.Set("deviceTotal", static_cast<double>(s.device_total));
  return o;
}

Napi::Value ResetPeakFn(const Napi::CallbackInfo& info) {
  cc::ResetPeak();
  return info.Env().Undefined();
}

// alloc(bytes)
Napi::Value AllocFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const size_t bytes = static_cast<size_t>(GetInt(info, 0, "bytes", 1, int64_t(1) << 46));
  void* p = nullptr;
  Check(env, cc::Malloc(bytes, &p));
  auto ext = Napi::External<Alloc>::New(env, new Alloc{p, bytes}, [](Napi::Env, Alloc* a) {
    if (a->ptr) cc::Free(a->ptr, a->bytes);
    delete a;
  });
  ext.TypeTag(&kTag);
  return MakeView(env, ext, 0, bytes);
}

// view(buffer, byteOffset, bytes)
Napi::Value ViewFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DevView base = Get(env, info[0], "buffer");
  const size_t off = static_cast<size_t>(GetInt(info, 1, "byteOffset", 0, int64_t(1) << 46));
  const size_t bytes = static_cast<size_t>(GetInt(info, 2, "bytes", 0, int64_t(1) << 46));
  if (off + bytes > base.bytes)
    ThrowRangeError(env, "ERR_SHAPE",
                    "view [" + std::to_string(off) + ", " + std::to_string(off + bytes) + ") lies outside the " +
                        std::to_string(base.bytes) + "-byte buffer");
  const size_t baseOff = NumProp(info[0].As<Napi::Object>(), "byteOffset");
  return MakeView(env, info[0].As<Napi::Object>().Get("handle"), baseOff + off, bytes);
}

Napi::Value FreeFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Alloc* a = AllocOf(info.Length() > 0 ? info[0] : env.Undefined());
  if (!a) ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", "buffer must be a device buffer (convertCuda.alloc)");
  if (a->ptr) Check(env, cc::Free(a->ptr, a->bytes));
  a->ptr = nullptr;
  return env.Undefined();
}

// upload(buffer, typedArray, byteOffset = 0) when `toDevice`, else download(...), which
// waits for the queued work.
Napi::Value Transfer(const Napi::CallbackInfo& info, bool toDevice) {
  Napi::Env env = info.Env();
  DevView d = Get(env, info[0], "buffer");
  size_t n = 0;
  uint8_t* host = TypedBytes(env, info[1], toDevice ? "source" : "destination", &n);
  const size_t off = static_cast<size_t>(OffsetArg(info, 2));
  if (off + n > d.bytes)
    ThrowRangeError(env, "ERR_SHAPE", std::string(toDevice ? "upload" : "download") + " of " + std::to_string(n) +
                                          " bytes at " + std::to_string(off) + " overruns the " + std::to_string(d.bytes) +
                                          "-byte buffer");
  Check(env, toDevice ? cc::Upload(d.ptr + off, host, n) : cc::Download(host, d.ptr + off, n));
  return env.Undefined();
}
Napi::Value UploadFn(const Napi::CallbackInfo& info) { return Transfer(info, true); }
Napi::Value DownloadFn(const Napi::CallbackInfo& info) { return Transfer(info, false); }

// copy(dst, src, bytes) device to device, queued
Napi::Value CopyFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DevView dst = Get(env, info[0], "destination");
  DevView src = Get(env, info[1], "source");
  const size_t n = static_cast<size_t>(GetInt(info, 2, "bytes", 0, int64_t(1) << 46));
  if (n > dst.bytes || n > src.bytes) ThrowRangeError(env, "ERR_SHAPE", "copy of " + std::to_string(n) + " bytes overruns a buffer");
  Check(env, cc::DeviceCopy(dst.ptr, src.ptr, n));
  return env.Undefined();
}

// fill(buffer, byte) queued memset
Napi::Value FillFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DevView d = Get(env, info[0], "buffer");
  const int v = static_cast<int>(GetInt(info, 1, "value", 0, 255));
  Check(env, cc::Memset(d.ptr, v, d.bytes));
  return env.Undefined();
}

// convert(src, srcDtype, dst, dstDtype, count) queued
Napi::Value ConvertFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DevView src = Get(env, info[0], "source");
  const cc::Dt sdt = DtypeArg(info, 1, "srcDtype");
  DevView dst = Get(env, info[2], "destination");
  const cc::Dt ddt = DtypeArg(info, 3, "dstDtype");
  const size_t n = static_cast<size_t>(GetInt(info, 4, "count", 0, int64_t(1) << 45));
  Need(env, src, n, DtSize(sdt), "source");
  Need(env, dst, n, DtSize(ddt), "destination");
  Check(env, cc::Convert(src.ptr, sdt, dst.ptr, ddt, n));
  return env.Undefined();
}

// synchronize(): blocks until the queued work is done
Napi::Value SyncFn(const Napi::CallbackInfo& info) {
  Check(info.Env(), cc::Synchronize());
  return info.Env().Undefined();
}

class SyncWorker : public PromiseWorker {
 public:
  explicit SyncWorker(Napi::Env env) : PromiseWorker(env) {}

 protected:
  void Run() override {
    const std::string e = cc::Synchronize();
    if (!e.empty()) throw WorkError{"ERR_CUDA", e, 0};
  }
};

// synchronizeAsync(): resolves when the work queued so far is done (waits off the main thread)
Napi::Value SyncAsyncFn(const Napi::CallbackInfo& info) { return (new SyncWorker(info.Env()))->Start(); }

}  // namespace

bool Is(const Napi::Value& v) { return AllocOf(v) != nullptr; }

DevView Get(Napi::Env env, const Napi::Value& v, const char* name) {
  Alloc* a = AllocOf(v);
  if (!a) ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", std::string(name) + " must be a device buffer (convertCuda.alloc)");
  if (!a->ptr) ThrowError(env, "ERR_INVALID_STATE", std::string(name) + " was freed");
  auto o = v.As<Napi::Object>();
  const size_t off = NumProp(o, "byteOffset");
  const size_t bytes = NumProp(o, "bytes");
  if (off + bytes > a->bytes) ThrowRangeError(env, "ERR_SHAPE", std::string(name) + " is a view outside its allocation");
  return DevView{static_cast<uint8_t*>(a->ptr) + off, bytes};
}

DevView Opt(Napi::Env env, const Napi::Object& o, const char* key) {
  if (!o.Has(key)) return DevView{};
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return DevView{};
  return Get(env, v, key);
}

void Need(Napi::Env env, const DevView& d, size_t elems, size_t elemBytes, const char* name) {
  if (d.bytes < elems * elemBytes)
    ThrowRangeError(env, "ERR_SHAPE",
                    std::string(name) + " holds " + std::to_string(d.bytes) + " bytes, needs " +
                        std::to_string(elems * elemBytes));
}

Napi::Object Namespace(Napi::Env env, Napi::Object exports) {
  Napi::Value v = exports.Get("convertCuda");
  if (v.IsObject()) return v.As<Napi::Object>();
  auto o = Napi::Object::New(env);
  exports.Set("convertCuda", o);
  return o;
}

void Check(Napi::Env env, const std::string& msg) {
  if (!msg.empty()) ThrowError(env, "ERR_CUDA", msg);
}

}  // namespace cudamem

void InitMemoryCuda(Napi::Env env, Napi::Object exports) {
  using namespace cudamem;
  Napi::Object ns = Namespace(env, exports);
  SetFunctions(env, ns, {
      {"available", Available},
      {"deviceInfo", DeviceInfoExport<cc::Facts, false>},
      {"memStats", MemStatsFn},
      {"resetPeak", ResetPeakFn},
      {"alloc", AllocFn},
      {"view", ViewFn},
      {"free", FreeFn},
      {"upload", UploadFn},
      {"download", DownloadFn},
      {"copy", CopyFn},
      {"fill", FillFn},
      {"convert", ConvertFn},
      {"synchronize", SyncFn},
      {"synchronizeAsync", SyncAsyncFn},
  });
}

}  // namespace g2m

#endif  // GQA2MLA_CUDA
