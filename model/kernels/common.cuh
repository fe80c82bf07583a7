// Helpers shared by the fused-op kernels: warp reductions, BF16 conversion,
// exact GELU. Every reduction here runs in a fixed order (butterfly shuffles
// within a warp, partial sums added in index order), so results never depend
// on scheduling: no float atomics anywhere.
#pragma once
#include <cuda_bf16.h>
#include <stdint.h>

#define WARP 32
#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
  return v;
}

__device__ __forceinline__ double warp_sum_f64(double v) {
#pragma unroll
  for (int o = WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
  return v;
}

// The sum of v over a whole block (blockDim.x a multiple of 32, at most
// 1024), in a fixed tree order; the result is valid in thread 0. Every
// thread of the block must call it.
__device__ __forceinline__ double block_sum_f64(double v) {
  __shared__ double warps[32];
  v = warp_sum_f64(v);
  if (threadIdx.x % WARP == 0) warps[threadIdx.x / WARP] = v;
  __syncthreads();
  double w = 0.0;
  if (threadIdx.x < WARP) {
    w = threadIdx.x < blockDim.x / WARP ? warps[threadIdx.x] : 0.0;
    w = warp_sum_f64(w);
  }
  return w;
}

// Exact (erf) GELU and its derivative, as torch.nn.GELU() / MAE.
__device__ __forceinline__ float gelu_erf(float z) {
  return 0.5f * z * (1.0f + erff(z * 0.70710678118654752f));
}

__device__ __forceinline__ float gelu_erf_grad(float z) {
  const float cdf = 0.5f * (1.0f + erff(z * 0.70710678118654752f));
  const float pdf = 0.39894228040143268f * __expf(-0.5f * z * z);
  return cdf + z * pdf;
}
