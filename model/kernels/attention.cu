// Row kernels of the fused attention op (model/src/ops/attention.rs); the
// products around them are cuBLAS strided-batched GEMMs.
//
// softmax_rows:      P = softmax(S) per row of n (the scale is folded into
//                    the product that wrote S), optionally also as BF16 for
//                    the next product.
// softmax_rows_bwd:  dS = P * (dP - rowsum(dP * P)) * scale, in place in dP,
//                    optionally also as BF16.
// One warp per row, 4 rows per block of 128 threads; any n.
#include "common.cuh"

extern "C" __global__ void softmax_rows(float* __restrict__ s, __nv_bfloat16* __restrict__ p_bf16, int64_t rows, int n) {
  const int64_t row = blockIdx.x * (int64_t)(blockDim.x / WARP) + threadIdx.x / WARP;
  const int lane = threadIdx.x % WARP;
  if (row >= rows) return;
  float* r = s + row * n;
  float m = -INFINITY;
  for (int j = lane; j < n; j += WARP) m = fmaxf(m, r[j]);
  m = warp_max(m);
  float sum = 0.0f;
  for (int j = lane; j < n; j += WARP) {
    const float e = __expf(r[j] - m);
    r[j] = e;
    sum += e;
  }
  const float inv = 1.0f / warp_sum(sum);
  for (int j = lane; j < n; j += WARP) {
    const float p = r[j] * inv;
    r[j] = p;
    if (p_bf16) p_bf16[row * n + j] = __float2bfloat16_rn(p);
  }
}

extern "C" __global__ void softmax_rows_bwd(const float* __restrict__ p, float* __restrict__ dp, __nv_bfloat16* __restrict__ ds_bf16, int64_t rows, int n, float scale) {
  const int64_t row = blockIdx.x * (int64_t)(blockDim.x / WARP) + threadIdx.x / WARP;
  const int lane = threadIdx.x % WARP;
  if (row >= rows) return;
  const float* pr = p + row * n;
  float* dr = dp + row * n;
  float dot = 0.0f;
  for (int j = lane; j < n; j += WARP) dot += pr[j] * dr[j];
  dot = warp_sum(dot);
  for (int j = lane; j < n; j += WARP) {
    const float ds = pr[j] * (dr[j] - dot) * scale;
    dr[j] = ds;
    if (ds_bf16) ds_bf16[row * n + j] = __float2bfloat16_rn(ds);
  }
}
