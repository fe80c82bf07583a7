//! Patch transforms: what a masked-image-modelling method needs from each
//! image beyond its pixels (which patches are visible, hidden, or kept as
//! low-resolution clues). A transform declares its output sizes up front
//! (`PatchLayout`), so batch buffers are allocated once; new methods plug in
//! by implementing `PatchTransform`, without touching the loader stages.

mod area;
mod beit;
mod mae;
mod simmim;
pub mod srmae;

#[cfg(test)]
mod tests;

pub use beit::BeitBlockwise;
pub use mae::{argsort, MaeRandom};
pub use simmim::SimMimBlocks;
pub use srmae::{ClueFilter, SrmaeClues};

use serde::{Deserialize, Serialize};

use crate::rng::SampleRng;

/// Values of the per-patch `mask` output.
pub mod mask_value {
    /// Seen at full resolution.
    pub const VISIBLE: u8 = 0;
    /// Not seen at all (to be reconstructed).
    pub const HIDDEN: u8 = 1;
    /// Seen only as a low-resolution clue (SRMAE).
    pub const CLUE: u8 = 2;
}

/// Per-sample output sizes of a transform, fixed for a given image size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchLayout {
    /// Patch side in pixels (model patch).
    pub patch: usize,
    /// Patches per column and per row: `L = grid_h * grid_w`.
    pub grid_h: usize,
    pub grid_w: usize,
    /// Entries of `visible` per sample (indices of full-resolution patches).
    pub n_visible: usize,
    /// Entries of `clue_ids` per sample.
    pub n_clue: usize,
    /// Side of a low-resolution clue (`patch / factor`); 0 without clues.
    pub clue_side: usize,
    /// Entries of `hidden` per sample.
    pub n_hidden: usize,
    /// Whether `restore` (L entries, MAE's ids_restore) is produced.
    pub restore: bool,
    /// Image channels (for the clue pixel count).
    pub channels: usize,
}

impl PatchLayout {
    pub fn num_patches(&self) -> usize {
        self.grid_h * self.grid_w
    }
    /// u8 values of clue pixels per sample: `n_clue * C * r * r`.
    pub fn clue_pixels(&self) -> usize {
        self.n_clue * self.channels * self.clue_side * self.clue_side
    }
}

/// Where one sample's outputs go (slices of the batch buffers).
pub struct PatchOut<'a> {
    pub visible: &'a mut [u32],
    pub clue_ids: &'a mut [u32],
    /// `[n_clue, C, r, r]`
    pub clue_pixels: &'a mut [u8],
    pub hidden: &'a mut [u32],
    pub restore: &'a mut [u32],
    /// `[L]`, values in `mask_value`.
    pub mask: &'a mut [u8],
}

/// A per-sample patch transform.
pub trait PatchTransform: Send + Sync {
    fn name(&self) -> &'static str;
    fn layout(&self) -> PatchLayout;
    /// Fills `out` for one image, `image`: `[C, H, W]` u8.
    fn apply(&self, image: &[u8], rng: &mut SampleRng, out: PatchOut<'_>);
    /// What distinguishes this transform's outputs from another's, for the
    /// loader's resume check: by default its name and layout. A transform
    /// with parameters beyond those (a ratio, a block size) mixes them in,
    /// so that a run cannot resume with different ones.
    fn fingerprint(&self) -> u64 {
        let json = serde_json::to_vec(&(self.name(), self.layout())).expect("layouts serialise");
        crate::config::fnv1a(&json)
    }
}

/// Why a `PatchConfig` cannot be built for an image size.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PatchConfigError {
    #[error("image size {image_size} is not a multiple of patch {patch}")]
    Grid { image_size: usize, patch: usize },
    #[error("{what} {value} is not in [0, 1)")]
    Ratio { what: &'static str, value: f64 },
    #[error("clue_fraction {0} is not in [0, 1]")]
    ClueFraction(f64),
    #[error("factor {factor} does not divide patch {patch}")]
    Factor { factor: usize, patch: usize },
    #[error("mask patch {mask_patch} is not a multiple of model patch {model_patch}")]
    MaskPatch { mask_patch: usize, model_patch: usize },
    #[error("{masked} masked patches of {patches}")]
    TooManyMasked { masked: usize, patches: usize },
}

/// Configuration of the patch transform (serialisable; built per image size).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum PatchConfig {
    /// SRMAE: of a random `select_ratio` of patches, `clue_fraction` become
    /// `patch/factor` low-resolution clues and the rest are hidden.
    SrmaeClues {
        patch: usize,
        select_ratio: f64,
        clue_fraction: f64,
        factor: usize,
        filter: ClueFilter,
    },
    /// MAE's random_masking (argsort of uniform noise).
    MaeRandom { patch: usize, mask_ratio: f64 },
    /// SimMIM's MaskGenerator: random mask patches of `mask_patch` pixels.
    #[serde(rename = "simmim_blocks", alias = "sim_mim_blocks")]
    SimMimBlocks {
        mask_patch: usize,
        model_patch: usize,
        mask_ratio: f64,
    },
    /// BEiT's blockwise MaskingGenerator.
    BeitBlockwise {
        patch: usize,
        num_masking_patches: usize,
        min_num_patches: usize,
        min_aspect: f64,
    },
    /// No patch outputs (fine-tuning, evaluation).
    None,
}

impl PatchConfig {
    /// SRMAE defaults: ratio 0.75, all selected patches as 4x-downsampled clues.
    pub fn srmae(patch: usize) -> PatchConfig {
        PatchConfig::SrmaeClues {
            patch,
            select_ratio: 0.75,
            clue_fraction: 1.0,
            factor: 4,
            filter: ClueFilter::Area,
        }
    }

    /// Builds the transform for `image_size`×`image_size` images of `channels`.
    pub fn build(&self, image_size: usize, channels: usize) -> Result<Option<Box<dyn PatchTransform>>, PatchConfigError> {
        let grid = |p: usize| -> Result<usize, PatchConfigError> {
            if p == 0 || image_size % p != 0 {
                return Err(PatchConfigError::Grid { image_size, patch: p });
            }
            Ok(image_size / p)
        };
        let ratio_ok = |r: f64, what: &'static str| {
            if (0.0..1.0).contains(&r) {
                Ok(())
            } else {
                Err(PatchConfigError::Ratio { what, value: r })
            }
        };
        Ok(Some(match *self {
            PatchConfig::SrmaeClues {
                patch,
                select_ratio,
                clue_fraction,
                factor,
                filter,
            } => {
                ratio_ok(select_ratio, "select_ratio")?;
                if !(0.0..=1.0).contains(&clue_fraction) {
                    return Err(PatchConfigError::ClueFraction(clue_fraction));
                }
                if factor == 0 || patch % factor != 0 {
                    return Err(PatchConfigError::Factor { factor, patch });
                }
                Box::new(SrmaeClues::new(grid(patch)?, patch, channels, select_ratio, clue_fraction, factor, filter))
            }
            PatchConfig::MaeRandom { patch, mask_ratio } => {
                ratio_ok(mask_ratio, "mask_ratio")?;
                Box::new(MaeRandom::new(grid(patch)?, patch, channels, mask_ratio))
            }
            PatchConfig::SimMimBlocks {
                mask_patch,
                model_patch,
                mask_ratio,
            } => {
                ratio_ok(mask_ratio, "mask_ratio")?;
                if model_patch == 0 || mask_patch % model_patch != 0 {
                    return Err(PatchConfigError::MaskPatch { mask_patch, model_patch });
                }
                grid(mask_patch)?;
                Box::new(SimMimBlocks::new(image_size, mask_patch, model_patch, channels, mask_ratio))
            }
            PatchConfig::BeitBlockwise {
                patch,
                num_masking_patches,
                min_num_patches,
                min_aspect,
            } => {
                let g = grid(patch)?;
                if num_masking_patches > g * g {
                    return Err(PatchConfigError::TooManyMasked { masked: num_masking_patches, patches: g * g });
                }
                Box::new(BeitBlockwise::new(g, patch, channels, num_masking_patches, min_num_patches, min_aspect))
            }
            PatchConfig::None => return Ok(None),
        }))
    }
}
