//! The super-resolution prediction head of SRMAE, built from SR practice
//! (EDSR/ESPCN): per patch, the decoder token is projected to a C_f×r×r
//! feature map, concatenated with the patch's low-resolution clue (zeros
//! where the patch has none) and a has-clue flag, then conv3×3 -> residual
//! blocks without normalisation (conv-ReLU-conv + skip) -> conv3×3 to
//! C·s² channels -> pixel shuffle (×s, s = p / r) to a full-resolution patch,
//! plus a global residual: the clue upsampled ×s (nearest; zero without clue).
//! All in normalised-pixel space. `PredHead::Linear` is the ablation.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, VarBuilder};

use crate::linear::Linear;
use serde::{Deserialize, Serialize};

use crate::vit::linear_xavier;

/// Which head predicts the pixels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum HeadConfig {
    /// The SR head with `features` channels and `res_blocks` residual blocks.
    Sr { features: usize, res_blocks: usize },
    /// MAE's linear head (no use of the clue pixels beyond the encoder).
    Linear,
}

/// `out[n, c, h*s + i, w*s + j] = x[n, c*s*s + i*s + j, h, w]` (torch's pixel_shuffle).
/// # Shapes
/// - `x`: `[N, C*s*s, H, W]` -> `[N, C, H*s, W*s]`
pub fn pixel_shuffle(x: &Tensor, s: usize) -> Result<Tensor> {
    let (n, cs, h, w) = x.dims4()?;
    let c = cs / (s * s);
    x.reshape((n, c, s, s, h, w))?.permute((0, 1, 4, 2, 5, 3))?.reshape((n, c, h * s, w * s))
}

fn conv3(inp: usize, out: usize, vb: VarBuilder) -> Result<Conv2d> {
    let cfg = Conv2dConfig { padding: 1, ..Default::default() };
    candle_nn::conv2d(inp, out, 3, cfg, vb)
}

/// The SR head's layers.
#[derive(Clone, Debug)]
pub struct SrHead {
    proj: Linear,
    conv_in: Conv2d,
    res: Vec<(Conv2d, Conv2d)>,
    conv_out: Conv2d,
    features: usize,
    clue_side: usize,
    scale: usize,
    channels: usize,
}

impl SrHead {
    pub fn new(dec_dim: usize, features: usize, res_blocks: usize, patch: usize, clue_side: usize, channels: usize, vb: VarBuilder) -> Result<SrHead> {
        let scale = patch / clue_side;
        Ok(SrHead {
            proj: linear_xavier(dec_dim, features * clue_side * clue_side, vb.pp("proj"))?,
            conv_in: conv3(features + channels + 1, features, vb.pp("conv_in"))?,
            res: (0..res_blocks)
                .map(|i| Ok((conv3(features, features, vb.pp(format!("res.{i}.conv1")))?, conv3(features, features, vb.pp(format!("res.{i}.conv2")))?)))
                .collect::<Result<Vec<_>>>()?,
            conv_out: conv3(features, channels * scale * scale, vb.pp("conv_out"))?,
            features,
            clue_side,
            scale,
            channels,
        })
    }

    /// # Shapes
    /// - `tokens`: `[B, L, Dd]` decoder outputs
    /// - `clues`: `[B, L, C*r*r]` clue pixels per patch (CHW order), zeros without a clue
    /// - `has_clue`: `[B, L]` f32 (1 or 0)
    /// - returns `[B, L, p*p*C]` in patchify order
    pub fn forward(&self, tokens: &Tensor, clues: &Tensor, has_clue: &Tensor) -> Result<Tensor> {
        let (b, l, _) = tokens.dims3()?;
        let (n, r, c, s) = (b * l, self.clue_side, self.channels, self.scale);
        let f = self.proj.forward(tokens)?.reshape((n, self.features, r, r))?;
        let clue = clues.reshape((n, c, r, r))?;
        let flag = has_clue.reshape((n, 1, 1, 1))?.broadcast_as((n, 1, r, r))?.contiguous()?;
        let conv = crate::autocast::conv2d;
        let mut x = conv(&self.conv_in, &Tensor::cat(&[&f, &clue, &flag], 1)?)?;
        for (c1, c2) in &self.res {
            x = (&x + conv(c2, &conv(c1, &x)?.relu()?)?)?;
        }
        let y = pixel_shuffle(&conv(&self.conv_out, &x)?, s)?;
        let up = clue.upsample_nearest2d(r * s, r * s)?;
        let out = (y + up)?; // [n, C, p, p]
        out.permute((0, 2, 3, 1))?.reshape((b, l, r * s * r * s * c))
    }
}

/// The prediction head SRMAE uses.
#[derive(Clone, Debug)]
pub enum PredHead {
    Sr(SrHead),
    Linear(Linear),
}

impl PredHead {
    pub fn new(cfg: &HeadConfig, dec_dim: usize, patch: usize, clue_side: usize, channels: usize, vb: VarBuilder) -> Result<PredHead> {
        Ok(match *cfg {
            HeadConfig::Sr { features, res_blocks } => PredHead::Sr(SrHead::new(dec_dim, features, res_blocks, patch, clue_side, channels, vb)?),
            HeadConfig::Linear => PredHead::Linear(linear_xavier(dec_dim, patch * patch * channels, vb)?),
        })
    }

    /// # Shapes
    /// As `SrHead::forward`; the linear head ignores `clues` and `has_clue`.
    pub fn forward(&self, tokens: &Tensor, clues: &Tensor, has_clue: &Tensor) -> Result<Tensor> {
        match self {
            PredHead::Sr(h) => h.forward(tokens, clues, has_clue),
            PredHead::Linear(l) => l.forward(tokens),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn pixel_shuffle_matches_torch() {
        // torch.nn.functional.pixel_shuffle(torch.arange(16.).reshape(1, 4, 2, 2), 2)
        // (model/reference/parity.py) = [[0, 4, 1, 5], [8, 12, 9, 13], [2, 6, 3, 7], [10, 14, 11, 15]]
        let x = Tensor::arange(0f32, 16.0, &Device::Cpu).unwrap().reshape((1, 4, 2, 2)).unwrap();
        let y: Vec<Vec<f32>> = pixel_shuffle(&x, 2).unwrap().get(0).unwrap().get(0).unwrap().to_vec2().unwrap();
        assert_eq!(y, vec![vec![0., 4., 1., 5.], vec![8., 12., 9., 13.], vec![2., 6., 3., 7.], vec![10., 14., 11., 15.]]);
    }
}
