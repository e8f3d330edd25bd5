// buildInfo(): what this build of the addon contains and what the CPU supports.
#include <cblas.h>

#include "common.h"
#include "exports.h"

namespace g2m {

static Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto o = Napi::Object::New(env);
#ifdef GQA2MLA_CUDA
  o.Set("cuda", Napi::Boolean::New(env, true));
#else
  o.Set("cuda", Napi::Boolean::New(env, false));
#endif
  o.Set("blas", Napi::String::New(env, "openblas"));
  o.Set("blasConfig", Napi::String::New(env, openblas_get_config()));
  o.Set("blasThreads", Napi::Number::New(env, openblas_get_num_threads()));
  o.Set("threads", Napi::Number::New(env, NumThreads()));
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  o.Set("avx2", Napi::Boolean::New(env, __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")));
#else
  o.Set("avx2", Napi::Boolean::New(env, false));
#endif
  o.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  return o;
}

void InitInfo(Napi::Env env, Napi::Object exports) {
  exports.Set("buildInfo", Napi::Function::New(env, BuildInfo, "buildInfo"));
}

}  // namespace g2m
