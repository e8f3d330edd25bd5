// The conversion's GPU kernels and libraries behind a plain C++ interface (no Node-API):
// device memory and copies, dtype conversion, the float32 forward kernels (RMSNorm,
// RoPE, SwiGLU, causal attention with an online softmax, linear layers through cuBLAS
// with bf16 or float32 operands and float32 accumulation), float64 moment accumulation
// (cuBLAS DSYRK), and float64 linear algebra (cuSOLVER syevd / gesvd, cuBLAS DGEMM).
//
// Every function returns an empty string on success, else a message naming the call
// that failed. Kernels and cuBLAS calls are queued on one compute stream in call order;
// Download and Synchronize wait for it. The solver functions take host arrays and
// block until their results are on the host.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "device_facts.h"

namespace g2m {
namespace cuconv {

using DeviceFacts = g2m::DeviceFacts;  // (l2_bytes is not filled here)

// Number of CUDA devices (0 when no driver or no GPU; never an error).
int DeviceCount();
std::string Facts(DeviceFacts* out);

// ---- memory ----------------------------------------------------------------------------
std::string Malloc(size_t bytes, void** p);
std::string Free(void* p, size_t bytes);
// Host -> device (the host buffer may be reused as soon as this returns).
std::string Upload(void* dst, const void* src, size_t bytes);
// Device -> host after all queued work.
std::string Download(void* dst, const void* src, size_t bytes);
std::string Memset(void* dst, int value, size_t bytes);
std::string DeviceCopy(void* dst, const void* src, size_t bytes);
std::string Synchronize();

struct MemStats {
  size_t allocated = 0;       // bytes held by Malloc'ed buffers and internal scratch
  size_t peak_allocated = 0;  // high-water mark of `allocated`
  size_t device_used = 0;     // total - free of the whole device (cudaMemGetInfo), now
  size_t peak_device_used = 0;  // high-water mark of device_used over the samples taken
  size_t device_total = 0;
};
MemStats Stats();
void ResetPeak();

// ---- dtypes ----------------------------------------------------------------------------
enum class Dt : int { F32 = 0, BF16 = 1, F16 = 2 };
// Element-wise conversion of n values. Narrowing rounds to nearest even; NaN stays NaN
// with the quiet bit set (the same bits as src/checkpoint/dtype.ts encodeFloat32).
std::string Convert(const void* src, Dt src_dt, void* dst, Dt dst_dt, size_t n);

// ---- forward kernels (float32 activations, row-major, strides in elements) --------------
// out[r] = w * x[r] / sqrt(mean(x[r]^2) + eps), the mean accumulated in float64; w may be null.
std::string RmsNorm(const float* x, const float* w, float* out, size_t rows, size_t dim, size_t x_stride,
                    size_t out_stride, double eps);

// In-place rotary embedding: row r at position pos[r], heads at x + r*row_stride + h*head_stride
// + offset, rot_dim dims each; angle = float(inv_freq[i] * pos), cos/sin times `scale`.
struct RopeArgs {
  float* x = nullptr;
  const int32_t* pos = nullptr;
  const float* inv_freq = nullptr;
  size_t rows = 0, row_stride = 0, n_heads = 0, head_stride = 0, offset = 0, rot_dim = 0;
  float scale = 1.0f;
  bool interleave = false;
};
std::string Rope(const RopeArgs& a);

// out[i] = silu(gate[i]) * up[i]; out may alias gate or up.
std::string Swiglu(const float* gate, const float* up, float* out, size_t n);

// out[r, :] (+)= x[r, :] W^T + bias; W [out_dim, in_dim] row-major, bf16 or float32 (the
// matching operand type: x is rounded to bf16 for bf16 weights), float32 accumulation.
struct LinearArgs {
  const float* x = nullptr;
  size_t x_stride = 0;
  const void* w = nullptr;
  Dt w_dt = Dt::F32;
  const float* bias = nullptr;
  float* out = nullptr;
  size_t out_stride = 0;
  size_t rows = 0, in_dim = 0, out_dim = 0;
  bool accumulate = false;
};
std::string Linear(const LinearArgs& a);

// Causal attention, semantics of native/forward_attention.cc (online softmax over key tiles).
struct AttnArgs {
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  const float* k_rope = nullptr;
  float* out = nullptr;
  size_t n_seq = 0, seq_len = 0, n_heads = 0, n_kv_heads = 0, qk_dim = 0, rope_dim = 0, v_dim = 0;
  size_t q_row = 0, q_head = 0, k_row = 0, k_head = 0, v_row = 0, v_head = 0, k_rope_row = 0;
  size_t window = 0;
  float scale = 1.0f;
};
// Largest v_dim and qk_dim + rope_dim the attention kernel takes.
constexpr size_t kAttnMaxVDim = 512;
constexpr size_t kAttnMaxQkDim = 576;
std::string Attention(const AttnArgs& a);

// ---- float64 statistics ------------------------------------------------------------------
// c (n x n float64, symmetric) += X^T X and sum (n) += column sums of X, X rows x n float32
// (row stride n), in float64 (X widened in chunks, cuBLAS DSYRK / DGEMV). Only one
// triangle of c is updated; MomentsFinish mirrors it.
std::string MomentsAdd(double* c, double* sum, const float* x, size_t rows, size_t n);
// c = mirrored c / count, sum = sum / count.
std::string MomentsFinish(double* c, double* sum, size_t n, double count);

// ---- float64 linear algebra (host arrays) -------------------------------------------------
// Eigendecomposition of the symmetric n x n row-major `a` (upper triangle read), eigenvalues
// descending in `w`, row-major `v` with column j = eigenvector j (cuSOLVER Xsyevd).
// *info receives the solver's info (0 = success); nonzero info is also an error message.
std::string Eigh(const double* a, double* w, double* v, int64_t n, int64_t* info, double* seconds);
// SVD of row-major a (m x n) = U diag(s) Vt, thin (k = min(m, n)) or full; s descending
// (cuSOLVER Xgesvd). u, vt may be null when !compute_uv.
std::string Svd(const double* a, int64_t m, int64_t n, bool full, bool compute_uv, double* u, double* s, double* vt,
                int64_t* info, double* seconds);
// C (m x n) = alpha op(A) op(B) + beta C, row-major, float64 (cuBLAS DGEMM). Each of a / b
// is a host array, or a device array when a_dev / b_dev. Blocks until C is on the host.
std::string GemmF64(const double* a, bool a_dev, const double* b, bool b_dev, double* c, int64_t m, int64_t n,
                    int64_t k, bool trans_a, bool trans_b, double alpha, double beta);

}  // namespace cuconv
}  // namespace g2m
