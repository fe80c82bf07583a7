//! A 3×3 convolution (stride 1, zero padding 1) over small channels-last
//! maps, computed as one gather (im2col) and one matrix product.
//!
//! Why not `Tensor::conv2d`: candle 0.11 computes a convolution's input
//! gradient with `conv_transpose2d`, which on CUDA is a direct kernel (one
//! thread per output element looping over every input channel and tap) and
//! on the CPU has no BF16 path. The SR head convolves thousands of tiny maps
//! (one r×r map per patch: 4×4 for ViT-B/16 with ×4 clues), where that kernel
//! dominated the whole training step on an H100 (a ViT-B/16 SRMAE step ran
//! at 0.07× PyTorch). Written as gather + matmul, the forward and both
//! gradients are cuBLAS/gemm products (the gather's gradient is an
//! index-add), and the product runs in the autocast dtype on every device.
//!
//! The weights keep candle's/PyTorch's `Conv2d` layout and names
//! (`weight: [C_out, C_in, 3, 3]`, `bias: [C_out]`), so checkpoints are
//! unchanged and the layer is a drop-in for `candle_nn::Conv2d`.

use candle_core::{Device, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};

/// A 3×3, stride-1, padding-1 convolution on `[N, H, W, C]` maps of one
/// fixed size.
#[derive(Clone, Debug)]
pub struct Conv3x3 {
    conv: Conv2d,
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
        Ok(Conv3x3 { conv, taps: Self::taps(h, w, vb.device())?, h, w })
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

    /// # Shapes
    /// - `x`: `[N, H, W, C_in]` (channels last) -> `[N, H, W, C_out]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, h, w, c) = x.dims4()?;
        if (h, w) != (self.h, self.w) {
            candle_core::bail!("Conv3x3 built for {}x{} maps, got {h}x{w}", self.h, self.w)
        }
        let weight = self.conv.weight(); // [C_out, C_in, 3, 3]
        let c_out = weight.dim(0)?;
        // [N, H*W + 1, C]: the map flattened, plus one zero row for the padding
        let flat = Tensor::cat(&[&x.reshape((n, h * w, c))?, &Tensor::zeros((n, 1, c), x.dtype(), x.device())?], 1)?;
        // [N, H*W*9, C] -> [N*H*W, 9*C], taps in (dy, dx) order, channels innermost
        let cols = flat.index_select(&self.taps, 1)?.reshape((n * h * w, 9 * c))?;
        // [9*C, C_out] with row (dy*3 + dx)*C + c = weight[o, c, dy, dx]
        let wmat = weight.permute((2, 3, 1, 0))?.reshape((9 * c, c_out))?;
        let y = crate::autocast::matmul(&cols, &wmat)?; // [N*H*W, C_out]
        let y = match self.conv.bias() {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
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
        for (h, w) in [(4, 4), (2, 2), (1, 1), (3, 5)] {
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
