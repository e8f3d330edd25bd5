// Node binding of the CUDA decode kernels (native/cuda/decode_attn.*): device buffers,
// split plans, Promise-returning decode and timing. Exported as one object,
// `decodeCuda`, present only in the CUDA build (cmake-js -DGQA2MLA_CUDA=ON); the
// node-gyp CPU build compiles this file as an empty translation unit.
#ifdef GQA2MLA_CUDA

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common.h"
#include "cuda/decode_attn.h"
#include "device_facts_js.h"
#include "exports.h"

namespace g2m {
namespace {

namespace cd = g2m::cudadec;

// napi type tags: tell our externals apart from any other object.
const napi_type_tag kBufferTag = {0x6a7e3c1d52b04f11ULL, 0x9d2e44a1c07b5e33ULL};
const napi_type_tag kPlanTag = {0x1f0c9b7e3a6d4e22ULL, 0x8b51d0e6f2a94c77ULL};

struct DevBuf {
  void* ptr = nullptr;
  size_t bytes = 0;
};

struct PlanHolder {
  cd::Shape shape;
  cd::Plan plan;
};

[[noreturn]] void ThrowCuda(Napi::Env env, const std::string& msg) { ThrowError(env, "ERR_CUDA", msg); }

void CheckCuda(Napi::Env env, const std::string& err) {
  if (!err.empty()) ThrowCuda(env, err);
}

Napi::Object WrapBuffer(Napi::Env env, void* ptr, size_t bytes) {
  auto* b = new DevBuf{ptr, bytes};
  auto ext = Napi::External<DevBuf>::New(env, b, [](Napi::Env, DevBuf* p) {
    if (p->ptr) cd::Free(p->ptr);
    delete p;
  });
  ext.TypeTag(&kBufferTag);
  auto o = Napi::Object::New(env);
  o.Set("bytes", Napi::Number::New(env, static_cast<double>(bytes)));
  o.Set("handle", ext);
  return o;
}

DevBuf* GetBuffer(Napi::Env env, const Napi::Value& v, const char* name) {
  if (v.IsObject()) {
    Napi::Value h = v.As<Napi::Object>().Get("handle");
    if (h.IsExternal() && h.As<Napi::External<DevBuf>>().CheckTypeTag(&kBufferTag)) {
      DevBuf* b = h.As<Napi::External<DevBuf>>().Data();
      if (b->ptr == nullptr) ThrowError(env, "ERR_INVALID_STATE", std::string(name) + " was freed");
      return b;
    }
  }
  ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", std::string(name) + " must be a device buffer (decodeCuda.alloc)");
}

DevBuf* OptBuffer(Napi::Env env, const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return nullptr;
  return GetBuffer(env, v, key);
}

void NeedBytes(Napi::Env env, const DevBuf* b, size_t want, const char* name) {
  if (b->bytes < want)
    ThrowRangeError(env, "ERR_SHAPE", std::string(name) + " holds " + std::to_string(b->bytes) + " bytes, needs " +
                                          std::to_string(want));
}

PlanHolder* GetPlan(Napi::Env env, const Napi::Value& v) {
  if (v.IsObject()) {
    Napi::Value h = v.As<Napi::Object>().Get("handle");
    if (h.IsExternal() && h.As<Napi::External<PlanHolder>>().CheckTypeTag(&kPlanTag)) return h.As<Napi::External<PlanHolder>>().Data();
  }
  ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", "plan must come from decodeCuda.plan");
}

int64_t IntOpt(const Napi::Object& o, const char* key, int64_t dflt, int64_t min, int64_t max) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return dflt;
  if (!v.IsNumber()) ThrowTypeError(o.Env(), "ERR_INVALID_ARG_TYPE", std::string(key) + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (d != std::floor(d) || d < static_cast<double>(min) || d > static_cast<double>(max))
    ThrowRangeError(o.Env(), "ERR_OUT_OF_RANGE", std::string(key) + " = " + std::to_string(d) + " is out of range");
  return static_cast<int64_t>(d);
}

// ---- exports ---------------------------------------------------------------------------

Napi::Value Alloc(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t bytes = GetInt(info, 0, "bytes", 1, int64_t(1) << 46);
  void* p = nullptr;
  CheckCuda(env, cd::Malloc(static_cast<size_t>(bytes), &p));
  return WrapBuffer(env, p, static_cast<size_t>(bytes));
}

Napi::Value FreeFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DevBuf* b = GetBuffer(env, info[0], "buffer");
  CheckCuda(env, cd::Free(b->ptr));
  b->ptr = nullptr;
  return env.Undefined();
}

// upload(buffer, typedArray, byteOffset = 0) when `toDevice`, else download(...).
Napi::Value Transfer(const Napi::CallbackInfo& info, bool toDevice) {
  Napi::Env env = info.Env();
  DevBuf* b = GetBuffer(env, info[0], "buffer");
  size_t n = 0;
  uint8_t* host = TypedBytes(env, info[1], toDevice ? "source" : "destination", &n);
  const int64_t off = info.Length() > 2 ? GetInt(info, 2, "byteOffset", 0, int64_t(1) << 46) : 0;
  NeedBytes(env, b, static_cast<size_t>(off) + n, "buffer");
  uint8_t* dev = static_cast<uint8_t*>(b->ptr) + off;
  CheckCuda(env, toDevice ? cd::CopyToDevice(dev, host, n) : cd::CopyToHost(host, dev, n));
  return env.Undefined();
}
Napi::Value Upload(const Napi::CallbackInfo& info) { return Transfer(info, true); }
Napi::Value Download(const Napi::CallbackInfo& info) { return Transfer(info, false); }

// fillRandomBf16(buffer, count, seed, scale)
Napi::Value FillRandom(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  DevBuf* b = GetBuffer(env, info[0], "buffer");
  const int64_t n = GetInt(info, 1, "count", 0, int64_t(1) << 45);
  const int64_t seed = GetInt(info, 2, "seed", 0, int64_t(1) << 52);
  const double scale = GetNumber(info, 3, "scale");
  NeedBytes(env, b, static_cast<size_t>(n) * 2, "buffer");
  CheckCuda(env, cd::FillRandomBf16(b->ptr, static_cast<size_t>(n), static_cast<uint64_t>(seed),
                                    static_cast<float>(scale)));
  return env.Undefined();
}

// copyBandwidth(bytes, iters) -> GB/s (read + write)
Napi::Value CopyBw(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t bytes = GetInt(info, 0, "bytes", 1 << 20, int64_t(1) << 40);
  const int64_t iters = GetInt(info, 1, "iters", 1, 10000);
  double gbps = 0;
  CheckCuda(env, cd::CopyBandwidth(static_cast<size_t>(bytes), static_cast<int>(iters), &gbps));
  return Napi::Number::New(env, gbps);
}

// plan({kind, seqLens, batch, qLen, heads, kvHeads, kvLoraRank, ropeDim, headDim,
//       pageSize, maxBlocks, seqStride, kernel})
Napi::Value PlanFn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", "plan expects an options object");
  Napi::Object o = info[0].As<Napi::Object>();
  Napi::Value kind = o.Get("kind");
  if (!kind.IsString()) ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", "kind must be 'mla' or 'gqa'");
  const std::string k = kind.As<Napi::String>().Utf8Value();
  if (k != "mla" && k != "gqa") ThrowRangeError(env, "ERR_OUT_OF_RANGE", "kind must be 'mla' or 'gqa', got " + k);
  cd::Shape s;
  s.mla = k == "mla";
  s.batch = static_cast<int>(IntOpt(o, "batch", 0, 1, 1 << 20));
  s.q_len = static_cast<int>(IntOpt(o, "qLen", 1, 1, 64));
  s.heads = static_cast<int>(IntOpt(o, "heads", 0, 1, 1 << 14));
  s.page_size = static_cast<int>(IntOpt(o, "pageSize", 64, 32, 1 << 20));
  s.max_blocks = static_cast<int>(IntOpt(o, "maxBlocks", 0, 0, 1 << 30));
  s.seq_stride = IntOpt(o, "seqStride", 0, 0, int64_t(1) << 40);
  if (s.mla) {
    s.kv_heads = 1;
    const int dl = static_cast<int>(IntOpt(o, "kvLoraRank", 512, 1, 1 << 16));
    const int dr = static_cast<int>(IntOpt(o, "ropeDim", 64, 0, 1 << 16));
    s.dqk = dl + dr;
    s.dv = dl;
  } else {
    s.kv_heads = static_cast<int>(IntOpt(o, "kvHeads", 1, 1, 1 << 14));
    s.dqk = s.dv = static_cast<int>(IntOpt(o, "headDim", 128, 1, 1 << 16));
  }
  if (s.max_blocks == 0 && s.seq_stride == 0)
    ThrowRangeError(env, "ERR_SHAPE", "give maxBlocks (paged cache) or seqStride (contiguous cache)");
  Napi::Value kernel = o.Get("kernel");
  if (!kernel.IsUndefined()) {
    if (!kernel.IsString()) ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", "kernel must be a kernel instance name");
    s.kernel = kernel.As<Napi::String>().Utf8Value();
  }
  const std::string sup = cd::Supported(s);
  if (!sup.empty()) ThrowRangeError(env, "ERR_UNSUPPORTED", sup);
  Napi::Value sl = o.Get("seqLens");
  if (!sl.IsTypedArray() || sl.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", "seqLens must be an Int32Array");
  auto lens = sl.As<Napi::Int32Array>();
  CheckLength(env, lens.ElementLength(), s.batch, "seqLens");
  const int64_t cap = s.max_blocks > 0 ? static_cast<int64_t>(s.max_blocks) * s.page_size : s.seq_stride;
  for (int b = 0; b < s.batch; ++b)
    if (lens[b] < 0 || lens[b] > cap)
      ThrowRangeError(env, "ERR_OUT_OF_RANGE", "seqLens[" + std::to_string(b) + "] = " + std::to_string(lens[b]) +
                                                   " is outside [0, " + std::to_string(cap) + "]");
  auto* h = new PlanHolder;
  h->shape = s;
  std::string err = cd::MakePlan(s, lens.Data(), &h->plan);
  if (!err.empty()) {
    delete h;
    ThrowCuda(env, err);
  }
  auto ext = Napi::External<PlanHolder>::New(env, h, [](Napi::Env, PlanHolder* p) {
    cd::FreePlan(&p->plan);
    delete p;
  });
  ext.TypeTag(&kPlanTag);
  auto r = Napi::Object::New(env);
  r.Set("handle", ext);
  r.Set("kind", k);
  r.Set("kernel", h->plan.kernel);
  r.Set("numParts", h->plan.num_parts);
  r.Set("mBlocks", h->plan.m_blocks);
  r.Set("numSegments", h->plan.num_segments);
  r.Set("numSlots", h->plan.num_slots);
  r.Set("maxSplits", h->plan.max_splits);
  r.Set("ctasPerSm", h->plan.ctas_per_sm);
  r.Set("rowsPerCta", h->plan.rows_per_cta);
  r.Set("smCount", h->plan.sm_count);
  return r;
}

// Parses (plan, tensors, softmaxScale) into the plain structs; checks buffer sizes.
struct Call {
  PlanHolder* plan = nullptr;
  cd::Tensors t;
  float scale = 1.f;
};

Call ParseCall(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Call c;
  c.plan = GetPlan(env, info[0]);
  if (info.Length() < 2 || !info[1].IsObject())
    ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", "tensors must be an object of device buffers");
  Napi::Object o = info[1].As<Napi::Object>();
  c.scale = static_cast<float>(GetNumber(info, 2, "softmaxScale"));
  const cd::Shape& s = c.plan->shape;
  const size_t rows = static_cast<size_t>(s.batch) * s.q_len * s.heads;
  if (s.mla) {
    DevBuf* qa = OptBuffer(env, o, "qLat");
    DevBuf* qb = OptBuffer(env, o, "qRope");
    DevBuf* kv = OptBuffer(env, o, "cache");
    if (!qa || !qb || !kv) ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", "MLA needs qLat, qRope and cache buffers");
    NeedBytes(env, qa, rows * s.dv * 2, "qLat");
    NeedBytes(env, qb, rows * (s.dqk - s.dv) * 2, "qRope");
    c.t.qa = qa->ptr;
    c.t.qb = qb->ptr;
    c.t.k = kv->ptr;
    if (s.max_blocks == 0) NeedBytes(env, kv, static_cast<size_t>(s.batch) * s.seq_stride * s.dqk * 2, "cache");
  } else {
    DevBuf* q = OptBuffer(env, o, "q");
    DevBuf* k = OptBuffer(env, o, "kCache");
    DevBuf* v = OptBuffer(env, o, "vCache");
    if (!q || !k || !v) ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", "GQA needs q, kCache and vCache buffers");
    NeedBytes(env, q, rows * s.dqk * 2, "q");
    c.t.qa = q->ptr;
    c.t.k = k->ptr;
    c.t.v = v->ptr;
    if (s.max_blocks == 0) {
      NeedBytes(env, k, static_cast<size_t>(s.batch) * s.seq_stride * s.kv_heads * s.dqk * 2, "kCache");
      NeedBytes(env, v, static_cast<size_t>(s.batch) * s.seq_stride * s.kv_heads * s.dv * 2, "vCache");
    }
  }
  DevBuf* bt = OptBuffer(env, o, "blockTable");
  if (s.max_blocks > 0) {
    if (!bt) ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", "the plan is paged: blockTable is required");
    NeedBytes(env, bt, static_cast<size_t>(s.batch) * s.max_blocks * 4, "blockTable");
    c.t.block_table = static_cast<const int32_t*>(bt->ptr);
  }
  DevBuf* out = OptBuffer(env, o, "out");
  DevBuf* lse = OptBuffer(env, o, "lse");
  if (!out || !lse) ThrowTypeError(env, "ERR_INVALID_ARG_TYPE", "out and lse buffers are required");
  NeedBytes(env, out, rows * s.dv * 2, "out");
  NeedBytes(env, lse, rows * 4, "lse");
  c.t.out = out->ptr;
  c.t.lse = static_cast<float*>(lse->ptr);
  return c;
}

class DecodeWorker : public PromiseWorker {
 public:
  DecodeWorker(Napi::Env env, const Call& c, int warmup, int iters, bool timed)
      : PromiseWorker(env), c_(c), warmup_(warmup), iters_(iters), timed_(timed) {}

 protected:
  void Run() override {
    std::string err = timed_ ? cd::TimeRuns(c_.plan->shape, c_.plan->plan, c_.t, c_.scale, warmup_, iters_, &ms_)
                             : cd::Run(c_.plan->shape, c_.plan->plan, c_.t, c_.scale);
    if (!err.empty()) throw WorkError{"ERR_CUDA", err, 0};
  }
  Napi::Value Result(Napi::Env env) override {
    if (!timed_) return env.Undefined();
    auto arr = Napi::Array::New(env, ms_.size());
    for (size_t i = 0; i < ms_.size(); ++i) arr.Set(static_cast<uint32_t>(i), Napi::Number::New(env, ms_[i]));
    std::vector<float> sorted = ms_;
    std::sort(sorted.begin(), sorted.end());
    auto o = Napi::Object::New(env);
    o.Set("ms", arr);
    o.Set("medianMs", sorted.empty() ? 0.0 : sorted[sorted.size() / 2]);
    o.Set("minMs", sorted.empty() ? 0.0 : sorted.front());
    return o;
  }

 private:
  Call c_;
  int warmup_, iters_;
  bool timed_;
  std::vector<float> ms_;
};

void KeepCall(PromiseWorker* w, const Napi::CallbackInfo& info) {
  w->Keep(info[0]);
  Napi::Object o = info[1].As<Napi::Object>();
  for (const char* k : {"qLat", "qRope", "cache", "q", "kCache", "vCache", "blockTable", "out", "lse"}) w->Keep(o.Get(k));
}

// decodeAsync(plan, tensors, softmaxScale) -> Promise<void>
Napi::Value DecodeAsync(const Napi::CallbackInfo& info) {
  Call c = ParseCall(info);
  auto* w = new DecodeWorker(info.Env(), c, 0, 0, false);
  KeepCall(w, info);
  return w->Start();
}

// benchAsync(plan, tensors, softmaxScale, {warmup, iters}) -> Promise<{ms, medianMs, minMs}>
Napi::Value BenchAsync(const Napi::CallbackInfo& info) {
  Call c = ParseCall(info);
  int warmup = 3, iters = 20;
  if (info.Length() > 3 && info[3].IsObject()) {
    Napi::Object o = info[3].As<Napi::Object>();
    warmup = static_cast<int>(IntOpt(o, "warmup", 3, 0, 10000));
    iters = static_cast<int>(IntOpt(o, "iters", 20, 1, 100000));
  }
  auto* w = new DecodeWorker(info.Env(), c, warmup, iters, true);
  KeepCall(w, info);
  return w->Start();
}

}  // namespace

void InitDecodeCuda(Napi::Env env, Napi::Object exports) {
  auto o = Napi::Object::New(env);
  SetFunctions(env, o, {
      {"deviceInfo", DeviceInfoExport<cd::GetDeviceInfo, true>},
      {"alloc", Alloc},
      {"free", FreeFn},
      {"upload", Upload},
      {"download", Download},
      {"fillRandomBf16", FillRandom},
      {"copyBandwidth", CopyBw},
      {"plan", PlanFn},
      {"decodeAsync", DecodeAsync},
      {"benchAsync", BenchAsync},
  });
  exports.Set("decodeCuda", o);
}

}  // namespace g2m

#endif  // GQA2MLA_CUDA
