// CPU emulation of the pieces of CUDA that native/cuda/decode_attn.cu uses, so the same
// kernel source can be run and checked on a machine without a GPU (development aid; not
// part of the addon). Every thread of a block is an OS thread; __syncthreads is a block
// barrier; warp primitives (ldmatrix, mma.sync m16n8k16 bf16, shfl) exchange operands
// through a per-warp buffer between warp barriers and follow the PTX ISA fragment
// layouts. cp.async copies run either at issue ("early") or at the wait that retires
// their group ("late"), the two extremes of real timing, so slot-reuse races show up.
// Bulk copies (cp.async.bulk ... mbarrier::complete_tx) and mbarriers (init, arrive with
// expect_tx, try_wait.parity) follow the PTX semantics: a phase completes when its pending
// arrivals and transaction bytes both reach zero, then the phase bit flips and the
// arrival count resets; try_wait.parity(p) succeeds once the phase of parity p is over
// (current phase bit != p). Early: a bulk copy lands (and counts its bytes) at issue, so a
// copy issued into a stage still being read corrupts it. Late: it lands only when a thread
// waits on its barrier and the phase cannot complete otherwise, so a read that does not
// wait for the right phase sees stale data. Waits that never finish (a parity or count
// bug that would hang the GPU) abort after 30 s; copies still in flight when a block
// exits, misaligned copies, generic writes over a barrier's word and a bulk copy into
// bytes that an ldmatrix read not ordered before it by a block barrier (write-after-read
// race, see Block::read_gen) abort too.
#pragma once
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#ifndef __restrict__
#define __restrict__
#endif

struct alignas(16) uint4 { uint32_t x, y, z, w; };
struct alignas(8) uint2 { uint32_t x, y; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
inline uint4 make_uint4(uint32_t x, uint32_t y, uint32_t z, uint32_t w) { return {x, y, z, w}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(uint32_t x, uint32_t y) { return {x, y}; }
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};

struct __nv_bfloat16 {
  uint16_t bits;
};
struct alignas(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return {static_cast<uint16_t>((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return {static_cast<uint16_t>(u >> 16)};
}
inline float __bfloat162float(__nv_bfloat16 b) {
  uint32_t u = static_cast<uint32_t>(b.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return {__float2bfloat16_rn(a), __float2bfloat16_rn(b)}; }

namespace g2m_emu {

class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void Wait() {
    std::unique_lock<std::mutex> lk(m_);
    const int gen = gen_;
    if (++count_ == n_) {
      count_ = 0;
      ++gen_;
      cv_.notify_all();
    } else {
      cv_.wait(lk, [&] { return gen_ != gen; });
    }
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int n_, count_ = 0, gen_ = 0;
};

struct WarpX {
  uint32_t u[32][8];
  float f[32][4];
  float v[32];
};

struct Mbar {
  int count = 0;     // arrivals per phase
  int pending = 0;   // arrivals still missing in the current phase
  long long tx = 0;  // transaction bytes still expected in the current phase
  int phase = 0;     // current phase bit
  long long completed = 0;
};

struct BulkCopy {
  uint32_t dst;
  const void* src;
  uint32_t bytes;
  uint32_t bar;
};

struct Block {
  std::vector<unsigned char> smem;
  std::unique_ptr<Barrier> block;
  std::vector<std::unique_ptr<Barrier>> warp;
  std::vector<WarpX> x;
  std::mutex mb_mu;
  std::condition_variable mb_cv;
  std::vector<std::pair<uint32_t, Mbar>> bars;
  std::vector<BulkCopy> in_flight;  // late bulk copies not yet landed
  // Race check for bulk copies (write-after-read): per 16-byte chunk of shared memory, the
  // block-barrier generation of the latest ldmatrix read since the chunk was last written
  // by a bulk copy (-1: none). A copy issued by a thread that has passed G block barriers
  // may only overwrite chunks last read before barrier G (generation < G); a read in
  // generation >= G is not ordered before the copy and could see it land mid-read.
  // (Assumes stages are released by block barriers, as the bulk-load kernels do.)
  std::unique_ptr<std::atomic<int>[]> read_gen;
};

struct Copy {
  uint32_t dst;
  const void* src;
  int bytes;
};

struct ThreadState {
  Block* blk = nullptr;
  int gen = 0;  // block barriers passed
  std::vector<std::vector<Copy>> groups;  // committed, oldest first
  std::vector<Copy> open;
};

inline thread_local ThreadState tls;
inline thread_local dim3 tl_thread, tl_block;
inline dim3 g_block_dim, g_grid_dim;
inline bool g_late_copies = false;  // false: copy at issue; true: copy at the retiring wait
inline std::atomic<long> g_mma_count{0};

inline unsigned char* BlockSmem() { return tls.blk->smem.data(); }
inline int Lane() { return static_cast<int>(tl_thread.x) & 31; }
inline int WarpId() { return static_cast<int>(tl_thread.x) >> 5; }
inline WarpX& X() { return tls.blk->x[WarpId()]; }
inline void WarpSync() { tls.blk->warp[WarpId()]->Wait(); }

inline void DoCopy(const Copy& c) {
  if (c.bytes > 0)
    std::memcpy(tls.blk->smem.data() + c.dst, c.src, c.bytes);
  if (c.bytes < 16) std::memset(tls.blk->smem.data() + c.dst + c.bytes, 0, 16 - c.bytes);
}

template <class K, class... A>
void Launch(K kernel, dim3 grid, dim3 block, size_t smem, A... args) {
  g_block_dim = block;
  g_grid_dim = grid;
  const int nt = static_cast<int>(block.x);
  for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      Block b;
      b.smem.assign(smem + 16, 0xff);  // garbage (bf16 0xffff is NaN) until written
      b.read_gen.reset(new std::atomic<int>[b.smem.size() / 16 + 1]);
      for (size_t i = 0; i <= b.smem.size() / 16; ++i) b.read_gen[i].store(-1);
      b.block = std::make_unique<Barrier>(nt);
      for (int w = 0; w < (nt + 31) / 32; ++w) b.warp.push_back(std::make_unique<Barrier>(std::min(32, nt - 32 * w)));
      b.x.resize((nt + 31) / 32);
      std::vector<std::thread> th;
      for (int t = 0; t < nt; ++t)
        th.emplace_back([&, t] {
          tl_thread = dim3(t);
          tl_block = dim3(bx, by);
          tls = ThreadState{};
          tls.blk = &b;
          kernel(args...);
          if (!tls.open.empty() || !tls.groups.empty()) {
            // copies never waited for: a real kernel could exit with them in flight; apply
            for (auto& g : tls.groups)
              for (auto& c : g) DoCopy(c);
            for (auto& c : tls.open) DoCopy(c);
          }
        });
      for (auto& x : th) x.join();
      if (!b.in_flight.empty()) {
        std::fprintf(stderr, "block (%u,%u) exited with %zu bulk copies in flight\n", bx, by, b.in_flight.size());
        std::abort();
      }
    }
}

}  // namespace g2m_emu

#define threadIdx (::g2m_emu::tl_thread)
#define blockIdx (::g2m_emu::tl_block)
#define blockDim (::g2m_emu::g_block_dim)
#define gridDim (::g2m_emu::g_grid_dim)

inline void __syncthreads() {
  g2m_emu::tls.blk->block->Wait();
  ++g2m_emu::tls.gen;
}

inline float __shfl_xor_sync(unsigned, float v, int o) {
  auto& x = g2m_emu::X();
  const int l = g2m_emu::Lane();
  x.v[l] = v;
  g2m_emu::WarpSync();
  const float r = x.v[l ^ o];
  g2m_emu::WarpSync();
  return r;
}

inline bool __any_sync(unsigned, bool pred) {
  auto& x = g2m_emu::X();
  const int l = g2m_emu::Lane();
  x.v[l] = pred ? 1.f : 0.f;
  g2m_emu::WarpSync();
  bool any = false;
  for (int i = 0; i < 32; ++i) any = any || x.v[i] != 0.f;
  g2m_emu::WarpSync();
  return any;
}

inline uint32_t SmemU32(const void* p) {
  return static_cast<uint32_t>(static_cast<const unsigned char*>(p) - g2m_emu::BlockSmem());
}

inline uint16_t SmemHalf(uint32_t addr) {
  uint16_t v;
  std::memcpy(&v, g2m_emu::BlockSmem() + addr, 2);
  return v;
}

// ldmatrix .x4 (optionally .trans): lanes 8j..8j+7 give the row addresses of matrix j.
inline void LdsmImpl(uint32_t addr, uint32_t* r, bool trans) {
  auto& x = g2m_emu::X();
  const int l = g2m_emu::Lane();
  if (addr % 16 != 0) {
    std::fprintf(stderr, "ldmatrix: unaligned row address %u\n", addr);
    std::abort();
  }
  x.u[l][0] = addr;
  {
    std::atomic<int>& rg = g2m_emu::tls.blk->read_gen[addr / 16];
    int prev = rg.load();
    while (prev < g2m_emu::tls.gen && !rg.compare_exchange_weak(prev, g2m_emu::tls.gen)) {
    }
  }
  g2m_emu::WarpSync();
  for (int j = 0; j < 4; ++j) {
    uint16_t e0, e1;
    if (!trans) {
      const uint32_t row = x.u[8 * j + l / 4][0];
      e0 = SmemHalf(row + 2 * (2 * (l % 4)));
      e1 = SmemHalf(row + 2 * (2 * (l % 4) + 1));
    } else {
      e0 = SmemHalf(x.u[8 * j + 2 * (l % 4)][0] + 2 * (l / 4));
      e1 = SmemHalf(x.u[8 * j + 2 * (l % 4) + 1][0] + 2 * (l / 4));
    }
    r[j] = static_cast<uint32_t>(e0) | (static_cast<uint32_t>(e1) << 16);
  }
  g2m_emu::WarpSync();
}
inline void LdsmX4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
  uint32_t r[4];
  LdsmImpl(addr, r, false);
  r0 = r[0], r1 = r[1], r2 = r[2], r3 = r[3];
}
inline void LdsmX4T(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
  uint32_t r[4];
  LdsmImpl(addr, r, true);
  r0 = r[0], r1 = r[1], r2 = r[2], r3 = r[3];
}

inline float Lo(uint32_t u) { return __bfloat162float({static_cast<uint16_t>(u & 0xffff)}); }
inline float Hi(uint32_t u) { return __bfloat162float({static_cast<uint16_t>(u >> 16)}); }

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, PTX ISA fragment layouts.
inline void Mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  auto& x = g2m_emu::X();
  const int l = g2m_emu::Lane();
  for (int i = 0; i < 4; ++i) x.u[l][i] = a[i];
  x.u[l][4] = b0;
  x.u[l][5] = b1;
  for (int i = 0; i < 4; ++i) x.f[l][i] = d[i];
  g2m_emu::WarpSync();
  float A[16][16], B[16][8];
  for (int t = 0; t < 32; ++t) {
    const int g = t / 4, q = t % 4;
    A[g][2 * q] = Lo(x.u[t][0]);
    A[g][2 * q + 1] = Hi(x.u[t][0]);
    A[g + 8][2 * q] = Lo(x.u[t][1]);
    A[g + 8][2 * q + 1] = Hi(x.u[t][1]);
    A[g][2 * q + 8] = Lo(x.u[t][2]);
    A[g][2 * q + 9] = Hi(x.u[t][2]);
    A[g + 8][2 * q + 8] = Lo(x.u[t][3]);
    A[g + 8][2 * q + 9] = Hi(x.u[t][3]);
    B[2 * q][g] = Lo(x.u[t][4]);
    B[2 * q + 1][g] = Hi(x.u[t][4]);
    B[2 * q + 8][g] = Lo(x.u[t][5]);
    B[2 * q + 9][g] = Hi(x.u[t][5]);
  }
  const int g = l / 4, q = l % 4;
  const int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * q, 2 * q + 1, 2 * q, 2 * q + 1};
  float out[4];
  for (int i = 0; i < 4; ++i) {
    float acc = x.f[l][i];
    for (int k = 0; k < 16; ++k) acc += A[rows[i]][k] * B[k][cols[i]];
    out[i] = acc;
  }
  g2m_emu::WarpSync();
  for (int i = 0; i < 4; ++i) d[i] = out[i];
  if (l == 0) ++g2m_emu::g_mma_count;
}

inline void CpAsync16(uint32_t dst, const void* src, int src_bytes) {
  if (dst % 16 != 0) {
    std::fprintf(stderr, "cp.async: unaligned shared destination %u\n", dst);
    std::abort();
  }
  g2m_emu::Copy c{dst, src, src_bytes};
  if (g2m_emu::g_late_copies)
    g2m_emu::tls.open.push_back(c);
  else
    g2m_emu::DoCopy(c);
}
inline void CpAsyncCommit() {
  g2m_emu::tls.groups.push_back(std::move(g2m_emu::tls.open));
  g2m_emu::tls.open.clear();
}
template <int N>
inline void CpAsyncWait() {
  auto& gs = g2m_emu::tls.groups;
  while (static_cast<int>(gs.size()) > N) {
    for (auto& c : gs.front()) g2m_emu::DoCopy(c);
    gs.erase(gs.begin());
  }
}

// ---- mbarriers and bulk copies ------------------------------------------------------------
namespace g2m_emu {
constexpr uint64_t kMbarMagic = 0x6d62617242415221ull;  // written over a barrier's word at init

[[noreturn]] inline void EmuFail(const char* what, uint32_t addr) {
  std::fprintf(stderr, "emulated %s failed at shared address %u (thread %u, block %u,%u)\n", what, addr, tl_thread.x,
               tl_block.x, tl_block.y);
  std::abort();
}

// The barrier at `addr` (lock held); checks that nothing overwrote its word.
inline Mbar& BarAt(Block& b, uint32_t addr) {
  uint64_t word;
  std::memcpy(&word, b.smem.data() + addr, 8);
  for (auto& e : b.bars)
    if (e.first == addr) {
      if (word != kMbarMagic) EmuFail("mbarrier (its word was overwritten)", addr);
      return e.second;
    }
  EmuFail("mbarrier (not initialized)", addr);
}

// Counts `bytes` of completed transactions (and `arrivals` arrivals) on a barrier (lock held).
inline void BarUpdate(Block& b, uint32_t addr, long long expect, long long done, int arrivals) {
  Mbar& m = BarAt(b, addr);
  m.tx += expect - done;
  m.pending -= arrivals;
  if (m.pending < 0) EmuFail("mbarrier arrive (more arrivals than the count)", addr);
  if (m.pending == 0 && m.tx == 0) {
    m.phase ^= 1;
    m.pending = m.count;
    ++m.completed;
    b.mb_cv.notify_all();
  } else if (m.pending == 0 && m.tx < 0) {
    EmuFail("mbarrier (more transaction bytes completed than expected)", addr);
  }
}

inline void LandBulk(Block& b, const BulkCopy& c) {
  std::memcpy(b.smem.data() + c.dst, c.src, c.bytes);
  for (uint32_t ch = c.dst / 16; ch < (c.dst + c.bytes) / 16; ++ch) b.read_gen[ch].store(-1);
  BarUpdate(b, c.bar, 0, c.bytes, 0);
}
}  // namespace g2m_emu

inline void __syncwarp(unsigned = 0xffffffffu) { g2m_emu::WarpSync(); }

inline void MbarInit(uint32_t bar, int count) {
  auto& b = *g2m_emu::tls.blk;
  std::lock_guard<std::mutex> lk(b.mb_mu);
  if (bar % 8 != 0 || bar + 8 > b.smem.size()) g2m_emu::EmuFail("mbarrier.init (alignment or range)", bar);
  std::memcpy(b.smem.data() + bar, &g2m_emu::kMbarMagic, 8);
  g2m_emu::Mbar m;
  m.count = m.pending = count;
  for (auto& e : b.bars)
    if (e.first == bar) {
      e.second = m;
      return;
    }
  b.bars.emplace_back(bar, m);
}
inline void MbarInitFence() {}
inline void FenceProxyAsync() {}

inline void MbarArriveExpectTx(uint32_t bar, uint32_t bytes) {
  auto& b = *g2m_emu::tls.blk;
  std::lock_guard<std::mutex> lk(b.mb_mu);
  g2m_emu::BarUpdate(b, bar, bytes, 0, 1);
}

inline void MbarWait(uint32_t bar, uint32_t parity) {
  auto& b = *g2m_emu::tls.blk;
  std::unique_lock<std::mutex> lk(b.mb_mu);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (;;) {
    if (static_cast<uint32_t>(g2m_emu::BarAt(b, bar).phase) != (parity & 1u)) return;
    // late copies: land the ones this barrier is waiting for, only now
    bool landed = false;
    for (size_t i = 0; i < b.in_flight.size();)
      if (b.in_flight[i].bar == bar) {
        const g2m_emu::BulkCopy c = b.in_flight[i];
        b.in_flight.erase(b.in_flight.begin() + static_cast<long>(i));
        g2m_emu::LandBulk(b, c);
        landed = true;
      } else {
        ++i;
      }
    if (landed) continue;
    if (b.mb_cv.wait_until(lk, deadline) == std::cv_status::timeout) g2m_emu::EmuFail("mbarrier wait (never completed)", bar);
  }
}

inline void BulkG2S(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
  auto& b = *g2m_emu::tls.blk;
  std::lock_guard<std::mutex> lk(b.mb_mu);
  if (dst % 16 != 0 || bytes % 16 != 0 || reinterpret_cast<uintptr_t>(src) % 16 != 0 || dst + bytes > b.smem.size())
    g2m_emu::EmuFail("cp.async.bulk (alignment or range)", dst);
  for (auto& e : b.bars)
    if (e.first + 8 > dst && e.first < dst + bytes) g2m_emu::EmuFail("cp.async.bulk (destination covers an mbarrier)", dst);
  g2m_emu::BarAt(b, bar);
  for (uint32_t ch = dst / 16; ch < (dst + bytes) / 16; ++ch)
    if (b.read_gen[ch].load() >= g2m_emu::tls.gen) {
      std::fprintf(stderr, "cp.async.bulk into shared bytes %u.. read in block-barrier generation %d, issued in %d: "
                   "the read is not ordered before the copy (write-after-read race)\n",
                   ch * 16, b.read_gen[ch].load(), g2m_emu::tls.gen);
      g2m_emu::EmuFail("cp.async.bulk (race)", dst);
    }
  const g2m_emu::BulkCopy c{dst, src, bytes, bar};
  if (g2m_emu::g_late_copies) {
    b.in_flight.push_back(c);
    b.mb_cv.notify_all();
  } else {
    g2m_emu::LandBulk(b, c);
  }
}

// ---- runtime API (host memory) ----------------------------------------------------------
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
using cudaStream_t = void*;
using cudaEvent_t = void*;
struct cudaDeviceProp {
  char name[256];
  int multiProcessorCount, major, minor, l2CacheSize;
  size_t totalGlobalMem;
};
namespace g2m_emu {
inline int g_sm_count = 8;
}
inline const char* cudaGetErrorString(cudaError_t) { return "emulated error"; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaMalloc(void** p, size_t n) {
  *p = std::malloc(n);
  std::memset(*p, 0xff, n);
  return *p ? cudaSuccess : cudaErrorInvalidValue;
}
inline cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpy(void* d, const void* s, size_t n, cudaMemcpyKind) {
  if (!d || !s) return cudaErrorInvalidValue;
  std::memcpy(d, s, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind k, cudaStream_t) {
  return cudaMemcpy(d, s, n, k);
}
inline cudaError_t cudaMemset(void* d, int v, size_t n) {
  std::memset(d, v, n);
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* d, int v, size_t n, cudaStream_t) { return cudaMemset(d, v, n); }
inline cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
template <class F>
cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) {
  return cudaSuccess;
}
template <class F>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, F, int, size_t smem) {
  *n = smem > 116 * 1024 ? 1 : smem > 76 * 1024 ? 2 : 3;
  return cudaSuccess;
}
inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int) {
  std::snprintf(p->name, sizeof p->name, "CPU emulation (%d SMs)", g2m_emu::g_sm_count);
  p->multiProcessorCount = g2m_emu::g_sm_count;
  p->major = 9;
  p->minor = 0;
  p->l2CacheSize = 1 << 20;
  p->totalGlobalMem = size_t(1) << 34;
  return cudaSuccess;
}
inline cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDriverGetVersion(int* v) {
  *v = 0;
  return cudaSuccess;
}
inline cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = nullptr;
  return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t, cudaEvent_t) {
  *ms = 0.f;
  return cudaSuccess;
}
inline cudaError_t cudaEventDestroy(cudaEvent_t) { return cudaSuccess; }
