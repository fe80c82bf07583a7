//! Fused CPU kernels, with their backward, for the three elementwise-heavy
//! ops of a transformer block: exact GELU, softmax over the last dimension
//! and LayerNorm's normalisation.
//!
//! candle writes these as compositions of 5–10 tensor ops, each a separate
//! single-threaded pass over memory, forward and again (differently)
//! backward; on the CPU they cost more than the block's matrix products
//! (`srmae bench ops --device cpu`: GELU forward+backward 100 ms against the
//! MLP's 60 ms of products, ViT-Ti shapes, batch 16). Here each op is one
//! pass per direction, parallel over rows (rayon), as a candle `CustomOp`
//! whose `bwd` is another fused op.
//!
//! Dispatch: the public functions use the fused kernels for contiguous F32
//! tensors on the CPU and fall back to the differentiable compositions
//! everywhere else (GPUs, other dtypes), so results never depend on which
//! path ran beyond float rounding (tests compare both, values and
//! gradients).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;
use super::cpu::zeros;

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / sqrt(2π)
const INV_SQRT_2PI: f32 = 0.398_942_3;

pub(crate) fn fused(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32 && x.rank() >= 1
}

/// The contiguous F32 slice of a CPU storage.
pub(crate) fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &'static str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: needs a contiguous input"),
    }
}

/// Rows of the last dimension, in parallel: `f(row_in_a, row_in_b, row_out)`.
fn rows2(a: &[f32], b: &[f32], n: usize, f: impl Fn(&[f32], &[f32], &mut [f32]) + Sync) -> Vec<f32> {
    let mut out = zeros(a.len());
    out.par_chunks_mut(n).zip(a.par_chunks(n)).zip(b.par_chunks(n)).for_each(|((o, x), y)| f(x, y, o));
    out
}

// ---------------------------------------------------------------- GELU

/// erf in F32 as a rational function of odd degree 13 over even degree 8 on
/// [-4, 4] (erf is ±1 in F32 beyond), the approximation XLA and Eigen use for
/// F32 erf: largest absolute error 4.2e-7 against the F64 erf (tested), and
/// branch-free, so the loops below vectorise (candle's F64 `erf` was 10 % of
/// a CPU fine-tuning step).
#[inline(always)]
fn erf_f32(x: f32) -> f32 {
    #[allow(clippy::excessive_precision)]
    const A: [f32; 7] = [
        -2.72614225801306e-10,
        2.77068142495902e-08,
        -2.10102402082508e-06,
        -5.69250639462346e-05,
        -7.34990630326855e-04,
        -2.95459980854025e-03,
        -1.60960333262415e-02,
    ];
    #[allow(clippy::excessive_precision)]
    const B: [f32; 5] = [
        -1.45660718464996e-05,
        -2.13374055278905e-04,
        -1.68282697438203e-03,
        -7.37332916720468e-03,
        -1.42647390514189e-02,
    ];
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = A.iter().fold(0.0, |p, &a| p * x2 + a) * x;
    let q = B.iter().fold(0.0, |q, &b| q * x2 + b);
    p / q
}

/// e^x in F32, branch-free so that loops over it vectorise (the standard
/// library's `expf` is a scalar call: 3 % of a ViT-Ti SRMAE step, in the
/// attention softmax and the GELU gradient). Cody-Waite reduction
/// `x = n ln2 + r`, |r| ≤ ln2/2, Cephes' degree-6 polynomial for e^r, and
/// 2^n built in the exponent bits; `n` rounds by the 1.5·2^23 trick, which
/// needs SSE2 only. Largest relative error 2.4e-7 on [-87, 88] (tested);
/// below -87.3 it returns ~1e-38 rather than 0.
///
/// 2^n comes from the bits of the rounding sum `t = x log2e + 1.5·2^23`,
/// whose low mantissa bits hold `0x40_0000 + n`, by integer adds and a
/// shift, which vectorise; a float-to-int `as` cast would not (it saturates
/// and maps NaN to 0, so rustc compiles it one lane at a time: that cast
/// was most of this function's and the GELU gradient's time).
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23
    /// The bits of `ROUND`, less the exponent bias: `t.bits - this = n + 127`.
    const ROUND_BITS_LESS_BIAS: u32 = 0x4B40_0000 - 127;
    let x = x.clamp(-87.3, 88.7);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    #[allow(clippy::excessive_precision)]
    let p = ((((1.987_569_15e-4 * r + 1.398_199_95e-3) * r + 8.333_451_9e-3) * r + 4.166_579_59e-2) * r + 1.666_666_55e-1) * r + 5.000_000_12e-1;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(t.to_bits().wrapping_sub(ROUND_BITS_LESS_BIAS) << 23)
}

#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * FRAC_1_SQRT_2))
}

#[inline(always)]
pub(crate) fn gelu_grad(x: f32) -> f32 {
    0.5 * (1.0 + erf_f32(x * FRAC_1_SQRT_2)) + x * INV_SQRT_2PI * exp_f32(-0.5 * x * x)
}

/// Defines `$name(args) [-> ret]`, which runs `$body` compiled for AVX2 when
/// the CPU has it (the build targets baseline x86-64, i.e. SSE2: 4 floats
/// per instruction instead of 8), else for the baseline. No FMA is enabled
/// and Rust never contracts `a * b + c` or reorders a sum on its own, so both
/// versions compute bit-identical results (tested). An AVX-512 version was
/// measured too: on the AVX-512 machine it took the softmax exponentials and
/// the GELUs from 12.8 % of a ViT-Ti block's forward + backward to 11.2 %,
/// too little to keep.
macro_rules! with_avx2 {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $body:block) => {
        with_avx2! { $(#[$doc])* fn $name($($arg: $ty),*) -> () $body }
    };
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        $(#[$doc])*
        pub(crate) fn $name($($arg: $ty),*) -> $ret {
            #[inline(always)]
            fn portable($($arg: $ty),*) -> $ret $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            unsafe fn avx2($($arg: $ty),*) -> $ret {
                portable($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above), the
                // only requirement of calling a `target_feature(avx2)` fn.
                return unsafe { avx2($($arg),*) };
            }
            portable($($arg),*)
        }
    };
}

// ------------------------------------------------------- row reductions

/// Accumulators of the row reductions: lane `i` sums elements `i, i + 16,
/// i + 32, …` in order, then the lanes and the tail are added in a fixed
/// order. A plain `iter().sum()` is one sequential chain, which the compiler
/// may not reorder and so runs one element at a time; sixteen independent
/// chains become two AVX2 (four SSE2) vector adds per step, with the same
/// bits on every instruction set and thread count.
const LANES: usize = 16;

/// The lanes and then the tail, added in order.
#[inline(always)]
fn total(lanes: [f32; LANES], tail: f32) -> f32 {
    lanes.iter().fold(0.0, |s, &l| s + l) + tail
}

/// `Σ x` in lanes.
#[inline(always)]
fn sum_lanes(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            acc[i] += c[i];
        }
    }
    total(acc, chunks.remainder().iter().fold(0.0, |s, &v| s + v))
}

/// `Σ a ⊙ b` in lanes (over the shorter length).
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let full = n - n % LANES;
    for (ca, cb) in a[..full].chunks_exact(LANES).zip(b[..full].chunks_exact(LANES)) {
        for i in 0..LANES {
            acc[i] += ca[i] * cb[i];
        }
    }
    total(acc, a[full..].iter().zip(&b[full..]).fold(0.0, |s, (&x, &y)| s + x * y))
}

/// `max x` in lanes (NaNs ignored, as `f32::max`; -inf for an empty row).
#[inline(always)]
fn max_lanes(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            acc[i] = acc[i].max(c[i]);
        }
    }
    let tail = chunks.remainder().iter().copied().fold(f32::NEG_INFINITY, f32::max);
    acc.iter().copied().fold(tail, f32::max)
}

with_avx2! {
    /// `row ← softmax(row)` (max-shifted), in place.
    fn softmax_row_in_place(row: &mut [f32]) {
        let m = max_lanes(row);
        row.iter_mut().for_each(|v| *v = exp_f32(*v - m));
        let inv = 1.0 / sum_lanes(row);
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

with_avx2! {
    /// Softmax's backward for one row, in place: `g ← y ⊙ (g − Σ g ⊙ y)`.
    fn softmax_grad_row_in_place(g: &mut [f32], y: &[f32]) {
        let dot = dot_lanes(g, y);
        g.iter_mut().zip(y).for_each(|(g, &y)| *g = y * (*g - dot));
    }
}

with_avx2! {
    /// `y = gelu(z)` elementwise.
    fn gelu_into(y: &mut [f32], z: &[f32]) {
        y.iter_mut().zip(z).for_each(|(y, &z)| *y = gelu(z));
    }
}

with_avx2! {
    /// `g ← g * gelu'(z)` elementwise, in place.
    fn gelu_grad_in_place(g: &mut [f32], z: &[f32]) {
        let n = g.len().min(z.len());
        let (g, z) = (&mut g[..n], &z[..n]);
        for i in 0..n {
            g[i] *= gelu_grad(z[i]);
        }
    }
}

with_avx2! {
    /// `d = g * gelu'(z)` elementwise.
    fn gelu_grad_into(d: &mut [f32], g: &[f32], z: &[f32]) {
        // An index loop, not nested `zip`s: rustc leaves a nested zip's
        // `fold` out of line, compiled for the baseline instead of AVX2.
        let n = d.len().min(g.len()).min(z.len());
        let (d, g, z) = (&mut d[..n], &g[..n], &z[..n]);
        for i in 0..n {
            d[i] = g[i] * gelu_grad(z[i]);
        }
    }
}


struct GeluErf;
struct GeluErfGrad;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "fused-gelu-erf"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, self.name())?;
        let mut out = zeros(x.len());
        out.par_chunks_mut(4096).zip(x.par_chunks(4096)).for_each(|(o, x)| gelu_into(o, x));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &GeluErfGrad)?))
    }
}

impl CustomOp2 for GeluErfGrad {
    fn name(&self) -> &'static str {
        "fused-gelu-erf-grad"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?);
        let out = rows2(x, g, 4096, |x, g, o| gelu_grad_into(o, g, x));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Exact (erf) GELU.
/// # Shapes
/// - any -> the same
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if fused(x) {
        x.contiguous()?.apply_op1(GeluErf)
    } else {
        x.gelu_erf()
    }
}

// ---------------------------------------------------------------- softmax

struct Softmax;
struct SoftmaxGrad;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "fused-softmax"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, self.name())?;
        let n = l.dims()[l.dims().len() - 1];
        let out = rows2(x, x, n, |x, _, o| {
            o.copy_from_slice(x);
            softmax_row_in_place(o);
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxGrad)?))
    }
}

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "fused-softmax-grad"
    }
    /// dx = y * (g - sum(g * y)) per row.
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (y, g) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?);
        let n = l1.dims()[l1.dims().len() - 1];
        let out = rows2(y, g, n, |y, g, o| {
            o.copy_from_slice(g);
            softmax_grad_row_in_place(o, y);
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Softmax over the last dimension, differentiable.
/// # Shapes
/// - `[..., N]` -> `[..., N]`
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if fused(x) {
        x.contiguous()?.apply_op1(Softmax)
    } else {
        candle_nn::ops::softmax(x, D::Minus1)
    }
}

// ---------------------------------------------------------------- LayerNorm

/// (x - mean) / sqrt(var + eps) over the last dimension (no affine).
struct Normalise(f32);
struct NormaliseGrad(f32);

/// Mean and `1 / sqrt(biased variance + eps)` of a row (two passes, the
/// second over the deviations).
#[inline(always)]
fn moments_of(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = sum_lanes(x) / n;
    let mut acc = [0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            acc[i] += (c[i] - mean) * (c[i] - mean);
        }
    }
    let tail = chunks.remainder().iter().fold(0.0, |s, &v| s + (v - mean) * (v - mean));
    (mean, 1.0 / (total(acc, tail) / n + eps).sqrt())
}

with_avx2! {
    /// Mean and `1 / sqrt(biased variance + eps)` of a row.
    fn moments(x: &[f32], eps: f32) -> (f32, f32) {
        moments_of(x, eps)
    }
}

with_avx2! {
    /// One row of LayerNorm: `y = (x − μ) r ⊙ w + b`; returns `(μ, r)`.
    fn layer_norm_row(y: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) -> (f32, f32) {
        let (mean, r) = moments_of(x, eps);
        for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(w).zip(b) {
            *y = (x - mean) * r * w + b;
        }
        (mean, r)
    }
}

with_avx2! {
    /// One row of LayerNorm's backward from `g`, with `x̂ = (x − μ) r`:
    /// `dw += g ⊙ x̂`, `db += g`, and, unless `dx` is empty,
    /// `dx (+)= r (t − mean(t) − x̂ mean(t ⊙ x̂))` with `t = g ⊙ w`
    /// (`scratch` holds `t`; all slices at least `x`'s length).
    fn layer_norm_grad_row(dx: &mut [f32], x: &[f32], g: &[f32], w: &[f32], stats: (f32, f32), dw: &mut [f32], db: &mut [f32], scratch: &mut [f32], accumulate: bool) {
        let d = x.len();
        let (mean, r) = stats;
        let (g, w, dw, db, t) = (&g[..d], &w[..d], &mut dw[..d], &mut db[..d], &mut scratch[..d]);
        let (mut c1, mut c2) = ([0f32; LANES], [0f32; LANES]);
        let full = d - d % LANES;
        for c in 0..full / LANES {
            for i in 0..LANES {
                let j = c * LANES + i;
                let xhat = (x[j] - mean) * r;
                dw[j] += g[j] * xhat;
                db[j] += g[j];
                t[j] = g[j] * w[j];
                c1[i] += t[j];
                c2[i] += t[j] * xhat;
            }
        }
        let (mut tail1, mut tail2) = (0f32, 0f32);
        for j in full..d {
            let xhat = (x[j] - mean) * r;
            dw[j] += g[j] * xhat;
            db[j] += g[j];
            t[j] = g[j] * w[j];
            tail1 += t[j];
            tail2 += t[j] * xhat;
        }
        if dx.is_empty() {
            return;
        }
        let (m1, m2) = (total(c1, tail1) / d as f32, total(c2, tail2) / d as f32);
        let dx = &mut dx[..d];
        for j in 0..d {
            let v = r * (t[j] - m1 - (x[j] - mean) * r * m2);
            dx[j] = if accumulate { dx[j] + v } else { v };
        }
    }
}

impl CustomOp1 for Normalise {
    fn name(&self) -> &'static str {
        "fused-normalise"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = slice(s, l, self.name())?;
        let n = l.dims()[l.dims().len() - 1];
        let out = rows2(x, x, n, |x, _, o| {
            let (mean, inv) = moments(x, self.0);
            o.iter_mut().zip(x).for_each(|(o, &v)| *o = (v - mean) * inv);
        });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &NormaliseGrad(self.0))?))
    }
}

impl CustomOp2 for NormaliseGrad {
    fn name(&self) -> &'static str {
        "fused-normalise-grad"
    }
    /// dx = inv * (g - mean(g) - n * mean(g * n)), n the normalised row.
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?);
        let n = l1.dims()[l1.dims().len() - 1];
        let out = rows2(x, g, n, |x, g, o| {
            let (mean, inv) = moments(x, self.0);
            let len = x.len() as f32;
            let g_mean = g.iter().sum::<f32>() / len;
            let gn_mean = x.iter().zip(g).map(|(&v, &g)| (v - mean) * inv * g).sum::<f32>() / len;
            o.iter_mut().zip(x.iter().zip(g)).for_each(|(o, (&v, &g))| *o = inv * (g - g_mean - (v - mean) * inv * gn_mean));
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// LayerNorm's normalisation, `(x - mean) / sqrt(var + eps)` over the last
/// dimension (biased variance, as torch), without the affine part.
/// # Shapes
/// - `[..., D]` -> `[..., D]`
pub fn normalise_last_dim(x: &Tensor, eps: f64) -> Result<Tensor> {
    if fused(x) {
        return x.contiguous()?.apply_op1(Normalise(eps as f32));
    }
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    centred.broadcast_div(&(var + eps)?.sqrt()?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// The vectorised loops (AVX2 or baseline, whichever this CPU runs)
    /// give bit for bit what the scalar functions give one element at
    /// a time, so results do not depend on the machine's vector width.
    #[test]
    fn vector_loops_equal_the_scalar_functions_bit_for_bit() {
        let z: Vec<f32> = (0..4099).map(|i| ((i as f32) * 0.37).sin() * 9.0 - 1.5).collect();
        let g: Vec<f32> = (0..4099).map(|i| ((i as f32) * 0.11).cos()).collect();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let mut y = vec![0f32; z.len()];
        gelu_into(&mut y, &z);
        assert_eq!(bits(&y), bits(&z.iter().map(|&x| gelu(x)).collect::<Vec<_>>()));
        gelu_grad_into(&mut y, &g, &z);
        assert_eq!(bits(&y), bits(&z.iter().zip(&g).map(|(&x, &g)| g * gelu_grad(x)).collect::<Vec<_>>()));
        let mut in_place = g.clone();
        gelu_grad_in_place(&mut in_place, &z);
        assert_eq!(bits(&in_place), bits(&y), "in place");
        // The row kernels against the same steps compiled for the baseline.
        for n in [1usize, 15, 16, 17, 197, 4099] {
            let (z, g) = (&z[..n], &g[..n]);
            let mut row = z.to_vec();
            softmax_row_in_place(&mut row);
            let m = max_lanes(z);
            let e: Vec<f32> = z.iter().map(|&x| exp_f32(x - m)).collect();
            let inv = 1.0 / sum_lanes(&e);
            assert_eq!(bits(&row), bits(&e.iter().map(|v| v * inv).collect::<Vec<_>>()), "softmax, {n}");
            let mut dg = g.to_vec();
            softmax_grad_row_in_place(&mut dg, &row);
            let dot = dot_lanes(g, &row);
            assert_eq!(bits(&dg), bits(&g.iter().zip(&row).map(|(&g, &y)| y * (g - dot)).collect::<Vec<_>>()), "softmax grad, {n}");
            assert_eq!(moments(z, 1e-6), moments_of(z, 1e-6), "moments, {n}");
        }
    }

    /// The lane reductions against F64 sums, on lengths around the lane
    /// count (tails of 0, 1 and 15) and an empty row.
    #[test]
    fn lane_reductions_match_f64_sums() {
        for n in [0usize, 1, 7, 15, 16, 17, 31, 32, 33, 197, 1000] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 11 % 23) as f32 - 11.0) * 0.07).collect();
            let sum: f64 = a.iter().map(|&v| v as f64).sum();
            let dot: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            assert!((sum_lanes(&a) as f64 - sum).abs() < 1e-5, "sum of {n}");
            assert!((dot_lanes(&a, &b) as f64 - dot).abs() < 1e-5, "dot of {n}");
            let max = a.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max_lanes(&a), max, "max of {n}");
            if n > 1 {
                let mean = sum / n as f64;
                let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
                let (m, r) = moments(&a, 1e-6);
                assert!((m as f64 - mean).abs() < 1e-6 && (r as f64 - 1.0 / (var + 1e-6).sqrt()).abs() < 1e-4 * r as f64, "moments of {n}");
            }
        }
        // NaNs are ignored by the maximum, as `f32::max` does.
        let mut x = vec![1f32; 40];
        x[3] = f32::NAN;
        x[20] = 5.0;
        assert_eq!(max_lanes(&x), 5.0);
    }

    /// Largest absolute elementwise difference (F32 tensors of one shape).
    pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    /// Each fused op against its composition: values and input gradients
    /// under a non-uniform upstream gradient.
    #[test]
    fn fused_ops_match_their_compositions() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (3, 5, 37), &dev).unwrap() * 3.0).unwrap()).unwrap();
        let g = Tensor::randn(0f32, 1.0, (3, 5, 37), &dev).unwrap();
        type Op = fn(&Tensor) -> Result<Tensor>;
        let cases: [(&str, Op, Op); 3] = [
            ("gelu", gelu_erf, |x| x.gelu_erf()),
            ("softmax", softmax_last_dim, |x| candle_nn::ops::softmax(x, D::Minus1)),
            ("normalise", |x| normalise_last_dim(x, 1e-6), |x| {
                let mean = x.mean_keepdim(D::Minus1)?;
                let c = x.broadcast_sub(&mean)?;
                c.broadcast_div(&(c.sqr()?.mean_keepdim(D::Minus1)? + 1e-6)?.sqrt()?)
            }),
        ];
        for (name, ours, reference) in cases {
            let (a, b) = (ours(x.as_tensor()).unwrap(), reference(x.as_tensor()).unwrap());
            assert!(max_diff(&a, &b) < 1e-5, "{name} forward: {}", max_diff(&a, &b));
            let ga = (a * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = (b * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let (ga, gb) = (ga.get(x.as_tensor()).unwrap(), gb.get(x.as_tensor()).unwrap());
            assert!(max_diff(ga, gb) < 1e-4, "{name} backward: {}", max_diff(ga, gb));
        }
    }

    /// The AVX2 build of the elementwise kernels computes exactly what the
    /// scalar baseline code does.
    #[test]
    fn dispatched_kernels_equal_the_scalar_functions_bit_for_bit() {
        let z: Vec<f32> = (0..10_001).map(|i| (i as f32 - 5000.0) * 0.0013).collect();
        let g: Vec<f32> = (0..10_001).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let (mut y, mut d) = (vec![0f32; z.len()], vec![0f32; z.len()]);
        gelu_into(&mut y, &z);
        gelu_grad_into(&mut d, &g, &z);
        for i in 0..z.len() {
            assert_eq!(y[i].to_bits(), gelu(z[i]).to_bits(), "gelu at {}", z[i]);
            assert_eq!(d[i].to_bits(), (g[i] * gelu_grad(z[i])).to_bits(), "gelu' at {}", z[i]);
        }
    }

    #[test]
    fn exp_f32_is_within_3e_7_relative_of_f64_exp() {
        let mut worst = 0f64;
        for i in -870_000..=880_000 {
            let x = (i as f64 * 1e-4) as f32;
            let want = (x as f64).exp();
            let err = ((exp_f32(x) as f64 - want) / want).abs();
            worst = worst.max(err);
        }
        assert!(worst < 3e-7, "largest relative error {worst:e}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-1000.0) < 1e-37 && exp_f32(-1000.0) >= 0.0);
    }

    #[test]
    fn erf_f32_is_within_5e_7_of_f64_erf() {
        let mut worst = 0f64;
        for i in -600_000..=600_000 {
            let x = i as f64 * 1e-5;
            let err = (erf_f32(x as f32) as f64 - candle_core::cpu::erf::erf_f64(x)).abs();
            worst = worst.max(err);
        }
        assert!(worst < 5e-7, "largest error {worst:e}");
        assert_eq!(erf_f32(0.0), 0.0);
        assert_eq!(erf_f32(-10.0), -erf_f32(10.0));
    }

    #[test]
    fn non_contiguous_input_is_made_contiguous() {
        let x = Tensor::randn(0f32, 1.0, (4, 6), &Device::Cpu).unwrap().t().unwrap();
        let a = softmax_last_dim(&x).unwrap();
        let b = candle_nn::ops::softmax(&x, D::Minus1).unwrap();
        assert!(max_diff(&a, &b) < 1e-6);
    }
}
