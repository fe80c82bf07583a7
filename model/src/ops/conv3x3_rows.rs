//! A 3×3 convolution (stride 1, padding 1) over small channels-last maps,
//! given as its dense matrix, computed one output row of the map at a time
//! so that the products skip the rows of the matrix that are structurally
//! zero.
//!
//! The SR head's layer (`crate::layers::conv3x3`) writes the convolution of an
//! `H × W × C_in` map as one `[HW·C_in, HW·C_out]` matrix `A` built from the
//! kernel. Output row `r` of the map reads only input rows `r − 1 … r + 1`,
//! so only the band `A[rows r−1..=r+1, row r]` is non-zero. Math, with `x`
//! `[N, HW·C_in]`, `K_r` the input columns of the band and `P_r` the output
//! columns of row `r`:
//! - forward: `y[:, P_r] = x[:, K_r] A[K_r, P_r] + b[P_r]`;
//! - backward, from `g`: `dx[:, K_r] += g[:, P_r] A[K_r, P_r]ᵀ` (bands
//!   overlap; rows added in order), `dA[K_r, P_r] = x[:, K_r]ᵀ g[:, P_r]`
//!   (zero outside the bands, where `A` is zero by construction, so the
//!   kernel's gradient through `A` is unchanged), `db = Σ_rows g`.
//!
//! At 4×4 this is 62 % of the dense product's multiply-adds (the SR head of
//! ViT-*/16 with ×4 clues); at 1×1 and 2×2 the band is the whole matrix and
//! the op equals the dense product.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::cpu::{matmul, matmul_bias, tensor, written, CpuF32, Mat, MatMut, Threads, zeros};
use crate::ops::fused_cpu::slice;

/// Map and channel sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MapDims {
    pub h: usize,
    pub w: usize,
    pub c_in: usize,
    pub c_out: usize,
}

impl MapDims {
    /// Input columns `[k0, k1)` and output columns `[p0, p1)` of row `r`'s band.
    fn band(&self, r: usize) -> ((usize, usize), (usize, usize)) {
        let (lo, hi) = (r.saturating_sub(1), (r + 1).min(self.h - 1));
        ((lo * self.w * self.c_in, (hi + 1) * self.w * self.c_in), (r * self.w * self.c_out, (r + 1) * self.w * self.c_out))
    }
    /// Values per input row of the op (`H·W·C_in`).
    pub(crate) fn k(&self) -> usize {
        self.h * self.w * self.c_in
    }
    /// Values per output row of the op (`H·W·C_out`).
    pub(crate) fn p(&self) -> usize {
        self.h * self.w * self.c_out
    }
}

/// Forward: `x · a + b` over `n = x.len() / k` rows, band by band.
pub(crate) fn band_forward(m: MapDims, x: &[f32], a: &[f32], b: &[f32]) -> Result<Vec<f32>> {
    let (k, p) = (m.k(), m.p());
    let n = x.len() / k;
    if b.len() != p {
        candle_core::bail!("conv3x3-rows: a bias of {} values for rows of {p}", b.len());
    }
    // SAFETY: the bands' output columns `p0..p1` (r = 0..h) partition the
    // `P` columns of each row, and `matmul_bias` writes every element of its
    // `[n, p1 - p0]` view, so all n·P elements are written.
    unsafe {
        written(n * p, |y| {
            for r in 0..m.h {
                let ((k0, k1), (p0, p1)) = m.band(r);
                let lhs = Mat { data: &x[k0..], rows: n, cols: k1 - k0, rs: k, cs: 1 };
                let rhs = Mat { data: &a[k0 * p + p0..], rows: k1 - k0, cols: p1 - p0, rs: p, cs: 1 };
                matmul_bias(MatMut::uninit(&mut y[p0..], n, p1 - p0, p), lhs, rhs, &b[p0..p1], Threads::All)?;
            }
            Ok(())
        })
    }
}

/// Backward from `g` (`[n, P]`): adds `g · aᵀ` (band by band) into `dx`
/// when given, and returns the dense matrix's gradient `xᵀ g` (zero outside
/// the bands). The bias gradient is `column_sums(g)`.
pub(crate) fn band_backward(m: MapDims, g: &[f32], x: &[f32], a: &[f32], mut dx: Option<&mut [f32]>) -> Result<Vec<f32>> {
    let (k, p) = (m.k(), m.p());
    let n = x.len() / k;
    let mut da = zeros(k * p);
    for r in 0..m.h {
        let ((k0, k1), (p0, p1)) = m.band(r);
        let g_r = Mat { data: &g[p0..], rows: n, cols: p1 - p0, rs: p, cs: 1 };
        if let Some(dx) = dx.as_deref_mut() {
            let a_t = Mat { data: &a[k0 * p + p0..], rows: k1 - k0, cols: p1 - p0, rs: p, cs: 1 }.t();
            matmul(MatMut::rows(&mut dx[k0..], n, k1 - k0, k), g_r, a_t, 1.0, true, Threads::All)?;
        }
        let x_t = Mat { data: &x[k0..], rows: n, cols: k1 - k0, rs: k, cs: 1 }.t();
        matmul(MatMut::rows(&mut da[k0 * p + p0..], k1 - k0, p1 - p0, p), x_t, g_r, 1.0, false, Threads::All)?;
    }
    Ok(da)
}

struct Conv3x3RowsOp(MapDims);

impl CustomOp3 for Conv3x3RowsOp {
    fn name(&self) -> &'static str {
        "conv3x3-rows"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, a, b) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?, slice(s3, l3, self.name())?);
        let y = band_forward(self.0, x, a, b)?;
        let n = x.len() / self.0.k();
        Ok((CpuStorage::F32(y), Shape::from((n, self.0.p()))))
    }

    fn bwd(&self, x: &Tensor, a: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (gv, xv, av) = (CpuF32::new(&grad, self.name())?, CpuF32::new(x, self.name())?, CpuF32::new(a, self.name())?);
        let (g, xs, aa) = (gv.slice()?, xv.slice()?, av.slice()?);
        let mut dx = if x.track_op() { Some(zeros(xs.len())) } else { None };
        let da = band_backward(self.0, g, xs, aa, dx.as_deref_mut())?;
        let db = crate::ops::row_broadcast::column_sums(g, None, self.0.p());
        let dx = match dx {
            Some(v) => Some(tensor(v, x.shape())?),
            None => None,
        };
        Ok((dx, Some(tensor(da, a.shape())?), Some(tensor(db, b.shape())?)))
    }
}

/// `x · dense + bias` for the dense matrix of a 3×3 convolution over
/// `h × w` maps (see the module doc); the composed path is one product.
/// # Shapes
/// - `x`: `[N, H·W·C_in]`, `dense`: `[H·W·C_in, H·W·C_out]`, `bias`: `[H·W·C_out]` -> `[N, H·W·C_out]`
pub fn conv3x3_rows(x: &Tensor, dense: &Tensor, bias: &Tensor, h: usize, w: usize) -> Result<Tensor> {
    let (k, p) = dense.dims2()?;
    let hw = h * w;
    if hw == 0 || k % hw != 0 || p % hw != 0 || x.dim(1)? != k || bias.elem_count() != p {
        candle_core::bail!("conv3x3-rows: x {:?}, dense {:?}, bias {:?} for {h}x{w} maps", x.dims(), dense.dims(), bias.dims());
    }
    if super::use_cpu_kernel(&[x, dense, bias]) {
        let dims = MapDims { h, w, c_in: k / hw, c_out: p / hw };
        x.contiguous()?.apply_op3(&dense.contiguous()?, &bias.contiguous()?, Conv3x3RowsOp(dims))
    } else {
        composed(x, dense, bias)
    }
}

fn composed(x: &Tensor, dense: &Tensor, bias: &Tensor) -> Result<Tensor> {
    crate::ops::row_broadcast::add_rows(&crate::training::autocast::matmul(x, dense)?, bias)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::{check_op, pseudo_random, Case};

    /// The dense matrix of a random kernel, with zeros outside each
    /// output position's 3×3 neighbourhood (as `Conv3x3` builds it).
    fn banded(h: usize, w: usize, c_in: usize, c_out: usize) -> Tensor {
        let vals = pseudo_random(&[h * w * c_in, h * w * c_out], 5, 1.0).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let p = h * w * c_out;
        let v: Vec<f32> = (0..vals.len())
            .map(|i| {
                let (q, o) = ((i / p) / c_in, (i % p) / c_out);
                let (dy, dx) = ((q / w) as isize - (o / w) as isize, (q % w) as isize - (o % w) as isize);
                if dy.abs() <= 1 && dx.abs() <= 1 {
                    vals[i]
                } else {
                    0.0
                }
            })
            .collect();
        Tensor::from_vec(v, (h * w * c_in, p), &candle_core::Device::Cpu).unwrap()
    }

    #[test]
    fn matches_the_dense_product_and_finite_differences() {
        for &(n, h, w, c_in, c_out) in &[(5usize, 4usize, 4usize, 3usize, 2usize), (1, 3, 5, 2, 3), (4, 1, 1, 5, 4), (2, 2, 2, 3, 3)] {
            let case = Case::new(&[&[n, h * w * c_in], &[h * w * c_in, h * w * c_out], &[h * w * c_out]]);
            // A banded matrix as the layer builds; its out-of-band gradient is
            // zero here and equal to the product's in the composition only
            // inside the bands, so compare through a mask.
            let mask = banded(h, w, c_in, c_out).ne(0f32).unwrap().to_dtype(candle_core::DType::F32).unwrap();
            check_op(
                &format!("conv3x3-rows n={n} {h}x{w} {c_in}->{c_out}"),
                &case,
                |t| conv3x3_rows(&t[0], &(&t[1] * &mask)?, &t[2], h, w),
                |t| composed(&t[0], &(&t[1] * &mask)?, &t[2]),
            );
        }
    }
}
