// Registers the addon's exports; every feature lives in its own file.
#include "exports.h"

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  g2m::InitInfo(env, exports);
  g2m::InitLinalg(env, exports);
  g2m::InitForwardNorm(env, exports);
  g2m::InitForwardLinear(env, exports);
  g2m::InitForwardRope(env, exports);
  g2m::InitForwardAttention(env, exports);
  g2m::InitForwardLoss(env, exports);
  g2m::InitDtypeConvert(env, exports);
  g2m::InitConversionReduce(env, exports);
  g2m::InitDecodeMlaCpu(env, exports);
#ifdef GQA2MLA_CUDA
  g2m::InitDecodeCuda(env, exports);
  g2m::InitMemoryCuda(env, exports);
  g2m::InitForwardCuda(env, exports);
  g2m::InitLinalgCuda(env, exports);
#endif
  return exports;
}

NODE_API_MODULE(gqa2mla, Init)
