// Internal state shared by the conversion's CUDA sources (convert_*.cu): the compute
// stream and its cuBLAS handle, the solver stream and its cuSOLVER handle, grow-only
// scratch buffers, allocation accounting, and error helpers. Not included by .cc files.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <atomic>
#include <cstddef>
#include <mutex>
#include <string>

namespace g2m {
namespace cuconv {
namespace detail {

struct Ctx {
  bool ready = false;
  std::string init_error;
  int device = 0;
  cudaStream_t stream = nullptr;         // forward kernels, cuBLAS, moments, DGEMM
  cublasHandle_t blas = nullptr;         // bound to `stream`
  std::mutex blas_mu;                    // one caller of `blas` at a time
  cudaStream_t solver_stream = nullptr;  // eigh / svd
  cusolverDnHandle_t solver = nullptr;   // bound to `solver_stream`
  cusolverDnParams_t solver_params = nullptr;
  std::mutex solver_mu;
  std::atomic<size_t> allocated{0};
  std::atomic<size_t> peak_allocated{0};
  std::atomic<size_t> peak_device_used{0};
};

// The process-wide context, initialised on first use (device 0). Returns "" or why not.
std::string Get(Ctx** out);

// Accounting of every device allocation made through AllocTracked / FreeTracked.
std::string AllocTracked(size_t bytes, void** p);
void FreeTracked(void* p, size_t bytes);
// Samples cudaMemGetInfo into the peak-device-used mark.
void SampleDeviceUse();

// A grow-only device buffer owned by one call site (used on the compute stream only).
struct Scratch {
  void* ptr = nullptr;
  size_t bytes = 0;
  std::string Reserve(size_t want);  // keeps the contents only when no growth is needed
};

inline std::string CudaErr(const char* what, cudaError_t e) {
  return std::string(what) + ": " + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
}
std::string BlasErr(const char* what, cublasStatus_t s);
std::string SolverErr(const char* what, cusolverStatus_t s);

#define G2M_CU(call)                                   \
  do {                                                 \
    cudaError_t e_ = (call);                           \
    if (e_ != cudaSuccess) return ::g2m::cuconv::detail::CudaErr(#call, e_); \
  } while (0)
#define G2M_LAUNCHED(what)                             \
  do {                                                 \
    cudaError_t e_ = cudaGetLastError();               \
    if (e_ != cudaSuccess) return ::g2m::cuconv::detail::CudaErr(what, e_); \
  } while (0)
#define G2M_BLAS(call)                                 \
  do {                                                 \
    cublasStatus_t s_ = (call);                        \
    if (s_ != CUBLAS_STATUS_SUCCESS) return ::g2m::cuconv::detail::BlasErr(#call, s_); \
  } while (0)
#define G2M_SOLVER(call)                               \
  do {                                                 \
    cusolverStatus_t s_ = (call);                      \
    if (s_ != CUSOLVER_STATUS_SUCCESS) return ::g2m::cuconv::detail::SolverErr(#call, s_); \
  } while (0)
#define G2M_TRY(expr)                                  \
  do {                                                 \
    std::string m_ = (expr);                           \
    if (!m_.empty()) return m_;                        \
  } while (0)

// Blocks of `threads` covering n items (at least one block).
inline unsigned Blocks(size_t n, unsigned threads) {
  size_t b = (n + threads - 1) / threads;
  if (b == 0) b = 1;
  if (b > 0x7fffffffu) b = 0x7fffffffu;
  return static_cast<unsigned>(b);
}

}  // namespace detail
}  // namespace cuconv
}  // namespace g2m
