// Float32 forward kernels of the conversion's calibration pass: RMSNorm, RoPE, SwiGLU,
// bias, causal attention with an online softmax, linear layers through cuBLAS (bf16 or
// float32 operands, float32 accumulation), and float64 moment accumulation (DSYRK/DGEMV).
// Math is IEEE (this file is built without fast-math): expf, sincos in float64.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "convert_ctx.h"
#include "convert_cuda.h"
#include "half_bits.h"

namespace g2m {
namespace cuconv {

using detail::Blocks;
using detail::Ctx;
using detail::GridFor;
using detail::GridStride;

namespace {

constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ double WarpSumD(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}
__device__ __forceinline__ float WarpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}
__device__ __forceinline__ float WarpMax(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFull, v, o));
  return v;
}

// ---- RMSNorm: one block per row -------------------------------------------------------------
__global__ void RmsNormKernel(const float* __restrict__ x, const float* __restrict__ w, float* out, size_t dim,
                              size_t xs, size_t os, double eps) {
  __shared__ double part[32];
  const float* xr = x + blockIdx.x * xs;
  float* yr = out + blockIdx.x * os;
  double ss = 0;
  for (size_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const double v = xr[i];
    ss += v * v;
  }
  ss = WarpSumD(ss);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) part[warp] = ss;
  __syncthreads();
  if (warp == 0) {
    double t = lane < static_cast<int>(blockDim.x / 32) ? part[lane] : 0.0;
    t = WarpSumD(t);
    if (lane == 0) part[0] = t;
  }
  __syncthreads();
  const float inv = static_cast<float>(1.0 / sqrt(part[0] / static_cast<double>(dim) + eps));
  for (size_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = __fmul_rn(xr[i], inv);
    yr[i] = w ? __fmul_rn(w[i], v) : v;
  }
}

// ---- RoPE: one thread per (row, head, pair) ---------------------------------------------------
__global__ void RopeKernel(RopeArgs a, size_t total) {
  const size_t half = a.rot_dim / 2;
  GridStride(total, [&](size_t idx) {
    const size_t i = idx % half;
    const size_t h = (idx / half) % a.n_heads;
    const size_t r = idx / (half * a.n_heads);
    const float ang = __fmul_rn(a.inv_freq[i], static_cast<float>(a.pos[r]));
    double sd, cd;
    sincos(static_cast<double>(ang), &sd, &cd);
    const float c = __fmul_rn(static_cast<float>(cd), a.scale);
    const float s = __fmul_rn(static_cast<float>(sd), a.scale);
    float* v = a.x + r * a.row_stride + a.offset + h * a.head_stride;
    float* p0 = a.interleave ? v + 2 * i : v + i;
    float* p1 = a.interleave ? v + 2 * i + 1 : v + i + half;
    const float x0 = *p0, x1 = *p1;
    *p0 = x0 * c - x1 * s;
    *p1 = x1 * c + x0 * s;
  });
}

__global__ void SwigluKernel(const float* gate, const float* up, float* out, size_t n) {
  GridStride(n, [&](size_t i) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  });
}

__global__ void BiasKernel(float* out, size_t os, const float* __restrict__ b, size_t rows, size_t cols) {
  GridStride(rows * cols, [&](size_t i) {
    const size_t r = i / cols, c = i % cols;
    out[r * os + c] += b[c];
  });
}

__global__ void ToBf16Kernel(const float* __restrict__ x, size_t xs, uint16_t* __restrict__ y, size_t rows,
                             size_t cols) {
  GridStride(rows * cols, [&](size_t i) {
    const size_t r = i / cols, c = i % cols;
    y[i] = half_bits::FloatBitsToBf16(__float_as_uint(x[r * xs + c]));
  });
}

__global__ void WidenKernel(const float* __restrict__ x, double* __restrict__ y, size_t n) {
  GridStride(n, [&](size_t i) { y[i] = static_cast<double>(x[i]); });
}

__global__ void FillKernel(double* y, size_t n, double v) {
  GridStride(n, [&](size_t i) { y[i] = v; });
}

// c (column-major upper triangle valid) -> full symmetric c / count
__global__ void MirrorScaleKernel(double* c, size_t n, double count) {
  GridStride(n * n, [&](size_t idx) {
    const size_t i = idx % n, j = idx / n;  // element (i, j) at c[i + j n]
    if (i > j) return;
    const double v = c[i + j * n] / count;
    c[i + j * n] = v;
    c[j + i * n] = v;
  });
}

__global__ void ScaleKernel(double* y, size_t n, double count) {
  GridStride(n, [&](size_t i) { y[i] = y[i] / count; });
}


// ---- attention -----------------------------------------------------------------------------
// Block: kBQ query rows of one (sequence, head), kWarps warps with kBQ / kWarps rows each.
// Key tiles of kBK keys (one per lane for the scores) are staged in shared memory with
// their values; each warp keeps a running max, normaliser and VPL output values per lane.
constexpr int kBQ = 16;
constexpr int kBK = 32;
constexpr int kWarps = 4;
constexpr int kRowsPerWarp = kBQ / kWarps;

size_t AttnSmemBytes(size_t dq, size_t vd) { return (kBQ * dq + kBK * (dq + 1) + kBK * vd) * sizeof(float); }

template <int VPL>
__global__ void __launch_bounds__(kWarps * 32) AttnKernel(AttnArgs a, unsigned nqb) {
  extern __shared__ float sm[];
  const int qk = static_cast<int>(a.qk_dim);
  const int dq = static_cast<int>(a.qk_dim + a.rope_dim);
  const int ldk = dq + 1;
  const int vd = static_cast<int>(a.v_dim);
  float* qs = sm;
  float* ks = qs + kBQ * dq;
  float* vs = ks + kBK * ldk;
  const size_t s = blockIdx.x / nqb;
  const size_t qb = blockIdx.x % nqb;
  const size_t h = blockIdx.y;
  const size_t g = h / (a.n_heads / a.n_kv_heads);
  const size_t S = a.seq_len;
  const size_t t0 = qb * kBQ;
  const size_t tEnd = t0 + kBQ < S ? t0 + kBQ : S;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const size_t rowBase = s * S;
  for (int i = threadIdx.x; i < kBQ * dq; i += blockDim.x) {
    const int r = i / dq, c = i % dq;
    const size_t t = t0 + r;
    qs[i] = t < S ? a.q[(rowBase + t) * a.q_row + h * a.q_head + c] : 0.0f;
  }
  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][VPL];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    m[rr] = -INFINITY;
    l[rr] = 0.0f;
#pragma unroll
    for (int v = 0; v < VPL; ++v) acc[rr][v] = 0.0f;
  }
  const size_t kLo = a.window && t0 + 1 > a.window ? t0 + 1 - a.window : 0;
  for (size_t u0 = kLo; u0 < tEnd; u0 += kBK) {
    __syncthreads();
    const int nk = static_cast<int>(tEnd - u0 < static_cast<size_t>(kBK) ? tEnd - u0 : kBK);
    for (int i = threadIdx.x; i < kBK * dq; i += blockDim.x) {
      const int j = i / dq, c = i % dq;
      float val = 0.0f;
      if (j < nk) {
        const size_t row = rowBase + u0 + j;
        val = c < qk ? a.k[row * a.k_row + g * a.k_head + c] : a.k_rope[row * a.k_rope_row + (c - qk)];
      }
      ks[j * ldk + c] = val;
    }
    for (int i = threadIdx.x; i < kBK * vd; i += blockDim.x) {
      const int j = i / vd, c = i % vd;
      vs[i] = j < nk ? a.v[(rowBase + u0 + j) * a.v_row + g * a.v_head + c] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
      const int r = warp * kRowsPerWarp + rr;
      const size_t t = t0 + r;
      if (t >= S) continue;  // warp-uniform
      const size_t u = u0 + lane;
      const bool valid = lane < nk && u <= t && (a.window == 0 || t - u < a.window);
      float sc = -INFINITY;
      if (valid) {
        const float* qr = qs + r * dq;
        const float* kr = ks + lane * ldk;
        float d = 0.0f;
        for (int c = 0; c < dq; ++c) d = fmaf(qr[c], kr[c], d);
        sc = d * a.scale;
      }
      const float mx = WarpMax(sc);
      if (mx == -INFINITY) continue;  // warp-uniform: no visible key in this tile
      const float mNew = fmaxf(m[rr], mx);
      const float corr = expf(m[rr] - mNew);
      const float p = valid ? expf(sc - mNew) : 0.0f;
      l[rr] = l[rr] * corr + WarpSum(p);
#pragma unroll
      for (int v = 0; v < VPL; ++v) acc[rr][v] *= corr;
      for (int j = 0; j < nk; ++j) {
        const float pj = __shfl_sync(kFull, p, j);
        if (pj == 0.0f) continue;  // warp-uniform
        const float* vr = vs + j * vd;
#pragma unroll
        for (int v = 0; v < VPL; ++v) {
          const int c = lane + 32 * v;
          if (c < vd) acc[rr][v] = fmaf(pj, vr[c], acc[rr][v]);
        }
      }
      m[rr] = mNew;
    }
  }
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const size_t t = t0 + warp * kRowsPerWarp + rr;
    if (t >= S) continue;
    float* o = a.out + (rowBase + t) * a.n_heads * a.v_dim + h * a.v_dim;
    const float inv = 1.0f / l[rr];
#pragma unroll
    for (int v = 0; v < VPL; ++v) {
      const int c = lane + 32 * v;
      if (c < vd) o[c] = acc[rr][v] * inv;
    }
  }
}

template <int VPL>
std::string LaunchAttn(const AttnArgs& a, cudaStream_t st) {
  const size_t smem = AttnSmemBytes(a.qk_dim + a.rope_dim, a.v_dim);
  static bool raised = false;
  if (!raised) {
    G2M_CU(cudaFuncSetAttribute(AttnKernel<VPL>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                static_cast<int>(AttnSmemBytes(kAttnMaxQkDim, kAttnMaxVDim))));
    raised = true;
  }
  const unsigned nqb = static_cast<unsigned>((a.seq_len + kBQ - 1) / kBQ);
  dim3 grid(static_cast<unsigned>(a.n_seq * nqb), static_cast<unsigned>(a.n_heads));
  AttnKernel<VPL><<<grid, kWarps * 32, smem, st>>>(a, nqb);
  G2M_LAUNCHED("attention kernel");
  return "";
}

}  // namespace

std::string RmsNorm(const float* x, const float* w, float* out, size_t rows, size_t dim, size_t x_stride,
                    size_t out_stride, double eps) {
  Ctx* c = nullptr;
  G2M_TRY(detail::Get(&c));
  if (rows == 0) return "";
  if (rows > 0x7fffffffu) return "rmsNorm: too many rows for one launch";
  RmsNormKernel<<<static_cast<unsigned>(rows), 256, 0, c->stream>>>(x, w, out, dim, x_stride, out_stride, eps);
  G2M_LAUNCHED("rmsNorm kernel");
  return "";
}

std::string Rope(const RopeArgs& a) {
  Ctx* c = nullptr;
  G2M_TRY(detail::Get(&c));
  const size_t total = a.rows * a.n_heads * (a.rot_dim / 2);
  if (total == 0) return "";
  RopeKernel<<<GridFor(total), 256, 0, c->stream>>>(a, total);
  G2M_LAUNCHED("rope kernel");
  return "";
}

std::string Swiglu(const float* gate, const float* up, float* out, size_t n) {
  Ctx* c = nullptr;
  G2M_TRY(detail::Get(&c));
  if (n == 0) return "";
  SwigluKernel<<<GridFor(n), 256, 0, c->stream>>>(gate, up, out, n);
  G2M_LAUNCHED("swiglu kernel");
  return "";
}

std::string Linear(const LinearArgs& a) {
  Ctx* c = nullptr;
  G2M_TRY(detail::Get(&c));
  if (a.rows == 0 || a.out_dim == 0) return "";
  std::lock_guard<std::mutex> lock(c->blas_mu);
  const float alpha = 1.0f, beta = a.accumulate ? 1.0f : 0.0f;
  const int M = static_cast<int>(a.out_dim), N = static_cast<int>(a.rows), K = static_cast<int>(a.in_dim);
  if (a.w_dt == Dt::BF16) {
    static detail::Scratch xb;
    G2M_TRY(xb.Reserve(a.rows * a.in_dim * sizeof(uint16_t)));
    ToBf16Kernel<<<GridFor(a.rows * a.in_dim), 256, 0, c->stream>>>(a.x, a.x_stride, static_cast<uint16_t*>(xb.ptr),
                                                                    a.rows, a.in_dim);
    G2M_LAUNCHED("bf16 rounding kernel");
    G2M_BLAS(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, M, N, K, &alpha, a.w, CUDA_R_16BF, K, xb.ptr, CUDA_R_16BF,
                          K, &beta, a.out, CUDA_R_32F, static_cast<int>(a.out_stride), CUBLAS_COMPUTE_32F,
                          CUBLAS_GEMM_DEFAULT));
  } else if (a.w_dt == Dt::F32) {
    G2M_BLAS(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, M, N, K, &alpha, a.w, CUDA_R_32F, K, a.x, CUDA_R_32F,
                          static_cast<int>(a.x_stride), &beta, a.out, CUDA_R_32F, static_cast<int>(a.out_stride),
                          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  } else {
    return "linear: weights must be bf16 or float32 on the device";
  }
  if (a.bias) {
    BiasKernel<<<GridFor(a.rows * a.out_dim), 256, 0, c->stream>>>(a.out, a.out_stride, a.bias, a.rows, a.out_dim);
    G2M_LAUNCHED("bias kernel");
  }
  return "";
}

std::string Attention(const AttnArgs& a) {
  Ctx* c = nullptr;
  G2M_TRY(detail::Get(&c));
  if (a.n_seq == 0) return "";
  if (a.v_dim > kAttnMaxVDim || a.qk_dim + a.rope_dim > kAttnMaxQkDim || a.qk_dim + a.rope_dim == 0)
    return "attention: qkDim + ropeDim must be in [1, " + std::to_string(kAttnMaxQkDim) + "] and vDim <= " +
           std::to_string(kAttnMaxVDim);
  if (a.n_heads > 65535) return "attention: at most 65535 heads";
  if (a.v_dim <= 32) return LaunchAttn<1>(a, c->stream);
  if (a.v_dim <= 64) return LaunchAttn<2>(a, c->stream);
  if (a.v_dim <= 128) return LaunchAttn<4>(a, c->stream);
  if (a.v_dim <= 256) return LaunchAttn<8>(a, c->stream);
  return LaunchAttn<16>(a, c->stream);
}

std::string MomentsAdd(double* cmat, double* sum, const float* x, size_t rows, size_t n) {
  Ctx* c = nullptr;
  G2M_TRY(detail::Get(&c));
  if (rows == 0 || n == 0) return "";
  std::lock_guard<std::mutex> lock(c->blas_mu);
  // float64 copies of at most ~256 MiB of rows at a time
  const size_t chunk = std::max<size_t>(1, std::min(rows, (size_t(256) << 20) / (n * sizeof(double))));
  static detail::Scratch xd, ones;
  static size_t onesFilled = 0;
  G2M_TRY(xd.Reserve(chunk * n * sizeof(double)));
  if (onesFilled < chunk) {
    G2M_TRY(ones.Reserve(chunk * sizeof(double)));
    FillKernel<<<GridFor(chunk), 256, 0, c->stream>>>(static_cast<double*>(ones.ptr), chunk, 1.0);
    G2M_LAUNCHED("fill kernel");
    onesFilled = chunk;
  }
  const double one = 1.0;
  const int N = static_cast<int>(n);
  for (size_t r0 = 0; r0 < rows; r0 += chunk) {
    const size_t kb = std::min(chunk, rows - r0);
    WidenKernel<<<GridFor(kb * n), 256, 0, c->stream>>>(x + r0 * n, static_cast<double*>(xd.ptr), kb * n);
    G2M_LAUNCHED("widen kernel");
    // row-major X (kb x n) is column-major A (n x kb): C += A A^T, sum += A 1
    G2M_BLAS(cublasDsyrk(c->blas, CUBLAS_FILL_MODE_UPPER, CUBLAS_OP_N, N, static_cast<int>(kb), &one,
                         static_cast<const double*>(xd.ptr), N, &one, cmat, N));
    G2M_BLAS(cublasDgemv(c->blas, CUBLAS_OP_N, N, static_cast<int>(kb), &one, static_cast<const double*>(xd.ptr), N,
                         static_cast<const double*>(ones.ptr), 1, &one, sum, 1));
  }
  return "";
}

std::string MomentsFinish(double* cmat, double* sum, size_t n, double count) {
  Ctx* c = nullptr;
  G2M_TRY(detail::Get(&c));
  if (n == 0) return "";
  MirrorScaleKernel<<<GridFor(n * n), 256, 0, c->stream>>>(cmat, n, count);
  G2M_LAUNCHED("moments mirror kernel");
  ScaleKernel<<<GridFor(n), 256, 0, c->stream>>>(sum, n, count);
  G2M_LAUNCHED("moments scale kernel");
  return "";
}

}  // namespace cuconv
}  // namespace g2m
