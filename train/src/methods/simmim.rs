//! SimMIM (Xie et al., CVPR 2022; microsoft/SimMIM): all patches through the
//! encoder with a mask token for the masked ones, a one-layer pixel head,
//! L1 on the masked pixels; the loader's `simmim_blocks` mask.

use anyhow::{bail, Result};
use candle_nn::VarBuilder;
use srmae_model::layers::vit::VitConfig;
use srmae_model::methods::mae::MimOutput;
use srmae_model::methods::simmim::{SimMim, SimMimConfig, SimMimInputs};
use srmae_pipeline::transforms::mask_value;
use srmae_pipeline::{Batch, PatchConfig, PatchLayout};

use super::{mask_weights, Method};
use crate::device_stage::Normalizer;
use crate::recipe::Recipe;

/// SimMIM's mask ratio (its ViT-B configs: `MODEL.MASK_RATIO 0.6`).
pub const SIMMIM_MASK_RATIO: f64 = 0.6;

pub struct SimMimMethod {
    pub model: SimMim,
}

impl Method for SimMimMethod {
    const NAME: &'static str = "simmim";
    type Input = SimMimInputs;

    /// `simmim_blocks` (or `beit_blockwise`) as given; an SRMAE or MAE mask
    /// becomes SimMIM's with the same ratio, in blocks of one model patch.
    fn mask(recipe: &Recipe) -> Result<PatchConfig> {
        let patch = recipe.encoder()?.patch;
        let blocks = |mask_ratio| PatchConfig::SimMimBlocks { mask_patch: patch, model_patch: patch, mask_ratio };
        let mask = match recipe.model.mask.clone() {
            None => blocks(SIMMIM_MASK_RATIO),
            Some(PatchConfig::SrmaeClues { select_ratio, .. }) => blocks(select_ratio),
            Some(PatchConfig::MaeRandom { mask_ratio, .. }) => blocks(mask_ratio),
            Some(m @ (PatchConfig::SimMimBlocks { .. } | PatchConfig::BeitBlockwise { .. })) => m,
            Some(PatchConfig::None) => bail!("method simmim needs a mask (model.mask is none)"),
        };
        let p = match mask {
            PatchConfig::SimMimBlocks { model_patch, .. } => model_patch,
            PatchConfig::BeitBlockwise { patch, .. } => patch,
            _ => patch,
        };
        if p != patch {
            bail!("model.mask's model patch {p} differs from the encoder's patch {patch}");
        }
        Ok(mask)
    }

    fn build(recipe: &Recipe, vb: VarBuilder) -> Result<SimMimMethod> {
        Ok(SimMimMethod { model: SimMim::new(&SimMimConfig { encoder: recipe.encoder()? }, vb)? })
    }

    fn encoder(&self) -> &VitConfig {
        &self.model.cfg.encoder
    }

    fn check_layout(_layout: &PatchLayout) -> Result<()> {
        Ok(()) // every transform fills the per-patch mask
    }

    fn upload(&self, batch: &Batch, stage: &Normalizer) -> Result<SimMimInputs> {
        let (masked, n_masked) = mask_weights(batch, &[mask_value::HIDDEN, mask_value::CLUE], stage)?;
        Ok(SimMimInputs { patches: stage.patches(batch, self.encoder().patch, stage.device())?, masked, n_masked })
    }

    fn forward(&self, x: &SimMimInputs, train: bool) -> Result<MimOutput> {
        Ok(self.model.forward(x, train)?)
    }
}
