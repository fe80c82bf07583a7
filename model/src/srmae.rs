//! SRMAE: MAE whose selected patches may be kept as low-resolution clues.
//! Each clue (C·r·r pixels) is embedded by its own linear layer plus its
//! patch's position embedding and a learned "low-resolution" type embedding.
//! Where clues enter is a choice (`CluePlacement`): into the encoder, after
//! the visible tokens (default: the encoder learns from both scales), or into
//! the decoder only. The prediction head (`HeadConfig`) is the SR head by
//! default. The loss covers hidden and clue patches with separate weights.
//!
//! Loss space: predictions and targets are normalised pixels. With
//! `norm_pix_loss`, both are normalised by the *target* patch's mean and std
//! (so the head's global residual stays in pixel space and the loss equals
//! MAE's norm-pix loss on the prediction's residual-corrected output).

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::linear::Linear;
use serde::{Deserialize, Serialize};

use crate::loss::{norm_pix, weighted_patch_mse};
use crate::mae::{MaeConfig, MaeDecoder, MimOutput};
use crate::sr_head::{HeadConfig, PredHead};
use crate::vit::{gather_tokens, linear_xavier, VitEncoder};

/// Where the clue tokens go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CluePlacement {
    Encoder,
    Decoder,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SrmaeConfig {
    pub mae: MaeConfig,
    /// Clue side r (patch / downsampling factor).
    pub clue_side: usize,
    pub placement: CluePlacement,
    pub head: HeadConfig,
    /// Loss weight of hidden patches.
    pub w_hidden: f64,
    /// Loss weight of clue patches.
    pub w_clue: f64,
}

impl SrmaeConfig {
    /// Defaults on top of an MAE size: factor 4 clues into the encoder, SR head.
    pub fn from_mae(mae: MaeConfig, features: usize) -> SrmaeConfig {
        let clue_side = mae.encoder.patch / 4;
        SrmaeConfig {
            mae,
            clue_side,
            placement: CluePlacement::Encoder,
            head: HeadConfig::Sr { features, res_blocks: 2 },
            w_hidden: 1.0,
            w_clue: 1.0,
        }
    }
    pub fn base_16() -> SrmaeConfig {
        SrmaeConfig::from_mae(MaeConfig::base_16(), 64)
    }
    pub fn fmnist_tiny() -> SrmaeConfig {
        SrmaeConfig::from_mae(MaeConfig::fmnist_tiny(), 16)
    }
}

/// A batch in the form SRMAE consumes (tensors on the model's device).
pub struct SrmaeInputs {
    /// `[B, L, p*p*C]` normalised pixels.
    pub patches: Tensor,
    /// `[B, Kv]` u32
    pub visible: Tensor,
    /// `[B, Kc]` u32
    pub clue_ids: Tensor,
    /// `[B, Kc, C*r*r]` normalised clue pixels
    pub clue_pixels: Tensor,
    /// `[B, L]` u32 (ids_restore)
    pub restore: Tensor,
    /// `[B, L]` u8 patch states (0 visible, 1 hidden, 2 clue)
    pub mask: Tensor,
}

/// For each patch, the row of `[clue_pixels ; zeros]` holding its clue:
/// the clue's position in `clue_ids`, or `Kc` (the zero row) without one.
/// # Shapes
/// - `clue_ids`: `B * Kc` values -> `B * L` values
pub fn clue_slots(clue_ids: &[u32], b: usize, kc: usize, l: usize) -> Vec<u32> {
    let mut slots = vec![kc as u32; b * l];
    for i in 0..b {
        for (k, &id) in clue_ids[i * kc..(i + 1) * kc].iter().enumerate() {
            slots[i * l + id as usize] = k as u32;
        }
    }
    slots
}

#[derive(Clone, Debug)]
pub struct Srmae {
    pub cfg: SrmaeConfig,
    pub encoder: VitEncoder,
    pub clue_embed: Linear,
    pub lowres_type: Tensor,
    pub decoder: MaeDecoder,
    pub head: PredHead,
}

impl Srmae {
    pub fn new(cfg: &SrmaeConfig, vb: VarBuilder) -> Result<Srmae> {
        let enc = &cfg.mae.encoder;
        let clue_dim = enc.in_chans * cfg.clue_side * cfg.clue_side;
        let token_dim = match cfg.placement {
            CluePlacement::Encoder => enc.dim,
            CluePlacement::Decoder => cfg.mae.decoder_dim,
        };
        Ok(Srmae {
            cfg: cfg.clone(),
            encoder: VitEncoder::new(enc, vb.clone())?,
            clue_embed: linear_xavier(clue_dim, token_dim, vb.pp("clue_embed"))?,
            lowres_type: vb.get_with_hints((1, 1, token_dim), "lowres_type", candle_nn::Init::Randn { mean: 0.0, stdev: 0.02 })?,
            decoder: MaeDecoder::new(&cfg.mae, vb.clone())?,
            head: PredHead::new(&cfg.head, cfg.mae.decoder_dim, enc.patch, cfg.clue_side, enc.in_chans, vb.pp("sr_head"))?,
        })
    }

    /// Clue tokens: own embedding + position of their patch + type embedding.
    /// # Shapes
    /// - `clue_pixels`: `[B, Kc, C*r*r]`, `clue_ids`: `[B, Kc]`, `pos`: `[1, 1+L, D]` -> `[B, Kc, D]`
    fn clue_tokens(&self, clue_pixels: &Tensor, clue_ids: &Tensor, pos: &Tensor) -> Result<Tensor> {
        let (b, kc) = clue_ids.dims2()?;
        let (l, d) = (pos.dim(1)? - 1, pos.dim(2)?);
        // [B*Kc, D] rows of the patch positions (backward: one index-add into [L, D])
        let pos = pos.narrow(1, 1, l)?.reshape((l, d))?.index_select(&clue_ids.flatten_all()?, 0)?.reshape((b, kc, d))?;
        crate::row_broadcast::add_rows(&self.clue_embed.forward(clue_pixels)?.add(&pos)?, &self.lowres_type)
    }

    /// # Shapes: see `SrmaeInputs`; `pred` is `[B, L, p*p*C]`.
    pub fn forward(&self, x: &SrmaeInputs, train: bool) -> Result<MimOutput> {
        let (b, l, _) = x.patches.dims3()?;
        let (kv, kc) = (x.visible.dim(1)?, x.clue_ids.dim(1)?);
        let vis = gather_tokens(&self.encoder.embed(&x.patches)?, &x.visible)?;
        let (cls, tokens) = match self.cfg.placement {
            CluePlacement::Encoder => {
                let clues = self.clue_tokens(&x.clue_pixels, &x.clue_ids, &self.encoder.pos_embed)?;
                let latent = self.encoder.run(&Tensor::cat(&[&vis, &clues], 1)?, train)?;
                let d = self.decoder.embed.forward(&latent)?;
                (d.narrow(1, 0, 1)?, d.narrow(1, 1, kv + kc)?)
            }
            CluePlacement::Decoder => {
                let latent = self.encoder.run(&vis, train)?;
                let d = self.decoder.embed.forward(&latent)?;
                let clues = self.clue_tokens(&x.clue_pixels, &x.clue_ids, &self.decoder.pos_embed)?;
                (d.narrow(1, 0, 1)?, Tensor::cat(&[&d.narrow(1, 1, kv)?, &clues], 1)?)
            }
        };
        let dec = self.decoder.decode(&cls, &tokens, &x.restore, train)?;
        // Per-patch clue pixels (zeros without a clue) and flags.
        let dev = x.patches.device();
        let slots = clue_slots(&x.clue_ids.flatten_all()?.to_vec1::<u32>()?, b, kc, l);
        let cd = x.clue_pixels.dim(2)?;
        let padded = Tensor::cat(&[&x.clue_pixels, &Tensor::zeros((b, 1, cd), DType::F32, dev)?], 1)?;
        let clues = gather_tokens(&padded, &Tensor::from_vec(slots, (b, l), dev)?)?;
        let has_clue = x.mask.eq(2u8)?.to_dtype(DType::F32)?;
        let hidden = x.mask.eq(1u8)?.to_dtype(DType::F32)?;
        let pred = self.head.forward(&dec, &clues, &has_clue)?;
        let weights = ((hidden * self.cfg.w_hidden)? + (has_clue * self.cfg.w_clue)?)?;
        let (pred_l, target_l) = if self.cfg.mae.norm_pix_loss {
            let (t, mean, std) = norm_pix(&x.patches)?;
            (pred.broadcast_sub(&mean)?.broadcast_div(&std)?, t)
        } else {
            (pred.clone(), x.patches.clone())
        };
        Ok(MimOutput {
            loss: weighted_patch_mse(&pred_l, &target_l, &weights)?,
            pred,
        })
    }
}

/// Builds `SrmaeInputs` from host buffers (as the loader's `Batch` holds them).
#[allow(clippy::too_many_arguments)]
pub fn inputs_from_host(
    patches: Tensor,
    visible: &[u32],
    clue_ids: &[u32],
    clue_pixels: Tensor,
    restore: &[u32],
    mask: &[u8],
    b: usize,
    dev: &Device,
) -> Result<SrmaeInputs> {
    let l = restore.len() / b;
    Ok(SrmaeInputs {
        patches,
        visible: Tensor::from_slice(visible, (b, visible.len() / b), dev)?,
        clue_ids: Tensor::from_slice(clue_ids, (b, clue_ids.len() / b), dev)?,
        clue_pixels,
        restore: Tensor::from_slice(restore, (b, l), dev)?,
        mask: Tensor::from_slice(mask, (b, l), dev)?,
    })
}
