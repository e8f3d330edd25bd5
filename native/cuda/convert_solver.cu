// Float64 linear algebra on the GPU for the factorization: symmetric eigendecomposition
// (cuSOLVER Xsyevd), SVD (cuSOLVER Xgesvd) and matrix products (cuBLAS DGEMM), each taking
// row-major host arrays (DGEMM also device operands) and returning once results are on
// the host, with the conventions of native/linalg.cc (eigenvalues and singular values
// descending; eigenvector j is column j of the row-major result).
#include <chrono>
#include <cstdint>
#include <vector>

#include "convert_ctx.h"
#include "convert_cuda.h"

namespace g2m {
namespace cuconv {

using detail::Ctx;
using detail::Scratch;
using detail::GridFor;
using detail::GridStride;

namespace {


// row-major out (rows x cols) from column-major in (rows x cols, leading dimension ld)
__global__ void ColToRowKernel(const double* __restrict__ in, size_t ld, double* __restrict__ out, size_t rows,
                               size_t cols) {
  GridStride(rows * cols, [&](size_t i) {
    const size_t r = i / cols, c = i % cols;
    out[i] = in[r + c * ld];
  });
}

// row-major v (n x n) with column j = column n-1-j of column-major a; w reversed
__global__ void EigReorderKernel(const double* __restrict__ a, const double* __restrict__ wa, double* __restrict__ v,
                                 double* __restrict__ w, size_t n) {
  GridStride(n * n, [&](size_t i) {
    const size_t r = i / n, j = i % n;
    v[i] = a[r + (n - 1 - j) * n];
    if (i < n) w[i] = wa[n - 1 - i];
  });
}

// A device allocation freed on scope exit (solver calls run on worker threads: no shared scratch).
struct DevMem {
  void* p = nullptr;
  size_t bytes = 0;
  std::string Alloc(size_t b) {
    bytes = b;
    return detail::AllocTracked(b, &p);
  }
  ~DevMem() { detail::FreeTracked(p, bytes); }
  template <typename T>
  T* as() const {
    return static_cast<T*>(p);
  }
};

struct EventTimer {
  cudaEvent_t a = nullptr, b = nullptr;
  EventTimer() {
    cudaEventCreate(&a);
    cudaEventCreate(&b);
  }
  ~EventTimer() {
    if (a) cudaEventDestroy(a);
    if (b) cudaEventDestroy(b);
  }
};

std::string InfoErr(const char* what, int info) {
  return std::string(what) + " failed with info = " + std::to_string(info) +
         (info < 0 ? " (illegal argument " + std::to_string(-info) + ")" : " (did not converge)");
}

}  // namespace

std::string Eigh(const double* a, double* w, double* v, int64_t n, int64_t* info, double* seconds) {
  Ctx* c = nullptr;
  G2M_TRY(detail::Get(&c));
  *info = 0;
  if (seconds) *seconds = 0;
  if (n <= 0) return "";
  std::lock_guard<std::mutex> lock(c->solver_mu);
  const size_t nn = static_cast<size_t>(n) * n;
  cudaStream_t st = c->solver_stream;
  DevMem dA, dW, dV, dWo, dInfo, dWork;
  G2M_TRY(dA.Alloc(nn * sizeof(double)));
  G2M_TRY(dV.Alloc(nn * sizeof(double)));
  G2M_TRY(dW.Alloc(n * sizeof(double)));
  G2M_TRY(dWo.Alloc(n * sizeof(double)));
  G2M_TRY(dInfo.Alloc(sizeof(int)));
  G2M_CU(cudaMemcpyAsync(dA.p, a, nn * sizeof(double), cudaMemcpyHostToDevice, st));
  size_t lwDev = 0, lwHost = 0;
  // row-major upper triangle = column-major lower triangle
  G2M_SOLVER(cusolverDnXsyevd_bufferSize(c->solver, c->solver_params, CUSOLVER_EIG_MODE_VECTOR,
                                         CUBLAS_FILL_MODE_LOWER, n, CUDA_R_64F, dA.p, n, CUDA_R_64F, dW.p,
                                         CUDA_R_64F, &lwDev, &lwHost));
  G2M_TRY(dWork.Alloc(lwDev > 0 ? lwDev : 1));
  std::vector<char> hWork(lwHost > 0 ? lwHost : 1);
  EventTimer tm;
  cudaEventRecord(tm.a, st);
  G2M_SOLVER(cusolverDnXsyevd(c->solver, c->solver_params, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, n,
                              CUDA_R_64F, dA.p, n, CUDA_R_64F, dW.p, CUDA_R_64F, dWork.p, lwDev, hWork.data(),
                              lwHost, dInfo.as<int>()));
  cudaEventRecord(tm.b, st);
  EigReorderKernel<<<GridFor(nn), 256, 0, st>>>(dA.as<double>(), dW.as<double>(), dV.as<double>(), dWo.as<double>(),
                                             static_cast<size_t>(n));
  G2M_LAUNCHED("eigenvector reorder kernel");
  int hInfo = 0;
  G2M_CU(cudaMemcpyAsync(&hInfo, dInfo.p, sizeof(int), cudaMemcpyDeviceToHost, st));
  G2M_CU(cudaMemcpyAsync(v, dV.p, nn * sizeof(double), cudaMemcpyDeviceToHost, st));
  G2M_CU(cudaMemcpyAsync(w, dWo.p, n * sizeof(double), cudaMemcpyDeviceToHost, st));
  G2M_CU(cudaStreamSynchronize(st));
  float ms = 0;
  if (seconds && cudaEventElapsedTime(&ms, tm.a, tm.b) == cudaSuccess) *seconds = ms / 1000.0;
  *info = hInfo;
  if (hInfo != 0) return InfoErr("eigh: cuSOLVER Xsyevd", hInfo);
  return "";
}

std::string Svd(const double* a, int64_t m, int64_t n, bool full, bool compute_uv, double* u, double* s, double* vt,
                int64_t* info, double* seconds) {
  Ctx* c = nullptr;
  G2M_TRY(detail::Get(&c));
  *info = 0;
  if (seconds) *seconds = 0;
  if (m <= 0 || n <= 0) return "";
  std::lock_guard<std::mutex> lock(c->solver_mu);
  cudaStream_t st = c->solver_stream;
  const int64_t k = m < n ? m : n;
  const size_t mn = static_cast<size_t>(m) * n;
  // Xgesvd needs rows >= cols. Row-major A (m x n) is column-major A^T (n x m): when n >= m
  // decompose A^T = U' S V'^T directly (then U = V', Vt = U'^T, both read off the buffers);
  // otherwise transpose to column-major A (m x n) and transpose U, VT back.
  const bool direct = n >= m;
  const int64_t R = direct ? n : m;  // rows of the decomposed column-major matrix
  const int64_t C = direct ? m : n;  // its columns (= k)
  const int64_t kU = full ? R : C;   // columns of its U
  const int64_t kV = full ? C : C;   // rows of its VT (C x C either way)
  const signed char job = compute_uv ? (full ? 'A' : 'S') : 'N';
  DevMem dIn, dA, dS, dU, dVT, dInfo, dWork, dOut1, dOut2;
  G2M_TRY(dIn.Alloc(mn * sizeof(double)));
  G2M_TRY(dS.Alloc(k * sizeof(double)));
  G2M_TRY(dInfo.Alloc(sizeof(int)));
  if (compute_uv) {
    G2M_TRY(dU.Alloc(static_cast<size_t>(R) * kU * sizeof(double)));
    G2M_TRY(dVT.Alloc(static_cast<size_t>(kV) * C * sizeof(double)));
  } else {
    G2M_TRY(dU.Alloc(sizeof(double)));
    G2M_TRY(dVT.Alloc(sizeof(double)));
  }
  G2M_CU(cudaMemcpyAsync(dIn.p, a, mn * sizeof(double), cudaMemcpyHostToDevice, st));
  double* work = dIn.as<double>();
  if (!direct) {
    G2M_TRY(dA.Alloc(mn * sizeof(double)));
    // column-major A (m x n): element (i, j) at i + j m = row-major A[i n + j]; that is the
    // row-major (n x m) matrix A^T, i.e. ColToRow of the column-major (n x m) view of A
    ColToRowKernel<<<GridFor(mn), 256, 0, st>>>(dIn.as<double>(), static_cast<size_t>(n), dA.as<double>(),
                                             static_cast<size_t>(n), static_cast<size_t>(m));
    G2M_LAUNCHED("svd transpose kernel");
    work = dA.as<double>();
  }
  const int64_t ldu = R, ldvt = compute_uv ? kV : 1;
  size_t lwDev = 0, lwHost = 0;
  G2M_SOLVER(cusolverDnXgesvd_bufferSize(c->solver, c->solver_params, job, job, R, C, CUDA_R_64F, work, R,
                                         CUDA_R_64F, dS.p, CUDA_R_64F, dU.p, ldu, CUDA_R_64F, dVT.p, ldvt, CUDA_R_64F,
                                         &lwDev, &lwHost));
  G2M_TRY(dWork.Alloc(lwDev > 0 ? lwDev : 1));
  std::vector<char> hWork(lwHost > 0 ? lwHost : 1);
  EventTimer tm;
  cudaEventRecord(tm.a, st);
  G2M_SOLVER(cusolverDnXgesvd(c->solver, c->solver_params, job, job, R, C, CUDA_R_64F, work, R, CUDA_R_64F, dS.p,
                              CUDA_R_64F, dU.p, ldu, CUDA_R_64F, dVT.p, ldvt, CUDA_R_64F, dWork.p, lwDev,
                              hWork.data(), lwHost, dInfo.as<int>()));
  cudaEventRecord(tm.b, st);
  int hInfo = 0;
  G2M_CU(cudaMemcpyAsync(&hInfo, dInfo.p, sizeof(int), cudaMemcpyDeviceToHost, st));
  G2M_CU(cudaMemcpyAsync(s, dS.p, k * sizeof(double), cudaMemcpyDeviceToHost, st));
  if (compute_uv) {
    if (direct) {
      // U' (n x kU, ld n) read row-major is Vt (kU x n); VT' (m x m, ld m) read row-major is U (m x m)
      G2M_CU(cudaMemcpyAsync(vt, dU.p, static_cast<size_t>(R) * kU * sizeof(double), cudaMemcpyDeviceToHost, st));
      G2M_CU(cudaMemcpyAsync(u, dVT.p, static_cast<size_t>(kV) * C * sizeof(double), cudaMemcpyDeviceToHost, st));
    } else {
      // U (m x kU, ld m) -> row-major; VT (n x n, ld n) -> row-major
      G2M_TRY(dOut1.Alloc(static_cast<size_t>(R) * kU * sizeof(double)));
      G2M_TRY(dOut2.Alloc(static_cast<size_t>(kV) * C * sizeof(double)));
      ColToRowKernel<<<GridFor(static_cast<size_t>(R) * kU), 256, 0, st>>>(dU.as<double>(), static_cast<size_t>(ldu),
                                                                         dOut1.as<double>(), static_cast<size_t>(R),
                                                                         static_cast<size_t>(kU));
      ColToRowKernel<<<GridFor(static_cast<size_t>(kV) * C), 256, 0, st>>>(dVT.as<double>(), static_cast<size_t>(ldvt),
                                                                         dOut2.as<double>(), static_cast<size_t>(kV),
                                                                         static_cast<size_t>(C));
      G2M_LAUNCHED("svd transpose kernel");
      G2M_CU(cudaMemcpyAsync(u, dOut1.p, static_cast<size_t>(R) * kU * sizeof(double), cudaMemcpyDeviceToHost, st));
      G2M_CU(cudaMemcpyAsync(vt, dOut2.p, static_cast<size_t>(kV) * C * sizeof(double), cudaMemcpyDeviceToHost, st));
    }
  }
  G2M_CU(cudaStreamSynchronize(st));
  float ms = 0;
  if (seconds && cudaEventElapsedTime(&ms, tm.a, tm.b) == cudaSuccess) *seconds = ms / 1000.0;
  *info = hInfo;
  if (hInfo != 0) return InfoErr("svd: cuSOLVER Xgesvd", hInfo);
  return "";
}

std::string GemmF64(const double* a, bool a_dev, const double* b, bool b_dev, double* cm, int64_t m, int64_t n,
                    int64_t k, bool trans_a, bool trans_b, double alpha, double beta) {
  Ctx* c = nullptr;
  G2M_TRY(detail::Get(&c));
  if (m <= 0 || n <= 0) return "";
  std::lock_guard<std::mutex> lock(c->blas_mu);
  static Scratch sa, sb, sc;
  const size_t an = static_cast<size_t>(m) * k, bn = static_cast<size_t>(k) * n, cn = static_cast<size_t>(m) * n;
  const double* da = a;
  const double* db = b;
  if (!a_dev && an > 0) {
    G2M_TRY(sa.Reserve(an * sizeof(double)));
    G2M_CU(cudaMemcpyAsync(sa.ptr, a, an * sizeof(double), cudaMemcpyHostToDevice, c->stream));
    da = static_cast<const double*>(sa.ptr);
  }
  if (!b_dev && bn > 0) {
    G2M_TRY(sb.Reserve(bn * sizeof(double)));
    G2M_CU(cudaMemcpyAsync(sb.ptr, b, bn * sizeof(double), cudaMemcpyHostToDevice, c->stream));
    db = static_cast<const double*>(sb.ptr);
  }
  G2M_TRY(sc.Reserve(cn * sizeof(double)));
  if (beta != 0) G2M_CU(cudaMemcpyAsync(sc.ptr, cm, cn * sizeof(double), cudaMemcpyHostToDevice, c->stream));
  if (k == 0) {
    if (beta == 0) G2M_CU(cudaMemsetAsync(sc.ptr, 0, cn * sizeof(double), c->stream));
    // beta C with k = 0: scale on the host below
  } else {
    // row-major C = op(A) op(B)  <=>  column-major C^T = op(B)^T op(A)^T
    G2M_BLAS(cublasDgemm(c->blas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
                         static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &alpha, db,
                         static_cast<int>(trans_b ? k : n), da, static_cast<int>(trans_a ? m : k), &beta,
                         static_cast<double*>(sc.ptr), static_cast<int>(n)));
  }
  if (k == 0 && beta != 0) {
    G2M_CU(cudaStreamSynchronize(c->stream));
    for (size_t i = 0; i < cn; ++i) cm[i] *= beta;
    return "";
  }
  G2M_CU(cudaMemcpyAsync(cm, sc.ptr, cn * sizeof(double), cudaMemcpyDeviceToHost, c->stream));
  G2M_CU(cudaStreamSynchronize(c->stream));
  return "";
}

}  // namespace cuconv
}  // namespace g2m
