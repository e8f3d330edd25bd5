// Internal state shared by the conversion's CUDA sources (convert_*.cu): the compute
// stream and its cuBLAS handle, the solver stream and its cuSOLVER handle, grow-only
// scratch buffers, allocation accounting, and error helpers. Not included by .cc files.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>

#include <algorithm>
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

// "" when a CUDA runtime / cuBLAS / cuSOLVER status is a success, else the message naming `what`.
inline std::string Failed(const char* what, cudaError_t e) { return e == cudaSuccess ? std::string() : CudaErr(what, e); }
inline std::string Failed(const char* what, cublasStatus_t s) {
  return s == CUBLAS_STATUS_SUCCESS ? std::string() : BlasErr(what, s);
}
inline std::string Failed(const char* what, cusolverStatus_t s) {
  return s == CUSOLVER_STATUS_SUCCESS ? std::string() : SolverErr(what, s);
}

// Returns the message from the calling function (which returns std::string) when `expr`, a
// message, is not empty.
#define G2M_TRY(expr)          \
  do {                         \
    std::string m_ = (expr);   \
    if (!m_.empty()) return m_; \
  } while (0)
// A CUDA runtime, cuBLAS or cuSOLVER call (named by its text in the message) that must succeed.
#define G2M_CU(call) G2M_TRY(::g2m::cuconv::detail::Failed(#call, (call)))
#define G2M_BLAS G2M_CU
#define G2M_SOLVER G2M_CU
// The launches before it (named `what`) must have succeeded.
#define G2M_LAUNCHED(what) G2M_TRY(::g2m::cuconv::detail::Failed(what, cudaGetLastError()))

// Grid-stride loop of a kernel: calls f(i) for every i < n, each on one thread of the launch.
template <class F>
__device__ __forceinline__ void GridStride(size_t n, F f) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    f(i);
}

// Blocks of `threads` covering n items (at least one block).
inline unsigned Blocks(size_t n, unsigned threads) {
  size_t b = (n + threads - 1) / threads;
  if (b == 0) b = 1;
  if (b > 0x7fffffffu) b = 0x7fffffffu;
  return static_cast<unsigned>(b);
}

// Blocks of 256 threads for a grid-stride kernel over n items: at most 65535 x 16.
inline unsigned GridFor(size_t n) { return std::min<unsigned>(Blocks(n, 256), 65535u * 16u); }

}  // namespace detail
}  // namespace cuconv
}  // namespace g2m
