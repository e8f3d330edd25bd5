// Shared helpers for the Node-API layer: errors with a `code`, in-place TypedArray
// access, and a Promise-returning AsyncWorker base. Only .cc files of the addon
// include this header; CUDA sources never do.
#pragma once
#include <napi.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace g2m {

// Throws a JS TypeError / RangeError / Error carrying `code` (C++ exceptions are on).
[[noreturn]] void ThrowTypeError(Napi::Env env, const char* code, const std::string& msg);
[[noreturn]] void ThrowRangeError(Napi::Env env, const char* code, const std::string& msg);
[[noreturn]] void ThrowError(Napi::Env env, const char* code, const std::string& msg);

enum class DType { F32, F64 };

// A view of a Float32Array or Float64Array's memory (no copy).
struct ArrayView {
  void* data = nullptr;
  size_t length = 0;  // elements
  DType dtype = DType::F32;
  template <typename T> T* as() const { return static_cast<T*>(data); }
};

// `v` as a Float32Array/Float64Array; throws TypeError (code ERR_INVALID_ARG_TYPE) otherwise.
ArrayView FloatArrayOf(Napi::Env env, const Napi::Value& v, const std::string& name);
// Reads argument `info[i]` as a Float32Array/Float64Array; throws TypeError (code
// ERR_INVALID_ARG_TYPE) otherwise. `name` names the argument in messages.
ArrayView GetFloatArray(const Napi::CallbackInfo& info, size_t i, const char* name);
// Same, but only Float32Array is accepted.
float* GetF32(const Napi::CallbackInfo& info, size_t i, const char* name, size_t* length);
// Reads a Uint16Array (bf16 bit patterns) or Int32Array in place.
uint16_t* GetU16(const Napi::CallbackInfo& info, size_t i, const char* name, size_t* length);
int32_t* GetI32(const Napi::CallbackInfo& info, size_t i, const char* name, size_t* length);
// Any TypedArray value `v` as raw bytes, in place: its first byte and, in *bytes, its byte
// length (TypeError ERR_INVALID_ARG_TYPE "<name> must be a TypedArray" otherwise).
uint8_t* TypedBytes(Napi::Env env, const Napi::Value& v, const char* name, size_t* bytes);
// Checks the length of an array against an expected element count (RangeError ERR_SHAPE).
void CheckLength(Napi::Env env, size_t have, size_t want, const char* name);

// Integer / number / boolean arguments with range checks.
int64_t GetInt(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t min, int64_t max);
double GetNumber(const Napi::CallbackInfo& info, size_t i, const char* name);
bool GetBool(const Napi::CallbackInfo& info, size_t i, const char* name);
// Optional property of an options object, with a default.
int64_t OptInt(const Napi::Object& o, const char* key, int64_t dflt);
double OptNumber(const Napi::Object& o, const char* key, double dflt);
bool OptBool(const Napi::Object& o, const char* key, bool dflt);

// Failure raised inside Execute(): becomes a rejected Promise with an Error that
// carries `code` (and `info` for LAPACK/solver status when info != 0).
struct WorkError {
  std::string code;
  std::string message;
  int64_t info = 0;
};

// Base for Promise-returning work. Subclasses keep plain structs parsed on the main
// thread, run `Run()` on the libuv pool, and build the result in `Result()`.
// `Keep(value)` pins JS objects (the TypedArrays whose memory is used in place) for
// the lifetime of the work.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  explicit PromiseWorker(Napi::Env env);
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Keep(const Napi::Value& v);
  // Queues the worker and returns its promise.
  Napi::Promise Start();

 protected:
  virtual void Run() = 0;  // may throw WorkError
  virtual Napi::Value Result(Napi::Env env) { return env.Undefined(); }

 private:
  void Execute() override;
  void OnOK() override;
  void OnError(const Napi::Error& e) override;
  Napi::Promise::Deferred deferred_;
  std::vector<Napi::ObjectReference> kept_;
  WorkError err_;
  bool failed_ = false;
};

// Builds a JS Error object with code (and info when non-zero).
Napi::Error MakeError(Napi::Env env, const WorkError& e);

// One function of an exports table: its JavaScript name and its callback.
struct FunctionEntry {
  const char* name;
  Napi::Value (*fn)(const Napi::CallbackInfo&);
};
// Sets each entry on `target` as a function of that name.
void SetFunctions(Napi::Env env, Napi::Object target, std::initializer_list<FunctionEntry> fns);

// Number of worker threads used by the multithreaded kernels (GQA2MLA_THREADS or
// hardware concurrency).
int NumThreads();

}  // namespace g2m
