//! `x + v` and `x * v` where `v` spans `x`'s trailing dimensions (a bias,
//! LayerNorm's weight and bias, a position embedding), with a backward that
//! sums the upstream gradient over `x`'s rows in one parallel pass.
//!
//! candle differentiates a broadcast by `sum_keepdim` over the broadcast
//! (leading) dimensions, a strided scalar fold: 10 % of a CPU fine-tuning
//! step on the photo corpus (`perf`), for vectors of a few hundred floats.
//! Here the forward is one pass over rows and the vector's gradient is a
//! column sum (or, for the product, a column dot product) accumulated per
//! block of rows in parallel and added in block order, so results do not
//! depend on the thread count.
//!
//! Dispatch as in `fused_cpu`: contiguous F32 tensors on the CPU take the
//! fused path, anything else (GPUs, other dtypes, shapes that are not a
//! trailing match) candle's `broadcast_add` / `broadcast_mul`.

use crate::ops::fused_cpu::{fused, slice};
use crate::ops::cpu::zeros;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Rows of `k` floats per parallel block: about 64 K floats, at least one row.
fn block(k: usize) -> usize {
    (65_536 / k.max(1)).max(1) * k.max(1)
}

/// `f(x[i, j], v[j])` for every row `i` of `x` viewed as `[rows, v.len()]`.
fn map_rows(x: &[f32], v: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let k = v.len();
    let mut out = zeros(x.len());
    out.par_chunks_mut(block(k)).zip(x.par_chunks(block(k))).for_each(|(o, x)| {
        for (o, x) in o.chunks_exact_mut(k).zip(x.chunks_exact(k)) {
            for ((o, &x), &v) in o.iter_mut().zip(x).zip(v) {
                *o = f(x, v);
            }
        }
    });
    out
}

/// Column sums of `a` viewed as `[rows, k]`, or of `a * b` elementwise.
pub(crate) fn column_sums(a: &[f32], b: Option<&[f32]>, k: usize) -> Vec<f32> {
    let n = block(k);
    let partial: Vec<Vec<f32>> = a
        .par_chunks(n)
        .enumerate()
        .map(|(i, a)| {
            let mut acc = vec![0f32; k];
            match b {
                None => a.chunks_exact(k).for_each(|r| acc.iter_mut().zip(r).for_each(|(s, &x)| *s += x)),
                Some(b) => {
                    let b = &b[i * n..i * n + a.len()];
                    for (r, q) in a.chunks_exact(k).zip(b.chunks_exact(k)) {
                        acc.iter_mut().zip(r).zip(q).for_each(|((s, &x), &y)| *s += x * y);
                    }
                }
            }
            acc
        })
        .collect();
    let mut sum = vec![0f32; k];
    for p in partial {
        sum.iter_mut().zip(p).for_each(|(s, p)| *s += p);
    }
    sum
}

/// `[rows, k] (+|*) [k]`; the `bool` is true for the product.
struct RowOp(bool);
/// The vector's gradient: column sums of the upstream gradient `[rows, k]`,
/// or of its product with the other operand.
struct ColumnSum {
    k: usize,
    with_product: bool,
}

impl CustomOp2 for RowOp {
    fn name(&self) -> &'static str {
        if self.0 {
            "fused-mul-rows"
        } else {
            "fused-add-rows"
        }
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, v) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?);
        if v.is_empty() || x.len() % v.len() != 0 {
            candle_core::bail!("{}: {} elements are not rows of {}", self.name(), x.len(), v.len());
        }
        let out = if self.0 { map_rows(x, v, |x, v| x * v) } else { map_rows(x, v, |x, v| x + v) };
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, v: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        let k = v.elem_count();
        if self.0 {
            let dx = g.apply_op2_no_bwd(v, &RowOp(true))?;
            let dv = g.apply_op2_no_bwd(x, &ColumnSum { k, with_product: true })?;
            Ok((Some(dx), Some(dv.reshape(v.shape())?)))
        } else {
            let dv = g.apply_op2_no_bwd(&g, &ColumnSum { k, with_product: false })?;
            Ok((Some(g), Some(dv.reshape(v.shape())?)))
        }
    }
}

impl CustomOp2 for ColumnSum {
    fn name(&self) -> &'static str {
        "fused-column-sum"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = slice(s1, l1, self.name())?;
        let other = if self.with_product { Some(slice(s2, l2, self.name())?) } else { None };
        Ok((CpuStorage::F32(column_sums(g, other, self.k)), Shape::from(self.k)))
    }
}

/// Whether `v` (leading 1s aside) is the trailing part of `x`'s shape.
fn trailing_match(x: &Tensor, v: &Tensor) -> bool {
    let vd: Vec<usize> = v.dims().iter().copied().skip_while(|&d| d == 1).collect();
    v.elem_count() > 0 && x.dims().ends_with(&vd) && x.rank() >= v.rank()
}

fn apply(x: &Tensor, v: &Tensor, product: bool) -> Result<Tensor> {
    if fused(x) && fused(v) && trailing_match(x, v) {
        x.contiguous()?.apply_op2(&v.contiguous()?, RowOp(product))
    } else if product {
        x.broadcast_mul(v)
    } else {
        x.broadcast_add(v)
    }
}

/// `x + v`, `v` broadcast over `x`'s leading dimensions.
/// # Shapes
/// - `x`: `[..., *S]`, `v`: `S` (or `[1, .., 1, *S]`) -> `x`'s shape
pub fn add_rows(x: &Tensor, v: &Tensor) -> Result<Tensor> {
    apply(x, v, false)
}

/// `x * v`, `v` broadcast over `x`'s leading dimensions.
/// # Shapes
/// - `x`: `[..., *S]`, `v`: `S` (or `[1, .., 1, *S]`) -> `x`'s shape
pub fn mul_rows(x: &Tensor, v: &Tensor) -> Result<Tensor> {
    apply(x, v, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::fused_cpu::tests::max_diff;
    use candle_core::{Device, Var};

    /// Values and both gradients against candle's broadcasts, for a bias-like
    /// vector, a position-embedding-like `[1, L, D]` and a row count that
    /// spans several parallel blocks.
    #[test]
    fn match_candle_broadcasts_values_and_gradients() {
        let dev = Device::Cpu;
        for (xs, vs) in [(vec![3, 5, 7], vec![7]), (vec![2, 4, 6], vec![1, 4, 6]), (vec![70_000, 3], vec![3])] {
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, xs.as_slice(), &dev).unwrap()).unwrap();
            let v = Var::from_tensor(&Tensor::randn(0f32, 1.0, vs.as_slice(), &dev).unwrap()).unwrap();
            let g = Tensor::randn(0f32, 1.0, xs.as_slice(), &dev).unwrap();
            type Op = fn(&Tensor, &Tensor) -> Result<Tensor>;
            let cases: [(&str, Op, Op); 2] = [
                ("add", add_rows, |x, v| x.broadcast_add(v)),
                ("mul", mul_rows, |x, v| x.broadcast_mul(v)),
            ];
            for (name, ours, reference) in cases {
                let (a, b) = (ours(&x, &v).unwrap(), reference(&x, &v).unwrap());
                assert!(max_diff(&a, &b) < 1e-6, "{name} {xs:?} forward");
                let ga = (a * &g).unwrap().sum_all().unwrap().backward().unwrap();
                let gb = (b * &g).unwrap().sum_all().unwrap().backward().unwrap();
                // dx: elementwise, equal to candle's up to rounding.
                let (p, q) = (ga.get(x.as_tensor()).unwrap(), gb.get(x.as_tensor()).unwrap());
                assert_eq!(p.dims(), q.dims(), "{name} {xs:?} dx shape");
                assert!(max_diff(p, q) < 1e-5, "{name} {xs:?} dx: {}", max_diff(p, q));
                // dv: a sum over rows, checked against the same sum in F64 within
                // 1e-5 of the sum of the terms' magnitudes (F32 summation error
                // grows with the row count, differently in candle's order and ours).
                let (p, q) = (ga.get(v.as_tensor()).unwrap(), gb.get(v.as_tensor()).unwrap());
                assert_eq!(p.dims(), q.dims(), "{name} {xs:?} dv shape");
                let terms = if name == "add" { g.clone() } else { (&g * x.as_tensor()).unwrap() };
                let k = v.elem_count();
                let terms = terms.to_dtype(candle_core::DType::F64).unwrap().reshape(((), k)).unwrap();
                let exact = terms.sum(0).unwrap();
                let bound = (terms.abs().unwrap().sum(0).unwrap() * 1e-5).unwrap();
                let ours = p.to_dtype(candle_core::DType::F64).unwrap().flatten_all().unwrap();
                let excess = ((ours - &exact).unwrap().abs().unwrap() - bound).unwrap().max(0).unwrap().to_scalar::<f64>().unwrap();
                assert!(excess <= 0.0, "{name} {xs:?} dv: off by {excess} more than the bound");
            }
        }
    }

    #[test]
    fn other_shapes_fall_back_to_broadcasts() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (4, 3, 2), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (4, 1, 1), &dev).unwrap(); // not trailing
        assert!(max_diff(&mul_rows(&x, &v).unwrap(), &x.broadcast_mul(&v).unwrap()) < 1e-7);
    }
}
