#include "common.h"

#include <cstdlib>
#include <limits>
#include <thread>

namespace g2m {

namespace {
Napi::Error WithCode(Napi::Error e, const char* code) {
  e.Set("code", Napi::String::New(e.Env(), code));
  return e;
}
}  // namespace

void ThrowTypeError(Napi::Env env, const char* code, const std::string& msg) {
  throw WithCode(Napi::TypeError::New(env, msg), code);
}
void ThrowRangeError(Napi::Env env, const char* code, const std::string& msg) {
  throw WithCode(Napi::RangeError::New(env, msg), code);
}
void ThrowError(Napi::Env env, const char* code, const std::string& msg) {
  throw WithCode(Napi::Error::New(env, msg), code);
}

static Napi::TypedArray GetTyped(const Napi::CallbackInfo& info, size_t i, const char* name, const char* what) {
  if (i >= info.Length() || !info[i].IsTypedArray())
    ThrowTypeError(info.Env(), "ERR_INVALID_ARG_TYPE", std::string(name) + " must be a " + what);
  return info[i].As<Napi::TypedArray>();
}

ArrayView FloatArrayOf(Napi::Env env, const Napi::Value& v, const std::string& name) {
  const std::string what = name + " must be a Float32Array or Float64Array";
  if (!v.IsTypedArray()) ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", what);
  auto t = v.As<Napi::TypedArray>();
  ArrayView out;
  if (t.TypedArrayType() == napi_float32_array) {
    out.dtype = DType::F32;
    out.data = t.As<Napi::Float32Array>().Data();
  } else if (t.TypedArrayType() == napi_float64_array) {
    out.dtype = DType::F64;
    out.data = t.As<Napi::Float64Array>().Data();
  } else {
    ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", what);
  }
  out.length = t.ElementLength();
  return out;
}

ArrayView GetFloatArray(const Napi::CallbackInfo& info, size_t i, const char* name) {
  return FloatArrayOf(info.Env(), info[i], name);
}

// The elements of TypedArray argument info[i] of kind `type`, in place: `what` names the kind
// in the not-a-TypedArray message, `wrongKind` ends the message for a TypedArray of another kind.
template <class Arr>
auto TypedData(const Napi::CallbackInfo& info, size_t i, const char* name, napi_typedarray_type type, const char* what,
               const char* wrongKind, size_t* length) {
  auto t = GetTyped(info, i, name, what);
  if (t.TypedArrayType() != type) ThrowTypeError(info.Env(), "ERR_INVALID_ARG_TYPE", std::string(name) + wrongKind);
  auto a = t.As<Arr>();
  if (length) *length = a.ElementLength();
  return a.Data();
}

float* GetF32(const Napi::CallbackInfo& info, size_t i, const char* name, size_t* length) {
  return TypedData<Napi::Float32Array>(info, i, name, napi_float32_array, "Float32Array", " must be a Float32Array", length);
}
uint16_t* GetU16(const Napi::CallbackInfo& info, size_t i, const char* name, size_t* length) {
  return TypedData<Napi::Uint16Array>(info, i, name, napi_uint16_array, "Uint16Array", " must be a Uint16Array", length);
}
int32_t* GetI32(const Napi::CallbackInfo& info, size_t i, const char* name, size_t* length) {
  return TypedData<Napi::Int32Array>(info, i, name, napi_int32_array, "Int32Array", " must be an Int32Array", length);
}

uint8_t* TypedBytes(Napi::Env env, const Napi::Value& v, const char* name, size_t* bytes) {
  if (!v.IsTypedArray()) ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", std::string(name) + " must be a TypedArray");
  auto t = v.As<Napi::TypedArray>();
  *bytes = t.ByteLength();
  return static_cast<uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
}

void CheckLength(Napi::Env env, size_t have, size_t want, const char* name) {
  if (have < want)
    ThrowRangeError(env, "ERR_SHAPE",
                    std::string(name) + " has " + std::to_string(have) + " elements, needs " + std::to_string(want));
}

int64_t GetInt(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t min, int64_t max) {
  if (i >= info.Length() || !info[i].IsNumber())
    ThrowTypeError(info.Env(), "ERR_INVALID_ARG_TYPE", std::string(name) + " must be a number");
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (d != static_cast<double>(static_cast<int64_t>(d)))
    ThrowRangeError(info.Env(), "ERR_OUT_OF_RANGE", std::string(name) + " must be an integer");
  int64_t v = static_cast<int64_t>(d);
  if (v < min || v > max)
    ThrowRangeError(info.Env(), "ERR_OUT_OF_RANGE",
                    std::string(name) + " = " + std::to_string(v) + " is outside [" + std::to_string(min) + ", " +
                        std::to_string(max) + "]");
  return v;
}

double GetNumber(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsNumber())
    ThrowTypeError(info.Env(), "ERR_INVALID_ARG_TYPE", std::string(name) + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

bool GetBool(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (i >= info.Length() || !info[i].IsBoolean())
    ThrowTypeError(info.Env(), "ERR_INVALID_ARG_TYPE", std::string(name) + " must be a boolean");
  return info[i].As<Napi::Boolean>().Value();
}

namespace {
// Property `key` of `o` (empty when absent or undefined); TypeError "<key> must be a <what>"
// when `is` does not hold for it.
Napi::Value OptProp(const Napi::Object& o, const char* key, bool (Napi::Value::*is)() const, const char* what) {
  if (!o.Has(key) || o.Get(key).IsUndefined()) return Napi::Value();
  auto v = o.Get(key);
  if (!(v.*is)()) ThrowTypeError(o.Env(), "ERR_INVALID_ARG_TYPE", std::string(key) + " must be a " + what);
  return v;
}
}  // namespace

int64_t OptInt(const Napi::Object& o, const char* key, int64_t dflt) {
  auto v = OptProp(o, key, &Napi::Value::IsNumber, "number");
  return v.IsEmpty() ? dflt : v.As<Napi::Number>().Int64Value();
}
double OptNumber(const Napi::Object& o, const char* key, double dflt) {
  auto v = OptProp(o, key, &Napi::Value::IsNumber, "number");
  return v.IsEmpty() ? dflt : v.As<Napi::Number>().DoubleValue();
}
bool OptBool(const Napi::Object& o, const char* key, bool dflt) {
  auto v = OptProp(o, key, &Napi::Value::IsBoolean, "boolean");
  return v.IsEmpty() ? dflt : v.As<Napi::Boolean>().Value();
}

Napi::Error MakeError(Napi::Env env, const WorkError& e) {
  auto err = Napi::Error::New(env, e.message);
  err.Set("code", Napi::String::New(env, e.code));
  if (e.info != 0) err.Set("info", Napi::Number::New(env, static_cast<double>(e.info)));
  return err;
}

PromiseWorker::PromiseWorker(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}

void PromiseWorker::Keep(const Napi::Value& v) {
  if (v.IsObject()) kept_.push_back(Napi::Persistent(v.As<Napi::Object>()));
}

Napi::Promise PromiseWorker::Start() {
  auto p = deferred_.Promise();
  Queue();
  return p;
}

void PromiseWorker::Execute() {
  try {
    Run();
  } catch (const WorkError& e) {
    err_ = e;
    failed_ = true;
    SetError(e.message);
  } catch (const std::bad_alloc&) {
    err_ = {"ERR_OUT_OF_MEMORY", "out of memory", 0};
    failed_ = true;
    SetError(err_.message);
  } catch (const std::exception& e) {
    err_ = {"ERR_NATIVE", e.what(), 0};
    failed_ = true;
    SetError(err_.message);
  }
}

void PromiseWorker::OnOK() {
  Napi::HandleScope scope(Env());
  try {
    deferred_.Resolve(Result(Env()));
  } catch (const Napi::Error& e) {
    deferred_.Reject(e.Value());
  }
  kept_.clear();
}

void PromiseWorker::OnError(const Napi::Error& e) {
  Napi::HandleScope scope(Env());
  if (failed_)
    deferred_.Reject(MakeError(Env(), err_).Value());
  else
    deferred_.Reject(e.Value());
  kept_.clear();
}

void SetFunctions(Napi::Env env, Napi::Object target, std::initializer_list<FunctionEntry> fns) {
  for (const FunctionEntry& f : fns) target.Set(f.name, Napi::Function::New(env, f.fn, f.name));
}

int NumThreads() {
  static int n = [] {
    const char* s = std::getenv("GQA2MLA_THREADS");
    int v = s ? std::atoi(s) : 0;
    if (v <= 0) v = static_cast<int>(std::thread::hardware_concurrency());
    return v > 0 ? v : 1;
  }();
  return n;
}

}  // namespace g2m
