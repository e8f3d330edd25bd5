// Dense linear algebra over Float32Array / Float64Array memory, read in place:
//   eigh            symmetric eigendecomposition (LAPACK ?syevd), eigenvalues descending
//   svd             singular value decomposition (LAPACK ?gesdd), thin or full
//   gemm            C = alpha op(A) op(B) + beta C (BLAS ?gemm), C updated in place
//   syrkAccumulate  C += alpha X^T X in float64 (BLAS dsyrk), for covariance sums
// Each has a `*Async` twin that runs the same job on the libuv pool. Row-major data is
// handed to LAPACK as the column-major transpose, so no layout copies are made: the only
// copy is eigh's input into its output buffer (dsyevd works in place) and svd's internal
// scratch copy of A (dgesdd destroys its input; `overwrite: true` skips it).
#include <complex>
#define lapack_complex_float std::complex<float>
#define lapack_complex_double std::complex<double>
#include <cblas.h>
#include <lapacke.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>

#include "common.h"
#include "exports.h"
#include "job_export.h"

namespace g2m {
namespace {

constexpr int64_t kMaxDim = INT32_MAX;  // BLAS / LAPACK take 32-bit dimensions

[[noreturn]] void Fail(const char* code, const std::string& msg, int64_t info = 0) {
  throw WorkError{code, msg, info};
}

const char* DTypeName(DType d) { return d == DType::F32 ? "float32" : "float64"; }
size_t ElemSize(DType d) { return d == DType::F32 ? sizeof(float) : sizeof(double); }

// ---- argument parsing (main thread) ----

void CheckExact(Napi::Env env, const ArrayView& v, size_t want, const std::string& name, const std::string& shape) {
  if (v.length != want)
    ThrowRangeError(env, "ERR_SHAPE",
                    name + " has " + std::to_string(v.length) + " elements, expected " + std::to_string(want) + " (" +
                        shape + ")");
}

void CheckDType(Napi::Env env, const ArrayView& v, DType want, const std::string& name) {
  if (v.dtype != want)
    ThrowTypeError(env, "ERR_DTYPE",
                   name + " is " + DTypeName(v.dtype) + " but the operation is " + DTypeName(want) +
                       " (all arrays must share one dtype)");
}

// True when the byte ranges of two views intersect.
bool Overlaps(const ArrayView& a, const ArrayView& b) {
  if (a.length == 0 || b.length == 0) return false;
  auto a0 = reinterpret_cast<uintptr_t>(a.data), b0 = reinterpret_cast<uintptr_t>(b.data);
  auto a1 = a0 + a.length * ElemSize(a.dtype), b1 = b0 + b.length * ElemSize(b.dtype);
  return a0 < b1 && b0 < a1;
}

void CheckNoOverlap(Napi::Env env, const ArrayView& a, const ArrayView& b, const std::string& an, const std::string& bn) {
  if (Overlaps(a, b))
    ThrowRangeError(env, "ERR_ALIAS", an + " and " + bn + " share memory; they must be distinct buffers");
}

// The options object at info[i] (an empty object when absent or undefined).
Napi::Object GetOptions(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length() || info[i].IsUndefined() || info[i].IsNull()) return Napi::Object::New(info.Env());
  if (!info[i].IsObject()) ThrowTypeError(info.Env(), "ERR_INVALID_ARG_TYPE", "options must be an object");
  return info[i].As<Napi::Object>();
}

Napi::Value NewArray(Napi::Env env, DType d, size_t n) {
  if (d == DType::F32) return Napi::Float32Array::New(env, n);
  return Napi::Float64Array::New(env, n);
}

// Output array `key` of `opts` (caller-provided, checked) or a new one of `dtype`.
ArrayView OutArray(Napi::Env env, const Napi::Object& opts, const char* key, DType dtype, size_t len,
                   const std::string& shape, Napi::Value* holder) {
  Napi::Value v = opts.Has(key) ? opts.Get(key) : env.Undefined();
  if (v.IsUndefined() || v.IsNull()) v = NewArray(env, dtype, len);
  ArrayView view = FloatArrayOf(env, v, std::string("options.") + key);
  CheckDType(env, view, dtype, std::string("options.") + key);
  CheckExact(env, view, len, std::string("options.") + key, shape);
  *holder = v;
  return view;
}

// ---- kernels (any thread) ----

template <typename T>
void CheckFinite(const T* p, size_t n, const char* op, const char* name) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(p[i]))
      Fail("ERR_NONFINITE", std::string(op) + ": " + name + " has a non-finite value (" + std::to_string(p[i]) +
                                ") at index " + std::to_string(i));
}

// In-place transpose of a square n x n matrix, in cache-sized tiles.
template <typename T>
void TransposeSquare(T* a, size_t n) {
  constexpr size_t B = 64;
  for (size_t ib = 0; ib < n; ib += B)
    for (size_t jb = ib; jb < n; jb += B) {
      size_t ie = std::min(ib + B, n), je = std::min(jb + B, n);
      for (size_t i = ib; i < ie; ++i)
        for (size_t j = std::max(jb, i + 1); j < je; ++j) std::swap(a[i * n + j], a[j * n + i]);
    }
}

// Copies the upper triangle of a square row-major matrix onto the lower one.
void MirrorUpper(double* a, size_t n) {
  constexpr size_t B = 64;
  for (size_t ib = 0; ib < n; ib += B)
    for (size_t jb = 0; jb <= ib; jb += B) {
      size_t ie = std::min(ib + B, n), je = std::min(jb + B, n);
      for (size_t i = ib; i < ie; ++i)
        for (size_t j = jb; j < std::min(je, i); ++j) a[i * n + j] = a[j * n + i];
    }
}

lapack_int Syevd(int n, float* a, float* w) { return LAPACKE_ssyevd(LAPACK_COL_MAJOR, 'V', 'L', n, a, n, w); }
lapack_int Syevd(int n, double* a, double* w) { return LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'V', 'L', n, a, n, w); }

lapack_int Gesdd(char jobz, int m, int n, float* a, int lda, float* s, float* u, int ldu, float* vt, int ldvt) {
  return LAPACKE_sgesdd(LAPACK_COL_MAJOR, jobz, m, n, a, lda, s, u, ldu, vt, ldvt);
}
lapack_int Gesdd(char jobz, int m, int n, double* a, int lda, double* s, double* u, int ldu, double* vt, int ldvt) {
  return LAPACKE_dgesdd(LAPACK_COL_MAJOR, jobz, m, n, a, lda, s, u, ldu, vt, ldvt);
}

void Gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, double alpha, const float* a, int lda,
          const float* b, int ldb, double beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, static_cast<float>(alpha), a, lda, b, ldb, static_cast<float>(beta), c,
              ldc);
}
void Gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, double alpha, const double* a, int lda,
          const double* b, int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// ERR_LAPACK (carrying `info`) unless LAPACK `routine`, run by `op`, returned info = 0.
void CheckLapack(const char* op, const char* routine, lapack_int info) {
  if (info != 0)
    Fail("ERR_LAPACK",
         std::string(op) + ": LAPACK " + routine + " failed with info = " + std::to_string(info) +
             (info < 0 ? " (illegal or NaN argument " + std::to_string(-info) + ")" : " (did not converge)"),
         info);
}

// ---- jobs: plain structs parsed on the main thread; Run() may be on any thread ----

// Symmetric eigendecomposition. Reads the upper triangle of row-major `a` (n x n);
// writes eigenvalues descending to `w` and row-major `v` with column j = eigenvector j.
// The row-major upper triangle is LAPACK's column-major lower one ('L'); LAPACK's
// column-major eigenvectors are rows of the row-major buffer, so they are transposed and
// the column order reversed (ascending -> descending) in place.
struct EighJob {
  DType dtype = DType::F64;
  const void* a = nullptr;
  void* w = nullptr;
  void* v = nullptr;
  int n = 0;
  bool checkFinite = true;

  template <typename T>
  void RunT() {
    const size_t n2 = static_cast<size_t>(n) * n;
    const T* A = static_cast<const T*>(a);
    T* V = static_cast<T*>(v);
    T* W = static_cast<T*>(w);
    if (checkFinite) CheckFinite(A, n2, "eigh", "a");
    if (static_cast<const void*>(V) != a) std::memcpy(V, A, n2 * sizeof(T));
    CheckLapack("eigh", dtype == DType::F32 ? "ssyevd" : "dsyevd", Syevd(n, V, W));
    TransposeSquare(V, n);
    for (int i = 0; i < n; ++i) std::reverse(V + static_cast<size_t>(i) * n, V + static_cast<size_t>(i + 1) * n);
    std::reverse(W, W + n);
  }
  void Run() { dtype == DType::F32 ? RunT<float>() : RunT<double>(); }
};

// SVD of row-major A (m x n) = U diag(S) Vt with S descending. Row-major A is the
// column-major A^T (n x m); gesdd of A^T = U' S VT' gives U = VT'^T and Vt = U'^T, and
// those transposes are exactly the row-major reading of VT' and U' (no copies).
struct SvdJob {
  DType dtype = DType::F64;
  const void* a = nullptr;
  void* u = nullptr;
  void* s = nullptr;
  void* vt = nullptr;
  int m = 0, n = 0;
  char jobz = 'S';  // 'S' thin, 'A' full, 'N' values only
  bool overwrite = false;
  bool checkFinite = true;

  template <typename T>
  void RunT() {
    const size_t mn = static_cast<size_t>(m) * n;
    const int k = std::min(m, n);
    const T* A = static_cast<const T*>(a);
    if (checkFinite) CheckFinite(A, mn, "svd", "a");
    std::unique_ptr<T[]> scratch;
    T* work;
    if (overwrite) {
      work = const_cast<T*>(A);
    } else {
      scratch.reset(new T[mn]);
      std::memcpy(scratch.get(), A, mn * sizeof(T));
      work = scratch.get();
    }
    T dummy[1] = {0};
    T* Ucm = jobz == 'N' ? dummy : static_cast<T*>(vt);  // U' (n x ., ld n) is row-major Vt
    T* VTcm = jobz == 'N' ? dummy : static_cast<T*>(u);  // VT' (. x m) is row-major U
    int ldvt = jobz == 'A' ? m : jobz == 'S' ? k : 1;
    CheckLapack("svd", dtype == DType::F32 ? "sgesdd" : "dgesdd",
                Gesdd(jobz, n, m, work, n, static_cast<T*>(s), Ucm, n, VTcm, ldvt));
  }
  void Run() { dtype == DType::F32 ? RunT<float>() : RunT<double>(); }
};

// C (m x n) = alpha op(A) op(B) + beta C, all row-major; op(A) is m x k, op(B) is k x n.
struct GemmJob {
  DType dtype = DType::F64;
  const void* a = nullptr;
  const void* b = nullptr;
  void* c = nullptr;
  int m = 0, n = 0, k = 0;
  bool transA = false, transB = false;
  double alpha = 1, beta = 0;

  template <typename T>
  void RunT() {
    T* C = static_cast<T*>(c);
    const size_t mn = static_cast<size_t>(m) * n;
    if (mn == 0) return;
    if (k == 0 || alpha == 0) {  // BLAS semantics: C = beta C, and beta = 0 clears C
      if (beta == 0)
        std::fill(C, C + mn, T(0));
      else if (beta != 1)
        for (size_t i = 0; i < mn; ++i) C[i] = static_cast<T>(beta * C[i]);
      return;
    }
    int lda = transA ? m : k;
    int ldb = transB ? k : n;
    Gemm(transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, m, n, k, alpha,
         static_cast<const T*>(a), lda, static_cast<const T*>(b), ldb, beta, C, n);
  }
  void Run() { dtype == DType::F32 ? RunT<float>() : RunT<double>(); }
};

// C (n x n, float64, symmetric) += alpha X^T X with X (rows x n) float32 or float64.
// dsyrk updates the upper triangle, which is then mirrored onto the lower one. float32
// rows are widened to float64 in blocks of at most ~16 MiB.
struct SyrkJob {
  double* c = nullptr;
  const void* x = nullptr;
  DType xdtype = DType::F64;
  int rows = 0, n = 0;
  double alpha = 1;

  void Run() {
    if (rows == 0) return;
    if (xdtype == DType::F64) {
      cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, n, rows, alpha, static_cast<const double*>(x), n, 1.0, c, n);
    } else {
      const float* X = static_cast<const float*>(x);
      const size_t target = (size_t{16} << 20) / (sizeof(double) * static_cast<size_t>(n));
      const size_t block = std::min<size_t>(static_cast<size_t>(rows), std::max<size_t>(64, target));
      std::unique_ptr<double[]> buf(new double[block * n]);
      for (size_t r0 = 0; r0 < static_cast<size_t>(rows); r0 += block) {
        size_t kb = std::min(block, static_cast<size_t>(rows) - r0);
        const float* src = X + r0 * n;
        for (size_t i = 0, e = kb * n; i < e; ++i) buf[i] = src[i];
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, n, static_cast<int>(kb), alpha, buf.get(), n, 1.0, c, n);
      }
    }
    MirrorUpper(c, static_cast<size_t>(n));
  }
};

// ---- Node-API glue (the sync and Promise exports: job_export.h) ----

// eigh(a, n, options?) -> { values, vectors }
JobCall<EighJob> ParseEigh(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  EighJob job;
  ArrayView a = FloatArrayOf(env, info[0], "a");
  job.n = static_cast<int>(GetInt(info, 1, "n", 1, kMaxDim));
  auto opts = GetOptions(info, 2);
  const size_t n = static_cast<size_t>(job.n), n2 = n * n;
  const std::string sq = std::to_string(n) + " x " + std::to_string(n);
  CheckExact(env, a, n2, "a", sq);
  Napi::Value wv, vv;
  ArrayView w = OutArray(env, opts, "values", a.dtype, n, std::to_string(n), &wv);
  ArrayView v = OutArray(env, opts, "vectors", a.dtype, n2, sq, &vv);
  if (v.data != a.data) CheckNoOverlap(env, v, a, "options.vectors", "a");
  CheckNoOverlap(env, w, a, "options.values", "a");
  CheckNoOverlap(env, w, v, "options.values", "options.vectors");
  job.dtype = a.dtype;
  job.a = a.data, job.w = w.data, job.v = v.data;
  job.checkFinite = OptBool(opts, "checkFinite", true);
  return {job, NamedValues(env, {{"values", wv}, {"vectors", vv}}), {info[0]}};
}

// The u and vt outputs of svd (checked against a, s and each other), into job and *uv / *vtv.
void SvdVectors(Napi::Env env, const Napi::Object& opts, const ArrayView& a, const ArrayView& s, bool full, SvdJob* job,
                Napi::Value* uv, Napi::Value* vtv) {
  const int m = job->m, n = job->n, k = std::min(m, n);
  const int ku = full ? m : k, kv = full ? n : k;
  const auto sm = std::to_string(m), sn = std::to_string(n);
  ArrayView u = OutArray(env, opts, "u", a.dtype, static_cast<size_t>(m) * ku, sm + " x " + std::to_string(ku), uv);
  ArrayView vt = OutArray(env, opts, "vt", a.dtype, static_cast<size_t>(kv) * n, std::to_string(kv) + " x " + sn, vtv);
  CheckNoOverlap(env, u, a, "options.u", "a");
  CheckNoOverlap(env, vt, a, "options.vt", "a");
  CheckNoOverlap(env, u, vt, "options.u", "options.vt");
  CheckNoOverlap(env, u, s, "options.u", "options.s");
  CheckNoOverlap(env, vt, s, "options.vt", "options.s");
  job->u = u.data;
  job->vt = vt.data;
}

// svd(a, m, n, options?) -> { u, s, vt }
JobCall<SvdJob> ParseSvd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SvdJob job;
  ArrayView a = FloatArrayOf(env, info[0], "a");
  job.m = static_cast<int>(GetInt(info, 1, "m", 1, kMaxDim));
  job.n = static_cast<int>(GetInt(info, 2, "n", 1, kMaxDim));
  auto opts = GetOptions(info, 3);
  const bool full = OptBool(opts, "full", false);
  const bool uv = OptBool(opts, "computeUV", true);
  const int k = std::min(job.m, job.n);
  CheckExact(env, a, static_cast<size_t>(job.m) * job.n, "a", std::to_string(job.m) + " x " + std::to_string(job.n));
  Napi::Value sv, uvv = env.Null(), vtv = env.Null();
  ArrayView s = OutArray(env, opts, "s", a.dtype, k, std::to_string(k), &sv);
  CheckNoOverlap(env, s, a, "options.s", "a");
  if (uv) SvdVectors(env, opts, a, s, full, &job, &uvv, &vtv);
  job.dtype = a.dtype;
  job.a = a.data, job.s = s.data;
  job.jobz = !uv ? 'N' : full ? 'A' : 'S';
  job.overwrite = OptBool(opts, "overwrite", false);
  job.checkFinite = OptBool(opts, "checkFinite", true);
  return {job, NamedValues(env, {{"u", uvv}, {"s", sv}, {"vt", vtv}}), {info[0]}};
}

// gemm(a, b, c, m, n, k, options?) -> c
JobCall<GemmJob> ParseGemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  GemmJob job;
  ArrayView a = FloatArrayOf(env, info[0], "a"), b = FloatArrayOf(env, info[1], "b"), c = FloatArrayOf(env, info[2], "c");
  CheckDType(env, b, a.dtype, "b");
  CheckDType(env, c, a.dtype, "c");
  job.m = static_cast<int>(GetInt(info, 3, "m", 0, kMaxDim));
  job.n = static_cast<int>(GetInt(info, 4, "n", 0, kMaxDim));
  job.k = static_cast<int>(GetInt(info, 5, "k", 0, kMaxDim));
  auto opts = GetOptions(info, 6);
  job.transA = OptBool(opts, "transA", false), job.transB = OptBool(opts, "transB", false);
  const auto sm = std::to_string(job.m), sn = std::to_string(job.n), sk = std::to_string(job.k);
  CheckExact(env, a, static_cast<size_t>(job.m) * job.k, "a", job.transA ? sk + " x " + sm + " (transA)" : sm + " x " + sk);
  CheckExact(env, b, static_cast<size_t>(job.k) * job.n, "b", job.transB ? sn + " x " + sk + " (transB)" : sk + " x " + sn);
  CheckExact(env, c, static_cast<size_t>(job.m) * job.n, "c", sm + " x " + sn);
  CheckNoOverlap(env, c, a, "c", "a");
  CheckNoOverlap(env, c, b, "c", "b");
  job.dtype = a.dtype;
  job.a = a.data, job.b = b.data, job.c = c.data;
  job.alpha = OptNumber(opts, "alpha", 1.0);
  job.beta = OptNumber(opts, "beta", 0.0);
  return {job, info[2], {info[0], info[1]}};
}

// syrkAccumulate(c, x, rows, n, alpha?) -> c
JobCall<SyrkJob> ParseSyrk(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SyrkJob job;
  ArrayView c = FloatArrayOf(env, info[0], "c"), x = FloatArrayOf(env, info[1], "x");
  CheckDType(env, c, DType::F64, "c");
  job.rows = static_cast<int>(GetInt(info, 2, "rows", 0, kMaxDim));
  job.n = static_cast<int>(GetInt(info, 3, "n", 1, kMaxDim));
  if (info.Length() > 4 && !info[4].IsUndefined()) job.alpha = GetNumber(info, 4, "alpha");
  if (!std::isfinite(job.alpha)) ThrowRangeError(env, "ERR_OUT_OF_RANGE", "alpha must be finite");
  const auto sn = std::to_string(job.n);
  CheckExact(env, c, static_cast<size_t>(job.n) * job.n, "c", sn + " x " + sn);
  CheckExact(env, x, static_cast<size_t>(job.rows) * job.n, "x", std::to_string(job.rows) + " x " + sn);
  CheckNoOverlap(env, c, x, "c", "x");
  job.c = c.as<double>();
  job.x = x.data, job.xdtype = x.dtype;
  return {job, info[0], {info[1]}};
}

}  // namespace

void InitLinalg(Napi::Env env, Napi::Object exports) {
  RegisterJob<EighJob, ParseEigh>(env, exports, "eigh");
  RegisterJob<SvdJob, ParseSvd>(env, exports, "svd");
  RegisterJob<GemmJob, ParseGemm>(env, exports, "gemm");
  RegisterJob<SyrkJob, ParseSyrk>(env, exports, "syrkAccumulate");
}

}  // namespace g2m
