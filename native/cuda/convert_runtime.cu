// The conversion's CUDA context (streams, cuBLAS / cuSOLVER handles), device memory with
// accounting, host <-> device copies, and dtype conversion kernels.
#include <algorithm>
#include <cstdint>

#include "convert_ctx.h"
#include "convert_cuda.h"
#include "half_bits.h"

namespace g2m {
namespace cuconv {
namespace detail {

std::string BlasErr(const char* what, cublasStatus_t s) {
  return std::string(what) + ": cuBLAS status " + std::to_string(static_cast<int>(s));
}
std::string SolverErr(const char* what, cusolverStatus_t s) {
  return std::string(what) + ": cuSOLVER status " + std::to_string(static_cast<int>(s));
}

namespace {
std::string InitCtx(Ctx* c) {
  G2M_CU(cudaSetDevice(c->device));
  G2M_CU(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
  G2M_CU(cudaStreamCreateWithFlags(&c->solver_stream, cudaStreamNonBlocking));
  G2M_BLAS(cublasCreate(&c->blas));
  G2M_BLAS(cublasSetStream(c->blas, c->stream));
  // float32 GEMMs stay float32 (no TF32): the CPU path computes in float32.
  G2M_BLAS(cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH));
  G2M_SOLVER(cusolverDnCreate(&c->solver));
  G2M_SOLVER(cusolverDnSetStream(c->solver, c->solver_stream));
  G2M_SOLVER(cusolverDnCreateParams(&c->solver_params));
  return "";
}
}  // namespace

std::string Get(Ctx** out) {
  static Ctx ctx;
  static std::once_flag once;
  std::call_once(once, [] {
    ctx.init_error = InitCtx(&ctx);
    ctx.ready = ctx.init_error.empty();
  });
  if (!ctx.ready) return "CUDA initialisation failed: " + ctx.init_error;
  // worker threads start with device 0 current as well; keep it explicit
  cudaSetDevice(ctx.device);
  *out = &ctx;
  return "";
}

void SampleDeviceUse() {
  size_t fr = 0, tot = 0;
  if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) return;
  Ctx* c = nullptr;
  if (!Get(&c).empty()) return;
  const size_t used = tot - fr;
  size_t prev = c->peak_device_used.load();
  while (used > prev && !c->peak_device_used.compare_exchange_weak(prev, used)) {
  }
}

std::string AllocTracked(size_t bytes, void** p) {
  Ctx* c = nullptr;
  G2M_TRY(Get(&c));
  *p = nullptr;
  if (bytes == 0) return "";
  cudaError_t e = cudaMalloc(p, bytes);
  if (e != cudaSuccess) {
    cudaGetLastError();
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    return "cudaMalloc of " + std::to_string(bytes) + " bytes failed (" + cudaGetErrorString(e) + "; " +
           std::to_string(fr) + " of " + std::to_string(tot) + " bytes free)";
  }
  const size_t now = c->allocated.fetch_add(bytes) + bytes;
  size_t prev = c->peak_allocated.load();
  while (now > prev && !c->peak_allocated.compare_exchange_weak(prev, now)) {
  }
  SampleDeviceUse();
  return "";
}

void FreeTracked(void* p, size_t bytes) {
  if (!p) return;
  Ctx* c = nullptr;
  if (!Get(&c).empty()) return;
  cudaFree(p);
  c->allocated.fetch_sub(bytes);
}

std::string Scratch::Reserve(size_t want) {
  if (want <= bytes) return "";
  // grow by at least 1/4 to avoid reallocating for slowly growing requests
  const size_t grown = std::max(want, bytes + bytes / 4);
  FreeTracked(ptr, bytes);
  ptr = nullptr;
  bytes = 0;
  G2M_TRY(AllocTracked(grown, &ptr));
  bytes = grown;
  return "";
}

}  // namespace detail

using detail::Ctx;
using detail::GridStride;

int DeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

std::string Facts(DeviceFacts* f) {
  Ctx* c = nullptr;
  G2M_TRY(detail::Get(&c));
  cudaDeviceProp p;
  G2M_CU(cudaGetDeviceProperties(&p, c->device));
  f->name = p.name;
  f->sm_count = p.multiProcessorCount;
  f->cc_major = p.major;
  f->cc_minor = p.minor;
  f->total_mem = p.totalGlobalMem;
  G2M_CU(cudaRuntimeGetVersion(&f->runtime_version));
  G2M_CU(cudaDriverGetVersion(&f->driver_version));
  return "";
}

std::string Malloc(size_t bytes, void** p) { return detail::AllocTracked(bytes, p); }

std::string Free(void* p, size_t bytes) {
  Ctx* c = nullptr;
  G2M_TRY(detail::Get(&c));
  // queued kernels may still read the buffer: cudaFree waits for the device
  detail::FreeTracked(p, bytes);
  return "";
}

std::string Upload(void* dst, const void* src, size_t bytes) {
  Ctx* c = nullptr;
  G2M_TRY(detail::Get(&c));
  if (bytes == 0) return "";
  G2M_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
  // pageable sources are staged before return; a pinned source could still be in flight
  cudaPointerAttributes at;
  if (cudaPointerGetAttributes(&at, src) == cudaSuccess && at.type == cudaMemoryTypeHost)
    G2M_CU(cudaStreamSynchronize(c->stream));
  cudaGetLastError();
  return "";
}

std::string Download(void* dst, const void* src, size_t bytes) {
  Ctx* c = nullptr;
  G2M_TRY(detail::Get(&c));
  if (bytes > 0) G2M_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
  G2M_CU(cudaStreamSynchronize(c->stream));
  detail::SampleDeviceUse();
  return "";
}

std::string Memset(void* dst, int value, size_t bytes) {
  Ctx* c = nullptr;
  G2M_TRY(detail::Get(&c));
  if (bytes > 0) G2M_CU(cudaMemsetAsync(dst, value, bytes, c->stream));
  return "";
}

std::string DeviceCopy(void* dst, const void* src, size_t bytes) {
  Ctx* c = nullptr;
  G2M_TRY(detail::Get(&c));
  if (bytes > 0) G2M_CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream));
  return "";
}

std::string Synchronize() {
  Ctx* c = nullptr;
  G2M_TRY(detail::Get(&c));
  G2M_CU(cudaStreamSynchronize(c->stream));
  detail::SampleDeviceUse();
  return "";
}

MemStats Stats() {
  MemStats s;
  Ctx* c = nullptr;
  if (!detail::Get(&c).empty()) return s;
  detail::SampleDeviceUse();
  size_t fr = 0, tot = 0;
  if (cudaMemGetInfo(&fr, &tot) == cudaSuccess) {
    s.device_used = tot - fr;
    s.device_total = tot;
  }
  s.allocated = c->allocated.load();
  s.peak_allocated = c->peak_allocated.load();
  s.peak_device_used = c->peak_device_used.load();
  return s;
}

void ResetPeak() {
  Ctx* c = nullptr;
  if (!detail::Get(&c).empty()) return;
  c->peak_allocated.store(c->allocated.load());
  c->peak_device_used.store(0);
  detail::SampleDeviceUse();
}

// ---- dtype conversion ---------------------------------------------------------------------
namespace {

__device__ __forceinline__ uint32_t LoadBits(const void* src, Dt dt, size_t i) {
  switch (dt) {
    case Dt::BF16:
      return static_cast<uint32_t>(static_cast<const uint16_t*>(src)[i]) << 16;
    case Dt::F16:
      return half_bits::HalfToFloatBits(static_cast<const uint16_t*>(src)[i]);
    default:
      return static_cast<const uint32_t*>(src)[i];
  }
}

__global__ void ConvertKernel(const void* src, Dt sdt, void* dst, Dt ddt, size_t n) {
  GridStride(n, [&](size_t i) {
    const uint32_t b = LoadBits(src, sdt, i);
    switch (ddt) {
      case Dt::BF16:
        static_cast<uint16_t*>(dst)[i] = half_bits::FloatBitsToBf16(b);
        break;
      case Dt::F16:
        static_cast<uint16_t*>(dst)[i] = half_bits::FloatBitsToHalf(b);
        break;
      default:
        static_cast<uint32_t*>(dst)[i] = b;
    }
  });
}

}  // namespace

std::string Convert(const void* src, Dt src_dt, void* dst, Dt dst_dt, size_t n) {
  Ctx* c = nullptr;
  G2M_TRY(detail::Get(&c));
  if (n == 0) return "";
  const unsigned blocks = std::min<unsigned>(detail::Blocks(n, 256), 65535u * 8u);
  ConvertKernel<<<blocks, 256, 0, c->stream>>>(src, src_dt, dst, dst_dt, n);
  G2M_LAUNCHED("dtype conversion kernel");
  return "";
}

}  // namespace cuconv
}  // namespace g2m
