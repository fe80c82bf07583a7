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

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{matmul, tensor, CpuF32, Mat, MatMut, Threads};
use crate::ops::fused_cpu::{exp_shifted_in_place, slice};

struct AttentionOp {
    heads: usize,
    /// The softmax probabilities, `[B, heads, N, N]`, kept for the backward.
    probs: OnceLock<Vec<f32>>,
}

/// Sizes of one call: batch, tokens, model dim, head dim.
#[derive(Clone, Copy)]
struct Dims {
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
    for row in p.chunks_exact_mut(n) {
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        // Exponentials first (a loop that vectorises), then the sum.
        exp_shifted_in_place(row, m);
        let inv = 1.0 / row.iter().sum::<f32>();
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// One sample: `x` `[N, 3D]`, `out` `[N, D]`, `probs` `[heads, N, N]`.
fn forward_sample(s: Dims, x: &[f32], out: &mut [f32], probs: &mut [f32], threads: Threads) -> Result<()> {
    let (n, d, hd) = (s.n, s.d, s.hd);
    for h in 0..s.heads {
        let p = &mut probs[h * n * n..(h + 1) * n * n];
        let q = Mat::rows(&x[h * hd..], n, hd, 3 * d);
        let k = Mat::rows(&x[d + h * hd..], n, hd, 3 * d);
        let v = Mat::rows(&x[2 * d + h * hd..], n, hd, 3 * d);
        matmul(MatMut::rows(p, n, n, n), q, k.t(), s.scale(), false, threads)?;
        softmax_rows_in_place(p, n);
        matmul(MatMut::rows(&mut out[h * hd..], n, hd, d), Mat::rows(p, n, n, n), v, 1.0, false, threads)?;
    }
    Ok(())
}

/// One sample's backward: `dx` `[N, 3D]` from `g` `[N, D]`.
fn backward_sample(s: Dims, x: &[f32], g: &[f32], probs: &[f32], dx: &mut [f32], threads: Threads) -> Result<()> {
    let (n, d, hd) = (s.n, s.d, s.hd);
    let mut dp = vec![0f32; n * n];
    for h in 0..s.heads {
        let p = Mat::rows(&probs[h * n * n..(h + 1) * n * n], n, n, n);
        let q = Mat::rows(&x[h * hd..], n, hd, 3 * d);
        let k = Mat::rows(&x[d + h * hd..], n, hd, 3 * d);
        let v = Mat::rows(&x[2 * d + h * hd..], n, hd, 3 * d);
        let go = Mat::rows(&g[h * hd..], n, hd, d);
        matmul(MatMut::rows(&mut dx[2 * d + h * hd..], n, hd, 3 * d), p.t(), go, 1.0, false, threads)?;
        matmul(MatMut::rows(&mut dp, n, n, n), go, v.t(), 1.0, false, threads)?;
        for (ds, pr) in dp.chunks_exact_mut(n).zip(p.data.chunks_exact(n)) {
            let dot: f32 = ds.iter().zip(pr).map(|(a, b)| a * b).sum();
            ds.iter_mut().zip(pr).for_each(|(ds, &pr)| *ds = pr * (*ds - dot));
        }
        let ds = Mat::rows(&dp, n, n, n);
        matmul(MatMut::rows(&mut dx[h * hd..], n, hd, 3 * d), ds, k, s.scale(), false, threads)?;
        matmul(MatMut::rows(&mut dx[d + h * hd..], n, hd, 3 * d), ds.t(), q, s.scale(), false, threads)?;
    }
    Ok(())
}

/// Samples in parallel when there are enough of them, else products in parallel.
fn per_sample(b: usize) -> bool {
    b >= candle_core::utils::get_num_threads()
}

impl AttentionOp {
    fn dims(&self, shape: &Shape) -> Result<Dims> {
        let (b, n, d3) = shape.dims3()?;
        let d = d3 / 3;
        if d3 % 3 != 0 || self.heads == 0 || d % self.heads != 0 {
            candle_core::bail!("attention: qkv {:?} is not [B, N, 3 * heads * head_dim] for {} heads", shape.dims(), self.heads);
        }
        Ok(Dims { b, n, d, hd: d / self.heads, heads: self.heads })
    }
}

impl CustomOp1 for AttentionOp {
    fn name(&self) -> &'static str {
        "attention"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(st, l, self.name())?;
        let s = self.dims(l.shape())?;
        let (n, d) = (s.n, s.d);
        let mut out = vec![0f32; s.b * n * d];
        let mut probs = vec![0f32; s.b * s.heads * n * n];
        if n > 0 && s.b > 0 {
            let chunks = out.chunks_mut(n * d).zip(probs.chunks_mut(s.heads * n * n)).zip(x.chunks(3 * n * d));
            if per_sample(s.b) {
                let chunks: Vec<_> = chunks.collect();
                chunks.into_par_iter().try_for_each(|((o, p), x)| forward_sample(s, x, o, p, Threads::One))?;
            } else {
                for ((o, p), x) in chunks {
                    forward_sample(s, x, o, p, Threads::All)?;
                }
            }
        }
        if self.probs.set(probs).is_err() {
            candle_core::bail!("attention: the op ran its forward twice");
        }
        Ok((CpuStorage::F32(out), Shape::from((s.b, n, d))))
    }

    fn bwd(&self, qkv: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let s = self.dims(qkv.shape())?;
        let Some(probs) = self.probs.get() else {
            candle_core::bail!("attention: backward before forward")
        };
        let grad = grad.contiguous()?;
        let (gv, xv) = (CpuF32::new(&grad, self.name())?, CpuF32::new(qkv, self.name())?);
        let (g, x) = (gv.slice()?, xv.slice()?);
        let (n, d) = (s.n, s.d);
        let mut dx = vec![0f32; s.b * n * 3 * d];
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
        Ok(Some(tensor(dx, qkv.shape())?))
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
    if super::use_cpu_kernel(&[qkv]) {
        qkv.contiguous()?.apply_op1(AttentionOp { heads, probs: OnceLock::new() })
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
