//! The transformer's training path as a handful of coarse differentiable
//! ops, each a candle `CustomOp` with a hand-written backward, so that
//! autograd sees about ten nodes per ViT block instead of ~80:
//!
//! | op | file | autograd nodes |
//! |---|---|---|
//! | `linear(x, w, b)`, `linear_gelu(x, w, b)` | `linear.rs` | 1 (was reshape, matmul, transpose, bias add, GELU) |
//! | `attention(qkv, heads)` | `attention.rs` | 1 (was reshape, permute, 3 gets, scale, 2 matmuls, softmax, transposes) |
//! | `layer_norm(x, w, b, eps)` | `layer_norm.rs` | 1 (was normalise, affine mul, affine add) |
//! | `conv3x3_rows(x, dense, b)` (SR head) | `conv3x3_rows.rs` | 1 (was matmul, bias add; 62 % of its products at 4×4) |
//! | AdamW update, in place | `adamw.rs` | none (not a graph op; no allocation) |
//! | global gradient norm | `grad_norm.rs` | none (one pass over all gradients) |
//!
//! Each op file holds the op's `# Shapes`, its math, the CPU kernel
//! (forward and backward) and the composed candle path it replaces.
//!
//! Dispatch: `use_cpu_kernel` picks the CPU kernel for F32 tensors on the
//! CPU outside an autocast scope; everything else (GPUs, BF16/F16, autocast)
//! takes the composed candle path, which is differentiable on every device.
//! The CUDA implementation of an op goes into its `CustomOp::cuda_fwd` and
//! the `bwd` branch for CUDA storages, after which `use_cpu_kernel` becomes a
//! per-device choice; no model file changes. Tests compare the two paths
//! (values and every input gradient) and finite differences.

pub mod adamw;
pub mod attention;
pub mod conv3x3_rows;
pub mod fused_cpu;
pub(crate) mod cpu;
pub mod grad_norm;
pub mod layer_norm;
pub mod linear;
pub mod row_broadcast;

pub use attention::attention;
pub use conv3x3_rows::conv3x3_rows;
pub use cpu::{gemm_gflops, Backend};
pub use layer_norm::layer_norm;
pub use linear::{linear, linear_gelu};

use std::cell::Cell;

use candle_core::{DType, Tensor};

thread_local! {
    static COMPOSED_ONLY: Cell<bool> = const { Cell::new(false) };
}

/// A scope in which every op takes its composed candle path on this thread
/// (tests compare whole models both ways; also a way to rule the fused
/// kernels out when a result looks wrong). Scopes nest.
#[must_use = "the composed path is only forced while the guard lives"]
pub struct ComposedOnly {
    previous: bool,
}

impl ComposedOnly {
    pub fn enter() -> ComposedOnly {
        ComposedOnly { previous: COMPOSED_ONLY.with(|c| c.replace(true)) }
    }
}

impl Drop for ComposedOnly {
    fn drop(&mut self) {
        COMPOSED_ONLY.with(|c| c.set(self.previous));
    }
}

/// Whether the fused CPU kernels run for these tensors: all F32 on the CPU,
/// no autocast scope (whose products are BF16/F16), no `ComposedOnly` scope.
pub(crate) fn use_cpu_kernel(ts: &[&Tensor]) -> bool {
    !COMPOSED_ONLY.with(|c| c.get()) && crate::training::autocast::matmul_dtype().is_none() && ts.iter().all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

#[cfg(test)]
pub(crate) mod testing;
