//! The device stage: a loader `Batch` (u8 pixels, u32 indices on the host)
//! becomes tensors on the training device, where the pixels are normalised
//! (one u8 upload is 4x smaller than an f32 one).

use anyhow::{bail, Context, Result};
use srmae_model::candle::{DType, Device, Tensor};
use srmae_model::patchify::patchify;
use srmae_model::srmae::{inputs_from_host, SrmaeInputs};
use srmae_pipeline::Batch;

/// Per-channel normalisation, resident on the device.
pub struct Normalizer {
    mean: Tensor,
    std: Tensor,
    channels: usize,
}

impl Normalizer {
    pub fn new(mean: &[f32], std: &[f32], dev: &Device) -> Result<Normalizer> {
        let c = mean.len();
        Ok(Normalizer {
            mean: Tensor::from_slice(mean, (1, c, 1, 1), dev)?,
            std: Tensor::from_slice(std, (1, c, 1, 1), dev)?,
            channels: c,
        })
    }

    /// # Shapes
    /// - `batch.images()`: `[B, C, S, S]` u8 -> `[B, C, S, S]` f32, normalised
    pub fn images(&self, batch: &Batch, dev: &Device) -> Result<Tensor> {
        let (b, c, s) = (batch.len, batch.channels, batch.size);
        if c != self.channels {
            bail!("batch has {c} channels, the normalisation {}", self.channels);
        }
        let u8s = Tensor::from_slice(&batch.images()[..b * c * s * s], (b, c, s, s), dev)?;
        Ok((u8s.to_dtype(DType::F32)? / 255.0)?.broadcast_sub(&self.mean)?.broadcast_div(&self.std)?)
    }

    /// Normalised patches.
    /// # Shapes
    /// - -> `[B, L, p*p*C]`
    pub fn patches(&self, batch: &Batch, patch: usize, dev: &Device) -> Result<Tensor> {
        Ok(patchify(&self.images(batch, dev)?, patch)?)
    }

    /// The clue pixels, normalised like the image.
    /// # Shapes
    /// - `batch.clue_pixels()`: `[B, Kc, C, r, r]` u8 -> `[B, Kc, C*r*r]` f32
    pub fn clues(&self, batch: &Batch, dev: &Device) -> Result<Tensor> {
        let lay = batch.layout;
        let (b, kc, c, r) = (batch.len, lay.n_clue, lay.channels, lay.clue_side);
        if kc == 0 {
            return Ok(Tensor::zeros((b, 0, c * r.max(1) * r.max(1)), DType::F32, dev)?);
        }
        let px = Tensor::from_slice(&batch.clue_pixels()[..b * kc * c * r * r], (b, kc, c, r * r), dev)?;
        let mean = self.mean.reshape((1, 1, c, 1))?;
        let std = self.std.reshape((1, 1, c, 1))?;
        Ok((px.to_dtype(DType::F32)? / 255.0)?.broadcast_sub(&mean)?.broadcast_div(&std)?.reshape((b, kc, c * r * r))?)
    }

    /// Everything SRMAE (or MAE) consumes from a pretraining batch.
    pub fn srmae_inputs(&self, batch: &Batch, patch: usize, dev: &Device) -> Result<SrmaeInputs> {
        let lay = batch.layout;
        let b = batch.len;
        if !lay.restore {
            bail!("the batch's patch transform gives no restore order (MAE-style models need one)");
        }
        let l = lay.num_patches();
        let (kv, kc) = (lay.n_visible, lay.n_clue);
        inputs_from_host(
            self.patches(batch, patch, dev)?,
            &batch.visible()[..b * kv],
            &batch.clue_ids()[..b * kc],
            self.clues(batch, dev)?,
            &batch.restore()[..b * l],
            &batch.mask()[..b * l],
            b,
            dev,
        )
        .context("uploading a batch")
    }

    /// # Shapes
    /// - -> `[B]` u32
    pub fn labels(batch: &Batch, dev: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(&batch.labels()[..batch.len], batch.len, dev)?)
    }
}
