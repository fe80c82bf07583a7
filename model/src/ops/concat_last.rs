//! Three tensors joined along their last dimension (the SR head's input:
//! features ‖ clue ‖ clue flag at every map position), one pass over the
//! rows in parallel, with a backward that hands each tracked input its
//! columns of the upstream gradient as a contiguous tensor.
//!
//! Math, with `a` `[R, A]`, `b` `[R, B]`, `c` `[R, C]` (R = the product of
//! the leading dimensions): `y[i] = (a[i], b[i], c[i])` `[R, A + B + C]`;
//! `da = g[:, ..A]`, `db = g[:, A..A + B]`, `dc = g[:, A + B..]`.
//!
//! Why an op: candle's `cat` along the last dimension copies element by
//! element through a strided loop on the calling thread, and its backward
//! narrows the gradient into a strided view that each input's gradient is
//! then added from (another strided pass, after a zero-fill): 10 % of the
//! SR head's forward + backward samples at ViT-Ti/16, batch 16, in a
//! profile (docs/MODEL.md). Anything but contiguous-able F32 CPU tensors
//! takes candle's `cat`.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::cpu::{as_uninit, tensor, written, CpuF32};
use super::fused_cpu::slice;

/// Rows per parallel chunk: about 64 K output floats, at least one row.
fn rows_per_chunk(width: usize) -> usize {
    (65_536 / width.max(1)).max(1)
}

struct ConcatLast {
    widths: [usize; 3],
}

impl ConcatLast {
    fn width(&self) -> usize {
        self.widths.iter().sum()
    }
}

impl CustomOp3 for ConcatLast {
    fn name(&self) -> &'static str {
        "concat-last"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let parts = [slice(s1, l1, self.name())?, slice(s2, l2, self.name())?, slice(s3, l3, self.name())?];
        let width = self.width();
        let rows = parts[0].len() / self.widths[0].max(1);
        let chunk = rows_per_chunk(width);
        // SAFETY: every row of `width` floats is written in full: its three
        // parts' widths add up to `width`.
        let out = unsafe {
            written(rows * width, |out| {
                out.par_chunks_mut(chunk * width).enumerate().for_each(|(ci, o)| {
                    for (ri, row) in o.chunks_exact_mut(width).enumerate() {
                        let i = ci * chunk + ri;
                        let mut at = 0;
                        for (part, &w) in parts.iter().zip(&self.widths) {
                            row[at..at + w].copy_from_slice(as_uninit(&part[i * w..(i + 1) * w]));
                            at += w;
                        }
                    }
                });
                Ok(())
            })?
        };
        let mut dims = l1.shape().dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = width;
        }
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }

    fn bwd(&self, a: &Tensor, b: &Tensor, c: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let gv = CpuF32::new(&grad, self.name())?;
        let g = gv.slice()?;
        let width = self.width();
        let rows = g.len() / width.max(1);
        let columns = |t: &Tensor, at: usize, w: usize| -> Result<Option<Tensor>> {
            if !t.track_op() {
                return Ok(None);
            }
            let chunk = rows_per_chunk(width);
            // SAFETY: each of the `rows` rows of `w` floats is written in full.
            let d = unsafe {
                written(rows * w, |d| {
                    d.par_chunks_mut(chunk * w.max(1)).enumerate().for_each(|(ci, dst)| {
                        for (ri, row) in dst.chunks_exact_mut(w.max(1)).enumerate() {
                            let i = ci * chunk + ri;
                            row.copy_from_slice(as_uninit(&g[i * width + at..i * width + at + w]));
                        }
                    });
                    Ok(())
                })?
            };
            Ok(Some(tensor(d, t.shape())?))
        };
        let [wa, wb, wc] = self.widths;
        Ok((columns(a, 0, wa)?, columns(b, wa, wb)?, columns(c, wa + wb, wc)?))
    }
}

/// `[.., A]`, `[.., B]`, `[.., C]` -> `[.., A + B + C]`: `Tensor::cat` along
/// the last dimension, as one parallel op on the CPU (see the module doc).
/// # Shapes
/// - `a`, `b`, `c`: the same leading dimensions -> those, then `A + B + C`
pub fn concat_last(a: &Tensor, b: &Tensor, c: &Tensor) -> Result<Tensor> {
    let (da, db, dc) = (a.dims(), b.dims(), c.dims());
    let lead = da.len().saturating_sub(1);
    if da.is_empty() || db.len() != da.len() || dc.len() != da.len() || db[..lead] != da[..lead] || dc[..lead] != da[..lead] {
        candle_core::bail!("concat-last: shapes {da:?}, {db:?}, {dc:?} differ before the last dimension");
    }
    if !super::use_cpu_kernel(&[a, b, c]) || da[lead] == 0 {
        return Tensor::cat(&[a, b, c], D::Minus1);
    }
    let widths = [da[lead], db[lead], dc[lead]];
    a.contiguous()?.apply_op3(&b.contiguous()?, &c.contiguous()?, ConcatLast { widths })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn forward_and_gradients_equal_candles_cat() -> Result<()> {
        let dev = Device::Cpu;
        // Odd widths, a strided (permuted) and a broadcast input, one untracked.
        for (n, r) in [(1, 1), (3, 4), (700, 4)] {
            let a = Var::randn(0f32, 1.0, (n, r, r, 5), &dev)?;
            let b = Var::randn(0f32, 1.0, (n, 3, r, r), &dev)?;
            let b_hwc = b.permute((0, 2, 3, 1))?;
            let c = Tensor::randn(0f32, 1.0, (n, 1, 1, 1), &dev)?.broadcast_as((n, r, r, 1))?;
            let g = Tensor::randn(0f32, 1.0, (n, r, r, 9), &dev)?;
            let fused = concat_last(a.as_tensor(), &b_hwc, &c)?;
            let want = Tensor::cat(&[a.as_tensor(), &b_hwc, &c], 3)?;
            assert_eq!(fused.dims(), want.dims());
            assert_eq!(fused.flatten_all()?.to_vec1::<f32>()?, want.flatten_all()?.to_vec1::<f32>()?, "forward, n = {n}");
            let (gf, gw) = ((fused * &g)?.sum_all()?.backward()?, (want * &g)?.sum_all()?.backward()?);
            for v in [&a, &b] {
                let (x, y) = (gf.get(v.as_tensor()).expect("fused gradient"), gw.get(v.as_tensor()).expect("cat gradient"));
                assert_eq!(x.flatten_all()?.to_vec1::<f32>()?, y.flatten_all()?.to_vec1::<f32>()?, "gradient, n = {n}");
            }
        }
        Ok(())
    }

    #[test]
    fn mismatched_leading_dimensions_are_refused() -> Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::zeros((2, 3), candle_core::DType::F32, &dev)?;
        let b = Tensor::zeros((3, 3), candle_core::DType::F32, &dev)?;
        assert!(concat_last(&a, &b, &a).is_err());
        Ok(())
    }
}
