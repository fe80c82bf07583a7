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
//! | `sr_convs(u, convs, skip)` (SR head) | `sr_convs.rs` | 1 + the `cat` of its matrices (was 2R + 2 of the above, R ReLUs, R + 1 adds) |
//! | `concat_last(a, b, c)` (SR head input) | `concat_last.rs` | 1 (was `cat`: a strided copy, and strided gradient adds) |
//! | `upsample_nearest_hwc(x, s)` (SR head residual, data only) | `upsample_nearest.rs` | none (was broadcast + strided copy) |
//! | `transformer_block(x, params, ...)` (CPU: a whole ViT block) | `block.rs` | 1 + the `cat` of its parameters (was the nine above, two residual adds and the drop-path products) |
//! | `patch_mse(pred, target, w, stats, W)` (MAE/SRMAE loss, norm-pix optional) | `patch_mse.rs` | 1 (was sub, sqr, mean, mul, sum, div; norm-pix: + broadcast sub, div) |
//! | AdamW update, in place | `adamw.rs` | none (not a graph op; no allocation) |
//! | global gradient norm | `grad_norm.rs` | none (one pass over all gradients) |
//!
//! Each op file holds the op's `# Shapes`, its math, the CPU kernel
//! (forward and backward) and the composed candle path it replaces.
//!
//! Dispatch (`use_fused_kernel`): the CPU kernel for F32 tensors on the CPU
//! outside an autocast scope; with feature `cuda`, the CUDA kernels
//! (`cuda.rs`, `model/kernels/*.cu`) for F32 tensors on a GPU, outside an
//! autocast scope or inside a BF16 one (BF16 products, F32 accumulation), when
//! `cuda_ops_enabled()`; everything else (F16, other dtypes, offset views
//! after a copy) takes the composed candle path, which is differentiable on
//! every device. Each op's `cuda_fwd` and the CUDA branch of its `bwd` sit
//! beside its CPU kernel; no model file knows which one runs. Tests compare
//! the paths (values and every input gradient) and finite differences;
//! `selftest` runs the same comparison on any device (`srmae selftest`).
//!
//! The CUDA kernels are compiled and their CPU references tested here, but
//! they run on a GPU only when `SRMAE_CUDA_OPS=fused` (or
//! `set_cuda_ops_enabled(true)`): until `srmae selftest --device cuda` has
//! passed on the hardware (bench/gpu.sh runs it first), a GPU run keeps the
//! composed path that is already measured there (docs/GPU.md).

pub mod adamw;
pub mod attention;
pub mod block;
pub mod concat_last;
pub mod conv3x3_rows;
pub(crate) mod cpu;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
pub mod fused_cpu;
pub mod grad_norm;
pub mod layer_norm;
pub mod linear;
pub mod patch_mse;
pub mod row_broadcast;
pub mod selftest;
pub mod sr_convs;
pub mod upsample_nearest;

pub use attention::attention;
pub use concat_last::concat_last;
pub use conv3x3_rows::conv3x3_rows;
pub use cpu::{blas_name, gemm_gflops, Backend};
pub use layer_norm::layer_norm;
pub use sr_convs::{sr_convs, DenseConv, SrConvs};
pub use linear::{linear, linear_gelu};
pub use patch_mse::patch_mse;
pub use upsample_nearest::upsample_nearest_hwc;

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};

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

/// 0: not decided yet (read `SRMAE_CUDA_OPS` once), 1: off, 2: on.
static CUDA_OPS: AtomicU8 = AtomicU8::new(0);

/// Whether the fused CUDA kernels run on GPUs (`SRMAE_CUDA_OPS=fused`, or
/// `set_cuda_ops_enabled`); off by default (see the module docs).
pub fn cuda_ops_enabled() -> bool {
    match CUDA_OPS.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var("SRMAE_CUDA_OPS").is_ok_and(|v| v.eq_ignore_ascii_case("fused"));
            CUDA_OPS.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
        v => v == 2,
    }
}

/// Turns the fused CUDA kernels on or off for the whole process.
pub fn set_cuda_ops_enabled(on: bool) {
    CUDA_OPS.store(if on { 2 } else { 1 }, Ordering::Relaxed);
}

/// Whether the fused CUDA kernels run for these tensors: all F32 on a GPU,
/// products F32 or BF16 (autocast), `cuda_ops_enabled()`, no `ComposedOnly`.
pub(crate) fn use_cuda_kernel(ts: &[&Tensor]) -> bool {
    cfg!(feature = "cuda")
        && !COMPOSED_ONLY.with(|c| c.get())
        && matches!(crate::training::autocast::matmul_dtype(), None | Some(DType::BF16))
        && cuda_ops_enabled()
        && ts.iter().all(|t| t.device().is_cuda() && t.dtype() == DType::F32)
}

/// Whether an op's own kernel (CPU or CUDA) runs rather than the composed path.
pub(crate) fn use_fused_kernel(ts: &[&Tensor]) -> bool {
    use_cpu_kernel(ts) || use_cuda_kernel(ts)
}

/// Whether the fused CUDA products of an op created now run in BF16.
pub(crate) fn bf16_products() -> bool {
    crate::training::autocast::matmul_dtype() == Some(DType::BF16)
}

#[cfg(test)]
pub(crate) mod testing;
