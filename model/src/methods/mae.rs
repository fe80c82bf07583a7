//! MAE (He et al., facebookresearch/mae `models_mae.py`): the encoder sees
//! the visible patches only (their indices come from the loader's patch
//! transform), a light decoder fills in mask tokens, restores the patch order
//! with `ids_restore`, and a linear head predicts each patch's pixels.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::layers::linear::Linear;
use serde::{Deserialize, Serialize};

use crate::methods::loss::{norm_pix, weighted_patch_mse};
use crate::layers::vit::{gather_tokens, linear_xavier, Blocks, VitConfig, VitEncoder};

/// MAE sizes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MaeConfig {
    pub encoder: VitConfig,
    pub decoder_dim: usize,
    pub decoder_depth: usize,
    pub decoder_heads: usize,
    pub norm_pix_loss: bool,
}

impl MaeConfig {
    /// `mae_vit_base_patch16_dec512d8b`.
    pub fn base_16() -> MaeConfig {
        MaeConfig {
            encoder: VitConfig::base_16(),
            decoder_dim: 512,
            decoder_depth: 8,
            decoder_heads: 16,
            norm_pix_loss: true,
        }
    }
    /// ViT-Ti encoder with a 256-dim, 4-block decoder (benchmarks, small GPUs).
    pub fn tiny_16() -> MaeConfig {
        MaeConfig {
            encoder: VitConfig::tiny_16(),
            decoder_dim: 256,
            decoder_depth: 4,
            decoder_heads: 8,
            norm_pix_loss: true,
        }
    }
    /// CPU-sized model for 28×28 grey images.
    pub fn fmnist_tiny() -> MaeConfig {
        MaeConfig {
            encoder: VitConfig::fmnist_tiny(),
            decoder_dim: 64,
            decoder_depth: 2,
            decoder_heads: 4,
            norm_pix_loss: false,
        }
    }
}

/// The decoder trunk shared by MAE and SRMAE (everything but the head).
#[derive(Clone, Debug)]
pub struct MaeDecoder {
    pub embed: Linear,
    pub mask_token: Tensor,
    /// `[1, 1 + L, Dd]`, frozen.
    pub pos_embed: Tensor,
    pub blocks: Blocks,
    pub dim: usize,
}

impl MaeDecoder {
    pub fn new(cfg: &MaeConfig, vb: VarBuilder) -> Result<MaeDecoder> {
        let dd = cfg.decoder_dim;
        Ok(MaeDecoder {
            embed: linear_xavier(cfg.encoder.dim, dd, vb.pp("decoder_embed"))?,
            mask_token: vb.get_with_hints((1, 1, dd), "mask_token", candle_nn::Init::Randn { mean: 0.0, stdev: 0.02 })?,
            pos_embed: crate::layers::pos_embed::sincos_2d_tensor(dd, cfg.encoder.grid(), true, vb.device())?,
            blocks: Blocks::new(dd, cfg.decoder_depth, cfg.decoder_heads, 4.0, 0.0, vb.pp("decoder"))?,
            dim: dd,
        })
    }

    /// Unshuffles `tokens` (in `ids_shuffle` order, cls first), fills the
    /// missing positions with the mask token, and runs the decoder.
    /// # Shapes
    /// - `cls`: `[B, 1, Dd]`; `tokens`: `[B, K, Dd]` (the first K of
    ///   ids_shuffle); `restore`: `[B, L]` u32 -> `[B, L, Dd]` (no cls)
    pub fn decode(&self, cls: &Tensor, tokens: &Tensor, restore: &Tensor, train: bool) -> Result<Tensor> {
        let (b, k, dd) = tokens.dims3()?;
        let l = restore.dim(1)?;
        let mut parts = vec![tokens.clone()];
        if l > k {
            parts.push(self.mask_token.broadcast_as((b, l - k, dd))?.contiguous()?);
        }
        let full = gather_tokens(&Tensor::cat(&parts, 1)?, restore)?;
        let x = crate::ops::row_broadcast::add_rows(&Tensor::cat(&[cls, &full], 1)?, &self.pos_embed)?;
        let x = self.blocks.forward(&x, train)?;
        x.narrow(1, 1, l)
    }
}

/// MAE with its linear prediction head.
#[derive(Clone, Debug)]
pub struct Mae {
    pub cfg: MaeConfig,
    pub encoder: VitEncoder,
    pub decoder: MaeDecoder,
    pub pred: Linear,
}

/// What a masked-image-modelling forward returns.
pub struct MimOutput {
    /// Scalar loss.
    pub loss: Tensor,
    /// `[B, L, p*p*C]` predicted pixels (normalised-pixel space, or norm-pix
    /// space when `norm_pix_loss`).
    pub pred: Tensor,
}

impl Mae {
    pub fn new(cfg: &MaeConfig, vb: VarBuilder) -> Result<Mae> {
        Ok(Mae {
            cfg: cfg.clone(),
            encoder: VitEncoder::new(&cfg.encoder, vb.clone())?,
            decoder: MaeDecoder::new(cfg, vb.clone())?,
            pred: linear_xavier(cfg.decoder_dim, cfg.encoder.patch_dim(), vb.pp("decoder_pred"))?,
        })
    }

    /// # Shapes
    /// - `patches`: `[B, L, p*p*C]` normalised pixels (`patchify` of the images)
    /// - `visible`: `[B, K]` u32; `restore`: `[B, L]` u32
    /// - `hidden_mask`: `[B, L]` f32, 1 where hidden; `n_hidden` its sum (from the host)
    pub fn forward(&self, patches: &Tensor, visible: &Tensor, restore: &Tensor, hidden_mask: &Tensor, n_hidden: usize, train: bool) -> Result<MimOutput> {
        let tokens = gather_tokens(&self.encoder.embed(patches)?, visible)?;
        let latent = self.encoder.run(&tokens, train)?;
        let x = self.decoder.embed.forward(&latent)?;
        let k = visible.dim(1)?;
        let dec = self.decoder.decode(&x.narrow(1, 0, 1)?, &x.narrow(1, 1, k)?, restore, train)?;
        let pred = self.pred.forward(&dec)?;
        let target = if self.cfg.norm_pix_loss { norm_pix(patches)?.0 } else { patches.clone() };
        Ok(MimOutput {
            loss: weighted_patch_mse(&pred, &target, hidden_mask, n_hidden as f64)?,
            pred,
        })
    }
}
