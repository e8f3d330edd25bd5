// Fused decode attention on the GPU: absorbed MLA (one shared [latent | k_rope] row per
// token) and GQA (per-KV-head keys and values), both over a paged bf16 cache, with the
// KV sequence split across thread blocks by a host-built schedule and the partial
// results merged by their log-sum-exp.
//
// Plain C++ interface: no CUDA or Node-API types leak out, so the Node binding
// (native/decode_cuda.cc) compiles with the host compiler alone. Every function returns
// an empty string on success and an error message otherwise.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "device_facts.h"

namespace g2m {
namespace cudadec {

// Shape and layout of one decode-attention call.
//  MLA (mla = true): kv_heads = 1, dqk = kv_lora_rank + rope_dim (576), dv = kv_lora_rank
//    (512); queries come as qa = q_lat [batch, q_len, heads, dv] and qb = q_rope
//    [batch, q_len, heads, dqk - dv]; the cache row of a token is [latent | k_rope] (dqk
//    values) and the values are its first dv entries.
//  GQA (mla = false): dqk = dv = head_dim; qa = q [batch, q_len, heads, head_dim], qb
//    unused; K and V caches hold [kv_heads, head_dim] per token.
// Cache addressing: paged when block_table is given (cache [num_blocks, page_size, row],
// table [batch, max_blocks]); otherwise contiguous, token t of request b at row
// b * seq_stride + t. Query row (b, i, h) of q_len rows sees the first
// seqlen[b] - q_len + 1 + i tokens (causal decode).
struct Shape {
  int batch = 0;
  int q_len = 1;
  int heads = 0;
  int kv_heads = 1;
  int dqk = 0;
  int dv = 0;
  bool mla = true;
  int page_size = 64;
  int max_blocks = 0;      // block-table row length (paged)
  int64_t seq_stride = 0;  // tokens per request (contiguous)
  // Kernel instance by name (e.g. "mla576x512.m32.w8.ov", benchmarks and tests); empty:
  // chosen by the number of query rows per KV head.
  std::string kernel;
};

// Device-side schedule for one shape and one set of sequence lengths.
struct Plan {
  int num_parts = 0;      // persistent work parts (grid.y)
  int m_blocks = 0;       // query-row blocks per KV head
  int num_segments = 0;   // (batch, token range) pieces
  int num_slots = 0;      // partial-result slots for split requests
  int max_splits = 0;     // most pieces any request was cut into
  int num_empty = 0;      // requests of length 0
  int ctas_per_sm = 0;    // occupancy of the main kernel
  int rows_per_cta = 0;   // 16, 32 or 64 query rows per thread block
  int sm_count = 0;
  std::string kernel;     // e.g. "mla576x512.m64"
  int instance = -1;      // kernel instance the plan was made for
  void* d_part_offsets = nullptr;  // int[num_parts + 1]
  void* d_segments = nullptr;      // int4[num_segments]: batch, t0, t1, slot
  void* d_splits = nullptr;        // int[batch]: pieces per request (0 = empty)
  void* d_slot_base = nullptr;     // int[batch]
  void* d_seqlens = nullptr;       // int[batch]
  void* d_o_partial = nullptr;     // float[num_slots, q_len * heads, dv]
  void* d_lse_partial = nullptr;   // float[num_slots, q_len * heads]
};

// Builds the split schedule for `seqlens` (host array of shape.batch lengths) and uploads
// it with the partial-result buffers. Free with FreePlan.
std::string MakePlan(const Shape& shape, const int32_t* seqlens, Plan* plan);
void FreePlan(Plan* plan);

// Device pointers of one call. qa/qb/k/v/out are bf16; lse is float32 [batch, q_len, heads];
// block_table is int32 (nullptr for the contiguous layout).
struct Tensors {
  const void* qa = nullptr;
  const void* qb = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const int32_t* block_table = nullptr;
  void* out = nullptr;
  float* lse = nullptr;
};

// Checks that the shape is one the kernels are built for ("" if so).
std::string Supported(const Shape& shape);
// Launches the attention and the LSE combine on the default stream and waits for them.
std::string Run(const Shape& shape, const Plan& plan, const Tensors& t, float softmax_scale);
// Times `iters` runs with CUDA events (after `warmup` untimed ones). Before each timed run
// the L2 cache is flushed by writing a scratch buffer, so small inputs are not served from
// L2. Milliseconds per run go to `ms`.
std::string TimeRuns(const Shape& shape, const Plan& plan, const Tensors& t, float softmax_scale, int warmup,
                     int iters, std::vector<float>* ms);

// Device facts.
using DeviceInfo = g2m::DeviceFacts;
std::string GetDeviceInfo(DeviceInfo* info);

// Device memory.
std::string Malloc(size_t bytes, void** ptr);
std::string Free(void* ptr);
std::string CopyToDevice(void* dst, const void* src, size_t bytes);
std::string CopyToHost(void* dst, const void* src, size_t bytes);
// Fills n bf16 values with uniform numbers in [-scale, scale) drawn from a hash of
// (seed, index): reproducible, and fast for multi-GB caches.
std::string FillRandomBf16(void* dst, size_t n, uint64_t seed, float scale);
// Device-to-device copy bandwidth: median over `iters` copies of `bytes`, counting bytes
// read plus bytes written (GB/s = 1e9 bytes per second).
std::string CopyBandwidth(size_t bytes, int iters, double* gbps);

}  // namespace cudadec
}  // namespace g2m
