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

ArrayView GetFloatArray(const Napi::CallbackInfo& info, size_t i, const char* name) {
  auto t = GetTyped(info, i, name, "Float32Array or Float64Array");
  ArrayView v;
  if (t.TypedArrayType() == napi_float32_array) {
    auto a = t.As<Napi::Float32Array>();
    v.data = a.Data();
    v.length = a.ElementLength();
    v.dtype = DType::F32;
  } else if (t.TypedArrayType() == napi_float64_array) {
    auto a = t.As<Napi::Float64Array>();
    v.data = a.Data();
    v.length = a.ElementLength();
    v.dtype = DType::F64;
  } else {
    ThrowTypeError(info.Env(), "ERR_INVALID_ARG_TYPE", std::string(name) + " must be a Float32Array or Float64Array");
  }
  return v;
}

float* GetF32(const Napi::CallbackInfo& info, size_t i, const char* name, size_t* length) {
  auto t = GetTyped(info, i, name, "Float32Array");
  if (t.TypedArrayType() != napi_float32_array)
    ThrowTypeError(info.Env(), "ERR_INVALID_ARG_TYPE", std::string(name) + " must be a Float32Array");
  auto a = t.As<Napi::Float32Array>();
  if (length) *length = a.ElementLength();
  return a.Data();
}

uint16_t* GetU16(const Napi::CallbackInfo& info, size_t i, const char* name, size_t* length) {
  auto t = GetTyped(info, i, name, "Uint16Array");
  if (t.TypedArrayType() != napi_uint16_array)
    ThrowTypeError(info.Env(), "ERR_INVALID_ARG_TYPE", std::string(name) + " must be a Uint16Array");
  auto a = t.As<Napi::Uint16Array>();
  if (length) *length = a.ElementLength();
  return a.Data();
}

int32_t* GetI32(const Napi::CallbackInfo& info, size_t i, const char* name, size_t* length) {
  auto t = GetTyped(info, i, name, "Int32Array");
  if (t.TypedArrayType() != napi_int32_array)
    ThrowTypeError(info.Env(), "ERR_INVALID_ARG_TYPE", std::string(name) + " must be an Int32Array");
  auto a = t.As<Napi::Int32Array>();
  if (length) *length = a.ElementLength();
  return a.Data();
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

int64_t OptInt(const Napi::Object& o, const char* key, int64_t dflt) {
  if (!o.Has(key) || o.Get(key).IsUndefined()) return dflt;
  auto v = o.Get(key);
  if (!v.IsNumber()) ThrowTypeError(o.Env(), "ERR_INVALID_ARG_TYPE", std::string(key) + " must be a number");
  return v.As<Napi::Number>().Int64Value();
}
double OptNumber(const Napi::Object& o, const char* key, double dflt) {
  if (!o.Has(key) || o.Get(key).IsUndefined()) return dflt;
  auto v = o.Get(key);
  if (!v.IsNumber()) ThrowTypeError(o.Env(), "ERR_INVALID_ARG_TYPE", std::string(key) + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}
bool OptBool(const Napi::Object& o, const char* key, bool dflt) {
  if (!o.Has(key) || o.Get(key).IsUndefined()) return dflt;
  auto v = o.Get(key);
  if (!v.IsBoolean()) ThrowTypeError(o.Env(), "ERR_INVALID_ARG_TYPE", std::string(key) + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
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
