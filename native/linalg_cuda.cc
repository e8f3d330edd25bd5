// convertCuda linear-algebra exports (float64, row-major host arrays, conventions of
// native/linalg.cc):
//   eigh(a, n, {values?, vectors?}) / eighAsync      cuSOLVER Xsyevd, eigenvalues descending
//   svd(a, m, n, {full?, computeUV?, u?, s?, vt?}) / svdAsync   cuSOLVER Xgesvd
//   gemm(a, b, c, m, n, k, {transA?, transB?, alpha?, beta?})   cuBLAS DGEMM; a and b are
//     Float64Arrays or device buffers (float64), c a Float64Array; blocks until c is written
// Results carry `seconds`: the solver's own GPU time (CUDA events). CUDA build only.
#ifdef GQA2MLA_CUDA

#include <cmath>
#include <string>

#include "common.h"
#include "cuda/convert_cuda.h"
#include "exports.h"
#include "forward_common.h"
#include "job_export.h"
#include "memory_cuda.h"

namespace g2m {
namespace {

namespace cc = g2m::cuconv;

// Float64Array argument info[i], in place.
ArrayView F64Arg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  auto v = GetFloatArray(info, i, name);
  if (v.dtype != DType::F64) ThrowTypeError(info.Env(), "ERR_DTYPE", std::string(name) + " must be a Float64Array");
  return v;
}

// Float64Array option `key` of length `want`, or a new one.
Napi::Float64Array OutArray(Napi::Env env, const Napi::Object& o, const char* key, size_t want) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return Napi::Float64Array::New(env, want);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
    ThrowTypeError(env, "ERR_DTYPE", std::string(key) + " must be a Float64Array");
  auto a = v.As<Napi::Float64Array>();
  if (a.ElementLength() != want)
    ThrowRangeError(env, "ERR_SHAPE", std::string(key) + " has " + std::to_string(a.ElementLength()) + " elements, needs " +
                                          std::to_string(want));
  return a;
}

void CheckFinite(Napi::Env env, const double* a, size_t n, const char* what) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(a[i]))
      ThrowError(env, "ERR_NONFINITE", std::string(what) + ": input has a non-finite value at index " + std::to_string(i));
}

// A cuSOLVER failure (info != 0) or a CUDA one, as the WorkError of a job's Run().
void Solved(const std::string& err, int64_t infoCode) {
  if (!err.empty()) throw WorkError{infoCode != 0 ? "ERR_CUSOLVER" : "ERR_CUDA", err, infoCode};
}

// The results carry `seconds`, the solver's GPU time, known once the job has run.
struct EighJob {
  const double* a = nullptr;
  double* w = nullptr;
  double* v = nullptr;
  int64_t n = 0;
  double seconds = 0;
  void Run() {
    int64_t info = 0;
    Solved(cc::Eigh(a, w, v, n, &info, &seconds), info);
  }
  void Finish(Napi::Object result) const { result.Set("seconds", seconds); }
};

struct SvdJob {
  const double* a = nullptr;
  double *u = nullptr, *s = nullptr, *vt = nullptr;
  int64_t m = 0, n = 0;
  bool full = false, computeUV = true;
  double seconds = 0;
  void Run() {
    int64_t info = 0;
    Solved(cc::Svd(a, m, n, full, computeUV, u, s, vt, &info, &seconds), info);
  }
  void Finish(Napi::Object result) const { result.Set("seconds", seconds); }
};

// eigh(a, n, {values?, vectors?, checkFinite?}) -> {values, vectors, seconds}
JobCall<EighJob> ParseEigh(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EighJob job;
  const ArrayView a = F64Arg(info, 0, "a");
  job.n = GetInt(info, 1, "n", 1, 1 << 16);
  const size_t n = static_cast<size_t>(job.n);
  CheckLength(env, a.length, n * n, "a");
  job.a = a.as<double>();
  auto o = fwd::OptObject(info, 2);
  auto values = OutArray(env, o, "values", n);
  auto vectors = OutArray(env, o, "vectors", n * n);
  if (OptBool(o, "checkFinite", true)) CheckFinite(env, job.a, n * n, "eigh");
  job.w = values.Data();
  job.v = vectors.Data();
  return {job, NamedValues(env, {{"values", values}, {"vectors", vectors}}), {info[0]}};
}

// svd(a, m, n, {full?, computeUV?, u?, s?, vt?, checkFinite?}) -> {u, s, vt, seconds}
JobCall<SvdJob> ParseSvd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SvdJob job;
  const ArrayView a = F64Arg(info, 0, "a");
  job.m = GetInt(info, 1, "m", 1, 1 << 20);
  job.n = GetInt(info, 2, "n", 1, 1 << 20);
  const size_t m = static_cast<size_t>(job.m), n = static_cast<size_t>(job.n), k = m < n ? m : n;
  CheckLength(env, a.length, m * n, "a");
  job.a = a.as<double>();
  auto o = fwd::OptObject(info, 3);
  job.full = OptBool(o, "full", false);
  job.computeUV = OptBool(o, "computeUV", true);
  auto s = OutArray(env, o, "s", k);
  job.s = s.Data();
  Napi::Value u = env.Null(), vt = env.Null();
  if (job.computeUV) {
    auto ua = OutArray(env, o, "u", m * (job.full ? m : k));
    auto vta = OutArray(env, o, "vt", (job.full ? n : k) * n);
    job.u = ua.Data();
    job.vt = vta.Data();
    u = ua, vt = vta;
  }
  if (OptBool(o, "checkFinite", true)) CheckFinite(env, job.a, m * n, "svd");
  return {job, NamedValues(env, {{"u", u}, {"s", s}, {"vt", vt}}), {info[0]}};
}

// An operand of gemm: a Float64Array (host) or a float64 device buffer.
struct Operand {
  const double* p = nullptr;
  bool dev = false;
};

Operand GetOperand(const Napi::CallbackInfo& info, size_t i, const char* name, size_t elems) {
  Napi::Env env = info.Env();
  if (i < info.Length() && cudamem::Is(info[i])) {
    cudamem::DevView d = cudamem::Get(env, info[i], name);
    cudamem::Need(env, d, elems, 8, name);
    return Operand{d.as<double>(), true};
  }
  const ArrayView a = F64Arg(info, i, name);
  CheckLength(env, a.length, elems, name);
  return Operand{a.as<double>(), false};
}

Napi::Value GemmFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t m = GetInt(info, 3, "m", 0, (int64_t(1) << 31) - 1);
  const int64_t n = GetInt(info, 4, "n", 0, (int64_t(1) << 31) - 1);
  const int64_t k = GetInt(info, 5, "k", 0, (int64_t(1) << 31) - 1);
  auto o = fwd::OptObject(info, 6);
  const bool ta = OptBool(o, "transA", false), tb = OptBool(o, "transB", false);
  const double alpha = OptNumber(o, "alpha", 1.0), beta = OptNumber(o, "beta", 0.0);
  Operand a = GetOperand(info, 0, "a", static_cast<size_t>(m) * k);
  Operand b = GetOperand(info, 1, "b", static_cast<size_t>(k) * n);
  const ArrayView c = F64Arg(info, 2, "c");
  CheckLength(env, c.length, static_cast<size_t>(m) * n, "c");
  cudamem::Check(env, cc::GemmF64(a.p, a.dev, b.p, b.dev, c.as<double>(), m, n, k, ta, tb, alpha, beta));
  return info[2];
}

}  // namespace

void InitLinalgCuda(Napi::Env env, Napi::Object exports) {
  Napi::Object ns = cudamem::Namespace(env, exports);
  RegisterJob<EighJob, ParseEigh>(env, ns, "eigh");
  RegisterJob<SvdJob, ParseSvd>(env, ns, "svd");
  ns.Set("gemm", Napi::Function::New(env, GemmFn, "gemm"));
}

}  // namespace g2m

#endif  // GQA2MLA_CUDA
