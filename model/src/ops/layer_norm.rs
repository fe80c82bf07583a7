//! LayerNorm over the last dimension with its affine part, as one autograd
//! node (biased variance, as `torch.nn.LayerNorm`).
//!
//! Math, per row `x` of length `D` (`μ`, `σ² ` its mean and biased variance,
//! `r = 1 / sqrt(σ² + eps)`, `x̂ = (x − μ) r`):
//! - forward: `y = x̂ ⊙ w + b`;
//! - backward, from `g`: `dw = Σ_rows g ⊙ x̂`, `db = Σ_rows g`,
//!   `dx̂ = g ⊙ w`, `dx = r (dx̂ − mean(dx̂) − x̂ mean(dx̂ ⊙ x̂))`.
//!
//! The CPU kernel keeps `μ` and `r` per row (two floats; `x̂` is recomputed
//! from `x`), and computes `dx`, `dw` and `db` in one pass: blocks of rows
//! in parallel, each with its own partial sums, added in block order so the
//! result does not depend on the thread count.
//!
//! CUDA (`cuda_fwd`, `bwd_cuda`; `model/kernels/layer_norm.cu`): one warp per
//! row for the forward and `dx`, `μ` and `r` kept per row; `dw`, `db` as
//! per-chunk column partials added in chunk order (deterministic).

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::cpu::{tensor, CpuF32, zeros};
use crate::ops::fused_cpu::{layer_norm_grad_row, layer_norm_row, slice};

struct LayerNormOp {
    eps: f32,
    /// `(μ, r)` per row, kept for the backward.
    stats: OnceLock<Vec<(f32, f32)>>,
    /// `μ` and `r` per row on the GPU.
    #[cfg(feature = "cuda")]
    stats_cuda: OnceLock<(candle_core::cuda_backend::cudarc::driver::CudaSlice<f32>, candle_core::cuda_backend::cudarc::driver::CudaSlice<f32>)>,
}

/// Rows per parallel block: about 32 K floats, at least one row; fixed for a
/// given width, so partial sums never depend on the thread count.
fn rows_per_block(d: usize) -> usize {
    (32_768 / d.max(1)).max(1)
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "layer-norm"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?, slice(s3, l3, self.name())?);
        let (y, stats) = forward_cpu(x, w, b, self.eps);
        if self.stats.set(stats).is_err() {
            candle_core::bail!("layer-norm: the op ran its forward twice");
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use super::cuda::{self, Module};
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        use candle_core::cuda_backend::WrapErr;
        let (dev, [x, w, b]) = cuda::storage_views([(s1, l1), (s2, l2), (s3, l3)], self.name())?;
        let d = w.len();
        let rows = x.len() / d.max(1);
        let y = cuda::alloc(&dev, x.len())?;
        let (mean, rstd) = (cuda::alloc(&dev, rows)?, cuda::alloc(&dev, rows)?);
        let f = cuda::func(&dev, Module::LayerNorm, "layer_norm_fwd")?;
        let mut args = f.builder();
        let (rows64, d32) = (rows as i64, d as i32);
        args.arg(&x);
        args.arg(&w);
        args.arg(&b);
        args.arg(&y);
        args.arg(&mean);
        args.arg(&rstd);
        args.arg(&rows64);
        args.arg(&d32);
        args.arg(&self.eps);
        // SAFETY: x and y hold rows × d floats, w and b d, mean and rstd rows; one warp per row, bounds checked.
        unsafe { args.launch(cuda::per_row(rows)) }.w()?;
        if self.stats_cuda.set((mean, rstd)).is_err() {
            candle_core::bail!("layer-norm: the op ran its forward twice");
        }
        Ok((cuda::storage(y, &dev), l1.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            return self.bwd_cuda(x, w, b, grad);
        }
        let Some(stats) = self.stats.get() else {
            candle_core::bail!("layer-norm: backward before forward")
        };
        let grad = grad.contiguous()?;
        let (gv, xv, wv) = (CpuF32::new(&grad, self.name())?, CpuF32::new(x, self.name())?, CpuF32::new(w, self.name())?);
        let (g, xs, ws) = (gv.slice()?, xv.slice()?, wv.slice()?);
        let mut dx = if x.track_op() { Some(zeros(xs.len())) } else { None };
        let (dw, db) = backward_cpu(xs, ws, g, stats, dx.as_deref_mut(), false);
        let dx = dx.map(|dx| tensor(dx, x.shape())).transpose()?;
        Ok((dx, Some(tensor(dw, w.shape())?), Some(tensor(db, b.shape())?)))
    }
}

/// The LayerNorm forward on the CPU: `x` `[R, D]` -> (`y` `[R, D]`, `(μ, r)` per row).
pub(crate) fn forward_cpu(x: &[f32], w: &[f32], b: &[f32], eps: f32) -> (Vec<f32>, Vec<(f32, f32)>) {
    let d = w.len();
    let rows = x.len() / d.max(1);
    let mut y = zeros(x.len());
    let mut stats = vec![(0f32, 0f32); rows];
    let rb = rows_per_block(d);
    y.par_chunks_mut(rb * d).zip(x.par_chunks(rb * d)).zip(stats.par_chunks_mut(rb)).for_each(|((y, x), st)| {
        for ((y, x), st) in y.chunks_exact_mut(d).zip(x.chunks_exact(d)).zip(st.iter_mut()) {
            *st = layer_norm_row(y, x, w, b, eps);
        }
    });
    (y, stats)
}

/// The LayerNorm backward on the CPU from `g` `[R, D]`: returns `(dw, db)`
/// and writes `dx` into `dx` when given (added onto it with `accumulate`:
/// a residual stream's gradient).
pub(crate) fn backward_cpu(xs: &[f32], ws: &[f32], g: &[f32], stats: &[(f32, f32)], dx: Option<&mut [f32]>, accumulate: bool) -> (Vec<f32>, Vec<f32>) {
    let d = ws.len();
    let rb = rows_per_block(d);
    let want_dx = dx.is_some();
    let mut no_dx: [f32; 0] = [];
    let dx = dx.unwrap_or(&mut no_dx);
    {
        let block = |(i, dx): (usize, &mut [f32])| -> Vec<f32> {
            // partial [dw; db]
            let mut part = vec![0f32; 2 * d];
            let (dw, db) = part.split_at_mut(d);
            let lo = i * rb;
            let hi = (lo + rb).min(stats.len());
            let mut scratch = vec![0f32; d];
            for row in lo..hi {
                let (xr, gr) = (&xs[row * d..(row + 1) * d], &g[row * d..(row + 1) * d]);
                let out = if dx.is_empty() { &mut [][..] } else { &mut dx[(row - lo) * d..(row - lo + 1) * d] };
                layer_norm_grad_row(out, xr, gr, ws, stats[row], dw, db, &mut scratch, accumulate);
            }
            part
        };
        let blocks = stats.len().div_ceil(rb);
        let parts: Vec<Vec<f32>> = if want_dx {
            dx.par_chunks_mut(rb * d).enumerate().map(block).collect()
        } else {
            (0..blocks).into_par_iter().map(|i| block((i, &mut [][..]))).collect()
        };
        let mut sums = vec![0f32; 2 * d];
        for p in parts {
            sums.iter_mut().zip(p).for_each(|(s, p)| *s += p);
        }
        let db = sums.split_off(d);
        (sums, db)
    }
}

#[cfg(feature = "cuda")]
impl LayerNormOp {
    /// `dx` (one warp per row), `dw` and `db` (column partials, then their sum in order).
    fn bwd_cuda(&self, x: &Tensor, w: &Tensor, b: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        use super::cuda::{self, CudaF32, Module};
        use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
        use candle_core::cuda_backend::WrapErr;
        let Some((mean, rstd)) = self.stats_cuda.get() else {
            candle_core::bail!("layer-norm: backward before forward")
        };
        let grad = grad.contiguous()?;
        let (gv, xv, wv) = (CudaF32::new(&grad, self.name())?, CudaF32::new(x, self.name())?, CudaF32::new(w, self.name())?);
        let dev = gv.device()?;
        let (g, xs, ws) = (gv.view()?, xv.view()?, wv.view()?);
        let d = ws.len();
        let rows = xs.len() / d.max(1);
        let (rows64, d32) = (rows as i64, d as i32);
        let dx = if x.track_op() {
            let dx = cuda::alloc(&dev, xs.len())?;
            let f = cuda::func(&dev, Module::LayerNorm, "layer_norm_bwd_x")?;
            let mut args = f.builder();
            args.arg(&xs);
            args.arg(&ws);
            args.arg(&g);
            args.arg(mean);
            args.arg(rstd);
            args.arg(&dx);
            args.arg(&rows64);
            args.arg(&d32);
            // SAFETY: x, g and dx hold rows × d floats, w d, mean and rstd rows; bounds checked.
            unsafe { args.launch(cuda::per_row(rows)) }.w()?;
            Some(cuda::tensor(dx, &dev, x.shape()))
        } else {
            None
        };
        let (chunks, per_chunk) = cuda::column_chunks(rows);
        let (mut pw, mut pb) = (cuda::alloc(&dev, chunks * d)?, cuda::alloc(&dev, chunks * d)?);
        let f = cuda::func(&dev, Module::LayerNorm, "layer_norm_affine_partials")?;
        let mut args = f.builder();
        let per64 = per_chunk as i64;
        args.arg(&xs);
        args.arg(&g);
        args.arg(mean);
        args.arg(rstd);
        args.arg(&mut pw);
        args.arg(&mut pb);
        args.arg(&rows64);
        args.arg(&d32);
        args.arg(&per64);
        let cfg = LaunchConfig { grid_dim: ((d as u32).div_ceil(cuda::THREADS), chunks as u32, 1), block_dim: (cuda::THREADS, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: x and g hold rows × d floats, pw and pb chunks × d; bounds checked.
        unsafe { args.launch(cfg) }.w()?;
        let dw = cuda::column_sums(&dev, &pw.slice(..), chunks, d)?;
        let db = cuda::column_sums(&dev, &pb.slice(..), chunks, d)?;
        Ok((dx, Some(cuda::tensor(dw, &dev, w.shape())), Some(cuda::tensor(db, &dev, b.shape()))))
    }
}

/// The composed candle path (GPUs, half precision): fused normalisation
/// (differentiable) and row-broadcast affine.
fn composed(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let normed = crate::ops::fused_cpu::normalise_last_dim(x, eps)?;
    crate::ops::row_broadcast::add_rows(&crate::ops::row_broadcast::mul_rows(&normed, w)?, b)
}

/// `(x − mean) / sqrt(var + eps) ⊙ w + b` over the last dimension.
/// # Shapes
/// - `x`: `[..., D]`, `w`, `b`: `[D]` -> `[..., D]`
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    if w.elem_count() != d || b.elem_count() != d {
        candle_core::bail!("layer-norm: x {:?}, weight {:?}, bias {:?}", x.dims(), w.dims(), b.dims());
    }
    if super::use_fused_kernel(&[x, w, b]) && d > 0 {
        let op = LayerNormOp {
            eps: eps as f32,
            stats: OnceLock::new(),
            #[cfg(feature = "cuda")]
            stats_cuda: OnceLock::new(),
        };
        x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, op)
    } else {
        composed(x, w, b, eps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{check_op, Case};

    #[test]
    fn matches_the_composition_and_finite_differences() {
        // 2 x 197 rows of 37 spans several parallel blocks of rows.
        for shape in [&[2usize, 197, 37][..], &[1, 50, 20], &[3, 5]] {
            let d = *shape.last().unwrap();
            let case = Case::new(&[shape, &[d], &[d]]);
            check_op(&format!("layer-norm {shape:?}"), &case, |t| layer_norm(&t[0], &t[1], &t[2], 1e-6), |t| composed(&t[0], &t[1], &t[2], 1e-6));
        }
    }

    #[test]
    fn gradients_do_not_depend_on_the_thread_count() {
        let x = Var::from_tensor(&crate::ops::testing::pseudo_random(&[64, 1500, 24], 3, 2.0)).unwrap();
        let w = Var::from_tensor(&crate::ops::testing::pseudo_random(&[24], 4, 1.0)).unwrap();
        let b = crate::ops::testing::pseudo_random(&[24], 5, 1.0);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| {
                let y = layer_norm(x.as_tensor(), w.as_tensor(), &b, 1e-6).unwrap();
                let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
                let flat = |t: &Tensor| g.get(t).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                (flat(x.as_tensor()), flat(w.as_tensor()))
            })
        };
        assert_eq!(run(1), run(3));
    }
    use candle_core::Var;
}
