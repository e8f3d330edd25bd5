// Fused decode attention kernels (absorbed MLA and GQA) for Hopper, bf16 in, fp32 math.
//
// One thread block owns up to 64 query rows (heads x q_len of one request, or of one KV
// head for GQA) and walks a range of the request's KV sequence in tiles of 32 tokens:
//   S = Q K^T (tensor-core mma.sync, bf16 -> fp32), online softmax in the log2 domain,
//   O += P V (V is the first dv columns of the same shared-memory tile for MLA).
// Tiles stream through a 2-4 stage cp.async pipeline of 16-byte copies into padded
// shared-memory rows (row stride = 16 bytes mod 128, so ldmatrix is conflict-free); slots
// past the sequence length are zero-filled by the copy itself, so NaN garbage there
// never reaches the tensor cores. The grid is persistent: a host-built schedule cuts the
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

constexpr int TN = 32;  // tokens per tile

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

// Compile-time configuration of one kernel instance.
// S = Q K^T work split: warp w takes m-tile w / (NH * KS), n-half (w / KS) % NH (4 / NH
// n-tiles of 8 tokens) and k-slice w % KS of the head dimension; the KS partial sums meet
// in shared memory. Each Q fragment is read once per warp and K fragments are shared by
// the warp's n-tiles.
template <int DQK_, int DV_, int MT_, int NW_, int STAGES_, bool SHARED_, int NH_, int KS_, int MINB_ = 1>
struct Cfg {
  static constexpr int DQK = DQK_, DV = DV_, MT = MT_, NW = NW_, STAGES = STAGES_, NH = NH_, KS = KS_;
  static constexpr int MINB = MINB_;  // blocks per SM the register budget must allow
  static constexpr bool SHARED = SHARED_;
  static constexpr int M = 16 * MT;
  static constexpr int THREADS = NW * 32;
  static constexpr int QSTR = DQK + 8;  // bf16 elements per smem row (16-byte pad)
  static constexpr int KSTR = DQK + 8;
  static constexpr int VSTR = SHARED ? KSTR : DV + 8;
  static constexpr int SPAD = TN + 8;  // floats per S row
  static constexpr int PSTR = TN + 8;  // bf16 per P row
  static constexpr int NTW = (TN / 8) / NH;  // n-tiles per warp in S
  static constexpr int KSTEPS = DQK / 16 / KS;
  static constexpr int NCOL = DV / NW;            // output columns per warp
  static constexpr int NT_O = NCOL / 8;
  static constexpr int KCH = DQK / 8;  // 16-byte chunks per K row
  static constexpr int VCH = DV / 8;
  static constexpr size_t Q_BYTES = size_t(M) * QSTR * 2;
  static constexpr size_t K_BYTES = size_t(STAGES) * TN * KSTR * 2;
  static constexpr size_t V_BYTES = SHARED ? 0 : size_t(STAGES) * TN * VSTR * 2;
  static constexpr size_t S_BYTES = size_t(KS) * M * SPAD * 4;
  static constexpr size_t P_BYTES = size_t(M) * PSTR * 2;
  static constexpr size_t STAT_BYTES = size_t(3) * M * 4;
  static constexpr size_t SMEM = Q_BYTES + K_BYTES + V_BYTES + S_BYTES + P_BYTES + STAT_BYTES;
  static_assert(DQK % 16 == 0 && DV % 16 == 0, "dims must be multiples of 16");
  static_assert((DQK / 16) % KS == 0, "k-steps must split evenly");
  static_assert(MT * NH * KS == NW, "S work items must match the warps");
  static_assert(NTW % 2 == 0, "n-tiles per warp come in pairs (ldmatrix.x4)");
  static_assert(DV % NW == 0 && NT_O % 2 == 0, "output columns per warp must be a multiple of 16");
  static_assert(DV <= DQK, "values are a prefix of the key row (MLA) or the same size (GQA)");
};

template <class C>
__global__ void __launch_bounds__(C::THREADS, C::MINB) DecodeKernel(const KArgs a) {
  G2M_DYN_SMEM(smem);
  bf16* sQ = reinterpret_cast<bf16*>(smem);
  bf16* sK = reinterpret_cast<bf16*>(smem + C::Q_BYTES);
  bf16* sV = C::SHARED ? sK : reinterpret_cast<bf16*>(smem + C::Q_BYTES + C::K_BYTES);
  float* sS = reinterpret_cast<float*>(smem + C::Q_BYTES + C::K_BYTES + C::V_BYTES);
  bf16* sP = reinterpret_cast<bf16*>(smem + C::Q_BYTES + C::K_BYTES + C::V_BYTES + C::S_BYTES);
  float* sM = reinterpret_cast<float*>(smem + C::Q_BYTES + C::K_BYTES + C::V_BYTES + C::S_BYTES + C::P_BYTES);
  float* sL = sM + C::M;
  float* sA = sL + C::M;

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const int kvh = blockIdx.x / a.m_blocks, mb = blockIdx.x % a.m_blocks;
  const int part = blockIdx.y;
  const int seg_begin = a.part_offsets[part], seg_end = a.part_offsets[part + 1];
  const bf16* kbase = a.k + kvh * a.k_head_off;
  const bf16* vbase = C::SHARED ? kbase : a.v + kvh * a.v_head_off;

  for (int si = seg_begin; si < seg_end; ++si) {
    const int4 sg = a.segs[si];
    const int b = sg.x, t0 = sg.y, t1 = sg.z, slot = sg.w;
    const int seqlen = a.seqlens[b];
    const int ntiles = (t1 - t0 + TN - 1) / TN;
    __syncthreads();  // the previous segment is done with shared memory

    // Query rows of this block -> sQ (rows past the last are zero).
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
    for (int i = tid; i < C::M; i += C::THREADS) {
      sM[i] = -INFINITY;
      sL[i] = 0.f;
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
      const uint32_t kdst = SmemU32(sK + stage * TN * C::KSTR);
#pragma unroll 4
      for (int c = tid; c < TN * C::KCH; c += C::THREADS) {
        const int i = c / C::KCH, ch = c % C::KCH;
        const bool ok = tok0 + i < seqlen;
        const bf16* src = ok ? kbase + (row0 + i) * a.k_tok_stride + ch * 8 : kbase;
        CpAsync16(kdst + (i * C::KSTR + ch * 8) * 2, src, ok ? 16 : 0);
      }
      if (!C::SHARED) {
        const uint32_t vdst = SmemU32(sV + stage * TN * C::VSTR);
#pragma unroll 4
        for (int c = tid; c < TN * C::VCH; c += C::THREADS) {
          const int i = c / C::VCH, ch = c % C::VCH;
          const bool ok = tok0 + i < seqlen;
          const bf16* src = ok ? vbase + (row0 + i) * a.v_tok_stride + ch * 8 : vbase;
          CpAsync16(vdst + (i * C::VSTR + ch * 8) * 2, src, ok ? 16 : 0);
        }
      }
    };

    float acc[C::MT][C::NT_O][4];
#pragma unroll
    for (int mt = 0; mt < C::MT; ++mt)
#pragma unroll
      for (int nt = 0; nt < C::NT_O; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.f;

#pragma unroll
    for (int s = 0; s < C::STAGES - 1; ++s) {
      if (s < ntiles) load_tile(s, s);
      CpAsyncCommit();
    }

    for (int j = 0; j < ntiles; ++j) {
      CpAsyncWait<C::STAGES - 2>();
      __syncthreads();  // tile j landed for everyone; tile j-1's slot is free
      {
        const int jn = j + C::STAGES - 1;
        if (jn < ntiles) load_tile(jn, jn % C::STAGES);
        CpAsyncCommit();
      }
      const int stage = j % C::STAGES;
      const bf16* tK = sK + stage * TN * C::KSTR;
      const bf16* tV = C::SHARED ? tK : sV + stage * TN * C::VSTR;

      // ---- S = Q K^T over this tile -------------------------------------------------
      {
        const int mt = warp / (C::NH * C::KS);
        const int nh = (warp / C::KS) % C::NH;
        const int ks = warp % C::KS;
        float c[C::NTW][4];
#pragma unroll
        for (int j = 0; j < C::NTW; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) c[j][e] = 0.f;
        const int k0 = ks * C::KSTEPS * 16;
        const bf16* qrow = sQ + (mt * 16 + (lane & 15)) * C::QSTR + (lane >> 4) * 8 + k0;
        // x4 B load for n-tiles (2np, 2np+1) of this warp at one k-step: lanes 0-15 address
        // the first n-tile's tokens (cols +0 / +8), lanes 16-31 the second's.
        const bf16* krow =
            tK + ((nh * C::NTW + (lane >> 4)) * 8 + (lane & 7)) * C::KSTR + ((lane >> 3) & 1) * 8 + k0;
#pragma unroll
        for (int kk = 0; kk < C::KSTEPS; ++kk) {
          uint32_t a[4];
          LdsmX4(SmemU32(qrow + kk * 16), a[0], a[1], a[2], a[3]);
#pragma unroll
          for (int np = 0; np < C::NTW / 2; ++np) {
            uint32_t b0, b1, b2, b3;
            LdsmX4(SmemU32(krow + np * 16 * C::KSTR + kk * 16), b0, b1, b2, b3);
            Mma(c[2 * np], a, b0, b1);
            Mma(c[2 * np + 1], a, b2, b3);
          }
        }
#pragma unroll
        for (int j = 0; j < C::NTW; ++j) {
          const int nt = nh * C::NTW + j;
          float* srow = sS + (ks * C::M + mt * 16 + g) * C::SPAD + nt * 8 + 2 * t4;
          *reinterpret_cast<float2*>(srow) = make_float2(c[j][0], c[j][1]);
          *reinterpret_cast<float2*>(srow + 8 * C::SPAD) = make_float2(c[j][2], c[j][3]);
        }
      }
      __syncthreads();

      // ---- online softmax: one warp per row, one lane per token ------------------------
      const int tok = t0 + j * TN + lane;
      for (int rr = warp; rr < C::M; rr += C::NW) {
        float s = 0.f;
#pragma unroll
        for (int ks = 0; ks < C::KS; ++ks) s += sS[(ks * C::M + rr) * C::SPAD + lane];
        s *= a.scale_log2;
        const int r = mb * C::M + rr;
        const int nvalid = r < a.rows ? seqlen - a.q_len + 1 + r / a.group : 0;
        if (tok >= nvalid) s = -INFINITY;
        const float m_old = sM[rr];
        const float m_new = fmaxf(m_old, WarpMax(s));
        float p = 0.f, alpha = 1.f;
        if (m_new != -INFINITY) {
          p = exp2f(s - m_new);
          alpha = exp2f(m_old - m_new);
        }
        // The row sum (and so the LSE) is taken in fp32; P V uses bf16 weights, whose
        // rounding (2^-9 relative, unbiased) averages out in the output.
        const float sum = WarpSum(p);
        sP[rr * C::PSTR + lane] = __float2bfloat16_rn(p);
        if (lane == 0) {
          sL[rr] = sL[rr] * alpha + sum;
          sM[rr] = m_new;
          sA[rr] = alpha;
        }
      }
      __syncthreads();

      // ---- O = alpha * O + P V ------------------------------------------------------------
#pragma unroll
      for (int mt = 0; mt < C::MT; ++mt) {
        const float a0 = sA[mt * 16 + g], a1 = sA[mt * 16 + g + 8];
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
        uint32_t pa[C::MT][4];
#pragma unroll
        for (int mt = 0; mt < C::MT; ++mt)
          LdsmX4(SmemU32(sP + (mt * 16 + (lane & 15)) * C::PSTR + kk * 16 + (lane >> 4) * 8), pa[mt][0], pa[mt][1],
                 pa[mt][2], pa[mt][3]);
        const bf16* vrow =
            tV + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * C::VSTR + warp * C::NCOL + (lane >> 4) * 8;
#pragma unroll
        for (int np = 0; np < C::NT_O / 2; ++np) {
          uint32_t b0, b1, b2, b3;
          LdsmX4T(SmemU32(vrow + np * 16), b0, b1, b2, b3);
#pragma unroll
          for (int mt = 0; mt < C::MT; ++mt) {
            Mma(acc[mt][2 * np], pa[mt], b0, b1);
            Mma(acc[mt][2 * np + 1], pa[mt], b2, b3);
          }
        }
      }
    }
    CpAsyncWait<0>();

    // ---- epilogue: normalize, write the final row or this piece's partial -------------
    constexpr float kLn2 = 0.6931471805599453f;
#pragma unroll
    for (int mt = 0; mt < C::MT; ++mt) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int rr = mt * 16 + g + half * 8, r = mb * C::M + rr;
        if (r >= a.rows) continue;
        const float l = sL[rr], m = sM[rr];
        const float inv = l > 0.f ? 1.f / l : 0.f;
        const float lse = l > 0.f ? (m + log2f(l)) * kLn2 : -INFINITY;
        const int qi = r / a.group, h = kvh * a.group + r % a.group;
        const int64_t orow_in = static_cast<int64_t>(qi) * a.heads + h;
        const int col = warp * C::NCOL + 2 * t4;
        if (slot < 0) {
          const int64_t orow = static_cast<int64_t>(b) * a.q_len * a.heads + orow_in;
          bf16* o = a.out + orow * C::DV + col;
#pragma unroll
          for (int nt = 0; nt < C::NT_O; ++nt)
            *reinterpret_cast<__nv_bfloat162*>(o + nt * 8) =
                __floats2bfloat162_rn(acc[mt][nt][half * 2] * inv, acc[mt][nt][half * 2 + 1] * inv);
          if (warp == 0 && t4 == 0) a.lse[orow] = lse;
        } else {
          const int64_t prow = static_cast<int64_t>(slot) * a.q_len * a.heads + orow_in;
          float* o = a.o_part + prow * C::DV + col;
#pragma unroll
          for (int nt = 0; nt < C::NT_O; ++nt)
            *reinterpret_cast<float2*>(o + nt * 8) =
                make_float2(acc[mt][nt][half * 2] * inv, acc[mt][nt][half * 2 + 1] * inv);
          if (warp == 0 && t4 == 0) a.lse_part[prow] = lse;
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

//                 DQK  DV  MT NW STAGES SHARED NH KS
using MlaM16 = Cfg<576, 512, 1, 8, 3, true, 2, 4>;
using MlaM32 = Cfg<576, 512, 2, 8, 3, true, 1, 4>;
using MlaM64 = Cfg<576, 512, 4, 8, 3, true, 1, 2>;
using MlaM16S2 = Cfg<576, 512, 1, 8, 2, true, 2, 4, 2>;  // 2 stages, 2 blocks/SM (GQA2MLA_MLA_STAGES=2)
using MlaM16S4 = Cfg<576, 512, 1, 8, 4, true, 2, 4>;  // 4-stage variants (GQA2MLA_MLA_STAGES=4)
using MlaM32S4 = Cfg<576, 512, 2, 8, 4, true, 1, 4>;
using GqaM16 = Cfg<128, 128, 1, 4, 4, false, 2, 2>;
using GqaM32 = Cfg<128, 128, 2, 4, 4, false, 1, 2>;
using GqaM64 = Cfg<128, 128, 4, 4, 4, false, 1, 1>;

struct Instance {
  void (*kernel)(const KArgs);
  size_t smem;
  int threads;
  int mt;
  const char* name;
};

template <class C>
Instance Make(const char* name) {
  return Instance{&DecodeKernel<C>, C::SMEM, C::THREADS, C::MT, name};
}

bool IsMla(const Shape& s) { return s.mla; }

// Kernel instances, by index (a plan records the index it was made for).
const Instance& InstanceAt(int i) {
  static const Instance table[] = {
      Make<MlaM16>("mla576x512.m16"),      Make<MlaM32>("mla576x512.m32"),
      Make<MlaM64>("mla576x512.m64"),      Make<MlaM16S4>("mla576x512.m16.s4"),
      Make<MlaM32S4>("mla576x512.m32.s4"), Make<GqaM16>("gqa128.m16"),
      Make<GqaM32>("gqa128.m32"),          Make<GqaM64>("gqa128.m64"),
      Make<MlaM16S2>("mla576x512.m16.s2"),
  };
  return table[i];
}

int RowsOf(const Shape& s) { return s.q_len * (s.heads / s.kv_heads); }

// Picks the instance for a shape. 16-row MLA blocks default to the 2-stage pipeline with
// 2 blocks per SM (on an H100 it streamed at 80-95% of the copy bandwidth where the
// 3-stage, 1-block version gave 69-77%: bench/results/mla-decode-h100.md). Benchmark
// knob GQA2MLA_MLA_STAGES: 3 or 4 selects the 1-block 3/4-stage pipelines instead.
int Select(const Shape& s) {
  const int r = RowsOf(s);
  const int mt = r <= 16 ? 1 : r <= 32 ? 2 : 4;
  if (IsMla(s)) {
    const char* st = std::getenv("GQA2MLA_MLA_STAGES");
    const int stages = st != nullptr ? std::atoi(st) : 0;
    if (stages == 4 && mt <= 2) return mt == 1 ? 3 : 4;
    if (stages == 3 && mt == 1) return 0;
    if (mt == 1) return 8;
    return mt == 2 ? 1 : 2;
  }
  return mt == 1 ? 5 : mt == 2 ? 6 : 7;
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
  return "";
}

std::string MakePlan(const Shape& s, const int32_t* seqlens, Plan* plan) {
  std::string err = Supported(s);
  if (!err.empty()) return err;
  DeviceInfo dev;
  err = GetDeviceInfo(&dev);
  if (!err.empty()) return err;
  const int index = Select(s);
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
