// convertCuda forward exports: float32 kernels on device buffers, queued on the compute
// stream in call order (they return at once; `synchronize*` / `download` wait):
//   rmsNorm(x, weight|null, out, {rows, dim, eps?, xStride?, outStride?})
//   rope(x, positions(int32), invFreq(f32), {rows, rowStride, nHeads, headStride, offset?, rotDim, scale?, interleave?})
//   swiglu(gate, up, out, n)
//   linear(x, w, out, {rows, inDim, outDim, wDtype: 'BF16'|'F32', bias?, xStride?, outStride?, accumulate?})
//   attention(q, k, v, out, {nSeq, seqLen, nHeads, nKvHeads, qkDim, vDim, scale, strides..., kRope?, ropeDim?, window?})
//   momentsAdd(c(f64 n x n), sum(f64 n), x(f32 rows x n), rows, n); momentsFinish(c, sum, n, count)
// Semantics follow the CPU kernels (native/forward_*.cc); CUDA build only.
#ifdef GQA2MLA_CUDA

#include <string>

#include "common.h"
#include "cuda/convert_cuda.h"
#include "exports.h"
#include "forward_args.h"
#include "forward_common.h"
#include "memory_cuda.h"

namespace g2m {
namespace {

namespace cc = g2m::cuconv;
using cudamem::DevView;

void NeedF32(Napi::Env env, const DevView& d, size_t elems, const char* name) { cudamem::Need(env, d, elems, 4, name); }

// An export that parses its call and queues one kernel: `Queue` returns the launch error.
template <std::string (*Queue)(const Napi::CallbackInfo&)>
Napi::Value Queued(const Napi::CallbackInfo& info) {
  cudamem::Check(info.Env(), Queue(info));
  return info.Env().Undefined();
}

std::string RmsNorm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DevView x = cudamem::Get(env, info[0], "x");
  DevView w;
  if (info.Length() > 1 && !info[1].IsNull() && !info[1].IsUndefined()) w = cudamem::Get(env, info[1], "weight");
  DevView out = cudamem::Get(env, info[2], "out");
  const fwd::NormShape n = fwd::ParseNormShape(env, fwd::OptObject(info, 3), int64_t(1) << 31);
  NeedF32(env, x, n.xExtent(), "x");
  NeedF32(env, out, n.outExtent(), "out");
  if (w.ptr) NeedF32(env, w, n.dim, "weight");
  return cc::RmsNorm(x.as<float>(), w.ptr ? w.as<float>() : nullptr, out.as<float>(), n.rows, n.dim, n.xStride, n.outStride, n.eps);
}

std::string Rope(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto [x, pos, inv] = cudamem::Args<3>(info, {"x", "positions", "invFreq"});
  auto o = fwd::OptObject(info, 3);
  cc::RopeArgs a;
  a.x = x.as<float>(), a.pos = pos.as<int32_t>(), a.inv_freq = inv.as<float>();
  a.rows = static_cast<size_t>(fwd::ReqInt(o, "rows", 0, int64_t(1) << 31));
  const fwd::RopeShape r = fwd::ParseRopeShape(env, o);
  a.row_stride = r.rowStride, a.n_heads = r.nHeads, a.head_stride = r.headStride, a.offset = r.offset, a.rot_dim = r.rotDim;
  a.scale = r.scale, a.interleave = r.interleave;
  cudamem::Need(env, pos, a.rows, 4, "positions");
  NeedF32(env, inv, a.rot_dim / 2, "invFreq");
  NeedF32(env, x, r.extent(a.rows), "x");
  return cc::Rope(a);
}

std::string Swiglu(const Napi::CallbackInfo& info) {
  const auto [g, u, out] = cudamem::Args<3>(info, {"gate", "up", "out"});
  const size_t n = static_cast<size_t>(GetInt(info, 3, "n", 0, int64_t(1) << 45));
  NeedF32(info.Env(), g, n, "gate");
  NeedF32(info.Env(), u, n, "up");
  NeedF32(info.Env(), out, n, "out");
  return cc::Swiglu(g.as<float>(), u.as<float>(), out.as<float>(), n);
}

// Option wDtype of linear: 'BF16' or 'F32'.
cc::Dt WeightDtype(Napi::Env env, const Napi::Object& o) {
  Napi::Value wd = o.Get("wDtype");
  if (!wd.IsString()) ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", "option wDtype must be 'BF16' or 'F32'");
  const std::string wds = wd.As<Napi::String>().Utf8Value();
  if (wds == "BF16") return cc::Dt::BF16;
  if (wds == "F32") return cc::Dt::F32;
  ThrowRangeError(env, "ERR_DTYPE", "option wDtype must be 'BF16' or 'F32' (got " + wds + ")");
}

std::string Linear(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto [x, w, out] = cudamem::Args<3>(info, {"x", "w", "out"});
  auto o = fwd::OptObject(info, 3);
  cc::LinearArgs a;
  const int64_t lim = (int64_t(1) << 31) - 1;
  const fwd::LinearShape l = fwd::ParseLinearShape(env, o, lim, lim);
  a.rows = l.rows, a.in_dim = l.inDim, a.out_dim = l.outDim, a.x_stride = l.xStride, a.out_stride = l.outStride;
  a.accumulate = l.accumulate;
  a.w_dt = WeightDtype(env, o);
  if (a.x_stride > 0x7fffffffu || a.out_stride > 0x7fffffffu) ThrowRangeError(env, "ERR_SHAPE", "strides must fit in int32");
  DevView b = cudamem::Opt(env, o, "bias");
  cudamem::Need(env, w, a.out_dim * a.in_dim, a.w_dt == cc::Dt::BF16 ? 2 : 4, "w");
  NeedF32(env, x, l.xExtent(), "x");
  NeedF32(env, out, l.outExtent(), "out");
  if (b.ptr) NeedF32(env, b, a.out_dim, "bias");
  if (x.ptr < out.ptr + out.bytes && out.ptr < x.ptr + x.bytes)
    ThrowRangeError(env, "ERR_ALIAS", "linear: out must not share memory with x");
  a.x = x.as<float>(), a.w = w.ptr, a.out = out.as<float>();
  a.bias = b.ptr ? b.as<float>() : nullptr;
  return cc::Linear(a);
}

std::string Attention(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto [q, k, v, out] = cudamem::Args<4>(info, {"q", "k", "v", "out"});
  auto o = fwd::OptObject(info, 4);
  DevView kr = cudamem::Opt(env, o, "kRope");
  const int64_t maxQk = static_cast<int64_t>(cc::kAttnMaxQkDim), maxV = static_cast<int64_t>(cc::kAttnMaxVDim);
  const fwd::AttnShape s = fwd::ParseAttnShape(env, o, kr.ptr != nullptr, {65535, maxQk, maxV});
  cc::AttnArgs a;
  a.n_seq = s.nSeq, a.seq_len = s.seqLen, a.n_heads = s.nHeads, a.n_kv_heads = s.nKvHeads;
  a.qk_dim = s.qkDim, a.rope_dim = s.ropeDim, a.v_dim = s.vDim, a.scale = s.scale, a.window = s.window;
  a.q_head = s.qHead, a.q_row = s.qRow, a.k_head = s.kHead, a.k_row = s.kRow, a.v_head = s.vHead, a.v_row = s.vRow;
  a.k_rope_row = s.kRopeRow;
  const DevView* views[5] = {&q, &k, &v, &kr, &out};
  fwd::ForEachAttnBuffer(s, [&](int i, size_t extent, const char* name) { NeedF32(env, *views[i], extent, name); });
  a.q = q.as<float>(), a.k = k.as<float>(), a.v = v.as<float>(), a.out = out.as<float>();
  a.k_rope = kr.ptr ? kr.as<float>() : nullptr;
  return cc::Attention(a);
}

// The float64 moments of momentsAdd / momentsFinish: c (n x n) and sum (n).
void NeedMoments(Napi::Env env, const DevView& c, const DevView& sum, size_t n) {
  cudamem::Need(env, c, n * n, 8, "c");
  cudamem::Need(env, sum, n, 8, "sum");
}

std::string MomentsAdd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto [c, sum, x] = cudamem::Args<3>(info, {"c", "sum", "x"});
  const size_t rows = static_cast<size_t>(GetInt(info, 3, "rows", 0, (int64_t(1) << 31) - 1));
  const size_t n = static_cast<size_t>(GetInt(info, 4, "n", 1, 1 << 20));
  NeedMoments(env, c, sum, n);
  NeedF32(env, x, rows * n, "x");
  return cc::MomentsAdd(c.as<double>(), sum.as<double>(), x.as<float>(), rows, n);
}

std::string MomentsFinish(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto [c, sum] = cudamem::Args<2>(info, {"c", "sum"});
  const size_t n = static_cast<size_t>(GetInt(info, 2, "n", 1, 1 << 20));
  const double count = GetNumber(info, 3, "count");
  if (!(count > 0)) ThrowRangeError(env, "ERR_OUT_OF_RANGE", "count must be > 0");
  NeedMoments(env, c, sum, n);
  return cc::MomentsFinish(c.as<double>(), sum.as<double>(), n, count);
}

}  // namespace

void InitForwardCuda(Napi::Env env, Napi::Object exports) {
  Napi::Object ns = cudamem::Namespace(env, exports);
  SetFunctions(env, ns, {
      {"rmsNorm", Queued<RmsNorm>},
      {"rope", Queued<Rope>},
      {"swiglu", Queued<Swiglu>},
      {"linear", Queued<Linear>},
      {"attention", Queued<Attention>},
      {"momentsAdd", Queued<MomentsAdd>},
      {"momentsFinish", Queued<MomentsFinish>},
  });
}

}  // namespace g2m

#endif  // GQA2MLA_CUDA
