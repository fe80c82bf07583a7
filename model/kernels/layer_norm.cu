// The fused LayerNorm op (model/src/ops/layer_norm.rs): biased variance as
// torch.nn.LayerNorm, one warp per row, mean and 1/std kept per row.
//
// forward:  y = (x - mu) r w + b
// backward: dxh = g w; dx = r (dxh - mean(dxh) - xh mean(dxh xh));
//           dw = Σ_rows g xh, db = Σ_rows g as per-chunk partials
//           (affine_partials), then column_reduce (linear.cu's) in order.
#include "common.cuh"

extern "C" __global__ void layer_norm_fwd(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ b, float* __restrict__ y,
                                          float* __restrict__ mean, float* __restrict__ rstd, int64_t rows, int d, float eps) {
  const int64_t row = blockIdx.x * (int64_t)(blockDim.x / WARP) + threadIdx.x / WARP;
  const int lane = threadIdx.x % WARP;
  if (row >= rows) return;
  const float* xr = x + row * d;
  float s = 0.0f;
  for (int j = lane; j < d; j += WARP) s += xr[j];
  const float mu = warp_sum(s) / d;
  float q = 0.0f;
  for (int j = lane; j < d; j += WARP) {
    const float c = xr[j] - mu;
    q += c * c;
  }
  const float r = rsqrtf(warp_sum(q) / d + eps);
  float* yr = y + row * d;
  for (int j = lane; j < d; j += WARP) yr[j] = (xr[j] - mu) * r * w[j] + b[j];
  if (lane == 0) {
    mean[row] = mu;
    rstd[row] = r;
  }
}

extern "C" __global__ void layer_norm_bwd_x(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ g, const float* __restrict__ mean,
                                            const float* __restrict__ rstd, float* __restrict__ dx, int64_t rows, int d) {
  const int64_t row = blockIdx.x * (int64_t)(blockDim.x / WARP) + threadIdx.x / WARP;
  const int lane = threadIdx.x % WARP;
  if (row >= rows) return;
  const float* xr = x + row * d;
  const float* gr = g + row * d;
  const float mu = mean[row], r = rstd[row];
  float a = 0.0f, c = 0.0f;
  for (int j = lane; j < d; j += WARP) {
    const float dxh = gr[j] * w[j];
    a += dxh;
    c += dxh * (xr[j] - mu) * r;
  }
  a = warp_sum(a) / d;
  c = warp_sum(c) / d;
  float* dr = dx + row * d;
  for (int j = lane; j < d; j += WARP) {
    const float xh = (xr[j] - mu) * r;
    dr[j] = r * (gr[j] * w[j] - a - xh * c);
  }
}

// grid (ceil(d / blockDim.x), chunks): pw/pb[chunk * d + col].
extern "C" __global__ void layer_norm_affine_partials(const float* __restrict__ x, const float* __restrict__ g, const float* __restrict__ mean,
                                                      const float* __restrict__ rstd, float* __restrict__ pw, float* __restrict__ pb,
                                                      int64_t rows, int d, int64_t rows_per_chunk) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= d) return;
  const int64_t r0 = blockIdx.y * rows_per_chunk;
  const int64_t r1 = min(rows, r0 + rows_per_chunk);
  float aw = 0.0f, ab = 0.0f;
  for (int64_t r = r0; r < r1; ++r) {
    const float gv = g[r * d + col];
    aw += gv * (x[r * d + col] - mean[r]) * rstd[r];
    ab += gv;
  }
  pw[blockIdx.y * (int64_t)d + col] = aw;
  pb[blockIdx.y * (int64_t)d + col] = ab;
}
