// Epilogues of the fused linear op (model/src/ops/linear.rs); the products
// are cuBLAS GEMMs over the folded batch.
//
// bias_act:       z += b per row; y = gelu(z) when y is given (z kept for the
//                 backward), else the output is z itself.
// gelu_bwd:       dz = g * gelu'(z).
// column_partials / column_reduce: Σ_rows x, deterministic in two passes:
//                 row chunks of fixed size summed per column, then the chunks
//                 added in order (bias gradients, LayerNorm's affine gradients).
#include "common.cuh"

extern "C" __global__ void bias_act(float* __restrict__ z, const float* __restrict__ b, float* __restrict__ y, int64_t rows, int cols) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const float v = z[i] + b[i % cols];
    z[i] = v;
    if (y) y[i] = gelu_erf(v);
  }
}

extern "C" __global__ void gelu_bwd(const float* __restrict__ g, const float* __restrict__ z, float* __restrict__ dz, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    dz[i] = g[i] * gelu_erf_grad(z[i]);
  }
}

// grid (ceil(cols / blockDim.x), chunks); partial[chunk * cols + col].
extern "C" __global__ void column_partials(const float* __restrict__ x, float* __restrict__ partial, int64_t rows, int cols, int64_t rows_per_chunk) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= cols) return;
  const int64_t r0 = blockIdx.y * rows_per_chunk;
  const int64_t r1 = min(rows, r0 + rows_per_chunk);
  float acc = 0.0f;
  for (int64_t r = r0; r < r1; ++r) acc += x[r * cols + col];
  partial[blockIdx.y * (int64_t)cols + col] = acc;
}

extern "C" __global__ void column_reduce(const float* __restrict__ partial, float* __restrict__ out, int chunks, int cols) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= cols) return;
  float acc = 0.0f;
  for (int c = 0; c < chunks; ++c) acc += partial[(int64_t)c * cols + col];
  out[col] = acc;
}
