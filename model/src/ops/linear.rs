//! Linear layer with bias, optionally followed by exact GELU, as one
//! autograd node.
//!
//! Math (`x` folded to `[R, in]`, `R` = all leading dims):
//! - forward: `z = x Wᵀ + b`, `y = z` or `y = gelu(z)` (erf form, as MAE);
//! - backward, from `g = ∂L/∂y`: `dz = g` or `g ⊙ gelu'(z)`;
//!   `dx = dz W` (`[R, out] x [out, in]`), `dW = dzᵀ x` (one GEMM over the
//!   folded batch, `[out, R] x [R, in]`), `db = Σ_rows dz`.
//!
//! The CPU kernel keeps `z` for the GELU backward (the only extra tensor);
//! the bias is written into the output before the product accumulates onto
//! it, so the forward is one GEMM and one pass. `dx` is skipped when `x`
//! needs no gradient (the patch embedding of pixels).
//!
//! CUDA (`cuda_fwd`, `bwd_cuda`): the products are cuBLAS GEMMs over the
//! folded batch (BF16 operands under BF16 autocast, F32 accumulation and
//! results); `bias_act` adds the bias and applies GELU in one pass keeping
//! `z`; the backward is `gelu_bwd`, two GEMMs and the deterministic two-pass
//! column sum for `db` (`model/kernels/linear.cu`).

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{matmul, matmul_bias, tensor, written, CpuF32, Mat, MatMut, Threads, zeros};
use crate::ops::fused_cpu::{gelu_grad_in_place, gelu_grad_into, gelu_into, slice};

/// `[R, in] -> [R, out]` with bias (and GELU).
struct LinearOp {
    gelu: bool,
    /// BF16 products on CUDA (the autocast scope when the op was made).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    bf16: bool,
    /// The pre-activation `z`, kept by the forward for the GELU backward.
    pre_activation: OnceLock<Vec<f32>>,
    #[cfg(feature = "cuda")]
    pre_activation_cuda: OnceLock<candle_core::cuda_backend::cudarc::driver::CudaSlice<f32>>,
}

/// Elements per parallel chunk of the elementwise passes (also `block.rs`'s).
pub(crate) const CHUNK: usize = 16 * 1024;

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        if self.gelu {
            "linear-gelu"
        } else {
            "linear"
        }
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?, slice(s3, l3, self.name())?);
        let (out_dim, in_dim) = l2.shape().dims2()?;
        let z = forward_cpu(x, w, b, in_dim, out_dim)?;
        let mut dims = l1.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = out_dim;
        }
        if !self.gelu {
            return Ok((CpuStorage::F32(z), Shape::from(dims)));
        }
        let y = gelu_cpu(&z);
        if self.pre_activation.set(z).is_err() {
            candle_core::bail!("{}: the op ran its forward twice", self.name());
        }
        Ok((CpuStorage::F32(y), Shape::from(dims)))
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
        use super::cuda::{self, Mat, Module, Operand};
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        use candle_core::cuda_backend::WrapErr;
        let (dev, [x, w, b]) = cuda::storage_views([(s1, l1), (s2, l2), (s3, l3)], self.name())?;
        let (out_dim, in_dim) = l2.shape().dims2()?;
        let rows = x.len() / in_dim.max(1);
        let mut z = cuda::alloc(&dev, rows * out_dim)?;
        let (xo, wo) = (Operand::new(&dev, x, self.bf16)?, Operand::new(&dev, w, self.bf16)?);
        cuda::gemm(&dev, (rows, out_dim, in_dim), (&xo, Mat::rows(0, in_dim, 0)), (&wo, Mat::rows(0, in_dim, 0).t()), (&mut z, Mat::rows(0, out_dim, 0)), 1.0, 0.0, 1)?;
        let y = if self.gelu { Some(cuda::alloc(&dev, rows * out_dim)?) } else { None };
        let f = cuda::func(&dev, Module::Linear, "bias_act")?;
        let mut args = f.builder();
        let (rows64, cols32, null) = (rows as i64, out_dim as i32, 0u64);
        args.arg(&mut z);
        args.arg(&b);
        match &y {
            Some(y) => args.arg(y),
            None => args.arg(&null),
        };
        args.arg(&rows64);
        args.arg(&cols32);
        // SAFETY: z and y hold rows × out floats, b out; grid-stride in bounds.
        unsafe { args.launch(cuda::elementwise(rows * out_dim)) }.w()?;
        let mut dims = l1.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = out_dim;
        }
        match y {
            None => Ok((cuda::storage(z, &dev), Shape::from(dims))),
            Some(y) => {
                if self.pre_activation_cuda.set(z).is_err() {
                    candle_core::bail!("{}: the op ran its forward twice", self.name());
                }
                Ok((cuda::storage(y, &dev), Shape::from(dims)))
            }
        }
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        #[cfg(feature = "cuda")]
        if x.device().is_cuda() {
            return self.bwd_cuda(x, w, b, grad);
        }
        let grad = grad.contiguous()?;
        let (gv, xv, wv) = (CpuF32::new(&grad, self.name())?, CpuF32::new(x, self.name())?, CpuF32::new(w, self.name())?);
        let (g, xs, ws) = (gv.slice()?, xv.slice()?, wv.slice()?);
        let (out_dim, in_dim) = w.dims2()?;
        let gelu_dz;
        let dz: &[f32] = if self.gelu {
            let Some(z) = self.pre_activation.get() else {
                candle_core::bail!("{}: backward before forward", self.name())
            };
            gelu_dz = gelu_backward_cpu(g, z);
            &gelu_dz
        } else {
            g
        };
        let (dx, dw, db) = backward_cpu(dz, xs, ws, in_dim, out_dim, x.track_op())?;
        let dx = dx.map(|dx| tensor(dx, x.shape())).transpose()?;
        Ok((dx, Some(tensor(dw, w.shape())?), Some(tensor(db, b.shape())?)))
    }
}

/// `z = x Wᵀ + b` on the CPU: `x` `[R, in]`, `w` `[out, in]`, `b` `[out]` ->
/// `[R, out]` (`matmul_bias`: each block's bias rows, then its product onto them).
pub(crate) fn forward_cpu(x: &[f32], w: &[f32], b: &[f32], in_dim: usize, out_dim: usize) -> Result<Vec<f32>> {
    let rows = x.len() / in_dim.max(1);
    // SAFETY: `matmul_bias` writes every element of its `[rows, out]` view
    // (row stride = its width), which is the whole buffer.
    unsafe { written(rows * out_dim, |z| matmul_bias(MatMut::uninit(z, rows, out_dim, out_dim), Mat::rows(x, rows, in_dim, in_dim), Mat::rows(w, out_dim, in_dim, in_dim).t(), b, Threads::All)) }
}

/// `gelu(z)` elementwise, in parallel.
pub(crate) fn gelu_cpu(z: &[f32]) -> Vec<f32> {
    let mut y = zeros(z.len());
    y.par_chunks_mut(CHUNK).zip(z.par_chunks(CHUNK)).for_each(|(y, z)| gelu_into(y, z));
    y
}

/// `g ⊙ gelu'(z)` elementwise, in parallel.
pub(crate) fn gelu_backward_cpu(g: &[f32], z: &[f32]) -> Vec<f32> {
    let mut d = zeros(g.len());
    d.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK).zip(z.par_chunks(CHUNK))).for_each(|(d, (g, z))| gelu_grad_into(d, g, z));
    d
}

/// `g ← g ⊙ gelu'(z)` elementwise, in place (a gradient buffer the caller
/// owns), in parallel; the same values as `gelu_backward_cpu`.
pub(crate) fn gelu_backward_in_place(g: &mut [f32], z: &[f32]) {
    g.par_chunks_mut(CHUNK).zip(z.par_chunks(CHUNK)).for_each(|(g, z)| gelu_grad_in_place(g, z));
}

/// The linear backward on the CPU from `dz` `[R, out]`: `dx = dz W` (when
/// `want_dx`), `dW = dzᵀ x`, `db = Σ_rows dz`.
pub(crate) fn backward_cpu(dz: &[f32], x: &[f32], w: &[f32], in_dim: usize, out_dim: usize, want_dx: bool) -> Result<(Option<Vec<f32>>, Vec<f32>, Vec<f32>)> {
    let rows = dz.len() / out_dim.max(1);
    let dz_mat = Mat::rows(dz, rows, out_dim, out_dim);
    // SAFETY (both): an overwriting product into the whole buffer (row
    // stride = its width) writes every element.
    let dx = if want_dx {
        Some(unsafe { written(rows * in_dim, |dx| matmul(MatMut::uninit(dx, rows, in_dim, in_dim), dz_mat, Mat::rows(w, out_dim, in_dim, in_dim), 1.0, false, Threads::All)) }?)
    } else {
        None
    };
    let dw = unsafe { written(out_dim * in_dim, |dw| matmul(MatMut::uninit(dw, out_dim, in_dim, in_dim), dz_mat.t(), Mat::rows(x, rows, in_dim, in_dim), 1.0, false, Threads::All)) }?;
    let db = crate::ops::row_broadcast::column_sums(dz, None, out_dim);
    Ok((dx, dw, db))
}

#[cfg(feature = "cuda")]
impl LinearOp {
    /// `dz` (GELU), `dx = dz W`, `dW = dzᵀ x`, `db = Σ_rows dz` on the GPU.
    fn bwd_cuda(&self, x: &Tensor, w: &Tensor, b: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        use super::cuda::{self, CudaF32, Mat, Module, Operand};
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        use candle_core::cuda_backend::WrapErr;
        let grad = grad.contiguous()?;
        let (gv, xv, wv) = (CudaF32::new(&grad, self.name())?, CudaF32::new(x, self.name())?, CudaF32::new(w, self.name())?);
        let dev = gv.device()?;
        let (out_dim, in_dim) = w.dims2()?;
        let g = gv.view()?;
        let rows = g.len() / out_dim.max(1);
        let gelu_dz = if self.gelu {
            let Some(z) = self.pre_activation_cuda.get() else {
                candle_core::bail!("{}: backward before forward", self.name())
            };
            let d = cuda::alloc(&dev, g.len())?;
            let f = cuda::func(&dev, Module::Linear, "gelu_bwd")?;
            let mut args = f.builder();
            let n = g.len() as i64;
            args.arg(&g);
            args.arg(z);
            args.arg(&d);
            args.arg(&n);
            // SAFETY: g, z and d hold n floats each; grid-stride in bounds.
            unsafe { args.launch(cuda::elementwise(g.len())) }.w()?;
            Some(d)
        } else {
            None
        };
        let dz = match &gelu_dz {
            Some(d) => d.slice(..),
            None => g,
        };
        let db = cuda::column_sums(&dev, &dz, rows, out_dim)?;
        let dzo = Operand::new(&dev, dz, self.bf16)?;
        let dx = if x.track_op() {
            let wo = Operand::new(&dev, wv.view()?, self.bf16)?;
            let mut dx = cuda::alloc(&dev, rows * in_dim)?;
            cuda::gemm(&dev, (rows, in_dim, out_dim), (&dzo, Mat::rows(0, out_dim, 0)), (&wo, Mat::rows(0, in_dim, 0)), (&mut dx, Mat::rows(0, in_dim, 0)), 1.0, 0.0, 1)?;
            Some(cuda::tensor(dx, &dev, x.shape()))
        } else {
            None
        };
        let xo = Operand::new(&dev, xv.view()?, self.bf16)?;
        let mut dw = cuda::alloc(&dev, out_dim * in_dim)?;
        cuda::gemm(&dev, (out_dim, in_dim, rows), (&dzo, Mat::rows(0, out_dim, 0).t()), (&xo, Mat::rows(0, in_dim, 0)), (&mut dw, Mat::rows(0, in_dim, 0)), 1.0, 0.0, 1)?;
        Ok((dx, Some(cuda::tensor(dw, &dev, w.shape())), Some(cuda::tensor(db, &dev, b.shape()))))
    }
}

fn check(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<()> {
    let (out_dim, in_dim) = w.dims2()?;
    let last = x.dims().last().copied().unwrap_or(0);
    if last != in_dim || b.is_some_and(|b| b.elem_count() != out_dim) {
        candle_core::bail!("linear: x {:?}, weight {:?}, bias {:?}", x.dims(), w.dims(), b.map(|b| b.dims().to_vec()));
    }
    Ok(())
}

/// The composed candle path (GPUs, half precision, autocast, no bias):
/// batch folded into one product (so the weight gradient is one GEMM),
/// autocast-aware, bias added in F32.
fn composed(x: &Tensor, w: &Tensor, b: Option<&Tensor>, gelu: bool) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let (out_dim, in_dim) = w.dims2()?;
    let rows = x.elem_count() / in_dim.max(1);
    let y = crate::training::autocast::matmul(&x.reshape((rows, in_dim))?, &w.t()?)?;
    let y = match b {
        Some(b) => crate::ops::row_broadcast::add_rows(&y, b)?,
        None => y,
    };
    let mut out = dims;
    if let Some(last) = out.last_mut() {
        *last = out_dim;
    }
    let y = y.reshape(out)?;
    if gelu {
        crate::ops::fused_cpu::gelu_erf(&y)
    } else {
        Ok(y)
    }
}

fn dispatch(x: &Tensor, w: &Tensor, b: Option<&Tensor>, gelu: bool) -> Result<Tensor> {
    check(x, w, b)?;
    match b {
        Some(b) if super::use_fused_kernel(&[x, w, b]) => {
            let op = LinearOp {
                gelu,
                bf16: super::bf16_products(),
                pre_activation: OnceLock::new(),
                #[cfg(feature = "cuda")]
                pre_activation_cuda: OnceLock::new(),
            };
            x.contiguous()?.apply_op3(&w.contiguous()?, &b.contiguous()?, op)
        }
        _ => composed(x, w, b, gelu),
    }
}

/// `x Wᵀ + b`.
/// # Shapes
/// - `x`: `[..., in]`, `w`: `[out, in]`, `b`: `[out]` -> `[..., out]`
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    dispatch(x, w, b, false)
}

/// `gelu(x Wᵀ + b)`, exact (erf) GELU.
/// # Shapes
/// - `x`: `[..., in]`, `w`: `[out, in]`, `b`: `[out]` -> `[..., out]`
pub fn linear_gelu(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    dispatch(x, w, b, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{check_op, Case};

    #[test]
    fn matches_the_composition_and_finite_differences() {
        for &(lead, in_dim, out_dim) in &[(&[2usize, 197][..], 37usize, 45usize), (&[1, 50], 12, 20), (&[3], 5, 7)] {
            for gelu in [false, true] {
                let mut shape = lead.to_vec();
                shape.push(in_dim);
                let case = Case::new(&[&shape, &[out_dim, in_dim], &[out_dim]]);
                check_op(
                    &format!("linear gelu={gelu} {shape:?}->{out_dim}"),
                    &case,
                    |t| dispatch(&t[0], &t[1], Some(&t[2]), gelu),
                    |t| composed(&t[0], &t[1], Some(&t[2]), gelu),
                );
            }
        }
    }

    #[test]
    fn offset_views_and_half_precision_take_the_composed_path() {
        let dev = candle_core::Device::Cpu;
        let big = Tensor::randn(0f32, 1., (4, 9, 6), &dev).unwrap();
        let x = big.narrow(1, 2, 5).unwrap(); // an offset, non-contiguous view
        let w = Tensor::randn(0f32, 1., (3, 6), &dev).unwrap();
        let b = Tensor::randn(0f32, 1., 3, &dev).unwrap();
        let a = linear_gelu(&x, &w, Some(&b)).unwrap();
        let c = composed(&x, &w, Some(&b), true).unwrap();
        assert!(crate::ops::fused_cpu::tests::max_diff(&a, &c) < 1e-5);
        let h = linear(&x.to_dtype(candle_core::DType::BF16).unwrap(), &w.to_dtype(candle_core::DType::BF16).unwrap(), Some(&b.to_dtype(candle_core::DType::BF16).unwrap())).unwrap();
        let h = h.to_dtype(candle_core::DType::F32).unwrap();
        let f = linear(&x, &w, Some(&b)).unwrap();
        assert!(crate::ops::fused_cpu::tests::max_diff(&h, &f) < 0.1, "BF16 linear");
    }
}
