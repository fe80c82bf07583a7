// In-place AdamW over many variables in one launch (model/src/ops/adamw.rs),
// decoupled weight decay as torch.optim.AdamW, F32 master weights and moments:
//   m <- b1 m + (1 - b1) s g;  v <- b2 v + (1 - b2) (s g)^2
//   p <- p (1 - lr wd) - lr (m / c1) / (sqrt(v / c2) + eps)
// grid (blocks per tensor, tensors): block y walks tensor y with a grid stride.
#include "common.cuh"

struct AdamWTensor {
  float* p;
  float* m;
  float* v;
  const float* g;
  int64_t n;
  float lr;
  float weight_decay;
};

extern "C" __global__ void adamw_multi(const AdamWTensor* __restrict__ ts, float beta1, float beta2, float eps, float bias_correction1,
                                       float bias_correction2, float grad_scale) {
  const AdamWTensor t = ts[blockIdx.y];
  const float decay = 1.0f - t.lr * t.weight_decay;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < t.n; i += (int64_t)gridDim.x * blockDim.x) {
    const float g = t.g[i] * grad_scale;
    const float m = beta1 * t.m[i] + (1.0f - beta1) * g;
    const float v = beta2 * t.v[i] + (1.0f - beta2) * g * g;
    t.m[i] = m;
    t.v[i] = v;
    t.p[i] = t.p[i] * decay - t.lr * (m / bias_correction1) / (sqrtf(v / bias_correction2) + eps);
  }
}
