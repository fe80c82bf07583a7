//! A 3×3 convolution (stride 1, zero padding 1) over small channels-last
//! maps, computed with matrix products only.
//!
//! Two ways, chosen by map size:
//! - **dense** (H·W ≤ 16, the SR head's 1×1, 2×2 and 4×4 clue maps): on a
//!   map this small the convolution is one linear map from H·W·C_in to
//!   H·W·C_out values. Its `[H·W·C_in, H·W·C_out]` matrix is built from the
//!   kernel by a tiny product with a constant 0/1 tap table, and the layer is
//!   one GEMM over all patches (forward and both gradients). It multiplies
//!   some structural zeros (2.6× the useful work at 4×4), and is still the
//!   fastest form on both the CPU and the GPU: no gather, no scatter-add, no
//!   copies of the activations.
//! - **gather** (larger maps): im2col by one `index_select` and one GEMM.
//!
//! Why not `Tensor::conv2d`: candle 0.11 computes a convolution's input
//! gradient with `conv_transpose2d`, a direct kernel on CUDA (one thread per
//! output element looping over every input channel and tap) with no BF16
//! path on the CPU, and the SR head convolves thousands of tiny maps (one
//! r×r map per patch: 4×4 for ViT-B/16 with ×4 clues). Written as matrix
//! products, the forward and both gradients are cuBLAS/gemm calls and follow
//! the autocast dtype on every device. Measured (`srmae bench ops`, SRMAE
//! ViT-Ti/16 shapes, batch 16, 2 CPU threads): the SR head's forward +
//! backward fell from 2,130 ms (gather form) to 980 ms (dense form), and
//! the whole CPU step from 15.0 s (candle conv2d) to 9.7 s (PyTorch eager
//! with timm blocks: 2.9 s).
//!
//! The weights keep candle's/PyTorch's `Conv2d` layout and names
//! (`weight: [C_out, C_in, 3, 3]`, `bias: [C_out]`), so checkpoints are
//! unchanged and the layer is a drop-in for `candle_nn::Conv2d`.

use candle_core::{Device, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};

/// Maps of at most this many positions use the dense form.
const DENSE_MAX_POSITIONS: usize = 16;

/// A 3×3, stride-1, padding-1 convolution on `[N, H, W, C]` maps of one
/// fixed size.
#[derive(Clone, Debug)]
pub struct Conv3x3 {
    conv: Conv2d,
    /// Dense form: `[(q·HW + p), 9]`, 1 where input position q is tap k of
    /// output position p. None: gather form.
    dense_taps: Option<Tensor>,
    /// For each output position and tap, the flattened input position it
    /// reads, or `h * w` (a zero row appended to the input) outside the map.
    /// `[h * w * 9]` u32, on the weights' device.
    taps: Tensor,
    h: usize,
    w: usize,
}

impl Conv3x3 {
    /// A layer for `h × w` maps, initialised as `candle_nn::conv2d`.
    pub fn new(c_in: usize, c_out: usize, h: usize, w: usize, vb: VarBuilder) -> Result<Conv3x3> {
        let cfg = Conv2dConfig { padding: 1, ..Default::default() };
        let conv = candle_nn::conv2d(c_in, c_out, 3, cfg, vb.clone())?;
        let taps = Self::taps(h, w, vb.device())?;
        let dense_taps = if h * w <= DENSE_MAX_POSITIONS { Some(Self::dense_taps(h, w, vb.device())?) } else { None };
        Ok(Conv3x3 { conv, dense_taps, taps, h, w })
    }

    fn dense_taps(h: usize, w: usize, device: &Device) -> Result<Tensor> {
        let hw = h * w;
        let mut a = vec![0f32; hw * hw * 9];
        for y in 0..h as isize {
            for x in 0..w as isize {
                let p = y as usize * w + x as usize;
                for (k, (dy, dx)) in (-1..=1isize).flat_map(|dy| (-1..=1isize).map(move |dx| (dy, dx))).enumerate() {
                    let (sy, sx) = (y + dy, x + dx);
                    if sy >= 0 && sx >= 0 && sy < h as isize && sx < w as isize {
                        let q = sy as usize * w + sx as usize;
                        a[(q * hw + p) * 9 + k] = 1.0;
                    }
                }
            }
        }
        Tensor::from_vec(a, (hw * hw, 9), device)
    }

    fn taps(h: usize, w: usize, device: &Device) -> Result<Tensor> {
        let outside = (h * w) as u32;
        let mut idx = Vec::with_capacity(h * w * 9);
        for y in 0..h as isize {
            for x in 0..w as isize {
                for dy in -1..=1isize {
                    for dx in -1..=1isize {
                        let (sy, sx) = (y + dy, x + dx);
                        let inside = sy >= 0 && sx >= 0 && sy < h as isize && sx < w as isize;
                        idx.push(if inside { (sy as usize * w + sx as usize) as u32 } else { outside });
                    }
                }
            }
        }
        Tensor::from_vec(idx, h * w * 9, device)
    }

    /// The wrapped `Conv2d` (its weight and bias are the trainable variables).
    pub fn conv2d(&self) -> &Conv2d {
        &self.conv
    }

    /// The dense form's matrix and bias, differentiable in the kernel and
    /// bias (None for maps above `DENSE_MAX_POSITIONS`, which use the gather
    /// form): the convolution of a flattened `[H·W·C_in]` map is `x · dense + bias`.
    /// # Shapes
    /// - returns `dense`: `[H·W·C_in, H·W·C_out]`, `bias`: `[H·W·C_out]` (the bias at every position)
    pub fn dense(&self) -> Result<Option<(Tensor, Tensor)>> {
        let Some(a) = &self.dense_taps else { return Ok(None) };
        let weight = self.conv.weight(); // [C_out, C_in, 3, 3]
        let (c_out, c) = (weight.dim(0)?, weight.dim(1)?);
        let hw = self.h * self.w;
        // [9, C_in*C_out], tap k = dy*3 + dx
        let wk = weight.permute((2, 3, 1, 0))?.reshape((9, c * c_out))?;
        // [HW*HW, C_in*C_out] -> [q, p, c, o] -> [q, c, p, o] -> [HW*C_in, HW*C_out]
        let dense = a.matmul(&wk)?.reshape((hw, hw, c, c_out))?.permute((0, 2, 1, 3))?.reshape((hw * c, hw * c_out))?;
        let bias = match self.conv.bias() {
            Some(b) => b.reshape((1, c_out))?.broadcast_as((hw, c_out))?.contiguous()?.reshape(hw * c_out)?,
            None => Tensor::zeros(hw * c_out, weight.dtype(), weight.device())?,
        };
        Ok(Some((dense, bias)))
    }

    /// # Shapes
    /// - `x`: `[N, H, W, C_in]` (channels last) -> `[N, H, W, C_out]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, h, w, c) = x.dims4()?;
        if (h, w) != (self.h, self.w) {
            candle_core::bail!("Conv3x3 built for {}x{} maps, got {h}x{w}", self.h, self.w)
        }
        let weight = self.conv.weight(); // [C_out, C_in, 3, 3]
        let c_out = weight.dim(0)?;
        if let Some((dense, bias)) = self.dense()? {
            // One op over all patches (`ops::conv3x3_rows`: one autograd node,
            // products by output row of the map, skipping the zero band of
            // `dense`).
            let y = crate::ops::conv3x3_rows(&x.reshape((n, h * w * c))?, &dense, &bias, h, w)?;
            return y.reshape((n, h, w, c_out));
        }
        // [N, H*W + 1, C]: the map flattened, plus one zero row for the padding
        let flat = Tensor::cat(&[&x.reshape((n, h * w, c))?, &Tensor::zeros((n, 1, c), x.dtype(), x.device())?], 1)?;
        // [N, H*W*9, C] -> [N*H*W, 9*C], taps in (dy, dx) order, channels innermost
        let cols = flat.index_select(&self.taps, 1)?.reshape((n * h * w, 9 * c))?;
        // [C_out, 9*C] with column (dy*3 + dx)*C + c = weight[o, c, dy, dx]
        let wmat = weight.permute((0, 2, 3, 1))?.reshape((c_out, 9 * c))?;
        let y = crate::ops::linear(&cols, &wmat, self.conv.bias())?; // [N*H*W, C_out]
        y.reshape((n, h, w, c_out))
    }
}

/// `x` as channels-last for `Conv3x3`: `[N, C, H, W] -> [N, H, W, C]`.
pub fn to_channels_last(x: &Tensor) -> Result<Tensor> {
    x.permute((0, 2, 3, 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Module, Var};
    use candle_nn::VarMap;

    fn close(a: &Tensor, b: &Tensor, tol: f32) -> f32 {
        let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(d <= tol, "max |a - b| = {d} > {tol}");
        d
    }

    /// Forward and both gradients equal candle's direct convolution.
    #[test]
    fn matches_conv2d_forward_and_backward() {
        let dev = Device::Cpu;
        // dense form up to 16 positions, gather form above
        for (h, w) in [(4, 4), (2, 2), (1, 1), (3, 5), (5, 5), (6, 3)] {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
            let layer = Conv3x3::new(5, 7, h, w, vb).unwrap();
            let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 5, h, w), &dev).unwrap()).unwrap();
            let want = layer.conv2d().forward(x.as_tensor()).unwrap(); // [N, C_out, H, W]
            let got = layer.forward(&to_channels_last(x.as_tensor()).unwrap()).unwrap().permute((0, 3, 1, 2)).unwrap();
            close(&got, &want, 1e-5);

            // a non-uniform upstream gradient, so every tap matters
            let g = Tensor::randn(0f32, 1.0, want.shape(), &dev).unwrap();
            let gw = (want * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let gg = (got * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let (wt, bias) = (layer.conv2d().weight(), layer.conv2d().bias().unwrap());
            close(gg.get(x.as_tensor()).unwrap(), gw.get(x.as_tensor()).unwrap(), 1e-4);
            close(gg.get(wt).unwrap(), gw.get(wt).unwrap(), 1e-4);
            close(gg.get(bias).unwrap(), gw.get(bias).unwrap(), 1e-4);
        }
    }

    #[test]
    fn wrong_map_size_is_an_error() {
        let vm = VarMap::new();
        let layer = Conv3x3::new(2, 2, 4, 4, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        let err = layer.forward(&Tensor::zeros((1, 2, 2, 2), DType::F32, &Device::Cpu).unwrap()).unwrap_err();
        assert!(err.to_string().contains("4x4"), "{err}");
    }
}
