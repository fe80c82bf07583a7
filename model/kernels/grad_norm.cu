// The global L2 norm of many gradients (model/src/ops/grad_norm.rs): squares
// summed in F64, a fixed grid per tensor, block sums in a fixed tree order,
// then all partials added in index order by one block: deterministic.
#include "common.cuh"

struct NormTensor {
  const float* x;
  int64_t n;
};

// grid (blocks, tensors), 256 threads; partial[tensor * gridDim.x + block].
extern "C" __global__ void sum_squares_partials(const NormTensor* __restrict__ ts, double* __restrict__ partial) {
  const NormTensor t = ts[blockIdx.y];
  double acc = 0.0;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < t.n; i += (int64_t)gridDim.x * blockDim.x) {
    const double v = t.x[i];
    acc += v * v;
  }
  const double total = block_sum_f64(acc);
  if (threadIdx.x == 0) partial[blockIdx.y * (int64_t)gridDim.x + blockIdx.x] = total;
}

// One block of 256 threads: out[0] = Σ partial (strided per thread, then the tree).
extern "C" __global__ void sum_partials(const double* __restrict__ partial, int64_t n, double* __restrict__ out) {
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += partial[i];
  const double total = block_sum_f64(acc);
  if (threadIdx.x == 0) out[0] = total;
}
