//! SRMAE: MAE whose selected patches may be kept as low-resolution clues
//! (`srmae_model::methods::srmae`), on the loader's `srmae_clues` mask.

use anyhow::{bail, Context, Result};
use candle_nn::VarBuilder;
use srmae_model::layers::vit::VitConfig;
use srmae_model::methods::mae::MimOutput;
use srmae_model::methods::srmae::{inputs_from_host, Srmae, SrmaeConfig, SrmaeInputs};
use srmae_pipeline::{Batch, PatchConfig, PatchLayout};

use super::Method;
use crate::device_stage::Normalizer;
use crate::recipe::Recipe;

pub struct SrmaeMethod {
    pub model: Srmae,
}

impl SrmaeMethod {
    /// The network's config: the recipe's model section, with the clue
    /// factor of its (resolved) mask.
    pub fn config(recipe: &Recipe) -> Result<SrmaeConfig> {
        let mae = recipe.mae_config()?;
        let factor = match Self::mask(recipe)? {
            PatchConfig::SrmaeClues { factor, .. } => factor,
            _ => unreachable!("SrmaeMethod::mask returns srmae_clues"),
        };
        let m = &recipe.model;
        Ok(SrmaeConfig {
            clue_side: mae.encoder.patch / factor,
            mae,
            placement: m.placement,
            clue_embed: m.clue_embed,
            head: m.head.clone(),
            w_hidden: m.w_hidden,
            w_clue: m.w_clue,
        })
    }
}

/// The host batch as `SrmaeInputs` (MAE reads the same fields, without clues).
pub fn upload_srmae(batch: &Batch, patch: usize, stage: &Normalizer) -> Result<SrmaeInputs> {
    let lay = batch.layout;
    let (b, l, dev) = (batch.len, lay.num_patches(), stage.device());
    if !lay.restore {
        bail!("the batch's patch transform gives no restore order (MAE-style models need one)");
    }
    inputs_from_host(
        stage.patches(batch, patch, dev)?,
        &batch.visible()[..b * lay.n_visible],
        &batch.clue_ids()[..b * lay.n_clue],
        stage.clues(batch, dev)?,
        &batch.restore()[..b * l],
        &batch.mask()[..b * l],
        b,
        dev,
    )
    .context("uploading a batch")
}

/// MAE-style models encode a fixed number of visible patches per image and
/// restore the order with `ids_restore`.
pub fn check_mae_layout(layout: &PatchLayout, method: &str) -> Result<()> {
    if !layout.restore || layout.n_visible == 0 {
        bail!(
            "method {method} needs a patch transform with a fixed number of visible patches and a restore order \
             (srmae_clues or mae_random); simmim_blocks and beit_blockwise masks are for method simmim"
        );
    }
    Ok(())
}

impl Method for SrmaeMethod {
    const NAME: &'static str = "srmae";
    type Input = SrmaeInputs;

    fn mask(recipe: &Recipe) -> Result<PatchConfig> {
        let patch = recipe.encoder()?.patch;
        match recipe.model.mask.clone().unwrap_or(PatchConfig::srmae(patch)) {
            mask @ PatchConfig::SrmaeClues { patch: p, .. } => {
                if p != patch {
                    bail!("model.mask.patch {p} differs from the encoder's patch {patch}");
                }
                Ok(mask)
            }
            PatchConfig::MaeRandom { .. } => bail!("method srmae needs the srmae_clues mask (mae_random has no clues); use method mae"),
            other => bail!("model.mask {other:?}: method srmae needs the srmae_clues mask"),
        }
    }

    fn build(recipe: &Recipe, vb: VarBuilder) -> Result<SrmaeMethod> {
        Ok(SrmaeMethod { model: Srmae::new(&Self::config(recipe)?, vb)? })
    }

    fn encoder(&self) -> &VitConfig {
        &self.model.cfg.mae.encoder
    }

    fn check_layout(layout: &PatchLayout) -> Result<()> {
        check_mae_layout(layout, Self::NAME)
    }

    fn upload(&self, batch: &Batch, stage: &Normalizer) -> Result<SrmaeInputs> {
        upload_srmae(batch, self.encoder().patch, stage)
    }

    fn forward(&self, x: &SrmaeInputs, train: bool) -> Result<MimOutput> {
        Ok(self.model.forward(x, train)?)
    }
}
