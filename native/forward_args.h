// Option parsing of the forward kernels, one parser per options shape, shared by the CPU
// exports (forward_attention.cc, forward_rope.cc, forward_norm.cc, forward_linear.cc) and their
// CUDA twins (forward_cuda.cc):
// both read the same JavaScript options object with the same names, defaults and checks;
// only the buffer types (and the CUDA kernels' size limits) differ.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "common.h"
#include "forward_common.h"

namespace g2m {
namespace fwd {

// Optional non-negative integer option (ERR_OUT_OF_RANGE when negative).
inline size_t OptSize(const Napi::Object& o, const char* key, size_t dflt) {
  const int64_t v = OptInt(o, key, static_cast<int64_t>(dflt));
  if (v < 0) ThrowRangeError(o.Env(), "ERR_OUT_OF_RANGE", std::string("option ") + key + " must be >= 0");
  return static_cast<size_t>(v);
}

// attention(q, k, v, out, {nSeq, seqLen, nHeads, nKvHeads, qkDim, vDim, scale, strides..., ropeDim?, kRopeRowStride?, window?})
struct AttnShape {
  size_t nSeq = 0, seqLen = 0, nHeads = 0, nKvHeads = 0, qkDim = 0, ropeDim = 0, vDim = 0;
  size_t qRow = 0, qHead = 0, kRow = 0, kHead = 0, vRow = 0, vHead = 0, kRopeRow = 0;
  size_t window = 0;
  float scale = 1.0f;
  size_t rows() const { return nSeq * seqLen; }
  // query dims per head: qkDim + ropeDim
  size_t dq() const { return qkDim + ropeDim; }
};

// What an implementation accepts: heads, qkDim (+ ropeDim) and vDim at most these.
struct AttnLimits {
  int64_t maxHeads;
  int64_t maxQkDim;
  int64_t maxVDim;
};

// The attention options of `o`; `hasRope`: a kRope buffer was given (ropeDim is then required).
inline AttnShape ParseAttnShape(Napi::Env env, const Napi::Object& o, bool hasRope, const AttnLimits& lim) {
  AttnShape p;
  const int64_t big = int64_t(1) << 30;
  p.nSeq = static_cast<size_t>(ReqInt(o, "nSeq", 0, big));
  p.seqLen = static_cast<size_t>(ReqInt(o, "seqLen", 1, big));
  p.nHeads = static_cast<size_t>(ReqInt(o, "nHeads", 1, lim.maxHeads));
  p.nKvHeads = static_cast<size_t>(ReqInt(o, "nKvHeads", 1, lim.maxHeads));
  p.qkDim = static_cast<size_t>(ReqInt(o, "qkDim", 0, lim.maxQkDim));
  p.vDim = static_cast<size_t>(ReqInt(o, "vDim", 1, lim.maxVDim));
  if (!o.Has("scale") || !o.Get("scale").IsNumber()) ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", "option scale must be a number");
  p.scale = static_cast<float>(o.Get("scale").As<Napi::Number>().DoubleValue());
  p.ropeDim = hasRope ? static_cast<size_t>(ReqInt(o, "ropeDim", 1, lim.maxQkDim)) : 0;
  const size_t dq = p.dq();
  if (dq == 0 || dq > static_cast<size_t>(lim.maxQkDim))
    ThrowRangeError(env, "ERR_SHAPE", "qkDim + ropeDim must be in [1, " + std::to_string(lim.maxQkDim) + "]");
  if (p.nHeads % p.nKvHeads != 0)
    ThrowRangeError(env, "ERR_SHAPE",
                    "nHeads " + std::to_string(p.nHeads) + " is not a multiple of nKvHeads " + std::to_string(p.nKvHeads));
  p.qHead = OptSize(o, "qHeadStride", dq);
  p.qRow = OptSize(o, "qRowStride", p.nHeads * p.qHead);
  p.kHead = OptSize(o, "kHeadStride", p.qkDim);
  p.kRow = OptSize(o, "kRowStride", p.nKvHeads * p.kHead);
  p.vHead = OptSize(o, "vHeadStride", p.vDim);
  p.vRow = OptSize(o, "vRowStride", p.nKvHeads * p.vHead);
  p.kRopeRow = OptSize(o, "kRopeRowStride", p.ropeDim);
  p.window = OptSize(o, "window", 0);
  return p;
}

// Calls need(i, extent, name) for each buffer i of q, k, v, kRope, out (0..4) that shape `p`
// reads or writes (k only when qkDim > 0, kRope only with ropeDim > 0), with the elements it
// must hold.
template <class Need>
void ForEachAttnBuffer(const AttnShape& p, Need need) {
  const size_t rows = p.rows();
  need(0, Extent(rows, p.qRow, p.nHeads, p.qHead, p.dq()), "q");
  if (p.qkDim > 0) need(1, Extent(rows, p.kRow, p.nKvHeads, p.kHead, p.qkDim), "k");
  need(2, Extent(rows, p.vRow, p.nKvHeads, p.vHead, p.vDim), "v");
  if (p.ropeDim > 0) need(3, Extent(rows, p.kRopeRow, 1, 0, p.ropeDim), "kRope");
  need(4, rows * p.nHeads * p.vDim, "out");
}

// rope(x, positions, invFreq, {rowStride, nHeads, headStride, offset?, rotDim, scale?, interleave?})
struct RopeShape {
  size_t rowStride = 0, nHeads = 0, headStride = 0, offset = 0, rotDim = 0;
  float scale = 1.0f;
  bool interleave = false;
  // elements x must hold for `rows` rows
  size_t extent(size_t rows) const { return Extent(rows, rowStride, nHeads, headStride, offset + rotDim); }
};

inline RopeShape ParseRopeShape(Napi::Env env, const Napi::Object& o) {
  RopeShape p;
  p.rowStride = static_cast<size_t>(ReqInt(o, "rowStride", 1, int64_t(1) << 30));
  p.nHeads = static_cast<size_t>(ReqInt(o, "nHeads", 1, 1 << 20));
  p.headStride = static_cast<size_t>(ReqInt(o, "headStride", 0, int64_t(1) << 30));
  p.offset = OptSize(o, "offset", 0);
  p.rotDim = static_cast<size_t>(ReqInt(o, "rotDim", 2, 1 << 20));
  p.scale = static_cast<float>(OptNumber(o, "scale", 1.0));
  p.interleave = OptBool(o, "interleave", false);
  if (p.rotDim % 2 != 0) ThrowRangeError(env, "ERR_SHAPE", "rotDim must be even");
  if (p.nHeads > 1 && p.headStride < p.offset + p.rotDim) ThrowRangeError(env, "ERR_SHAPE", "headStride must cover offset + rotDim");
  return p;
}

// rmsNorm(x, weight|null, out, {rows, dim, eps?, xStride?, outStride?})
struct NormShape {
  size_t rows = 0, dim = 0, xStride = 0, outStride = 0;
  double eps = 1e-6;
  size_t xExtent() const { return Extent(rows, xStride, 1, 0, dim); }
  size_t outExtent() const { return Extent(rows, outStride, 1, 0, dim); }
};

// The norm options of `o`, at most `maxRows` rows.
inline NormShape ParseNormShape(Napi::Env env, const Napi::Object& o, int64_t maxRows) {
  NormShape p;
  p.rows = static_cast<size_t>(ReqInt(o, "rows", 0, maxRows));
  p.dim = static_cast<size_t>(ReqInt(o, "dim", 1, int64_t(1) << 30));
  p.xStride = OptSize(o, "xStride", p.dim);
  p.outStride = OptSize(o, "outStride", p.dim);
  p.eps = OptNumber(o, "eps", 1e-6);
  if (p.xStride < p.dim || p.outStride < p.dim) ThrowRangeError(env, "ERR_SHAPE", "xStride/outStride must be >= dim");
  return p;
}

// linear(x, w, out, {rows, inDim, outDim, bias?, xStride?, outStride?, accumulate?}) (the bias is the caller's)
struct LinearShape {
  size_t rows = 0, inDim = 0, outDim = 0, xStride = 0, outStride = 0;
  bool accumulate = false;
  size_t xExtent() const { return Extent(rows, xStride, 1, 0, inDim); }
  size_t outExtent() const { return Extent(rows, outStride, 1, 0, outDim); }
};

// The linear options of `o`: at most `maxRows` rows and `maxDim` input/output dims.
inline LinearShape ParseLinearShape(Napi::Env env, const Napi::Object& o, int64_t maxRows, int64_t maxDim) {
  LinearShape p;
  p.rows = static_cast<size_t>(ReqInt(o, "rows", 0, maxRows));
  p.inDim = static_cast<size_t>(ReqInt(o, "inDim", 1, maxDim));
  p.outDim = static_cast<size_t>(ReqInt(o, "outDim", 1, maxDim));
  p.xStride = OptSize(o, "xStride", p.inDim);
  p.outStride = OptSize(o, "outStride", p.outDim);
  p.accumulate = OptBool(o, "accumulate", false);
  if (p.xStride < p.inDim || p.outStride < p.outDim) ThrowRangeError(env, "ERR_SHAPE", "xStride must be >= inDim and outStride >= outDim");
  return p;
}

}  // namespace fwd
}  // namespace g2m
