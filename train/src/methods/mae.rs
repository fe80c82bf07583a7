//! MAE (He et al.; facebookresearch/mae): the baseline, on the loader's
//! `mae_random` mask.

use anyhow::{bail, Result};
use candle_nn::VarBuilder;
use srmae_model::candle::Tensor;
use srmae_model::layers::vit::VitConfig;
use srmae_model::methods::loss::norm_pix;
use srmae_model::methods::mae::{Mae, MimOutput};
use srmae_pipeline::transforms::mask_value;
use srmae_pipeline::{Batch, PatchConfig, PatchLayout};

use super::srmae::{check_mae_layout, upload_srmae};
use super::{mask_weights, Method};
use crate::device_stage::Normalizer;
use crate::recipe::Recipe;

pub struct MaeMethod {
    pub model: Mae,
}

/// MAE's inputs on the device.
pub struct MaeInputs {
    /// `[B, L, p*p*C]` normalised pixels.
    pub patches: Tensor,
    /// `[B, K]` u32, `[B, L]` u32.
    pub visible: Tensor,
    pub restore: Tensor,
    /// `[B, L]` f32, 1 where hidden; `n_hidden` its sum.
    pub hidden: Tensor,
    pub n_hidden: usize,
}

impl Method for MaeMethod {
    const NAME: &'static str = "mae";
    type Input = MaeInputs;

    /// MAE masks the share of patches an SRMAE mask selects, with its own
    /// random_masking.
    fn mask(recipe: &Recipe) -> Result<PatchConfig> {
        let patch = recipe.encoder()?.patch;
        let mask = match recipe.model.mask.clone() {
            None => PatchConfig::MaeRandom { patch, mask_ratio: 0.75 },
            Some(PatchConfig::SrmaeClues { patch, select_ratio, .. }) => PatchConfig::MaeRandom { patch, mask_ratio: select_ratio },
            Some(m @ PatchConfig::MaeRandom { .. }) => m,
            Some(other) => bail!("model.mask {other:?}: method mae needs mae_random (or srmae_clues, whose ratio it takes)"),
        };
        if let PatchConfig::MaeRandom { patch: p, .. } = mask {
            if p != patch {
                bail!("model.mask.patch {p} differs from the encoder's patch {patch}");
            }
        }
        Ok(mask)
    }

    fn build(recipe: &Recipe, vb: VarBuilder) -> Result<MaeMethod> {
        Ok(MaeMethod { model: Mae::new(&recipe.mae_config()?, vb)? })
    }

    fn encoder(&self) -> &VitConfig {
        &self.model.cfg.encoder
    }

    fn check_layout(layout: &PatchLayout) -> Result<()> {
        check_mae_layout(layout, Self::NAME)
    }

    fn upload(&self, batch: &Batch, stage: &Normalizer) -> Result<MaeInputs> {
        let x = upload_srmae(batch, self.encoder().patch, stage)?;
        // Every patch that is not visible is a target (a custom transform's clues too).
        let (hidden, n_hidden) = mask_weights(batch, &[mask_value::HIDDEN, mask_value::CLUE], stage)?;
        Ok(MaeInputs { patches: x.patches, visible: x.visible, restore: x.restore, hidden, n_hidden })
    }

    fn forward(&self, x: &MaeInputs, train: bool) -> Result<MimOutput> {
        Ok(self.model.forward(&x.patches, &x.visible, &x.restore, &x.hidden, x.n_hidden, train)?)
    }

    /// With `norm_pix_loss` the prediction is in each patch's normalised
    /// space: back to pixels with the target patch's mean and std.
    fn reconstruct(&self, x: &MaeInputs) -> Result<Tensor> {
        let pred = self.forward(x, false)?.pred;
        if !self.model.cfg.norm_pix_loss {
            return Ok(pred);
        }
        let (_, mean, std) = norm_pix(&x.patches)?;
        Ok(pred.broadcast_mul(&std)?.broadcast_add(&mean)?)
    }
}
