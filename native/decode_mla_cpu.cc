// Absorbed MLA decode attention on the CPU (float32 math), and its Node binding
// `mlaDecodeCpuAsync`.
//
// Per request b and query row r = (i, h) of R = q_len * heads rows:
//   s_t = scale * (q_lat[r] . latent_t + q_rope[r] . k_rope_t),   t < seqlen - q_len + 1 + i
//   o[r] = sum_t softmax(s)_t latent_t,   lse[r] = log sum_t exp(s_t)
// The cache row of token t is [latent | k_rope] (kv_lora_rank + rope_dim values, float32
// or bf16), paged (block table) or contiguous. All heads of a request are processed
// together, one chunk of 64 tokens at a time, so each cache row is read from memory once:
// S = Q K^T and O += P V become small matrix products held in registers (AVX-512 or
// AVX2/FMA micro-kernels chosen at run time, decode_mla_cpu_x86.h; scalar fallback,
// decode_mla_cpu_scalar.h), with an online softmax between.
// Long requests are cut into pieces that run in parallel (g2m::ParallelFor) and are
// merged by their log-sum-exp.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "common.h"
#include "decode_mla_cpu_scalar.h"
#include "decode_mla_cpu_x86.h"
#include "exports.h"
#include "parallel.h"

namespace g2m {
namespace {

constexpr int kChunk = 64;  // tokens per softmax step

struct MlaCpuArgs {
  const float* q_lat = nullptr;   // [batch, q_len, heads, dl]
  const float* q_rope = nullptr;  // [batch, q_len, heads, dr]
  const void* cache = nullptr;    // float32 or bf16 rows of dl + dr
  bool bf16 = false;
  const int32_t* seqlens = nullptr;
  const int32_t* block_table = nullptr;  // [batch, max_blocks] or null (contiguous)
  int batch = 0, q_len = 1, heads = 0, dl = 0, dr = 0;
  int page_size = 64, max_blocks = 0;
  int64_t seq_stride = 0;
  float scale = 1.f;
  float* out = nullptr;  // [batch, q_len, heads, dl]
  float* lse = nullptr;  // [batch, q_len, heads]
  int simd = 2;          // widest instruction set allowed: 0 scalar, 1 AVX2/FMA, 2 AVX-512
  int piece_tokens = 0;  // 0 = automatic
};

bool CpuHasAvx512() {
#ifdef G2M_HAVE_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
  return false;
#endif
}

bool CpuHasAvx2Fma() {
#ifdef G2M_HAVE_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

// One piece of one request: token range [t0, t1), all R query rows. Leaves the
// unnormalized output in O[R][dl] and the running max m[R] / sum l[R] (natural log domain).
struct PieceOut {
  float* O;
  float* m;
  float* l;
};

template <class K, typename CT>
void RunPiece(const MlaCpuArgs& a, int b, int t0, int t1, PieceOut po, std::vector<float>& qbuf,
              std::vector<float>& sbuf, std::vector<const CT*>& rows) {
  const int R = a.q_len * a.heads, D = a.dl + a.dr, dl = a.dl;
  const int seqlen = a.seqlens[b];
  qbuf.resize(static_cast<size_t>(R) * D);
  for (int r = 0; r < R; ++r) {
    const size_t row = static_cast<size_t>(b) * R + r;
    std::memcpy(&qbuf[static_cast<size_t>(r) * D], a.q_lat + row * dl, sizeof(float) * dl);
    std::memcpy(&qbuf[static_cast<size_t>(r) * D + dl], a.q_rope + row * a.dr, sizeof(float) * a.dr);
  }
  sbuf.resize(static_cast<size_t>(R) * kChunk);
  rows.resize(kChunk);
  std::fill(po.O, po.O + static_cast<size_t>(R) * dl, 0.f);
  std::fill(po.m, po.m + R, -std::numeric_limits<float>::infinity());
  std::fill(po.l, po.l + R, 0.f);
  const CT* cache = static_cast<const CT*>(a.cache);
  float* S = sbuf.data();
  for (int c = t0; c < t1; c += kChunk) {
    const int n = std::min(kChunk, t1 - c);
    for (int i = 0; i < n; ++i) {
      const int t = c + i;
      int64_t row;
      if (a.block_table)
        row = static_cast<int64_t>(a.block_table[static_cast<int64_t>(b) * a.max_blocks + t / a.page_size]) *
                  a.page_size +
              t % a.page_size;
      else
        row = static_cast<int64_t>(b) * a.seq_stride + t;
      rows[i] = cache + row * D;
    }
    K::Scores(R, n, D, qbuf.data(), rows.data(), S, kChunk);
    bool any = false;
    for (int r = 0; r < R; ++r) {
      const int qi = r / a.heads;
      const int lim = std::max(0, std::min(n, seqlen - a.q_len + 1 + qi - c));
      float* s = S + r * kChunk;
      if (lim == 0) {
        std::fill(s, s + n, 0.f);
        continue;
      }
      any = true;
      float mx = -std::numeric_limits<float>::infinity();
      for (int i = 0; i < lim; ++i) {
        s[i] *= a.scale;
        mx = std::max(mx, s[i]);
      }
      const float m_new = std::max(po.m[r], mx);
      K::ExpShift(s, lim, m_new);
      float sum = 0.f;
      for (int i = 0; i < lim; ++i) sum += s[i];
      std::fill(s + lim, s + n, 0.f);
      const float alpha = std::exp(po.m[r] - m_new);  // 0 when m was -inf
      if (alpha != 1.f) K::Scale(po.O + static_cast<size_t>(r) * dl, dl, alpha);
      po.l[r] = po.l[r] * alpha + sum;
      po.m[r] = m_new;
    }
    if (any) K::PV(R, n, dl, S, kChunk, rows.data(), po.O);
  }
}

template <class K, typename CT>
std::string RunAll(const MlaCpuArgs& a, int* pieces_out) {
  const int R = a.q_len * a.heads, dl = a.dl;
  const int threads = NumThreads();
  // Cut requests into pieces so that all threads have work.
  int64_t total = 0;
  for (int b = 0; b < a.batch; ++b) total += a.seqlens[b];
  int piece = a.piece_tokens;
  if (piece <= 0) {
    const int64_t target = std::max<int64_t>(1, static_cast<int64_t>(threads) * 4);
    piece = static_cast<int>(std::max<int64_t>(256, (total + target - 1) / target));
  }
  piece = (piece + kChunk - 1) / kChunk * kChunk;
  struct Piece {
    int b, t0, t1, idx, n;
  };
  std::vector<Piece> pieces;
  std::vector<int> first(a.batch, -1), count(a.batch, 0);
  for (int b = 0; b < a.batch; ++b) {
    const int len = a.seqlens[b];
    const int n = (len + piece - 1) / piece;
    first[b] = static_cast<int>(pieces.size());
    count[b] = n;
    for (int k = 0; k < n; ++k) pieces.push_back({b, k * piece, std::min(len, (k + 1) * piece), k, n});
  }
  // Partial buffers for requests cut into several pieces; single pieces use `out`.
  std::vector<size_t> part_off(pieces.size(), SIZE_MAX);
  size_t nparts = 0;
  for (size_t i = 0; i < pieces.size(); ++i)
    if (pieces[i].n > 1) part_off[i] = nparts++;
  std::vector<float> o_part(nparts * R * dl), m_part(nparts * R), l_part(nparts * R);
  std::vector<float> m_single(static_cast<size_t>(a.batch) * R), l_single(static_cast<size_t>(a.batch) * R);

  // Pieces differ in length (the last of each request is shorter): hand them out
  // dynamically.
  std::atomic<size_t> next{0};
  const size_t workers = std::min<size_t>(pieces.size(), static_cast<size_t>(threads));
  ParallelFor(workers, 1, [&](size_t, size_t) {
    std::vector<float> qbuf, sbuf;
    std::vector<const CT*> rows;
    for (size_t i = next++; i < pieces.size(); i = next++) {
      const Piece& p = pieces[i];
      PieceOut po;
      if (p.n > 1) {
        po = {&o_part[part_off[i] * R * dl], &m_part[part_off[i] * R], &l_part[part_off[i] * R]};
      } else {
        po = {a.out + static_cast<size_t>(p.b) * R * dl, &m_single[static_cast<size_t>(p.b) * R],
              &l_single[static_cast<size_t>(p.b) * R]};
      }
      RunPiece<K, CT>(a, p.b, p.t0, p.t1, po, qbuf, sbuf, rows);
    }
  });

  // Normalize / merge.
  const float ninf = -std::numeric_limits<float>::infinity();
  ParallelFor(a.batch, 1, [&](size_t begin, size_t end) {
    for (size_t b = begin; b < end; ++b) {
      float* ob = a.out + b * R * dl;
      float* lb = a.lse + b * R;
      if (count[b] == 0) {
        std::fill(ob, ob + static_cast<size_t>(R) * dl, 0.f);
        std::fill(lb, lb + R, ninf);
        continue;
      }
      if (count[b] == 1) {
        for (int r = 0; r < R; ++r) {
          const float l = l_single[b * R + r], m = m_single[b * R + r];
          float* o = ob + static_cast<size_t>(r) * dl;
          if (l > 0.f) {
            K::Scale(o, dl, 1.f / l);
            lb[r] = m + std::log(l);
          } else {
            std::fill(o, o + dl, 0.f);
            lb[r] = ninf;
          }
        }
        continue;
      }
      const size_t p0 = part_off[first[b]];
      for (int r = 0; r < R; ++r) {
        float mx = ninf;
        for (int k = 0; k < count[b]; ++k)
          if (l_part[(p0 + k) * R + r] > 0.f) mx = std::max(mx, m_part[(p0 + k) * R + r]);
        float* o = ob + static_cast<size_t>(r) * dl;
        std::fill(o, o + dl, 0.f);
        if (mx == ninf) {
          lb[r] = ninf;
          continue;
        }
        double L = 0.0;
        std::vector<float> w(count[b]);
        for (int k = 0; k < count[b]; ++k) {
          const float l = l_part[(p0 + k) * R + r];
          w[k] = l > 0.f ? std::exp(m_part[(p0 + k) * R + r] - mx) : 0.f;
          L += static_cast<double>(w[k]) * l;
        }
        const float invL = static_cast<float>(1.0 / L);
        for (int k = 0; k < count[b]; ++k) {
          if (w[k] == 0.f) continue;
          const float wk = w[k] * invL;
          const float* src = &o_part[((p0 + k) * R + r) * dl];
          for (int d = 0; d < dl; ++d) o[d] += wk * src[d];
        }
        lb[r] = mx + static_cast<float>(std::log(L));
      }
    }
  });
  *pieces_out = static_cast<int>(pieces.size());
  return "";
}

// ---- Node binding ------------------------------------------------------------------------

Napi::TypedArray TypedProp(const Napi::Object& o, const char* key, bool optional) {
  Napi::Value v = o.Get(key);
  if (optional && (v.IsUndefined() || v.IsNull())) return Napi::TypedArray();
  if (!v.IsTypedArray()) ThrowTypeError(o.Env(), "ERR_INVALID_ARG_TYPE", std::string(key) + " must be a TypedArray");
  return v.As<Napi::TypedArray>();
}

float* F32Prop(const Napi::Object& o, const char* key, size_t want) {
  auto t = TypedProp(o, key, false);
  if (t.TypedArrayType() != napi_float32_array)
    ThrowTypeError(o.Env(), "ERR_INVALID_ARG_TYPE", std::string(key) + " must be a Float32Array");
  auto a = t.As<Napi::Float32Array>();
  CheckLength(o.Env(), a.ElementLength(), want, key);
  return a.Data();
}

int IntProp(const Napi::Object& o, const char* key, int64_t dflt, int64_t min, int64_t max, bool required) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) {
    if (required) ThrowTypeError(o.Env(), "ERR_INVALID_ARG_TYPE", std::string(key) + " is required");
    return static_cast<int>(dflt);
  }
  if (!v.IsNumber()) ThrowTypeError(o.Env(), "ERR_INVALID_ARG_TYPE", std::string(key) + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (d != std::floor(d) || d < static_cast<double>(min) || d > static_cast<double>(max))
    ThrowRangeError(o.Env(), "ERR_OUT_OF_RANGE",
                    std::string(key) + " = " + std::to_string(d) + " must be an integer in [" + std::to_string(min) +
                        ", " + std::to_string(max) + "]");
  return static_cast<int>(d);
}

class MlaCpuWorker : public PromiseWorker {
 public:
  MlaCpuWorker(Napi::Env env, const MlaCpuArgs& a) : PromiseWorker(env), a_(a) {}

 protected:
  void Run() override {
    std::string err;
#ifdef G2M_HAVE_X86
    if (a_.simd >= 2 && CpuHasAvx512()) {
      kernel_ = "avx512";
      err = a_.bf16 ? RunAll<avx512::Kernels, uint16_t>(a_, &pieces_) : RunAll<avx512::Kernels, float>(a_, &pieces_);
    } else if (a_.simd >= 1 && CpuHasAvx2Fma()) {
      kernel_ = "avx2-fma";
      err = a_.bf16 ? RunAll<avx2::Kernels, uint16_t>(a_, &pieces_) : RunAll<avx2::Kernels, float>(a_, &pieces_);
    } else
#endif
    {
      kernel_ = "scalar";
      err = a_.bf16 ? RunAll<ScalarKernels, uint16_t>(a_, &pieces_) : RunAll<ScalarKernels, float>(a_, &pieces_);
    }
    if (!err.empty()) throw WorkError{"ERR_DECODE", err, 0};
  }
  Napi::Value Result(Napi::Env env) override {
    auto o = Napi::Object::New(env);
    o.Set("kernel", Napi::String::New(env, kernel_));
    o.Set("pieces", Napi::Number::New(env, pieces_));
    o.Set("threads", Napi::Number::New(env, NumThreads()));
    return o;
  }

 private:
  MlaCpuArgs a_;
  std::string kernel_;
  int pieces_ = 0;
};

// mlaDecodeCpuAsync(options) -> Promise<{kernel, pieces, threads}>
Napi::Value MlaDecodeCpuAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject())
    ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", "mlaDecodeCpuAsync expects an options object");
  Napi::Object o = info[0].As<Napi::Object>();
  MlaCpuArgs a;
  a.batch = IntProp(o, "batch", 0, 1, 1 << 20, true);
  a.q_len = IntProp(o, "qLen", 1, 1, 64, false);
  a.heads = IntProp(o, "heads", 0, 1, 1 << 14, true);
  a.dl = IntProp(o, "kvLoraRank", 512, 1, 1 << 16, false);
  a.dr = IntProp(o, "ropeDim", 64, 0, 1 << 16, false);
  a.page_size = IntProp(o, "pageSize", 64, 1, 1 << 20, false);
  a.piece_tokens = IntProp(o, "pieceTokens", 0, 0, 1 << 30, false);
  {
    // simd: true (widest available, default), false (scalar), 'avx2' or 'avx512' (at most that)
    Napi::Value sv = o.Get("simd");
    if (sv.IsUndefined() || (sv.IsBoolean() && sv.As<Napi::Boolean>().Value())) {
      a.simd = 2;
    } else if (sv.IsBoolean()) {
      a.simd = 0;
    } else if (sv.IsString() && sv.As<Napi::String>().Utf8Value() == "avx2") {
      a.simd = 1;
    } else if (sv.IsString() && sv.As<Napi::String>().Utf8Value() == "avx512") {
      a.simd = 2;
    } else {
      ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", "simd must be a boolean, 'avx2' or 'avx512'");
    }
  }
  Napi::Value sv = o.Get("softmaxScale");
  if (!sv.IsNumber()) ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", "softmaxScale must be a number");
  a.scale = sv.As<Napi::Number>().FloatValue();
  const size_t R = static_cast<size_t>(a.q_len) * a.heads, D = static_cast<size_t>(a.dl) + a.dr;
  const size_t nrows = static_cast<size_t>(a.batch) * R;
  a.q_lat = F32Prop(o, "qLat", nrows * a.dl);
  a.q_rope = a.dr > 0 ? F32Prop(o, "qRope", nrows * a.dr) : nullptr;
  if (a.dr == 0) a.q_rope = a.q_lat;  // unused (no rope part)
  a.out = F32Prop(o, "out", nrows * a.dl);
  a.lse = F32Prop(o, "lse", nrows);

  auto sl = TypedProp(o, "seqLens", false);
  if (sl.TypedArrayType() != napi_int32_array)
    ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", "seqLens must be an Int32Array");
  CheckLength(env, sl.ElementLength(), a.batch, "seqLens");
  a.seqlens = sl.As<Napi::Int32Array>().Data();

  auto cache = TypedProp(o, "cache", false);
  size_t cache_elems = cache.ElementLength();
  if (cache.TypedArrayType() == napi_float32_array) {
    a.bf16 = false;
    a.cache = cache.As<Napi::Float32Array>().Data();
  } else if (cache.TypedArrayType() == napi_uint16_array) {
    a.bf16 = true;
    a.cache = cache.As<Napi::Uint16Array>().Data();
  } else {
    ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", "cache must be a Float32Array or a Uint16Array of bf16 bits");
  }
  if (cache_elems % D != 0)
    ThrowRangeError(env, "ERR_SHAPE", "cache length " + std::to_string(cache_elems) +
                                          " is not a multiple of kvLoraRank + ropeDim = " + std::to_string(D));
  const int64_t cache_rows = static_cast<int64_t>(cache_elems / D);

  auto bt = TypedProp(o, "blockTable", true);
  if (!bt.IsEmpty()) {
    if (bt.TypedArrayType() != napi_int32_array)
      ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", "blockTable must be an Int32Array");
    if (bt.ElementLength() % a.batch != 0)
      ThrowRangeError(env, "ERR_SHAPE", "blockTable length must be batch x maxBlocks");
    a.block_table = bt.As<Napi::Int32Array>().Data();
    a.max_blocks = static_cast<int>(bt.ElementLength() / a.batch);
    const int64_t num_blocks = cache_rows / a.page_size;
    for (int b = 0; b < a.batch; ++b) {
      const int len = a.seqlens[b];
      if (len < 0) ThrowRangeError(env, "ERR_OUT_OF_RANGE", "seqLens[" + std::to_string(b) + "] is negative");
      const int64_t pages = (static_cast<int64_t>(len) + a.page_size - 1) / a.page_size;
      if (pages > a.max_blocks)
        ThrowRangeError(env, "ERR_SHAPE", "seqLens[" + std::to_string(b) + "] = " + std::to_string(len) +
                                              " needs more pages than the block table row holds");
      for (int64_t p = 0; p < pages; ++p) {
        const int32_t blk = a.block_table[static_cast<int64_t>(b) * a.max_blocks + p];
        if (blk < 0 || blk >= num_blocks)
          ThrowRangeError(env, "ERR_OUT_OF_RANGE", "blockTable[" + std::to_string(b) + "][" + std::to_string(p) +
                                                       "] = " + std::to_string(blk) + " is not a block of the cache (" +
                                                       std::to_string(num_blocks) + " blocks)");
      }
    }
  } else {
    a.seq_stride = IntProp(o, "seqStride", cache_rows / a.batch, 0, INT32_MAX, false);
    if (static_cast<int64_t>(a.seq_stride) * a.batch > cache_rows)
      ThrowRangeError(env, "ERR_SHAPE", "cache holds " + std::to_string(cache_rows) + " rows, fewer than batch x seqStride");
    for (int b = 0; b < a.batch; ++b)
      if (a.seqlens[b] < 0 || a.seqlens[b] > a.seq_stride)
        ThrowRangeError(env, "ERR_OUT_OF_RANGE", "seqLens[" + std::to_string(b) + "] = " + std::to_string(a.seqlens[b]) +
                                                     " is outside [0, seqStride = " + std::to_string(a.seq_stride) + "]");
  }
  auto* w = new MlaCpuWorker(env, a);
  for (const char* k : {"qLat", "qRope", "cache", "seqLens", "blockTable", "out", "lse"}) w->Keep(o.Get(k));
  return w->Start();
}

// cpuCopyBandwidth(bytes, iters) -> {gbps, threads}: memcpy of `bytes` split over all
// threads, median of `iters` runs, counting bytes read plus bytes written (the yardstick
// of the decode benchmark, measured in the same process).
Napi::Value CpuCopyBandwidth(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const size_t bytes = static_cast<size_t>(GetInt(info, 0, "bytes", 1 << 20, int64_t(1) << 36));
  const int iters = static_cast<int>(GetInt(info, 1, "iters", 1, 1000));
  std::vector<char> src(bytes, 1), dst(bytes, 2);
  const size_t threads = static_cast<size_t>(NumThreads());
  std::vector<double> secs;
  for (int it = 0; it < iters + 1; ++it) {
    const auto t0 = std::chrono::steady_clock::now();
    ParallelFor(threads, 1, [&](size_t b, size_t e) {
      for (size_t t = b; t < e; ++t) {
        const size_t lo = bytes * t / threads, hi = bytes * (t + 1) / threads;
        std::memcpy(dst.data() + lo, src.data() + lo, hi - lo);
      }
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (it > 0) secs.push_back(s);
  }
  std::sort(secs.begin(), secs.end());
  auto o = Napi::Object::New(env);
  o.Set("gbps", Napi::Number::New(env, 2.0 * static_cast<double>(bytes) / secs[secs.size() / 2] / 1e9));
  o.Set("threads", Napi::Number::New(env, static_cast<double>(threads)));
  o.Set("check", Napi::Number::New(env, static_cast<double>(dst[bytes / 2])));
  return o;
}

}  // namespace

void InitDecodeMlaCpu(Napi::Env env, Napi::Object exports) {
  SetFunctions(env, exports, {
      {"mlaDecodeCpuAsync", MlaDecodeCpuAsync},
      {"cpuCopyBandwidth", CpuCopyBandwidth},
  });
}

}  // namespace g2m
