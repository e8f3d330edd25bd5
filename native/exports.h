// One Init function per feature file; addon.cc calls them all.
#pragma once
#include <napi.h>

namespace g2m {
void InitInfo(Napi::Env env, Napi::Object exports);     // info.cc: build/runtime facts
void InitLinalg(Napi::Env env, Napi::Object exports);   // linalg.cc: eigh, svd, gemm
void InitForwardNorm(Napi::Env env, Napi::Object exports);       // forward_norm.cc: embedGather, rmsNorm
void InitForwardLinear(Napi::Env env, Napi::Object exports);     // forward_linear.cc: linear, swiglu
void InitForwardRope(Napi::Env env, Napi::Object exports);       // forward_rope.cc: rope
void InitForwardAttention(Napi::Env env, Napi::Object exports);  // forward_attention.cc: attention
void InitForwardLoss(Napi::Env env, Napi::Object exports);       // forward_loss.cc: logSoftmaxNll, lmHeadNll
void InitDtypeConvert(Napi::Env env, Napi::Object exports);      // dtype_convert.cc: widen16, narrow16, roundFloat32
void InitConversionReduce(Napi::Env env, Napi::Object exports);  // conversion_reduce.cc: squaredDiffSums, latentRowStats
void InitDecodeMlaCpu(Napi::Env env, Napi::Object exports);  // decode_mla_cpu.cc: mlaDecodeCpuAsync
#ifdef GQA2MLA_CUDA
void InitDecodeCuda(Napi::Env env, Napi::Object exports);    // decode_cuda.cc: decodeCuda.*
void InitMemoryCuda(Napi::Env env, Napi::Object exports);    // memory_cuda.cc: convertCuda buffers, copies
void InitForwardCuda(Napi::Env env, Napi::Object exports);   // forward_cuda.cc: convertCuda forward kernels
void InitLinalgCuda(Napi::Env env, Napi::Object exports);    // linalg_cuda.cc: convertCuda eigh, svd, gemm
#endif
}  // namespace g2m
