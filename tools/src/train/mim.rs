//! The pretraining model: SRMAE or the MAE baseline, behind one forward
//! that takes an uploaded batch.

use anyhow::Result;
use candle_nn::VarBuilder;
use srmae_model::candle::DType;
use srmae_model::mae::{Mae, MimOutput};
use srmae_model::srmae::{Srmae, SrmaeInputs};

use super::recipe::{Method, Recipe};

pub enum MimModel {
    Srmae(Srmae),
    Mae(Mae),
}

impl MimModel {
    pub fn new(recipe: &Recipe, vb: VarBuilder) -> Result<MimModel> {
        Ok(match recipe.model.method {
            Method::Srmae => MimModel::Srmae(Srmae::new(&recipe.srmae_config()?, vb)?),
            Method::Mae => MimModel::Mae(Mae::new(&recipe.mae_config()?, vb)?),
        })
    }

    /// # Shapes: see `SrmaeInputs`; MAE ignores the clues (there are none).
    pub fn forward(&self, x: &SrmaeInputs, train: bool) -> Result<MimOutput> {
        Ok(match self {
            MimModel::Srmae(m) => m.forward(x, train)?,
            MimModel::Mae(m) => {
                let hidden = x.mask.ne(0u8)?.to_dtype(DType::F32)?;
                m.forward(&x.patches, &x.visible, &x.restore, &hidden, train)?
            }
        })
    }

    /// Whether predictions are in norm-pix space (MAE with norm_pix_loss).
    pub fn pred_is_norm_pix(&self) -> bool {
        matches!(self, MimModel::Mae(m) if m.cfg.norm_pix_loss)
    }

    pub fn patch(&self) -> usize {
        match self {
            MimModel::Srmae(m) => m.cfg.mae.encoder.patch,
            MimModel::Mae(m) => m.cfg.encoder.patch,
        }
    }
}
