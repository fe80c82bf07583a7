//! MAE's reconstruction loss as one node: the weighted per-patch MSE,
//! optionally after normalising the prediction by per-patch statistics
//! (SRMAE's norm-pix loss normalises prediction and target by the target
//! patch's mean and std).
//!
//! Math, with `x` `[R, P]` the prediction (R = B·L patches), `t` `[R, P]`
//! the target, per patch `l` a weight `w_l`, a shift `m_l` and a scale
//! `s_l`, and `W` the weight sum:
//! - forward: `e_lp = (x_lp − m_l) / s_l − t_lp`,
//!   `loss = Σ_l w_l · (1/P) Σ_p e_lp² / W`;
//! - backward from `g = ∂L/∂loss`: `∂L/∂x_lp = g · 2 w_l e_lp / (P · W · s_l)`.
//!
//! Why one node: composed, the loss is a subtraction, a square, a mean, a
//! product and a sum (and with norm-pix a broadcast subtraction and
//! division), and every `[R, P]` intermediate gets a zero-filled gradient
//! that candle then adds into, mostly on the calling thread: at ViT-Ti/16,
//! batch 16 the prediction is `[16, 196, 768]`. Here the forward is one
//! parallel pass (partial sums per fixed block of rows, in f64, added in
//! block order: the same value on any thread count) and the backward one
//! more. Only the prediction is differentiated: the target, weights and
//! statistics are data; if any of them tracks a gradient, or the tensors are
//! not F32 on the CPU, the composed candle path runs.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::cpu::{tensor, zeros, CpuF32};
use super::fused_cpu::slice;

/// Patches per parallel block: about 64 K floats, at least one patch.
fn patches_per_block(p: usize) -> usize {
    (65_536 / p.max(1)).max(1)
}

/// `rows` holds `(w_l, m_l, s_l)` per patch, `[R, 3]`.
struct PatchMse {
    p: usize,
    weight_sum: f64,
}

impl CustomOp3 for PatchMse {
    fn name(&self) -> &'static str {
        "patch-mse"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, t, rows) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?, slice(s3, l3, self.name())?);
        let p = self.p;
        let block = patches_per_block(p);
        let partial: Vec<f64> = x
            .par_chunks(block * p)
            .zip(t.par_chunks(block * p))
            .zip(rows.par_chunks(block * 3))
            .map(|((x, t), rows)| {
                let mut acc = 0f64;
                for ((x, t), r) in x.chunks_exact(p).zip(t.chunks_exact(p)).zip(rows.chunks_exact(3)) {
                    let (w, m, inv_s) = (r[0], r[1], 1.0 / r[2]);
                    if w == 0.0 {
                        continue;
                    }
                    let sq: f32 = x.iter().zip(t).map(|(&x, &t)| {
                        let e = (x - m) * inv_s - t;
                        e * e
                    }).sum();
                    acc += w as f64 * sq as f64;
                }
                acc
            })
            .collect();
        let loss = partial.iter().sum::<f64>() / (p as f64 * self.weight_sum);
        Ok((CpuStorage::F32(vec![loss as f32]), Shape::from(())))
    }

    fn bwd(&self, x: &Tensor, t: &Tensor, rows: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = grad.to_dtype(candle_core::DType::F32)?.to_vec0::<f32>()?;
        let (xv, tv, rv) = (CpuF32::new(x, self.name())?, CpuF32::new(t, self.name())?, CpuF32::new(rows, self.name())?);
        let (xs, ts, rs) = (xv.slice()?, tv.slice()?, rv.slice()?);
        let p = self.p;
        let block = patches_per_block(p);
        let base = (g as f64 * 2.0 / (p as f64 * self.weight_sum)) as f32;
        let mut dx = zeros(xs.len());
        dx.par_chunks_mut(block * p).zip(xs.par_chunks(block * p)).zip(ts.par_chunks(block * p)).zip(rs.par_chunks(block * 3)).for_each(|(((d, x), t), rows)| {
            for (((d, x), t), r) in d.chunks_exact_mut(p).zip(x.chunks_exact(p)).zip(t.chunks_exact(p)).zip(rows.chunks_exact(3)) {
                let (w, m, inv_s) = (r[0], r[1], 1.0 / r[2]);
                if w == 0.0 {
                    continue;
                }
                let k = base * w * inv_s;
                for ((d, &x), &t) in d.iter_mut().zip(x).zip(t) {
                    *d = k * ((x - m) * inv_s - t);
                }
            }
        });
        Ok((Some(tensor(dx, x.shape())?), None, None))
    }
}

/// `Σ_l w_l · mean_p ((pred − shift_l) / scale_l − target)² / weight_sum`:
/// with `stats` None (shift 0, scale 1) MAE's weighted patch MSE, with
/// `stats = (mean, std)` the norm-pix form that normalises the prediction
/// by the target patch's statistics. One node on the CPU (module doc).
/// # Shapes
/// - `pred`, `target`: `[B, L, P]`; `weights`: `[B, L]`; `stats`: `[B, L, 1]` each -> scalar
pub fn patch_mse(pred: &Tensor, target: &Tensor, weights: &Tensor, stats: Option<(&Tensor, &Tensor)>, weight_sum: f64) -> Result<Tensor> {
    let (b, l, p) = pred.dims3()?;
    if target.dims() != pred.dims() || weights.dims() != [b, l] || stats.is_some_and(|(m, s)| m.dims() != [b, l, 1] || s.dims() != [b, l, 1]) {
        candle_core::bail!(
            "patch-mse: pred {:?}, target {:?}, weights {:?}, stats {:?} are not [B, L, P], [B, L, P], [B, L], [B, L, 1]",
            pred.dims(),
            target.dims(),
            weights.dims(),
            stats.map(|(m, s)| (m.dims().to_vec(), s.dims().to_vec()))
        );
    }
    let weight_sum = weight_sum.max(1e-12);
    let data: Vec<&Tensor> = [target, weights].into_iter().chain(stats.into_iter().flat_map(|(m, s)| [m, s])).collect();
    let mut all = data.clone();
    all.push(pred);
    if !super::use_cpu_kernel(&all) || data.iter().any(|t| t.track_op()) || p == 0 {
        return composed(pred, target, weights, stats, weight_sum);
    }
    let w = weights.reshape((b, l, 1))?;
    let (m, s) = match stats {
        Some((m, s)) => (m.clone(), s.clone()),
        None => (w.zeros_like()?, w.ones_like()?),
    };
    let rows = Tensor::cat(&[&w, &m, &s], D::Minus1)?.reshape((b * l, 3))?;
    pred.contiguous()?.apply_op3(&target.contiguous()?, &rows, PatchMse { p, weight_sum })
}

fn composed(pred: &Tensor, target: &Tensor, weights: &Tensor, stats: Option<(&Tensor, &Tensor)>, weight_sum: f64) -> Result<Tensor> {
    let pred = match stats {
        Some((m, s)) => pred.broadcast_sub(m)?.broadcast_div(s)?,
        None => pred.clone(),
    };
    let per_patch = (pred - target)?.sqr()?.mean(D::Minus1)?;
    (per_patch * weights)?.sum_all()? / weight_sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    fn inputs(b: usize, l: usize, p: usize) -> Result<(Var, Tensor, Tensor, Tensor, Tensor)> {
        let dev = Device::Cpu;
        let pred = Var::randn(0f32, 1.0, (b, l, p), &dev)?;
        let target = Tensor::randn(0f32, 1.0, (b, l, p), &dev)?;
        // Weights 0, 1 and 0.5 (SRMAE's hidden / visible / clue weights).
        let w: Vec<f32> = (0..b * l).map(|i| [0.0, 1.0, 0.5][i % 3]).collect();
        let weights = Tensor::from_vec(w, (b, l), &dev)?;
        let mean = Tensor::randn(0f32, 0.3, (b, l, 1), &dev)?;
        let std = (Tensor::rand(0f32, 1.0, (b, l, 1), &dev)? + 0.5)?;
        Ok((pred, target, weights, mean, std))
    }

    #[test]
    fn loss_and_gradient_equal_the_composed_path() -> Result<()> {
        for (b, l, p) in [(1, 1, 1), (2, 7, 48), (16, 196, 77), (3, 50, 1000)] {
            let (pred, target, weights, mean, std) = inputs(b, l, p)?;
            let wsum = weights.sum_all()?.to_scalar::<f32>()? as f64;
            for stats in [None, Some((&mean, &std))] {
                let fused = patch_mse(pred.as_tensor(), &target, &weights, stats, wsum)?;
                let want = composed(pred.as_tensor(), &target, &weights, stats, wsum.max(1e-12))?;
                let (f, w) = (fused.to_scalar::<f32>()?, want.to_scalar::<f32>()?);
                assert!((f - w).abs() <= 1e-5 * w.abs().max(1.0), "{b}x{l}x{p} {}: {f} vs {w}", stats.is_some());
                let (gf, gw) = (fused.backward()?, want.backward()?);
                let (gf, gw) = (gf.get(pred.as_tensor()).expect("fused"), gw.get(pred.as_tensor()).expect("composed"));
                let scale = gw.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-12);
                let diff = (gf - gw)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(diff <= 1e-5 * scale, "{b}x{l}x{p} {}: gradient off by {diff} of {scale}", stats.is_some());
            }
        }
        Ok(())
    }

    #[test]
    fn gradient_matches_finite_differences() -> Result<()> {
        let (pred, target, weights, mean, std) = inputs(2, 5, 6)?;
        let stats = Some((&mean, &std));
        let loss = |x: &Tensor| -> Result<f64> { Ok(patch_mse(x, &target, &weights, stats, 3.5)?.to_dtype(DType::F64)?.to_scalar::<f64>()?) };
        let grad = patch_mse(pred.as_tensor(), &target, &weights, stats, 3.5)?.backward()?;
        let grad = grad.get(pred.as_tensor()).expect("gradient").flatten_all()?.to_vec1::<f32>()?;
        let x0 = pred.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        let h = 1e-2f32;
        for i in [0, 7, 31, 59] {
            let at = |d: f32| -> Result<f64> {
                let mut x = x0.clone();
                x[i] += d;
                loss(&Tensor::from_vec(x, (2, 5, 6), &Device::Cpu)?)
            };
            let numeric = (at(h)? - at(-h)?) / (2.0 * h as f64);
            assert!((numeric - grad[i] as f64).abs() < 2e-3 * (1.0 + numeric.abs()), "element {i}: {numeric} vs {}", grad[i]);
        }
        Ok(())
    }

    #[test]
    fn tracked_data_takes_the_composed_path_and_bad_shapes_are_refused() -> Result<()> {
        let (pred, target, weights, _, _) = inputs(2, 3, 4)?;
        let target_var = Var::from_tensor(&target)?;
        let loss = patch_mse(pred.as_tensor(), target_var.as_tensor(), &weights, None, 2.0)?;
        let grads = loss.backward()?;
        assert!(grads.get(target_var.as_tensor()).is_some(), "the target's gradient through the composed path");
        assert!(patch_mse(pred.as_tensor(), &target.narrow(2, 0, 3)?, &weights, None, 2.0).is_err());
        Ok(())
    }
}
