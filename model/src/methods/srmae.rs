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
use srmae_pipeline::transforms::mask_value;

use crate::layers::linear::Linear;
use serde::{Deserialize, Serialize};

use crate::methods::loss::norm_pix;
use crate::methods::mae::{MaeConfig, MaeDecoder, MimOutput};
use crate::layers::sr_head::{HeadConfig, PredHead};
use crate::layers::clue_upsample::{upsample_map, Upsample};
use crate::layers::vit::{gather_tokens, linear_xavier, VitEncoder};

/// How a clue becomes a token.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ClueEmbed {
    /// Its own linear embedding of the `C*r*r` pixels, plus the position and
    /// the low-resolution type embedding. The encoder's patch embedding never
    /// sees low-resolution content.
    #[default]
    Own,
    /// Upsampled back to `p x p` (`clue_upsample`) and embedded by the
    /// encoder's own patch embedding, plus the position and, with
    /// `type_embed`, the low-resolution type embedding: the patch embedding
    /// learns the blurred patches the very-low-resolution test feeds it.
    PatchEmbed { upsample: Upsample, type_embed: bool },
}

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
    /// How clue tokens are embedded (absent in older checkpoints: `Own`).
    #[serde(default)]
    pub clue_embed: ClueEmbed,
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
            clue_embed: ClueEmbed::Own,
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
    /// `[B, L]` u8 patch states (`mask_value`: visible, hidden, clue)
    pub mask: Tensor,
    /// `[B, L]` u32: each patch's row of `[clue_pixels ; zeros]` (`clue_slots`).
    pub clue_slots: Tensor,
    /// Hidden and clue patches in the batch (counted on the host).
    pub n_hidden: usize,
    pub n_clue: usize,
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
    /// `ClueEmbed::Own`: the clues' own embedding.
    pub clue_embed: Option<Linear>,
    /// `ClueEmbed::PatchEmbed`: `[C*r*r, p*p*C]`, clue -> upsampled patch (fixed).
    pub clue_upsample: Option<Tensor>,
    /// The low-resolution type embedding (absent for `PatchEmbed` without `type_embed`).
    pub lowres_type: Option<Tensor>,
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
        let lowres_type = || vb.get_with_hints((1, 1, token_dim), "lowres_type", candle_nn::Init::Randn { mean: 0.0, stdev: 0.02 });
        let (clue_embed, clue_upsample, lowres_type) = match cfg.clue_embed {
            ClueEmbed::Own => (Some(linear_xavier(clue_dim, token_dim, vb.pp("clue_embed"))?), None, Some(lowres_type()?)),
            ClueEmbed::PatchEmbed { upsample, type_embed } => {
                if cfg.placement != CluePlacement::Encoder {
                    candle_core::bail!("clue_embed = patch_embed embeds clues with the encoder's patch embedding: it needs placement = \"encoder\"");
                }
                let map = upsample_map(cfg.clue_side, enc.patch, enc.in_chans, upsample, vb.device())?;
                (None, Some(map), if type_embed { Some(lowres_type()?) } else { None })
            }
        };
        Ok(Srmae {
            cfg: cfg.clone(),
            encoder: VitEncoder::new(enc, vb.clone())?,
            clue_embed,
            clue_upsample,
            lowres_type,
            decoder: MaeDecoder::new(&cfg.mae, vb.clone())?,
            head: PredHead::new(&cfg.head, cfg.mae.decoder_dim, enc.patch, cfg.clue_side, enc.in_chans, vb.pp("sr_head"))?,
        })
    }

    /// Clue tokens: embedding (own, or the encoder's patch embedding of the
    /// upsampled clue) + position of their patch (+ type embedding).
    /// # Shapes
    /// - `clue_pixels`: `[B, Kc, C*r*r]`, `clue_ids`: `[B, Kc]`, `pos`: `[1, 1+L, D]` -> `[B, Kc, D]`
    fn clue_tokens(&self, clue_pixels: &Tensor, clue_ids: &Tensor, pos: &Tensor) -> Result<Tensor> {
        let (b, kc) = clue_ids.dims2()?;
        let (l, d) = (pos.dim(1)? - 1, pos.dim(2)?);
        // [B*Kc, D] rows of the patch positions (backward: one index-add into [L, D])
        let pos = pos.narrow(1, 1, l)?.reshape((l, d))?.index_select(&clue_ids.flatten_all()?, 0)?.reshape((b, kc, d))?;
        let embedded = match (&self.clue_embed, &self.clue_upsample) {
            (Some(own), _) => own.forward(clue_pixels)?,
            (None, Some(map)) => {
                // [B, Kc, C*r*r] -> [B, Kc, p*p*C]; the map is fixed, so no gradient flows into it.
                let cd = clue_pixels.dim(2)?;
                let up = clue_pixels.reshape((b * kc, cd))?.matmul(map)?;
                self.encoder.patch_embed.forward(&up.reshape((b, kc, map.dim(1)?))?)?
            }
            (None, None) => candle_core::bail!("SRMAE without a clue embedding"),
        };
        let tokens = embedded.add(&pos)?;
        match &self.lowres_type {
            Some(t) => crate::ops::row_broadcast::add_rows(&tokens, t),
            None => Ok(tokens),
        }
    }

    /// # Shapes: see `SrmaeInputs`; `pred` is `[B, L, p*p*C]`.
    pub fn forward(&self, x: &SrmaeInputs, train: bool) -> Result<MimOutput> {
        let b = x.patches.dim(0)?;
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
        let cd = x.clue_pixels.dim(2)?;
        let padded = Tensor::cat(&[&x.clue_pixels, &Tensor::zeros((b, 1, cd), DType::F32, dev)?], 1)?;
        let clues = gather_tokens(&padded, &x.clue_slots)?;
        let has_clue = x.mask.eq(mask_value::CLUE)?.to_dtype(DType::F32)?;
        let hidden = x.mask.eq(mask_value::HIDDEN)?.to_dtype(DType::F32)?;
        let pred = self.head.forward(&dec, &clues, &has_clue)?;
        let weights = ((hidden * self.cfg.w_hidden)? + (has_clue * self.cfg.w_clue)?)?;
        let weight_sum = self.cfg.w_hidden * x.n_hidden as f64 + self.cfg.w_clue * x.n_clue as f64;
        // With norm-pix, the prediction is normalised by the target patch's
        // statistics inside the loss op (`ops::patch_mse`).
        let (target_l, stats) = if self.cfg.mae.norm_pix_loss {
            let (t, mean, std) = norm_pix(&x.patches)?;
            (t, Some((mean, std)))
        } else {
            (x.patches.clone(), None)
        };
        Ok(MimOutput {
            loss: crate::ops::patch_mse(&pred, &target_l, &weights, stats.as_ref().map(|(m, s)| (m, s)), weight_sum)?,
            pred,
        })
    }
}

/// Builds `SrmaeInputs` from host buffers (as the loader's `Batch` holds
/// them): the index work (clue slots, patch counts) happens here, on the
/// host, so that the forward never reads a tensor back.
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
    let kc = clue_ids.len() / b;
    let count = |state: u8| mask.iter().filter(|&&m| m == state).count();
    let slots = clue_slots(clue_ids, b, kc, l);
    Ok(SrmaeInputs {
        clue_slots: Tensor::from_vec(slots, (b, l), dev)?,
        n_hidden: count(mask_value::HIDDEN),
        n_clue: count(mask_value::CLUE),
        patches,
        visible: Tensor::from_slice(visible, (b, visible.len() / b), dev)?,
        clue_ids: Tensor::from_slice(clue_ids, (b, clue_ids.len() / b), dev)?,
        clue_pixels,
        restore: Tensor::from_slice(restore, (b, l), dev)?,
        mask: Tensor::from_slice(mask, (b, l), dev)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::mae::MaeConfig;
    use crate::layers::vit::VitConfig;
    use candle_nn::{VarBuilder, VarMap};

    fn cfg(clue_embed: ClueEmbed, placement: CluePlacement) -> SrmaeConfig {
        let mae = MaeConfig {
            encoder: VitConfig { img_size: 8, patch: 4, in_chans: 2, dim: 8, depth: 1, heads: 2, mlp_ratio: 2.0, drop_path: 0.0 },
            decoder_dim: 8,
            decoder_depth: 1,
            decoder_heads: 2,
            norm_pix_loss: false,
        };
        SrmaeConfig { clue_embed, placement, clue_side: 2, ..SrmaeConfig::from_mae(mae, 4) }
    }

    /// Without the type embedding, a clue of a patch that has no detail
    /// below the clue's resolution is the same token as the patch seen at
    /// full resolution: the encoder cannot tell them apart.
    #[test]
    fn patch_embed_clue_of_a_blocky_patch_is_the_visible_token() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let embed = ClueEmbed::PatchEmbed { upsample: Upsample::Nearest, type_embed: false };
        let model = Srmae::new(&cfg(embed, CluePlacement::Encoder), VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
        crate::layers::init::seeded_init(&vm, 3).unwrap();
        assert!(model.clue_embed.is_none() && model.lowres_type.is_none());
        // Patch 3 of a 2x2 grid: 2x2 blocks of constant value per channel, channel-last (p, p, C).
        let clue = [1f32, -2., 0.5, 3., 7., 4., -1., 0.25]; // (C, r, r)
        let mut patch = vec![0f32; 4 * 4 * 2];
        for y in 0..4 {
            for x in 0..4 {
                for c in 0..2 {
                    patch[(y * 4 + x) * 2 + c] = clue[c * 4 + (y / 2) * 2 + x / 2];
                }
            }
        }
        let mut patches = vec![0f32; 4 * 32];
        patches[3 * 32..].copy_from_slice(&patch);
        let visible = model.encoder.embed(&Tensor::from_vec(patches, (1, 4, 32), &dev).unwrap()).unwrap().narrow(1, 3, 1).unwrap();
        let token = model
            .clue_tokens(&Tensor::from_vec(clue.to_vec(), (1, 1, 8), &dev).unwrap(), &Tensor::new(&[[3u32]], &dev).unwrap(), &model.encoder.pos_embed)
            .unwrap();
        let (a, b): (Vec<f32>, Vec<f32>) = (visible.flatten_all().unwrap().to_vec1().unwrap(), token.flatten_all().unwrap().to_vec1().unwrap());
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
        // With the type embedding they differ by exactly it.
        let vm = VarMap::new();
        let typed = Srmae::new(&cfg(ClueEmbed::PatchEmbed { upsample: Upsample::Nearest, type_embed: true }, CluePlacement::Encoder), VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
        assert!(typed.lowres_type.is_some() && typed.clue_embed.is_none());
    }

    #[test]
    fn patch_embed_clues_need_the_encoder_placement() {
        let vm = VarMap::new();
        let embed = ClueEmbed::PatchEmbed { upsample: Upsample::Bicubic, type_embed: true };
        let err = Srmae::new(&cfg(embed, CluePlacement::Decoder), VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).err().expect("refused");
        assert!(err.to_string().contains("placement"), "{err}");
    }

    #[test]
    fn configs_without_clue_embed_read_as_own() {
        // A checkpoint's config from before `clue_embed` existed.
        let mut json = serde_json::to_value(cfg(ClueEmbed::Own, CluePlacement::Encoder)).unwrap();
        json.as_object_mut().unwrap().remove("clue_embed");
        let old: SrmaeConfig = serde_json::from_value(json).unwrap();
        assert_eq!(old.clue_embed, ClueEmbed::Own);
        let e: ClueEmbed = serde_json::from_str(r#"{"kind": "patch_embed", "upsample": "bicubic", "type_embed": false}"#).unwrap();
        assert_eq!(e, ClueEmbed::PatchEmbed { upsample: Upsample::Bicubic, type_embed: false });
    }
}
