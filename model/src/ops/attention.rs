//! Multi-head self-attention from the packed qkv projection, as one
//! autograd node (heads split inside).
//!
//! Math, per sample and head (`Q, K, V` are `[N, hd]` column blocks of `qkv`,
//! in timm's order `[3, heads, hd]` along the last dimension, `s = hd^-½`):
//! - forward: `S = s Q Kᵀ`, `P = softmax_rows(S)`, `O = P V`, heads
//!   concatenated into `[N, D]`;
//! - backward, from `dO`: `dV = Pᵀ dO`, `dP = dO Vᵀ`,
//!   `dS = P ⊙ (dP − rowsum(dP ⊙ P))`, `dQ = s dS K`, `dK = s dSᵀ Q`,
//!   written into `dqkv` in the same packed layout.
//!
//! The CPU kernel keeps `P` (`[B, heads, N, N]`, what the backward needs;
//! recomputing it costs one more `N × N × hd` product and the exponentials
//! per head) and nothing else: no permuted copies of q, k, v, no scores.
//! Samples run in parallel, each with single-threaded products; batches
//! smaller than the thread count split the products instead.
//!
//! CUDA (`cuda_fwd`, `bwd_cuda`): per head, cuBLAS strided-batched products
//! over the batch read q, k, v in place in `qkv` (leading dimension `3D`, no
//! permuted copies; the scale folded into the first product's alpha), and a
//! warp-per-row softmax (`model/kernels/attention.cu`). Nothing is kept for
//! the backward but the op's input: it recomputes the scores (one more
//! `N × N × hd` product per head) instead of holding `[B, heads, N, N]`
//! probabilities alive from forward to backward.

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use std::mem::MaybeUninit;

use super::cpu::{assume_written, matmul, tensor, written, CpuF32, Mat, MatMut, Threads};
use crate::ops::fused_cpu::{slice, softmax_grad_row_in_place, softmax_row_in_place};

struct AttentionOp {
    heads: usize,
    /// BF16 products on CUDA (the autocast scope when the op was made).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    bf16: bool,
    /// The softmax probabilities, `[B, heads, N, N]`, kept for the backward.
    probs: OnceLock<Vec<f32>>,
}

/// Sizes of one call: batch, tokens, model dim, head dim.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    b: usize,
    n: usize,
    d: usize,
    hd: usize,
    heads: usize,
}

impl Dims {
    fn scale(&self) -> f32 {
        (self.hd as f32).powf(-0.5)
    }
}

fn softmax_rows_in_place(p: &mut [f32], n: usize) {
    p.chunks_exact_mut(n).for_each(softmax_row_in_place);
}

/// One sample: `x` `[N, 3D]`, `out` `[N, D]`, `probs` `[heads, N, N]`,
/// both outputs written in full (each head its `N × N` probabilities and
/// its `hd` columns of `out`; heads · hd = D) and neither read first.
fn forward_sample(s: Dims, x: &[f32], out: &mut [MaybeUninit<f32>], probs: &mut [MaybeUninit<f32>], threads: Threads) -> Result<()> {
    let (n, d, hd) = (s.n, s.d, s.hd);
    for h in 0..s.heads {
        let p = &mut probs[h * n * n..(h + 1) * n * n];
        let q = Mat::rows(&x[h * hd..], n, hd, 3 * d);
        let k = Mat::rows(&x[d + h * hd..], n, hd, 3 * d);
        let v = Mat::rows(&x[2 * d + h * hd..], n, hd, 3 * d);
        matmul(MatMut::uninit(p, n, n, n), q, k.t(), s.scale(), false, threads)?;
        // SAFETY: the overwriting product above wrote all n·n elements of `p`.
        let p = unsafe { assume_written(p) };
        softmax_rows_in_place(p, n);
        matmul(MatMut::uninit(&mut out[h * hd..], n, hd, d), Mat::rows(p, n, n, n), v, 1.0, false, threads)?;
    }
    Ok(())
}

/// One sample's backward: `dx` `[N, 3D]` from `g` `[N, D]`, written in full
/// (each head its `hd` columns of dq, dk and dv) and not read first.
fn backward_sample(s: Dims, x: &[f32], g: &[f32], probs: &[f32], dx: &mut [MaybeUninit<f32>], threads: Threads) -> Result<()> {
    let (n, d, hd) = (s.n, s.d, s.hd);
    let mut dp = vec![0f32; n * n];
    for h in 0..s.heads {
        let p = Mat::rows(&probs[h * n * n..(h + 1) * n * n], n, n, n);
        let q = Mat::rows(&x[h * hd..], n, hd, 3 * d);
        let k = Mat::rows(&x[d + h * hd..], n, hd, 3 * d);
        let v = Mat::rows(&x[2 * d + h * hd..], n, hd, 3 * d);
        let go = Mat::rows(&g[h * hd..], n, hd, d);
        matmul(MatMut::uninit(&mut dx[2 * d + h * hd..], n, hd, 3 * d), p.t(), go, 1.0, false, threads)?;
        matmul(MatMut::rows(&mut dp, n, n, n), go, v.t(), 1.0, false, threads)?;
        for (ds, pr) in dp.chunks_exact_mut(n).zip(p.data.chunks_exact(n)) {
            softmax_grad_row_in_place(ds, pr);
        }
        let ds = Mat::rows(&dp, n, n, n);
        matmul(MatMut::uninit(&mut dx[h * hd..], n, hd, 3 * d), ds, k, s.scale(), false, threads)?;
        matmul(MatMut::uninit(&mut dx[d + h * hd..], n, hd, 3 * d), ds.t(), q, s.scale(), false, threads)?;
    }
    Ok(())
}

/// Samples in parallel when there are enough of them, else products in parallel.
fn per_sample(b: usize) -> bool {
    b >= candle_core::utils::get_num_threads()
}

impl Dims {
    /// The sizes of `qkv` `[B, N, 3D]` split into `heads` heads.
    pub(crate) fn of(shape: &Shape, heads: usize) -> Result<Dims> {
        let (b, n, d3) = shape.dims3()?;
        let d = d3 / 3;
        if d3 % 3 != 0 || heads == 0 || d % heads != 0 {
            candle_core::bail!("attention: qkv {:?} is not [B, N, 3 * heads * head_dim] for {heads} heads", shape.dims());
        }
        Ok(Dims { b, n, d, hd: d / heads, heads })
    }
}

impl AttentionOp {
    fn dims(&self, shape: &Shape) -> Result<Dims> {
        Dims::of(shape, self.heads)
    }
}

/// The attention forward on the CPU: `qkv` `[B, N, 3D]` -> (`out` `[B, N, D]`,
/// probabilities `[B, heads, N, N]`).
pub(crate) fn forward_cpu(x: &[f32], s: Dims) -> Result<(Vec<f32>, Vec<f32>)> {
    let (n, d) = (s.n, s.d);
    if x.len() != s.b * n * 3 * d {
        candle_core::bail!("attention: qkv holds {} floats, not [{}, {n}, {}]", x.len(), s.b, 3 * d);
    }
    let mut probs = Vec::new();
    // SAFETY: the closure returns `Ok` only after `forward_sample` ran on
    // every sample's chunk of `out` (n·d floats each, b of them) and of
    // `probs` (heads·n·n), and `forward_sample` writes its chunks in full;
    // with n = 0 or b = 0 both buffers are empty.
    let out = unsafe {
        written(s.b * n * d, |out| {
            probs = written(s.b * s.heads * n * n, |pr| {
                if n > 0 && s.b > 0 {
                    let chunks = out.chunks_mut(n * d).zip(pr.chunks_mut(s.heads * n * n)).zip(x.chunks(3 * n * d));
                    if per_sample(s.b) {
                        let chunks: Vec<_> = chunks.collect();
                        chunks.into_par_iter().try_for_each(|((o, p), x)| forward_sample(s, x, o, p, Threads::One))?;
                    } else {
                        for ((o, p), x) in chunks {
                            forward_sample(s, x, o, p, Threads::All)?;
                        }
                    }
                }
                Ok(())
            })?;
            Ok(())
        })?
    };
    Ok((out, probs))
}

/// The attention backward on the CPU: `dqkv` `[B, N, 3D]` from `g` `[B, N, D]`.
pub(crate) fn backward_cpu(x: &[f32], g: &[f32], probs: &[f32], s: Dims) -> Result<Vec<f32>> {
    let (n, d) = (s.n, s.d);
    if x.len() != s.b * n * 3 * d || g.len() != s.b * n * d || probs.len() != s.b * s.heads * n * n {
        candle_core::bail!("attention: backward from qkv {}, gradient {} and probabilities {} floats for {s:?}", x.len(), g.len(), probs.len());
    }
    // SAFETY: `Ok` only after `backward_sample` wrote every sample's chunk
    // of `dx` (3·n·d floats, b of them) in full; empty when n or b is 0.
    unsafe {
        written(s.b * n * 3 * d, |dx| {
            if n > 0 && s.b > 0 {
                let chunks = dx.chunks_mut(3 * n * d).zip(x.chunks(3 * n * d)).zip(g.chunks(n * d)).zip(probs.chunks(s.heads * n * n));
                if per_sample(s.b) {
                    let chunks: Vec<_> = chunks.collect();
                    chunks.into_par_iter().try_for_each(|(((dx, x), g), p)| backward_sample(s, x, g, p, dx, Threads::One))?;
                } else {
                    for (((dx, x), g), p) in chunks {
                        backward_sample(s, x, g, p, dx, Threads::All)?;
                    }
                }
            }
            Ok(())
        })
    }
}

impl CustomOp1 for AttentionOp {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(st, l, self.name())?;
        let s = self.dims(l.shape())?;
        let (out, probs) = forward_cpu(x, s)?;
        if self.probs.set(probs).is_err() {
            candle_core::bail!("attention: the op ran its forward twice");
        }
        Ok((CpuStorage::F32(out), Shape::from((s.b, s.n, s.d))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, st: &candle_core::CudaStorage, l: &Layout) -> Result<(candle_core::CudaStorage, Shape)> {
        use super::cuda::{self, Operand};
        let s = self.dims(l.shape())?;
        let dev = st.device.clone();
        let mut out = cuda::alloc(&dev, s.b * s.n * s.d)?;
        if s.n > 0 && s.b > 0 {
            let qkv = Operand::new(&dev, cuda::storage_view(st, l, self.name())?, self.bf16)?;
            let (probs, probs_bf16) = gpu::probabilities(&dev, s, &qkv, self.bf16)?;
            let p = Operand::f32_or_bf16(&probs, probs_bf16);
            gpu::per_head(s, |h| gpu::probs_times_v(&dev, s, h, &p, &qkv, &mut out))?;
        }
        Ok((cuda::storage(out, &dev), Shape::from((s.b, s.n, s.d))))
    }

    fn bwd(&self, qkv: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        #[cfg(feature = "cuda")]
        if qkv.device().is_cuda() {
            return self.bwd_cuda(qkv, grad).map(Some);
        }
        let s = self.dims(qkv.shape())?;
        let Some(probs) = self.probs.get() else {
            candle_core::bail!("attention: backward before forward")
        };
        let grad = grad.contiguous()?;
        let (gv, xv) = (CpuF32::new(&grad, self.name())?, CpuF32::new(qkv, self.name())?);
        let (g, x) = (gv.slice()?, xv.slice()?);
        Ok(Some(tensor(backward_cpu(x, g, probs, s)?, qkv.shape())?))
    }
}

#[cfg(feature = "cuda")]
impl AttentionOp {
    /// `dqkv` from `dO`, the probabilities recomputed from `qkv`.
    fn bwd_cuda(&self, qkv: &Tensor, grad: &Tensor) -> Result<Tensor> {
        use super::cuda::{self, CudaF32, Mat, Module, Operand};
        use candle_core::cuda_backend::cudarc::driver::PushKernelArg;
        use candle_core::cuda_backend::WrapErr;
        let s = self.dims(qkv.shape())?;
        let grad = grad.contiguous()?;
        let (xv, gv) = (CudaF32::new(qkv, self.name())?, CudaF32::new(&grad, self.name())?);
        let dev = xv.device()?;
        let (b, n, d, hd, heads) = (s.b, s.n, s.d, s.hd, s.heads);
        let mut dx = cuda::alloc(&dev, b * n * 3 * d)?;
        if n == 0 || b == 0 {
            return Ok(cuda::tensor(dx, &dev, qkv.shape()));
        }
        let x = Operand::new(&dev, xv.view()?, self.bf16)?;
        let go = Operand::new(&dev, gv.view()?, self.bf16)?;
        let (probs, probs_bf16) = gpu::probabilities(&dev, s, &x, self.bf16)?;
        let p = Operand::f32_or_bf16(&probs, probs_bf16);
        let (nn, hnn, row3) = (n * n, heads * n * n, n * 3 * d);
        // dV = Pᵀ dO and dP = dO Vᵀ, per head over the batch.
        let mut dp = cuda::alloc(&dev, b * hnn)?;
        gpu::per_head(s, |h| {
            cuda::gemm(&dev, (n, hd, n), (&p, Mat::rows(h * nn, n, hnn).t()), (&go, Mat::rows(h * hd, d, n * d)), (&mut dx, Mat::rows(2 * d + h * hd, 3 * d, row3)), 1.0, 0.0, b)?;
            cuda::gemm(&dev, (n, n, hd), (&go, Mat::rows(h * hd, d, n * d)), (&x, Mat::rows(2 * d + h * hd, 3 * d, row3).t()), (&mut dp, Mat::rows(h * nn, n, hnn)), 1.0, 0.0, b)
        })?;
        drop(p);
        // dS = s P ⊙ (dP − rowsum(dP ⊙ P)), in place in dP (and as BF16).
        let rows = b * heads * n;
        let ds_bf16 = cuda::alloc_bf16_copy(&dev, b * hnn, self.bf16)?;
        {
            let f = cuda::func(&dev, Module::Attention, "softmax_rows_bwd")?;
            let mut args = f.builder();
            let (rows64, n32, scale, null) = (rows as i64, n as i32, s.scale(), 0u64);
            args.arg(&probs);
            args.arg(&mut dp);
            match &ds_bf16 {
                Some(t) => args.arg(t),
                None => args.arg(&null),
            };
            args.arg(&rows64);
            args.arg(&n32);
            args.arg(&scale);
            // SAFETY: probs, dp (and ds_bf16) hold rows × n elements; one warp per row, bounds checked.
            unsafe { args.launch(cuda::per_row(rows)) }.w()?;
        }
        drop(probs);
        let ds = Operand::f32_or_bf16(&dp, ds_bf16);
        // dQ = dS K, dK = dSᵀ Q (the scale is already in dS).
        gpu::per_head(s, |h| {
            cuda::gemm(&dev, (n, hd, n), (&ds, Mat::rows(h * nn, n, hnn)), (&x, Mat::rows(d + h * hd, 3 * d, row3)), (&mut dx, Mat::rows(h * hd, 3 * d, row3)), 1.0, 0.0, b)?;
            cuda::gemm(&dev, (n, hd, n), (&ds, Mat::rows(h * nn, n, hnn).t()), (&x, Mat::rows(h * hd, 3 * d, row3)), (&mut dx, Mat::rows(d + h * hd, 3 * d, row3)), 1.0, 0.0, b)
        })?;
        Ok(cuda::tensor(dx, &dev, qkv.shape()))
    }
}

/// The CUDA pieces shared by the forward and the backward.
#[cfg(feature = "cuda")]
mod gpu {
    use super::Dims;
    use crate::ops::cuda::{self, Mat, Module, Operand};
    use candle_core::cuda_backend::cudarc::driver::{CudaSlice, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{CudaDevice, Result};

    /// Runs `f` for every head (each call one strided batch over the samples).
    pub(super) fn per_head(s: Dims, mut f: impl FnMut(usize) -> Result<()>) -> Result<()> {
        (0..s.heads).try_for_each(&mut f)
    }

    /// `P = softmax(s Q Kᵀ)`, `[B, heads, N, N]` in F32, and its BF16 copy for
    /// BF16 products.
    pub(super) fn probabilities(dev: &CudaDevice, s: Dims, qkv: &Operand<'_>, bf16: bool) -> Result<(CudaSlice<f32>, Option<CudaSlice<u16>>)> {
        let (b, n, d, hd) = (s.b, s.n, s.d, s.hd);
        let (nn, hnn, row3) = (n * n, s.heads * n * n, n * 3 * d);
        let mut probs = cuda::alloc(dev, b * hnn)?;
        per_head(s, |h| {
            cuda::gemm(dev, (n, n, hd), (qkv, Mat::rows(h * hd, 3 * d, row3)), (qkv, Mat::rows(d + h * hd, 3 * d, row3).t()), (&mut probs, Mat::rows(h * nn, n, hnn)), s.scale(), 0.0, b)
        })?;
        let rows = b * s.heads * n;
        let probs_bf16 = cuda::alloc_bf16_copy(dev, b * hnn, bf16)?;
        let f = cuda::func(dev, Module::Attention, "softmax_rows")?;
        let mut args = f.builder();
        let (rows64, n32, null) = (rows as i64, n as i32, 0u64);
        args.arg(&mut probs);
        match &probs_bf16 {
            Some(t) => args.arg(t),
            None => args.arg(&null),
        };
        args.arg(&rows64);
        args.arg(&n32);
        // SAFETY: probs (and probs_bf16) hold rows × n elements; one warp per row, bounds checked.
        unsafe { args.launch(cuda::per_row(rows)) }.w()?;
        Ok((probs, probs_bf16))
    }

    /// `O_h = P_h V_h` into head `h`'s columns of `out` `[B, N, D]`.
    pub(super) fn probs_times_v(dev: &CudaDevice, s: Dims, h: usize, p: &Operand<'_>, qkv: &Operand<'_>, out: &mut CudaSlice<f32>) -> Result<()> {
        let (b, n, d, hd) = (s.b, s.n, s.d, s.hd);
        let hnn = s.heads * n * n;
        cuda::gemm(dev, (n, hd, n), (p, Mat::rows(h * n * n, n, hnn)), (qkv, Mat::rows(2 * d + h * hd, 3 * d, n * 3 * d)), (out, Mat::rows(h * hd, d, n * d)), 1.0, 0.0, b)
    }
}

/// The composed candle path (GPUs, half precision, autocast): permuted
/// q/k/v, autocast-aware products, differentiable softmax.
fn composed(qkv: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, n, d3) = qkv.dims3()?;
    let d = d3 / 3;
    let hd = d / heads;
    let qkv = qkv.reshape((b, n, 3, heads, hd))?.permute((2, 0, 3, 1, 4))?;
    let q = (qkv.get(0)?.contiguous()? * (hd as f64).powf(-0.5))?;
    let k = qkv.get(1)?.contiguous()?;
    let v = qkv.get(2)?.contiguous()?;
    let attn = crate::ops::fused_cpu::softmax_last_dim(&crate::training::autocast::matmul(&q, &k.t()?)?)?;
    crate::training::autocast::matmul(&attn, &v)?.transpose(1, 2)?.reshape((b, n, d))
}

/// `softmax(s Q Kᵀ) V` for every head, from the packed projection.
/// # Shapes
/// - `qkv`: `[B, N, 3 * D]` (q, k, v; each `[heads, D / heads]`) -> `[B, N, D]`
pub fn attention(qkv: &Tensor, heads: usize) -> Result<Tensor> {
    if super::use_fused_kernel(&[qkv]) {
        qkv.contiguous()?.apply_op1(AttentionOp { heads, bf16: super::bf16_products(), probs: OnceLock::new() })
    } else {
        composed(qkv, heads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{check_op, Case};

    #[test]
    fn matches_the_composition_and_finite_differences() {
        // N = 197 (ViT at 224 with cls) and 50 (Fashion-MNIST), batch 1 and 3,
        // head dims 64-free odd sizes: D = 3 heads x 7, 2 x 5.
        for &(b, n, heads, hd) in &[(1usize, 197usize, 3usize, 7usize), (3, 50, 2, 5), (2, 1, 1, 4)] {
            let case = Case::new(&[&[b, n, 3 * heads * hd]]);
            check_op(&format!("attention b={b} n={n} heads={heads} hd={hd}"), &case, |t| attention(&t[0], heads), |t| composed(&t[0], heads));
        }
    }

    #[test]
    fn offset_views_are_copied_and_bad_shapes_refused() {
        let dev = candle_core::Device::Cpu;
        let big = Tensor::randn(0f32, 1., (2, 9, 13), &dev).unwrap();
        let qkv = big.narrow(2, 1, 12).unwrap(); // offset, strided
        let a = attention(&qkv, 2).unwrap();
        let c = composed(&qkv, 2).unwrap();
        assert!(crate::ops::fused_cpu::tests::max_diff(&a, &c) < 1e-5);
        assert!(attention(&big.narrow(2, 0, 10).unwrap(), 2).is_err(), "10 is not 3 x heads x hd");
    }
}
