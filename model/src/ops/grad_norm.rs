//! The global L2 norm of a set of gradients in one pass (clipping needs it
//! every step): squares summed in F64 per block of a fixed size, blocks in
//! parallel, added in order, so the norm does not depend on the thread
//! count. On other devices, per-tensor sums on the device and one read-back.

use candle_core::{Result, Tensor};
use rayon::prelude::*;

use super::cpu::CpuF32;

const BLOCK: usize = 16 * 1024;

fn sum_squares_cpu(t: &Tensor) -> Result<f64> {
    let t = t.contiguous()?;
    let view = CpuF32::new(&t, "grad-norm")?;
    let parts: Vec<f64> = view.slice()?.par_chunks(BLOCK).map(|c| c.iter().map(|&v| v as f64 * v as f64).sum::<f64>()).collect();
    Ok(parts.iter().sum())
}

/// `sqrt(Σ_t Σ_i t_i²)` over `grads`.
/// # Shapes
/// - any tensors -> a scalar
pub fn global_norm<'a>(grads: impl IntoIterator<Item = &'a Tensor>) -> Result<f64> {
    let mut total = 0f64;
    let mut on_device: Option<Tensor> = None;
    for g in grads {
        if super::use_cpu_kernel(&[g]) {
            total += sum_squares_cpu(g)?;
        } else {
            let s = g.to_dtype(candle_core::DType::F32)?.sqr()?.sum_all()?;
            on_device = Some(match on_device {
                Some(acc) => (acc + s)?,
                None => s,
            });
        }
    }
    if let Some(t) = on_device {
        total += t.to_scalar::<f32>()? as f64;
    }
    Ok(total.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::pseudo_random;

    #[test]
    fn matches_the_sum_of_squares() {
        let a = pseudo_random(&[300, 70], 1, 1.0);
        let b = pseudo_random(&[5], 2, 3.0);
        let want = ((a.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() + b.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()) as f64).sqrt();
        let got = global_norm([&a, &b]).unwrap();
        assert!((got - want).abs() < 1e-5 * want, "{got} vs {want}");
        assert_eq!(global_norm(std::iter::empty()).unwrap(), 0.0);
    }
}
