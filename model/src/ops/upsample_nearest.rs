//! Nearest-neighbour upsampling of channels-last maps by an integer factor
//! (the SR head's global residual: each clue pixel repeated over its s×s
//! block), for data that needs no gradient.
//!
//! Math: `y[n, h·s + i, w·s + j, c] = x[n, h, w, c]` for `i, j < s`.
//!
//! candle's form (`broadcast_as` to `[N, H, s, W, s, C]`, then `reshape`)
//! materialises the broadcast through a strided copy on the calling thread:
//! 5 % of the SR head's forward + backward samples at ViT-Ti/16, batch 16
//! (docs/MODEL.md). Here each map is written row by row in parallel.
//! Tensors that track a gradient, or are not F32 on the CPU, take candle's
//! form, whose backward sums over the blocks.

use candle_core::{Result, Tensor};
use rayon::prelude::*;

use super::cpu::{as_uninit, tensor, written, CpuF32};

/// `[N, H, W, C]` -> `[N, H·s, W·s, C]`, each pixel repeated over an s×s block.
/// # Shapes
/// - `x`: `[N, H, W, C]` -> `[N, H·s, W·s, C]`
pub fn upsample_nearest_hwc(x: &Tensor, s: usize) -> Result<Tensor> {
    let (n, h, w, c) = x.dims4()?;
    if s == 0 {
        candle_core::bail!("upsample-nearest: factor 0 for {:?}", x.dims());
    }
    if x.track_op() || !super::use_cpu_kernel(&[x]) {
        return x.reshape((n, h, 1, w, 1, c))?.broadcast_as((n, h, s, w, s, c))?.reshape((n, h * s, w * s, c));
    }
    let x = x.contiguous()?;
    let xv = CpuF32::new(&x, "upsample-nearest")?;
    let src = xv.slice()?;
    let (out_w, map_in) = (w * s * c, h * w * c);
    // SAFETY: each output map's H·s rows of W·s·C floats are written in
    // full: every output pixel is a copy of its source pixel.
    let out = unsafe {
        written(n * h * s * out_w, |out| {
            if !out.is_empty() {
                // One output map per task: H·s rows of W·s·C floats.
                out.par_chunks_mut(h * s * out_w).zip(src.par_chunks(map_in.max(1))).for_each(|(dst, map)| {
                    for (y, row) in dst.chunks_exact_mut(out_w).enumerate() {
                        let src_row = as_uninit(&map[(y / s) * w * c..(y / s + 1) * w * c]);
                        for (px, block) in src_row.chunks_exact(c.max(1)).zip(row.chunks_exact_mut(s * c.max(1))) {
                            for rep in block.chunks_exact_mut(c.max(1)) {
                                rep.copy_from_slice(px);
                            }
                        }
                    }
                });
            }
            Ok(())
        })?
    };
    tensor(out, (n, h * s, w * s, c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn equals_candles_broadcast_form_and_keeps_gradients_where_tracked() -> Result<()> {
        let dev = Device::Cpu;
        for (n, h, w, c, s) in [(1, 1, 1, 1, 1), (2, 4, 4, 3, 4), (5, 2, 3, 1, 2), (300, 4, 4, 3, 4)] {
            let x = Tensor::randn(0f32, 1.0, (n, c, h, w), &dev)?.permute((0, 2, 3, 1))?;
            let got = upsample_nearest_hwc(&x, s)?;
            let want = x.reshape((n, h, 1, w, 1, c))?.broadcast_as((n, h, s, w, s, c))?.reshape((n, h * s, w * s, c))?;
            assert_eq!(got.dims(), [n, h * s, w * s, c]);
            assert_eq!(got.flatten_all()?.to_vec1::<f32>()?, want.flatten_all()?.to_vec1::<f32>()?, "{n}x{h}x{w}x{c} by {s}");
        }
        // A variable keeps candle's differentiable form: each pixel's gradient sums its block.
        let v = Var::ones((1, 2, 2, 1), candle_core::DType::F32, &dev)?;
        let grads = upsample_nearest_hwc(v.as_tensor(), 3)?.sum_all()?.backward()?;
        assert_eq!(grads.get(v.as_tensor()).expect("gradient").flatten_all()?.to_vec1::<f32>()?, vec![9.0; 4]);
        Ok(())
    }
}
