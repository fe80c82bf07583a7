// F32 -> BF16 copies of product operands (round to nearest even), for the
// BF16 products of the fused ops under `run.precision = "bf16"`.
#include "common.cuh"

extern "C" __global__ void f32_to_bf16(const float* __restrict__ src, __nv_bfloat16* __restrict__ dst, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    dst[i] = __float2bfloat16_rn(src[i]);
  }
}
