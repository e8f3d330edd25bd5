// One Init function per feature file; addon.cc calls them all.
#pragma once
#include <napi.h>

namespace g2m {
void InitInfo(Napi::Env env, Napi::Object exports);     // info.cc: build/runtime facts
void InitLinalg(Napi::Env env, Napi::Object exports);   // linalg.cc: eigh, svd, gemm
}  // namespace g2m
