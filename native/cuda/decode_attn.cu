// Fused decode attention kernels (absorbed MLA and GQA) for Hopper, bf16 in, fp32 math.
//
// One thread block owns up to 64 query rows (heads x q_len of one request, or of one KV
// head for GQA) and walks a range of the request's KV sequence in tiles of 32 tokens:
//   S = Q K^T (tensor-core mma.sync, bf16 -> fp32), online softmax in the log2 domain,
//   O += P V (V is the first dv columns of the same shared-memory tile for MLA).
// Tiles stream through a 2-4 stage cp.async pipeline of 16-byte copies into padded
// shared-memory rows (row stride = 16 bytes mod 128, so ldmatrix is conflict-free); slots
// past the sequence length are zero-filled by the copy itself, so NaN garbage there
// never reaches the tensor cores. The bulk-load (TMA) instances (".tma") instead have
// warp 0 issue one cp.async.bulk per token row (1152 bytes into the padded row; rows past
// the length repeat the last valid row, whose weights are exactly zero) completing on a
// per-stage mbarrier: the block waits on the barrier's phase instead of a block barrier,
// the per-thread copy address arithmetic is gone, and the block-table lookup is done once
// per tile by warp 0, one issue ahead. The grid is persistent: a host-built schedule cuts the
// concatenated token tiles of all requests into about one equal part per resident
// block; a request cut into several pieces writes fp32 partials that a second kernel
// merges by their log-sum-exp.
#ifdef G2M_EMULATE
// CPU emulation of the CUDA runtime and warp primitives (bench/mla-decode/emu): runs
// this same source on the host to check indexing, masking and scheduling logic.
#include "cuda_emu.h"
#define G2M_LAUNCH(kernel, grid, block, smem, stream, ...) ::g2m_emu::Launch(kernel, grid, block, smem, __VA_ARGS__)
#define G2M_DYN_SMEM(name) unsigned char* name = ::g2m_emu::BlockSmem()
#else
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#define G2M_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<grid, block, smem, stream>>>(__VA_ARGS__)
#define G2M_DYN_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#endif

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <vector>

#include "decode_attn.h"

namespace g2m {
namespace cudadec {

namespace {

using bf16 = __nv_bfloat16;

constexpr int TN = 32;  // tokens per tile (= warp size: bulk loads give each lane one token row)

#define G2M_CK(expr)                                                                              \
  do {                                                                                            \
    cudaError_t e_ = (expr);                                                                      \
    if (e_ != cudaSuccess) return std::string(#expr) + ": " + cudaGetErrorString(e_);            \
  } while (0)

struct KArgs {
  const bf16* qa;
  const bf16* qb;
  int da, db;
  const bf16* k;
  const bf16* v;
  int64_t k_tok_stride, v_tok_stride;  // elements between token rows
  int64_t k_head_off, v_head_off;      // elements per KV head
  const int* block_table;
  int max_blocks, page_size;
  int64_t seq_stride;
  const int* seqlens;
  bf16* out;
  float* lse;
  float* o_part;
  float* lse_part;
  const int* part_offsets;
  const int4* segs;
  int q_len, heads, group, rows, m_blocks;
  float scale_log2;
};

#ifndef G2M_EMULATE
__device__ __forceinline__ uint32_t SmemU32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void LdsmX4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

__device__ __forceinline__ void LdsmX4T(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

__device__ __forceinline__ void Mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void CpAsync16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// mbarrier (a 64-bit shared-memory object: pending arrivals, transaction bytes, phase bit)
// and bulk global -> shared copies that complete on one (the Hopper TMA unit, sm_90).
__device__ __forceinline__ void MbarInit(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
}
// Makes the initialized barriers visible to the async proxy (the bulk-copy unit).
__device__ __forceinline__ void MbarInitFence() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Orders this thread's earlier generic-proxy shared-memory accesses before later
// async-proxy (bulk copy) accesses.
__device__ __forceinline__ void FenceProxyAsync() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// One arrival that also announces `bytes` of transactions for the current phase.
__device__ __forceinline__ void MbarArriveExpectTx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// Waits until the phase of parity `parity` has completed.
__device__ __forceinline__ void MbarWait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}
// Bulk copy of `bytes` (a multiple of 16, both addresses 16-byte aligned) whose completion
// counts `bytes` of transactions on barrier `bar`.
__device__ __forceinline__ void BulkG2S(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(dst),
      "l"(src), "r"(bytes), "r"(bar)
      : "memory");
}
#endif  // G2M_EMULATE

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float WarpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Zeroes an accumulator array (of any rank), fully unrolled.
__device__ __forceinline__ void Zero(float& x) { x = 0.f; }
template <class T, int N>
__device__ __forceinline__ void Zero(T (&x)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) Zero(x[i]);
}

// Queues the cp.async copies of TN token rows of one cache into shared memory at `dst`
// (STR bf16 between rows, CH 16-byte chunks a row): row i is token tok0 + i, at cache row
// row0 + i of `base` (tok_stride elements apart); rows at or past seqlen are zero-filled.
template <int TN, int CH, int STR, int THREADS>
__device__ __forceinline__ void LoadRowsAsync(uint32_t dst, const bf16* base, int64_t row0, int64_t tok_stride, int tok0,
                                              int seqlen, int tid) {
#pragma unroll 4
  for (int c = tid; c < TN * CH; c += THREADS) {
    const int i = c / CH, ch = c % CH;
    const bool ok = tok0 + i < seqlen;
    const bf16* src = ok ? base + (row0 + i) * tok_stride + ch * 8 : base;
    CpAsync16(dst + (i * STR + ch * 8) * 2, src, ok ? 16 : 0);
  }
}

// Two adjacent output values, as bf16 (final rows) or float (partials of split requests).
__device__ __forceinline__ void Store2(bf16* o, float x, float y) {
  *reinterpret_cast<__nv_bfloat162*>(o) = __floats2bfloat162_rn(x, y);
}
__device__ __forceinline__ void Store2(float* o, float x, float y) { *reinterpret_cast<float2*>(o) = make_float2(x, y); }

// One thread's values of an output row: elements 2 * half, 2 * half + 1 of each of the NT
// accumulator n-tiles (8 columns apart), times inv.
template <int NT, class T>
__device__ __forceinline__ void StoreRow(T* o, const float (&acc)[NT][4], int half, float inv) {
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) Store2(o + nt * 8, acc[nt][half * 2] * inv, acc[nt][half * 2 + 1] * inv);
}

// Compile-time configuration of one kernel instance. A block owns M = 16 * MT query rows
// and NW warps; each 32-token tile goes through three phases:
//  S = Q K^T: warp w takes m-group w / (NH * KS) (MTW = MT / SMG m-tiles), token group
//    (w / KS) % NH (NTW = 4 / NH n-tiles of 8 tokens) and k-slice w % KS of the head
//    dimension (KSTEPS k-steps of 16); the KS partial sums meet in shared memory. Each
//    K fragment is shared by the warp's MTW m-tiles; with QREG the warp keeps its Q
//    fragments (MTW x KSTEPS x 4 registers) for the whole segment instead of reloading
//    them from shared memory every tile, and the Q staging buffer overlaps the K stages.
//  softmax: THREADS / M consecutive threads per row (TPT tokens each, reductions by
//    shuffles inside the row's lanes); running max and sum live in those threads'
//    registers.
//  O += P V: warp w takes m-group w / NCG (MTP = MT / PMG m-tiles) and column group
//    w % NCG (NCOL = DV / NCG columns); each V fragment is shared by the MTP m-tiles.
template <int DQK_, int DV_, int MT_, int NW_, int STAGES_, bool SHARED_, int SMG_, int NH_, int KS_, int PMG_,
          bool QREG_, int MINB_, bool OV_ = false, bool TMA_ = false, bool PIPE_ = false>
struct Cfg {
  static constexpr int DQK = DQK_, DV = DV_, MT = MT_, NW = NW_, STAGES = STAGES_;
  static constexpr int SMG = SMG_, NH = NH_, KS = KS_, PMG = PMG_;
  static constexpr bool SHARED = SHARED_, QREG = QREG_;
  static constexpr bool OV = OV_;  // overlapped tile schedule (S(j+1) with P V(j)); needs 3+ stages
  static constexpr int MINB = MINB_;  // blocks per SM the register budget must allow
  // Bulk tile loads (TMA): warp 0 issues one bulk copy per token row, completing on a
  // per-stage mbarrier that the block waits on; see DecodeKernel.
  static constexpr bool TMA = TMA_;
  // One block barrier per tile (bulk loads only): S(j+2), softmax(j+1) and P V(j) share a
  // barrier interval, with S, P and alpha double-buffered; see DecodeKernel.
  static constexpr bool PIPE = PIPE_;
  static constexpr int NBUF = PIPE ? 2 : 1;
  static constexpr int M = 16 * MT;
  static constexpr int THREADS = NW * 32;
  static constexpr int QSTR = DQK + 8;  // bf16 elements per smem row (16-byte pad)
  static constexpr int KSTR = DQK + 8;
  static constexpr int VSTR = SHARED ? KSTR : DV + 8;
  static constexpr int SPAD = TN + 8;  // floats per S row
  static constexpr int PSTR = TN + 8;  // bf16 per P row
  static constexpr int MTW = MT / SMG;      // m-tiles per warp in S
  static constexpr int NTW = (TN / 8) / NH;  // n-tiles per warp in S
  static constexpr int KSTEPS = DQK / 16 / KS;
  static constexpr int MTP = MT / PMG;  // m-tiles per warp in P V
  static constexpr int NCG = NW / PMG;  // column groups in P V
  static constexpr int NCOL = DV / NCG;  // output columns per warp
  static constexpr int NT_O = NCOL / 8;
  static constexpr int TPR = THREADS / M;  // softmax threads per row
  static constexpr int TPT = TN / TPR;     // softmax tokens per thread
  static constexpr int KCH = DQK / 8;  // 16-byte chunks per K row
  static constexpr int VCH = DV / 8;
  static constexpr size_t Q_BYTES_RAW = size_t(M) * QSTR * 2;
  static constexpr size_t K_BYTES = size_t(STAGES) * TN * KSTR * 2;
  // Q staged in the K stages (not with bulk loads: those start before Q is read)
  static constexpr bool Q_ALIAS = QREG && !TMA && Q_BYTES_RAW <= K_BYTES;
  static constexpr size_t S_SLICE = size_t(KS) * M * SPAD;  // floats per S buffer
  static constexpr size_t P_SLICE = size_t(M) * PSTR;       // bf16 per P buffer
  static constexpr size_t S_BYTES = NBUF * S_SLICE * 4;
  // PIPE: Q staged in the S buffers (read into registers before S(0) writes them)
  static constexpr bool Q_IN_S = PIPE && QREG && !Q_ALIAS && Q_BYTES_RAW <= S_BYTES;
  // or else in the stage the first refill of a segment will use (free until then)
  static constexpr bool Q_IN_RING = PIPE && QREG && !Q_ALIAS && !Q_IN_S && Q_BYTES_RAW <= size_t(TN) * KSTR * 2;
  static constexpr size_t Q_BYTES = Q_ALIAS || Q_IN_S || Q_IN_RING ? 0 : Q_BYTES_RAW;
  static constexpr size_t V_BYTES = SHARED ? 0 : size_t(STAGES) * TN * VSTR * 2;
  static constexpr size_t P_BYTES = NBUF * P_SLICE * 2;
  static constexpr size_t STAT_BYTES = size_t(2 + NBUF) * M * 4;  // max, sum, alpha per buffer
  static constexpr size_t BAR_OFF = Q_BYTES + K_BYTES + V_BYTES + S_BYTES + P_BYTES + STAT_BYTES;
  static constexpr size_t BAR_BYTES = TMA ? size_t(8) * STAGES : 0;  // one "tile landed" mbarrier per stage
  static constexpr size_t SMEM = BAR_OFF + BAR_BYTES;
  static_assert(DQK % 16 == 0 && DV % 16 == 0, "dims must be multiples of 16");
  static_assert((DQK / 16) % KS == 0, "k-steps must split evenly");
  static_assert(MT % SMG == 0 && MT % PMG == 0 && NW % PMG == 0, "m-groups must split evenly");
  static_assert(SMG * NH * KS == NW, "S work items must match the warps");
  static_assert(NTW % 2 == 0, "n-tiles per warp come in pairs (ldmatrix.x4)");
  static_assert(DV % NCG == 0 && NT_O % 2 == 0, "output columns per warp must be a multiple of 16");
  static_assert(THREADS % M == 0 && TPR <= 32 && (TPR & (TPR - 1)) == 0 && TN % TPR == 0 && TPT <= 16,
                "softmax: a power-of-two number of threads per row, inside one warp");
  static_assert(DV <= DQK, "values are a prefix of the key row (MLA) or the same size (GQA)");
  static_assert(!OV || STAGES >= 3, "the overlapped schedule keeps two tiles in use while loading");
  static_assert(!PIPE || (TMA && !OV && STAGES >= 3), "the one-barrier schedule needs bulk loads and 3+ stages");
  static_assert(!TMA || (SHARED && STAGES >= 2 && BAR_OFF % 8 == 0 && (KSTR * 2) % 16 == 0 && (DQK * 2) % 16 == 0 &&
                         Q_BYTES % 16 == 0),
                "bulk loads: MLA rows (one copy per token row), aligned rows");
};

// Loads n (2, 4, 8 or 16) consecutive floats from shared memory.
template <int N>
__device__ __forceinline__ void LoadF(const float* p, float (&v)[N]) {
  if constexpr (N == 2) {
    const float2 t = *reinterpret_cast<const float2*>(p);
    v[0] = t.x, v[1] = t.y;
  } else {
#pragma unroll
    for (int i = 0; i < N; i += 4) {
      const float4 t = *reinterpret_cast<const float4*>(p + i);
      v[i] = t.x, v[i + 1] = t.y, v[i + 2] = t.z, v[i + 3] = t.w;
    }
  }
}

// Stores n (2, 4, 8 or 16) floats as bf16 to shared memory.
template <int N>
__device__ __forceinline__ void StoreBf16(bf16* p, const float (&v)[N]) {
  uint32_t w[N / 2];
#pragma unroll
  for (int i = 0; i < N / 2; ++i) {
    __nv_bfloat162 h = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
    w[i] = *reinterpret_cast<uint32_t*>(&h);
  }
  if constexpr (N == 2) {
    *reinterpret_cast<uint32_t*>(p) = w[0];
  } else if constexpr (N == 4) {
    *reinterpret_cast<uint2*>(p) = make_uint2(w[0], w[1]);
  } else {
#pragma unroll
    for (int i = 0; i < N / 2; i += 4) *reinterpret_cast<uint4*>(p + 2 * i) = make_uint4(w[i], w[i + 1], w[i + 2], w[i + 3]);
  }
}

template <class C>
__global__ void __launch_bounds__(C::THREADS, C::MINB) DecodeKernel(const KArgs a) {
  static_assert(TN == 32, "one token row per lane");
  G2M_DYN_SMEM(smem);
  bf16* sK = reinterpret_cast<bf16*>(smem + C::Q_BYTES);
  bf16* sQ = C::Q_ALIAS  ? sK
             : C::Q_IN_S ? reinterpret_cast<bf16*>(smem + C::Q_BYTES + C::K_BYTES + C::V_BYTES)
                         : reinterpret_cast<bf16*>(smem);
  bf16* sV = C::SHARED ? sK : reinterpret_cast<bf16*>(smem + C::Q_BYTES + C::K_BYTES);
  float* sS = reinterpret_cast<float*>(smem + C::Q_BYTES + C::K_BYTES + C::V_BYTES);
  bf16* sP = reinterpret_cast<bf16*>(smem + C::Q_BYTES + C::K_BYTES + C::V_BYTES + C::S_BYTES);
  float* sM = reinterpret_cast<float*>(smem + C::Q_BYTES + C::K_BYTES + C::V_BYTES + C::S_BYTES + C::P_BYTES);
  float* sL = sM + C::M;
  float* sA = sL + C::M;  // NBUF x M

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int kvh = blockIdx.x / a.m_blocks, mb = blockIdx.x % a.m_blocks;
  const int part = blockIdx.y;
  const int seg_begin = a.part_offsets[part], seg_end = a.part_offsets[part + 1];
  const bf16* kbase = a.k + kvh * a.k_head_off;
  const bf16* vbase = C::SHARED ? kbase : a.v + kvh * a.v_head_off;

  // S-phase role of this warp
  const int s_mg = warp / (C::NH * C::KS), s_nh = (warp / C::KS) % C::NH, s_ks = warp % C::KS;
  const int s_k0 = s_ks * C::KSTEPS * 16;
  // P V role
  const int p_mg = warp / C::NCG, p_cg = warp % C::NCG;
  // softmax role: row sm_r, tokens sm_c .. sm_c + TPT - 1 of each tile
  const int sm_r = tid / C::TPR, sm_c = (tid % C::TPR) * C::TPT;
  const int sm_row = mb * C::M + sm_r;

  // Bulk loads (C::TMA): stage s of the ring has one mbarrier that completes when tile
  // bytes have landed; the block's tiles are numbered across segments (it_base + j) so
  // that tile `it` sits in stage it % STAGES and is the (it / STAGES)-th use of it, whose
  // completion the wait recognizes by the phase parity.
  const uint32_t bar0 = C::TMA ? SmemU32(smem + C::BAR_OFF) : 0u;
  int it_base = 0;
  if constexpr (C::TMA) {
    if (tid == 0) {
#pragma unroll
      for (int st = 0; st < C::STAGES; ++st) MbarInit(bar0 + 8 * st, 1);
      MbarInitFence();
    }
    // the first segment's barrier publishes the initialization before any copy is issued
  }

  for (int si = seg_begin; si < seg_end; ++si) {
    const int4 sg = a.segs[si];
    const int b = sg.x, t0 = sg.y, t1 = sg.z, slot = sg.w;
    const int seqlen = a.seqlens[b];
    const int ntiles = (t1 - t0 + TN - 1) / TN;
    __syncthreads();  // the previous segment is done with shared memory

    // Bulk loads: row of the first token of tile j (block-table lookup for paged caches;
    // a tile never crosses a page since pages are multiples of TN and tiles start at
    // multiples of TN), and the copies of tile j: lane i copies token row i; rows past
    // the sequence length repeat its last row (finite values, whose weights are exactly 0).
    auto tile_row0 = [&](int j) -> int64_t {
      const int tok0 = t0 + j * TN;
      if (a.block_table != nullptr)
        return static_cast<int64_t>(a.block_table[static_cast<int64_t>(b) * a.max_blocks + tok0 / a.page_size]) *
                   a.page_size +
               tok0 % a.page_size;
      return static_cast<int64_t>(b) * a.seq_stride + tok0;
    };
    auto issue_tile = [&](int j, int64_t row0) {  // warp 0 only
      const int tok0 = t0 + j * TN;
      const int stage = (it_base + j) % C::STAGES;
      const uint32_t bar = bar0 + 8 * stage;
      if (lane == 0) MbarArriveExpectTx(bar, TN * C::DQK * 2);
      __syncwarp();
      const int i = lane < seqlen - 1 - tok0 ? lane : seqlen - 1 - tok0;
      BulkG2S(SmemU32(sK + (stage * TN + lane) * C::KSTR), kbase + (row0 + i) * a.k_tok_stride, C::DQK * 2, bar);
    };
    int64_t next_row0 = 0;  // warp 0 (C::TMA): row of the next tile to issue, looked up one issue ahead
    if constexpr (C::TMA) {
      if (warp == 0) {
#pragma unroll
        for (int s = 0; s < C::STAGES - 1; ++s)
          if (s < ntiles) issue_tile(s, tile_row0(s));
        if (C::STAGES - 1 < ntiles) next_row0 = tile_row0(C::STAGES - 1);
      }
    }

    // Query rows of this block -> sQ (rows past the last are zero).
    if constexpr (C::Q_IN_RING) sQ = sK + ((it_base + C::STAGES - 1) % C::STAGES) * TN * C::KSTR;
    for (int c = tid; c < C::M * C::KCH; c += C::THREADS) {
      const int rr = c / C::KCH, ch = c % C::KCH, r = mb * C::M + rr;
      uint4 val = make_uint4(0, 0, 0, 0);
      if (r < a.rows) {
        const int qi = r / a.group, h = kvh * a.group + r % a.group;
        const int64_t row = (static_cast<int64_t>(b) * a.q_len + qi) * a.heads + h;
        const int col = ch * 8;
        val = col < a.da ? *reinterpret_cast<const uint4*>(a.qa + row * a.da + col)
                         : *reinterpret_cast<const uint4*>(a.qb + row * a.db + (col - a.da));
      }
      *reinterpret_cast<uint4*>(sQ + rr * C::QSTR + ch * 8) = val;
    }
    // Q written through the generic proxy into a stage that a bulk copy (async proxy) will
    // overwrite later: order the two proxies' writes.
    if constexpr (C::Q_IN_RING) FenceProxyAsync();
    // Rows this block can see (causal for q_len > 1); running max / sum of the softmax row.
    const int sm_nvalid = sm_row < a.rows ? seqlen - a.q_len + 1 + sm_row / a.group : 0;
    float m_run = -INFINITY, l_run = 0.f;

    // Q fragments kept in registers (QREG): one ldmatrix pass per segment.
    uint32_t qf[C::QREG ? C::MTW : 1][C::QREG ? C::KSTEPS : 1][4];
    if constexpr (C::QREG) {
      __syncthreads();  // sQ written
#pragma unroll
      for (int i = 0; i < C::MTW; ++i) {
        const bf16* qrow = sQ + ((s_mg * C::MTW + i) * 16 + (lane & 15)) * C::QSTR + (lane >> 4) * 8 + s_k0;
#pragma unroll
        for (int kk = 0; kk < C::KSTEPS; ++kk)
          LdsmX4(SmemU32(qrow + kk * 16), qf[i][kk][0], qf[i][kk][1], qf[i][kk][2], qf[i][kk][3]);
      }
      if constexpr (C::Q_ALIAS || C::Q_IN_S || C::Q_IN_RING) __syncthreads();  // sQ (in K stages / S) read
    }

    auto load_tile = [&](int j, int stage) {
      const int tok0 = t0 + j * TN;
      int64_t row0;
      if (a.block_table != nullptr) {
        const int page = tok0 / a.page_size;
        row0 = static_cast<int64_t>(a.block_table[static_cast<int64_t>(b) * a.max_blocks + page]) * a.page_size +
               tok0 % a.page_size;
      } else {
        row0 = static_cast<int64_t>(b) * a.seq_stride + tok0;
      }
      LoadRowsAsync<TN, C::KCH, C::KSTR, C::THREADS>(SmemU32(sK + stage * TN * C::KSTR), kbase, row0, a.k_tok_stride,
                                                     tok0, seqlen, tid);
      if (!C::SHARED)
        LoadRowsAsync<TN, C::VCH, C::VSTR, C::THREADS>(SmemU32(sV + stage * TN * C::VSTR), vbase, row0, a.v_tok_stride,
                                                       tok0, seqlen, tid);
    };

    float acc[C::MTP][C::NT_O][4];
    Zero(acc);

    if constexpr (!C::TMA) {
#pragma unroll
      for (int s = 0; s < C::STAGES - 1; ++s) {
        if (s < ntiles) load_tile(s, s);
        CpAsyncCommit();
      }
    } else if constexpr (!C::QREG) {
      __syncthreads();  // sQ written (S reads it every tile; no other barrier precedes S(0))
    }

    // The three phases of tile j (each ends where a block barrier must follow).
    auto phase_s = [&](int j) {
      const int stage = (C::TMA ? it_base + j : j) % C::STAGES;
      const bf16* tK = sK + stage * TN * C::KSTR;
      // ---- S = Q K^T over this tile -------------------------------------------------
      {
        float c[C::MTW][C::NTW][4];
        Zero(c);
        // x4 B load for n-tiles (2np, 2np+1) of this warp at one k-step: lanes 0-15 address
        // the first n-tile's tokens (cols +0 / +8), lanes 16-31 the second's.
        const bf16* krow =
            tK + ((s_nh * C::NTW + (lane >> 4)) * 8 + (lane & 7)) * C::KSTR + ((lane >> 3) & 1) * 8 + s_k0;
#pragma unroll
        for (int kk = 0; kk < C::KSTEPS; ++kk) {
          uint32_t af[C::MTW][4];
#pragma unroll
          for (int i = 0; i < C::MTW; ++i) {
            if constexpr (C::QREG) {
#pragma unroll
              for (int e = 0; e < 4; ++e) af[i][e] = qf[i][kk][e];
            } else {
              const bf16* qrow = sQ + ((s_mg * C::MTW + i) * 16 + (lane & 15)) * C::QSTR + (lane >> 4) * 8 + s_k0;
              LdsmX4(SmemU32(qrow + kk * 16), af[i][0], af[i][1], af[i][2], af[i][3]);
            }
          }
#pragma unroll
          for (int np = 0; np < C::NTW / 2; ++np) {
            uint32_t b0, b1, b2, b3;
            LdsmX4(SmemU32(krow + np * 16 * C::KSTR + kk * 16), b0, b1, b2, b3);
#pragma unroll
            for (int i = 0; i < C::MTW; ++i) {
              Mma(c[i][2 * np], af[i], b0, b1);
              Mma(c[i][2 * np + 1], af[i], b2, b3);
            }
          }
        }
#pragma unroll
        for (int i = 0; i < C::MTW; ++i)
#pragma unroll
          for (int n = 0; n < C::NTW; ++n) {
            const int nt = s_nh * C::NTW + n;
            float* srow = sS + (C::PIPE ? (j & 1) * C::S_SLICE : 0) +
                          (s_ks * C::M + (s_mg * C::MTW + i) * 16 + g) * C::SPAD + nt * 8 + 2 * t4;
            *reinterpret_cast<float2*>(srow) = make_float2(c[i][n][0], c[i][n][1]);
            *reinterpret_cast<float2*>(srow + 8 * C::SPAD) = make_float2(c[i][n][2], c[i][n][3]);
          }
      }
    };
    auto phase_softmax = [&](int j) {
      // ---- online softmax: TPR threads per row, TPT tokens each ------------------------
      {
        float sv[C::TPT];
        const int buf = C::PIPE ? (j & 1) : 0;
        const float* tS = sS + buf * C::S_SLICE;
        LoadF<C::TPT>(tS + sm_r * C::SPAD + sm_c, sv);
#pragma unroll
        for (int ks = 1; ks < C::KS; ++ks) {
          float t[C::TPT];
          LoadF<C::TPT>(tS + (ks * C::M + sm_r) * C::SPAD + sm_c, t);
#pragma unroll
          for (int i = 0; i < C::TPT; ++i) sv[i] += t[i];
        }
        const int tok = t0 + j * TN + sm_c;
        float mx = -INFINITY;
#pragma unroll
        for (int i = 0; i < C::TPT; ++i) {
          sv[i] = tok + i < sm_nvalid ? sv[i] * a.scale_log2 : -INFINITY;
          mx = fmaxf(mx, sv[i]);
        }
#pragma unroll
        for (int o = C::TPR / 2; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        const float m_new = fmaxf(m_run, mx);
        float alpha = 1.f, sum = 0.f;
        if (m_new != -INFINITY) {
          alpha = exp2f(m_run - m_new);
#pragma unroll
          for (int i = 0; i < C::TPT; ++i) {
            sv[i] = exp2f(sv[i] - m_new);
            sum += sv[i];
          }
        } else {
#pragma unroll
          for (int i = 0; i < C::TPT; ++i) sv[i] = 0.f;
        }
        // The row sum (and so the LSE) is taken in fp32; P V uses bf16 weights, whose
        // rounding (2^-9 relative, unbiased) averages out in the output.
#pragma unroll
        for (int o = C::TPR / 2; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
        l_run = l_run * alpha + sum;
        m_run = m_new;
        StoreBf16<C::TPT>(sP + buf * C::P_SLICE + sm_r * C::PSTR + sm_c, sv);
        if (sm_c == 0) {
          sA[buf * C::M + sm_r] = alpha;
          if (j == ntiles - 1) {
            sL[sm_r] = l_run;
            sM[sm_r] = m_run;
          }
        }
      }
    };
    auto phase_pv = [&](int j) {
      const int stage = (C::TMA ? it_base + j : j) % C::STAGES;
      const bf16* tK = sK + stage * TN * C::KSTR;
      const bf16* tV = C::SHARED ? tK : sV + stage * TN * C::VSTR;
      const int pbuf = C::PIPE ? (j & 1) : 0;
      (void)tK;
      // ---- O = alpha * O + P V ------------------------------------------------------------
#pragma unroll
      for (int mt = 0; mt < C::MTP; ++mt) {
        const int r0 = (p_mg * C::MTP + mt) * 16 + g;
        const float a0 = sA[pbuf * C::M + r0], a1 = sA[pbuf * C::M + r0 + 8];
        // (bulk-load instances) no rescale when no row of this m-tile got a new maximum,
        // the common case after the first tiles: saves NT_O * 4 multiplies per thread
        if (C::TMA && !__any_sync(0xffffffffu, a0 != 1.f || a1 != 1.f)) continue;
#pragma unroll
        for (int nt = 0; nt < C::NT_O; ++nt) {
          acc[mt][nt][0] *= a0;
          acc[mt][nt][1] *= a0;
          acc[mt][nt][2] *= a1;
          acc[mt][nt][3] *= a1;
        }
      }
#pragma unroll
      for (int kk = 0; kk < TN / 16; ++kk) {
        uint32_t pa[C::MTP][4];
#pragma unroll
        for (int mt = 0; mt < C::MTP; ++mt)
          LdsmX4(SmemU32(sP + pbuf * C::P_SLICE + ((p_mg * C::MTP + mt) * 16 + (lane & 15)) * C::PSTR + kk * 16 +
                         (lane >> 4) * 8),
                 pa[mt][0], pa[mt][1], pa[mt][2], pa[mt][3]);
        const bf16* vrow =
            tV + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * C::VSTR + p_cg * C::NCOL + (lane >> 4) * 8;
#pragma unroll
        for (int np = 0; np < C::NT_O / 2; ++np) {
          uint32_t b0, b1, b2, b3;
          LdsmX4T(SmemU32(vrow + np * 16), b0, b1, b2, b3);
#pragma unroll
          for (int mt = 0; mt < C::MTP; ++mt) {
            Mma(acc[mt][2 * np], pa[mt], b0, b1);
            Mma(acc[mt][2 * np + 1], pa[mt], b2, b3);
          }
        }
      }
    };

    auto wait_tile = [&](int j) {
      const int it = it_base + j;
      MbarWait(bar0 + 8 * (it % C::STAGES), static_cast<uint32_t>(it / C::STAGES) & 1u);
    };
    auto refill = [&](int jn) {  // warp 0: tile jn into the stage tile jn - STAGES used
      if (warp == 0 && jn < ntiles) {
        issue_tile(jn, next_row0);
        if (jn + 1 < ntiles) next_row0 = tile_row0(jn + 1);
      }
    };
    if constexpr (C::PIPE) {
      // One barrier per tile: interval j runs S(j+2), softmax(j+1) and P V(j), which touch
      // different buffers (S and P/alpha alternate by tile parity) and stages (j, j+2);
      // S(j+1) and softmax(j) completed in the interval before. After the barrier that
      // opens interval j every warp has finished P V(j-1), so its stage is refilled then.
      wait_tile(0);
      phase_s(0);
      if (1 < ntiles) {
        wait_tile(1);
        phase_s(1);
      }
      __syncthreads();  // S(0), S(1) complete
      phase_softmax(0);
      for (int j = 0; j < ntiles; ++j) {
        __syncthreads();  // softmax(j) and S(j+1) complete; P V(j-1) done everywhere
        refill(j + C::STAGES - 1);
        if (j + 2 < ntiles) {
          wait_tile(j + 2);
          phase_s(j + 2);
        }
        if (j + 1 < ntiles) phase_softmax(j + 1);
        phase_pv(j);
      }
      it_base += ntiles;
    } else if constexpr (C::TMA && C::OV) {
      // Overlapped with bulk loads: S(j+1) and P V(j) between the same two barriers,
      // softmax(j+1) after them; the stage of tile j-1 is refilled after the first one.
      wait_tile(0);
      phase_s(0);
      __syncthreads();
      phase_softmax(0);
      for (int j = 0; j < ntiles; ++j) {
        if (j + 1 < ntiles) wait_tile(j + 1);
        __syncthreads();  // softmax(j) wrote P and alpha and is done with S; P V(j-1) done everywhere
        refill(j + C::STAGES - 1);
        if (j + 1 < ntiles) phase_s(j + 1);
        phase_pv(j);
        __syncthreads();  // S(j+1) complete; P V(j) done with P and alpha
        if (j + 1 < ntiles) phase_softmax(j + 1);
      }
      it_base += ntiles;
    } else if constexpr (C::TMA) {
      // Wait for tile j's bytes | S(j) | barrier | softmax(j) | barrier | P V(j): two block
      // barriers per tile; warp 0 refills the stage that tile j-1 used right after the
      // first one (every warp has finished P V(j-1) by then).
      for (int j = 0; j < ntiles; ++j) {
        wait_tile(j);
        phase_s(j);
        __syncthreads();  // S(j) complete; P V(j-1) done everywhere: its stage, P and alpha are free
        refill(j + C::STAGES - 1);
        phase_softmax(j);
        __syncthreads();  // P and alpha written
        phase_pv(j);
      }
      it_base += ntiles;
    } else if constexpr (!C::OV) {
      // S(j) | softmax(j) | P V(j): three barriers per tile.
      for (int j = 0; j < ntiles; ++j) {
        CpAsyncWait<C::STAGES - 2>();
        __syncthreads();  // tile j landed for everyone; tile j-1's slot, S, P and alpha are free
        {
          const int jn = j + C::STAGES - 1;
          if (jn < ntiles) load_tile(jn, jn % C::STAGES);
          CpAsyncCommit();
        }
        phase_s(j);
        __syncthreads();
        phase_softmax(j);
        __syncthreads();
        phase_pv(j);
      }
    } else {
      // Overlapped: S(j+1) and P V(j) share one barrier interval, softmax(j+1) the next:
      // two barriers per tile, and the tensor-core work of two tiles between them.
      CpAsyncWait<C::STAGES - 2>();
      __syncthreads();  // tile 0 landed
      phase_s(0);
      __syncthreads();
      phase_softmax(0);
      for (int j = 0; j < ntiles; ++j) {
        CpAsyncWait<C::STAGES - 3>();
        __syncthreads();  // tile j+1 landed; softmax(j) wrote P and alpha; S is free; tile j-1's slot is free
        {
          const int jn = j + C::STAGES - 1;
          if (jn < ntiles) load_tile(jn, jn % C::STAGES);
          CpAsyncCommit();
        }
        if (j + 1 < ntiles) phase_s(j + 1);
        phase_pv(j);
        __syncthreads();  // S(j+1) complete; P V(j) done with P and alpha
        if (j + 1 < ntiles) phase_softmax(j + 1);
      }
    }
    CpAsyncWait<0>();

    // ---- epilogue: normalize, write the final row or this piece's partial -------------
    constexpr float kLn2 = 0.6931471805599453f;
#pragma unroll
    for (int mt = 0; mt < C::MTP; ++mt) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int rr = (p_mg * C::MTP + mt) * 16 + g + half * 8, r = mb * C::M + rr;
        if (r >= a.rows) continue;
        const float l = sL[rr], m = sM[rr];
        const float inv = l > 0.f ? 1.f / l : 0.f;
        const float lse = l > 0.f ? (m + log2f(l)) * kLn2 : -INFINITY;
        const int qi = r / a.group, h = kvh * a.group + r % a.group;
        const int64_t orow_in = static_cast<int64_t>(qi) * a.heads + h;
        const int col = p_cg * C::NCOL + 2 * t4;
        if (slot < 0) {
          const int64_t orow = static_cast<int64_t>(b) * a.q_len * a.heads + orow_in;
          StoreRow(a.out + orow * C::DV + col, acc[mt], half, inv);
          if (p_cg == 0 && t4 == 0) a.lse[orow] = lse;
        } else {
          const int64_t prow = static_cast<int64_t>(slot) * a.q_len * a.heads + orow_in;
          StoreRow(a.o_part + prow * C::DV + col, acc[mt], half, inv);
          if (p_cg == 0 && t4 == 0) a.lse_part[prow] = lse;
        }
      }
    }
  }
}
// Merges the pieces of split requests (one warp per output row); also writes the rows of
// empty requests (zeros, LSE -inf). Requests done in one piece were written directly.
__global__ void CombineKernel(int total_rows, int rows_per_req, int dv, const int* __restrict__ splits,
                              const int* __restrict__ slot_base, const float* __restrict__ o_part,
                              const float* __restrict__ lse_part, bf16* __restrict__ out, float* __restrict__ lse) {
  const int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (row >= total_rows) return;
  const int b = row / rows_per_req, within = row % rows_per_req;
  const int n = splits[b];
  if (n == 1) return;
  bf16* o = out + static_cast<int64_t>(row) * dv;
  float mx = -INFINITY;
  const int base = slot_base[b];
  for (int i = lane; i < n; i += 32) mx = fmaxf(mx, lse_part[static_cast<int64_t>(base + i) * rows_per_req + within]);
  mx = WarpMax(mx);
  if (n == 0 || mx == -INFINITY) {
    for (int d = lane * 2; d < dv; d += 64) *reinterpret_cast<__nv_bfloat162*>(o + d) = __floats2bfloat162_rn(0.f, 0.f);
    if (lane == 0) lse[row] = -INFINITY;
    return;
  }
  float sum = 0.f;
  for (int i = lane; i < n; i += 32) sum += expf(lse_part[static_cast<int64_t>(base + i) * rows_per_req + within] - mx);
  sum = WarpSum(sum);
  const float total = mx + logf(sum);
  for (int d = lane * 4; d < dv; d += 128) {
    float4 accv = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int i = 0; i < n; ++i) {
      const int64_t prow = static_cast<int64_t>(base + i) * rows_per_req + within;
      const float w = expf(lse_part[prow] - total);
      const float4 v = *reinterpret_cast<const float4*>(o_part + prow * dv + d);
      accv.x += w * v.x;
      accv.y += w * v.y;
      accv.z += w * v.z;
      accv.w += w * v.w;
    }
    __nv_bfloat162 lo = __floats2bfloat162_rn(accv.x, accv.y), hi = __floats2bfloat162_rn(accv.z, accv.w);
    uint2 packed;
    packed.x = *reinterpret_cast<uint32_t*>(&lo);
    packed.y = *reinterpret_cast<uint32_t*>(&hi);
    *reinterpret_cast<uint2*>(o + d) = packed;
  }
  if (lane == 0) lse[row] = total;
}

__global__ void FillBf16Kernel(bf16* dst, size_t n, uint64_t seed, float scale) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint64_t z = seed + 0x9e3779b97f4a7c15ull * (i + 1);  // splitmix64
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const float u = static_cast<float>(z >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    dst[i] = __float2bfloat16_rn((2.f * u - 1.f) * scale);
  }
}

// ---- kernel instances ---------------------------------------------------------------

//                   DQK  DV  MT NW ST SHARED SMG NH KS PMG QREG MINB
// 16 rows, 2 stages, 2 blocks per SM, Q in registers.
using MlaM16 = Cfg<576, 512, 1, 8, 2, true, 1, 2, 4, 1, true, 2>;
// 32 rows, one block per SM: 8 warps that each cover both m-tiles (every K and V
// fragment read once from shared memory; 72 Q registers), or 16 warps in two 16-row
// halves (more warps to hide latency; K and V fragments read once per half).
using MlaM32W8 = Cfg<576, 512, 2, 8, 4, true, 1, 2, 4, 1, true, 1>;
using MlaM32W16 = Cfg<576, 512, 2, 16, 4, true, 2, 2, 4, 2, true, 1>;
// 64 rows: 16 warps, 2 m-tiles per warp in S and P V, Q from shared memory; or 8 warps
// (the first kernel's layout: one m-tile per warp in S, all four in P V).
using MlaM64W16 = Cfg<576, 512, 4, 16, 2, true, 2, 2, 4, 2, false, 1>;
using MlaM64W8 = Cfg<576, 512, 4, 8, 3, true, 4, 1, 2, 1, false, 1>;
// The same with the overlapped tile schedule (S(j+1) next to P V(j), two barriers a tile).
using MlaM32W8Ov = Cfg<576, 512, 2, 8, 4, true, 1, 2, 4, 1, true, 1, true>;
using MlaM32W16Ov = Cfg<576, 512, 2, 16, 4, true, 2, 2, 4, 2, true, 1, true>;
using MlaM64W8Ov = Cfg<576, 512, 4, 8, 3, true, 4, 1, 2, 1, false, 1, true>;
// Bulk (TMA) tile loads issued by warp 0 and mbarrier waits (two block barriers a tile
// instead of three, no per-thread copy address arithmetic): the m32.w8 / m32.w16 /
// m64.w8 layouts; the Q staging buffer no longer overlaps the stages.
using MlaM32W8Tma = Cfg<576, 512, 2, 8, 4, true, 1, 2, 4, 1, true, 1, false, true>;
using MlaM32W16Tma = Cfg<576, 512, 2, 16, 4, true, 2, 2, 4, 2, true, 1, false, true>;
using MlaM64W8Tma = Cfg<576, 512, 4, 8, 3, true, 4, 1, 2, 1, false, 1, false, true>;
using MlaM32W8TmaOv = Cfg<576, 512, 2, 8, 4, true, 1, 2, 4, 1, true, 1, true, true>;
// 16 rows, 2 stages, 2 blocks per SM (the m16 layout; 105 KB of shared memory a block).
using MlaM16Tma = Cfg<576, 512, 1, 8, 2, true, 1, 2, 4, 1, true, 2, false, true>;
// One block barrier per tile (S, P, alpha double-buffered): the m32.w8 layout with 4 stages
// (Q staged in the S buffers; 196 KB), or warps split by m-tile in S (K fragments read
// twice, half the S buffers) with 5 stages (Q staged in a stage; 213 KB).
using MlaM32TmaP = Cfg<576, 512, 2, 8, 4, true, 1, 2, 4, 1, true, 1, false, true, true>;
using MlaM32TmaP5 = Cfg<576, 512, 2, 8, 5, true, 2, 2, 2, 1, true, 1, false, true, true>;
using GqaM16 = Cfg<128, 128, 1, 4, 4, false, 1, 2, 2, 1, false, 1>;
using GqaM32 = Cfg<128, 128, 2, 4, 4, false, 2, 1, 2, 1, false, 1>;
using GqaM64 = Cfg<128, 128, 4, 4, 4, false, 4, 1, 1, 1, false, 1>;

struct Instance {
  void (*kernel)(const KArgs);
  size_t smem;
  int threads;
  int mt;
  bool mla;
  const char* name;
};

template <class C>
Instance Make(const char* name) {
  return Instance{&DecodeKernel<C>, C::SMEM, C::THREADS, C::MT, C::DQK == 576, name};
}

bool IsMla(const Shape& s) { return s.mla; }

// Kernel instances, by index (a plan records the index it was made for).
constexpr int kNumInstances = 18;
const Instance& InstanceAt(int i) {
  static const Instance table[kNumInstances] = {
      Make<MlaM16>("mla576x512.m16"),         Make<MlaM32W8>("mla576x512.m32.w8"),
      Make<MlaM32W16>("mla576x512.m32.w16"),  Make<MlaM64W16>("mla576x512.m64.w16"),
      Make<MlaM64W8>("mla576x512.m64.w8"),    Make<GqaM16>("gqa128.m16"),
      Make<GqaM32>("gqa128.m32"),             Make<GqaM64>("gqa128.m64"),
      Make<MlaM32W8Ov>("mla576x512.m32.w8.ov"), Make<MlaM32W16Ov>("mla576x512.m32.w16.ov"),
      Make<MlaM64W8Ov>("mla576x512.m64.w8.ov"),
      Make<MlaM32W8Tma>("mla576x512.m32.tma"),  Make<MlaM32W16Tma>("mla576x512.m32.w16.tma"),
      Make<MlaM64W8Tma>("mla576x512.m64.tma"),    Make<MlaM32W8TmaOv>("mla576x512.m32.tma.ov"),
      Make<MlaM16Tma>("mla576x512.m16.tma"),      Make<MlaM32TmaP>("mla576x512.m32.tma.p"),
      Make<MlaM32TmaP5>("mla576x512.m32.tma.p5"),
  };
  return table[i];
}

int RowsOf(const Shape& s) { return s.q_len * (s.heads / s.kv_heads); }

// Picks the instance for a shape (-1: shape.kernel names no instance of its kind).
// MLA: 16-row blocks run 2 per SM (on an H100 the 2-stage, 2-blocks/SM kernel streamed at
// 80-95% of the copy bandwidth where a 3-stage, 1-block one gave 69-77%); 32 rows take
// the 8-warp 32-row kernel, more rows the 8-warp 64-row one (the fastest on an H200,
// bench/results/mla-decode-h200.md). shape.kernel forces an instance for any row count
// (a 16-row kernel then runs 32 rows as two blocks per split part, which read the same
// tiles, the second mostly from L2).
int Select(const Shape& s) {
  if (!s.kernel.empty()) {
    for (int i = 0; i < kNumInstances; ++i)
      if (InstanceAt(i).mla == s.mla && s.kernel == InstanceAt(i).name) return i;
    return -1;
  }
  const int r = RowsOf(s);
  if (IsMla(s)) return r <= 16 ? 0 : r <= 32 ? 1 : 4;
  return r <= 16 ? 5 : r <= 32 ? 6 : 7;
}

std::string Prepare(const Instance& inst, int* ctas_per_sm) {
  G2M_CK(cudaFuncSetAttribute(inst.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(inst.smem)));
  G2M_CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(ctas_per_sm, inst.kernel, inst.threads, inst.smem));
  if (*ctas_per_sm < 1) return "decode kernel " + std::string(inst.name) + " does not fit on this device";
  return "";
}

struct SegHost {
  int b, t0, t1, slot;
};

}  // namespace

std::string Supported(const Shape& s) {
  if (s.batch < 1 || s.q_len < 1 || s.heads < 1 || s.kv_heads < 1) return "batch, q_len, heads, kv_heads must be >= 1";
  if (s.heads % s.kv_heads != 0) return "heads must be a multiple of kv_heads";
  if (s.mla) {
    if (s.kv_heads != 1) return "MLA has one latent KV head";
    if (s.dqk != 576 || s.dv != 512)
      return "the CUDA MLA kernel is built for kv_lora_rank 512 + rope 64 (got " + std::to_string(s.dv) + " + " +
             std::to_string(s.dqk - s.dv) + ")";
  } else if (s.dqk != 128 || s.dv != 128) {
    return "the CUDA GQA kernel is built for head_dim 128";
  }
  if (s.q_len * (s.heads / s.kv_heads) > (1 << 20)) return "too many query rows";
  if (s.max_blocks > 0 && s.page_size % TN != 0) return "page_size must be a multiple of 32";
  if (Select(s) < 0) {
    std::string names;
    for (int i = 0; i < kNumInstances; ++i)
      if (InstanceAt(i).mla == s.mla) names += (names.empty() ? "" : ", ") + std::string(InstanceAt(i).name);
    return "no " + std::string(s.mla ? "MLA" : "GQA") + " decode kernel named '" + s.kernel + "' (" + names + ")";
  }
  return "";
}

std::string MakePlan(const Shape& s, const int32_t* seqlens, Plan* plan) {
  std::string err = Supported(s);
  if (!err.empty()) return err;
  DeviceInfo dev;
  err = GetDeviceInfo(&dev);
  if (!err.empty()) return err;
  const int index = Select(s);
  if (index < 0) return "no " + std::string(s.mla ? "MLA" : "GQA") + " decode kernel named '" + s.kernel + "'";
  const Instance& inst = InstanceAt(index);
  const int rows = RowsOf(s);
  int ctas = 0;
  err = Prepare(inst, &ctas);
  if (!err.empty()) return err;
  const int M = 16 * inst.mt;
  const int m_blocks = (rows + M - 1) / M;
  const int blocks_per_part = s.kv_heads * m_blocks;
  const int target_parts = std::max(1, dev.sm_count * ctas / blocks_per_part);

  // Cost model: a piece costs its tiles plus a fixed overhead (query load, pipeline
  // fill, epilogue, merge) of about kFixed tiles. At most one part per resident block
  // (a part more would run in a second wave and double the time), each given about
  // 1/P of the remaining cost; pieces are at least kMinTiles tiles, and the last part
  // takes whatever is left.
  constexpr int kFixed = 2, kMinTiles = 2;
  std::vector<int> tiles(s.batch);
  int64_t total = 0;
  for (int b = 0; b < s.batch; ++b) {
    if (seqlens[b] < 0) return "sequence lengths must be >= 0";
    tiles[b] = (seqlens[b] + TN - 1) / TN;
    if (tiles[b] > 0) total += tiles[b] + kFixed;
  }
  const int P = static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>(target_parts, total / (kFixed + kMinTiles))));
  std::vector<SegHost> segs;
  std::vector<int> part_off{0};
  int b = 0, pos = 0;
  for (int part = 0; part < P && b < s.batch; ++part) {
    int64_t remaining = 0;  // cost still unassigned
    for (int i = b; i < s.batch; ++i)
      if (tiles[i] > (i == b ? pos : 0)) remaining += tiles[i] - (i == b ? pos : 0) + kFixed;
    if (remaining == 0) break;
    const bool last = part == P - 1;
    // parts that start inside a request add a piece (kFixed) each: count them in
    const int64_t cap = (remaining + kFixed * (P - part - 1) + (P - part) - 1) / (P - part);
    int64_t used = 0;
    bool any = false;
    while (b < s.batch) {
      if (tiles[b] == 0) {
        ++b;
        pos = 0;
        continue;
      }
      const int rem = tiles[b] - pos;
      if (last || used + rem + kFixed <= cap) {  // the rest of this request fits
        segs.push_back({b, pos, tiles[b], 0});
        used += rem + kFixed;
        ++b;
        pos = 0;
        any = true;
        continue;
      }
      int64_t take = cap - used - kFixed;
      if (take < kMinTiles) {
        if (any) break;  // part full
        take = std::min<int64_t>(rem, kMinTiles);
      }
      if (rem - take < kMinTiles) take = rem;  // no tiny remainder
      segs.push_back({b, pos, pos + static_cast<int>(take), 0});
      used += take + kFixed;
      pos += static_cast<int>(take);
      if (pos >= tiles[b]) {
        ++b;
        pos = 0;
      }
      any = true;
      break;  // a request was cut: the part is full
    }
    if (any) part_off.push_back(static_cast<int>(segs.size()));
  }
  // Whatever a rounding left over goes to the last part (never a new one).
  while (b < s.batch) {
    if (tiles[b] > pos) segs.push_back({b, pos, tiles[b], 0});
    ++b;
    pos = 0;
  }
  if (part_off.size() == 1 && !segs.empty()) part_off.push_back(0);
  part_off.back() = static_cast<int>(segs.size());
  std::vector<int> splits(s.batch, 0), slot_base(s.batch, 0);
  for (const auto& sg : segs) splits[sg.b]++;
  int slots = 0, max_splits = 0, empty = 0;
  for (int i = 0; i < s.batch; ++i) {
    max_splits = std::max(max_splits, splits[i]);
    if (splits[i] == 0) ++empty;
    if (splits[i] > 1) {
      slot_base[i] = slots;
      slots += splits[i];
    }
  }
  std::vector<int> next(s.batch, 0);
  std::vector<int4> dsegs(segs.size());
  for (size_t i = 0; i < segs.size(); ++i) {
    const auto& sg = segs[i];
    const int slot = splits[sg.b] > 1 ? slot_base[sg.b] + next[sg.b]++ : -1;
    dsegs[i] = make_int4(sg.b, sg.t0 * TN, std::min(sg.t1 * TN, seqlens[sg.b]), slot);
  }

  Plan p;
  p.num_parts = static_cast<int>(part_off.size()) - 1;
  p.m_blocks = m_blocks;
  p.num_segments = static_cast<int>(segs.size());
  p.num_slots = slots;
  p.max_splits = max_splits;
  p.num_empty = empty;
  p.ctas_per_sm = ctas;
  p.rows_per_cta = M;
  p.sm_count = dev.sm_count;
  p.kernel = inst.name;
  p.instance = index;
  const size_t qh = static_cast<size_t>(s.q_len) * s.heads;
  // Allocates `bytes` on the device and copies `src` there (allocation only when src is null).
  auto upload = [&](void** dst, const void* src, size_t bytes) -> std::string {
    G2M_CK(cudaMalloc(dst, std::max<size_t>(bytes, 16)));
    if (bytes > 0 && src != nullptr) G2M_CK(cudaMemcpy(*dst, src, bytes, cudaMemcpyHostToDevice));
    return "";
  };
  std::string e;
  if ((e = upload(&p.d_part_offsets, part_off.data(), part_off.size() * sizeof(int))).empty() &&
      (e = upload(&p.d_segments, dsegs.data(), dsegs.size() * sizeof(int4))).empty() &&
      (e = upload(&p.d_splits, splits.data(), splits.size() * sizeof(int))).empty() &&
      (e = upload(&p.d_slot_base, slot_base.data(), slot_base.size() * sizeof(int))).empty() &&
      (e = upload(&p.d_seqlens, seqlens, s.batch * sizeof(int))).empty() &&
      (e = upload(&p.d_o_partial, nullptr, static_cast<size_t>(slots) * qh * s.dv * sizeof(float))).empty() &&
      (e = upload(&p.d_lse_partial, nullptr, static_cast<size_t>(slots) * qh * sizeof(float))).empty()) {
    *plan = p;
    return "";
  }
  FreePlan(&p);
  return e;
}

void FreePlan(Plan* p) {
  for (void** ptr : {&p->d_part_offsets, &p->d_segments, &p->d_splits, &p->d_slot_base, &p->d_seqlens,
                     &p->d_o_partial, &p->d_lse_partial}) {
    if (*ptr) cudaFree(*ptr);
    *ptr = nullptr;
  }
}

namespace {

std::string Enqueue(const Shape& s, const Plan& p, const Tensors& t, float scale, cudaStream_t stream) {
  if (p.instance < 0) return "decode plan is not initialized";
  const Instance& inst = InstanceAt(p.instance);
  const int rows = RowsOf(s);
  KArgs a{};
  a.qa = static_cast<const bf16*>(t.qa);
  a.qb = static_cast<const bf16*>(t.qb);
  a.da = s.mla ? s.dv : s.dqk;
  a.db = s.mla ? s.dqk - s.dv : 0;
  a.k = static_cast<const bf16*>(t.k);
  a.v = static_cast<const bf16*>(s.mla ? t.k : t.v);
  a.k_tok_stride = static_cast<int64_t>(s.kv_heads) * s.dqk;
  a.v_tok_stride = static_cast<int64_t>(s.kv_heads) * s.dv;
  a.k_head_off = s.mla ? 0 : s.dqk;
  a.v_head_off = s.mla ? 0 : s.dv;
  a.block_table = t.block_table;
  a.max_blocks = s.max_blocks;
  a.page_size = s.page_size;
  a.seq_stride = s.seq_stride;
  a.seqlens = static_cast<const int*>(p.d_seqlens);
  a.out = static_cast<bf16*>(t.out);
  a.lse = t.lse;
  a.o_part = static_cast<float*>(p.d_o_partial);
  a.lse_part = static_cast<float*>(p.d_lse_partial);
  a.part_offsets = static_cast<const int*>(p.d_part_offsets);
  a.segs = static_cast<const int4*>(p.d_segments);
  a.q_len = s.q_len;
  a.heads = s.heads;
  a.group = s.heads / s.kv_heads;
  a.rows = rows;
  a.m_blocks = p.m_blocks;
  a.scale_log2 = scale * 1.4426950408889634f;
  if (p.num_parts > 0) {
    dim3 grid(s.kv_heads * p.m_blocks, p.num_parts);
    G2M_LAUNCH(inst.kernel, grid, inst.threads, inst.smem, stream, a);
    G2M_CK(cudaGetLastError());
  }
  // Requests cut into pieces are merged, empty requests written, by the combine kernel.
  if (p.num_slots > 0 || p.num_empty > 0) {
    const int total_rows = s.batch * s.q_len * s.heads;
    const int threads = 256;
    const int blocks = (total_rows * 32 + threads - 1) / threads;
    G2M_LAUNCH(CombineKernel, blocks, threads, 0, stream, total_rows, s.q_len * s.heads, s.dv,
               static_cast<const int*>(p.d_splits), static_cast<const int*>(p.d_slot_base),
               static_cast<const float*>(p.d_o_partial), static_cast<const float*>(p.d_lse_partial), a.out, a.lse);
    G2M_CK(cudaGetLastError());
  }
  return "";
}

}  // namespace

std::string Run(const Shape& s, const Plan& p, const Tensors& t, float scale) {
  std::string e = Enqueue(s, p, t, scale, nullptr);
  if (!e.empty()) return e;
  G2M_CK(cudaDeviceSynchronize());
  return "";
}

std::string TimeRuns(const Shape& s, const Plan& p, const Tensors& t, float scale, int warmup, int iters,
                     std::vector<float>* ms) {
  static std::mutex mu;
  static void* scratch = nullptr;
  static size_t scratch_bytes = 0;
  std::lock_guard<std::mutex> lock(mu);
  if (scratch == nullptr) {
    DeviceInfo dev;
    std::string e = GetDeviceInfo(&dev);
    if (!e.empty()) return e;
    scratch_bytes = std::max<size_t>(dev.l2_bytes * 4, 64u << 20);
    G2M_CK(cudaMalloc(&scratch, scratch_bytes));
  }
  for (int i = 0; i < warmup; ++i) {
    std::string e = Enqueue(s, p, t, scale, nullptr);
    if (!e.empty()) return e;
  }
  cudaEvent_t e0, e1;
  G2M_CK(cudaEventCreate(&e0));
  G2M_CK(cudaEventCreate(&e1));
  ms->clear();
  std::string err;
  for (int i = 0; i < iters && err.empty(); ++i) {
    cudaMemsetAsync(scratch, i & 0xff, scratch_bytes, nullptr);
    cudaEventRecord(e0, nullptr);
    err = Enqueue(s, p, t, scale, nullptr);
    cudaEventRecord(e1, nullptr);
    cudaError_t ce = cudaEventSynchronize(e1);
    if (ce != cudaSuccess) {
      err = std::string("decode run: ") + cudaGetErrorString(ce);
      break;
    }
    float v = 0.f;
    cudaEventElapsedTime(&v, e0, e1);
    ms->push_back(v);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return err;
}

std::string GetDeviceInfo(DeviceInfo* info) {
  int dev = 0;
  G2M_CK(cudaGetDevice(&dev));
  cudaDeviceProp prop;
  G2M_CK(cudaGetDeviceProperties(&prop, dev));
  info->name = prop.name;
  info->sm_count = prop.multiProcessorCount;
  info->cc_major = prop.major;
  info->cc_minor = prop.minor;
  info->total_mem = prop.totalGlobalMem;
  info->l2_bytes = static_cast<size_t>(prop.l2CacheSize);
  G2M_CK(cudaRuntimeGetVersion(&info->runtime_version));
  G2M_CK(cudaDriverGetVersion(&info->driver_version));
  return "";
}

std::string Malloc(size_t bytes, void** ptr) {
  G2M_CK(cudaMalloc(ptr, std::max<size_t>(bytes, 1)));
  return "";
}
std::string Free(void* ptr) {
  G2M_CK(cudaFree(ptr));
  return "";
}
std::string CopyToDevice(void* dst, const void* src, size_t bytes) {
  G2M_CK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
  return "";
}
std::string CopyToHost(void* dst, const void* src, size_t bytes) {
  G2M_CK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
  return "";
}

std::string FillRandomBf16(void* dst, size_t n, uint64_t seed, float scale) {
  G2M_LAUNCH(FillBf16Kernel, 4096, 256, 0, nullptr, static_cast<bf16*>(dst), n, seed, scale);
  G2M_CK(cudaGetLastError());
  G2M_CK(cudaDeviceSynchronize());
  return "";
}

std::string CopyBandwidth(size_t bytes, int iters, double* gbps) {
  void *a = nullptr, *b = nullptr;
  G2M_CK(cudaMalloc(&a, bytes));
  cudaError_t ce = cudaMalloc(&b, bytes);
  if (ce != cudaSuccess) {
    cudaFree(a);
    return std::string("cudaMalloc: ") + cudaGetErrorString(ce);
  }
  cudaMemset(a, 1, bytes);
  cudaMemset(b, 2, bytes);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<float> ms;
  for (int i = 0; i < iters + 2; ++i) {
    cudaEventRecord(e0, nullptr);
    cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, nullptr);
    cudaEventRecord(e1, nullptr);
    cudaEventSynchronize(e1);
    float v = 0.f;
    cudaEventElapsedTime(&v, e0, e1);
    if (i >= 2) ms.push_back(v);
  }
  ce = cudaGetLastError();
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaFree(a);
  cudaFree(b);
  if (ce != cudaSuccess) return std::string("copy bandwidth: ") + cudaGetErrorString(ce);
  std::sort(ms.begin(), ms.end());
  const double med = ms[ms.size() / 2];
  *gbps = 2.0 * static_cast<double>(bytes) / (med * 1e-3) / 1e9;
  return "";
}

}  // namespace cudadec
}  // namespace g2m
