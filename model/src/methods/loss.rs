//! Reconstruction losses (MAE's `forward_loss`), and input normalisation.

use candle_core::{DType, Result, Tensor, D};

/// MAE's norm-pix target: each patch normalised by its own mean and
/// unbiased variance (+1e-6). Returns (normalised, mean, std).
/// # Shapes
/// - `target`: `[B, L, P]` -> `[B, L, P]`, `[B, L, 1]`, `[B, L, 1]`
pub fn norm_pix(target: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let mean = target.mean_keepdim(D::Minus1)?;
    let std = (target.var_keepdim(D::Minus1)? + 1e-6)?.sqrt()?;
    Ok((target.broadcast_sub(&mean)?.broadcast_div(&std)?, mean, std))
}

/// Weighted per-patch MSE: `sum_l w_l * mean_p (pred - target)^2 / sum_l w_l`.
/// With `w` = MAE's mask (1 hidden, 0 visible) this is MAE's loss.
/// `weight_sum` is `sum_l w_l`, known on the host (the device stage counts
/// the mask), so that no forward reads a tensor back. One autograd node on
/// the CPU (`ops::patch_mse`).
/// # Shapes
/// - `pred`, `target`: `[B, L, P]`; `weights`: `[B, L]` -> scalar
pub fn weighted_patch_mse(pred: &Tensor, target: &Tensor, weights: &Tensor, weight_sum: f64) -> Result<Tensor> {
    crate::ops::patch_mse(pred, target, weights, None, weight_sum)
}

/// Weighted per-patch L1 (SimMIM): `sum_l w_l * mean_p |pred - target| / sum_l w_l`.
/// # Shapes
/// - `pred`, `target`: `[B, L, P]`; `weights`: `[B, L]` -> scalar
pub fn weighted_patch_l1(pred: &Tensor, target: &Tensor, weights: &Tensor, weight_sum: f64) -> Result<Tensor> {
    let per_patch = (pred - target)?.abs()?.mean(D::Minus1)?;
    (per_patch * weights)?.sum_all()? / weight_sum.max(1e-12)
}

/// u8 images to normalised f32: `(x / 255 - mean[c]) / std[c]`.
/// # Shapes
/// - `images`: `[B, C, H, W]` u8 -> f32
pub fn normalize(images: &Tensor, mean: &[f32], std: &[f32]) -> Result<Tensor> {
    let c = images.dim(1)?;
    let dev = images.device();
    let m = Tensor::from_slice(&mean[..c], (1, c, 1, 1), dev)?;
    let s = Tensor::from_slice(&std[..c], (1, c, 1, 1), dev)?;
    (images.to_dtype(DType::F32)? / 255.0)?.broadcast_sub(&m)?.broadcast_div(&s)
}

/// ImageNet statistics (RGB), as MAE.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// Fashion-MNIST statistics (grey) of the training split.
pub const FMNIST_MEAN: [f32; 1] = [0.2860];
pub const FMNIST_STD: [f32; 1] = [0.3530];
