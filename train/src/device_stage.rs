//! The device stage: a loader `Batch` (u8 pixels, u32 indices on the host)
//! becomes tensors on the training device, where the pixels are normalised
//! (one u8 upload is 4x smaller than an f32 one). Each `Method` composes
//! its inputs from these pieces in its `upload`, on the upload thread; index
//! work (clue slots, mask counts) happens there on the host, so that no
//! forward reads a tensor back from the device.

use anyhow::{bail, Result};
use srmae_model::candle::{DType, Device, Tensor};
use srmae_model::layers::patchify::patchify;
use srmae_pipeline::Batch;

/// Per-channel normalisation, resident on the device.
pub struct Normalizer {
    mean: Tensor,
    std: Tensor,
    channels: usize,
    dev: Device,
}

impl Normalizer {
    pub fn new(mean: &[f32], std: &[f32], dev: &Device) -> Result<Normalizer> {
        let c = mean.len();
        Ok(Normalizer {
            mean: Tensor::from_slice(mean, (1, c, 1, 1), dev)?,
            std: Tensor::from_slice(std, (1, c, 1, 1), dev)?,
            channels: c,
            dev: dev.clone(),
        })
    }

    /// The device the tensors go to.
    pub fn device(&self) -> &Device {
        &self.dev
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

    /// # Shapes
    /// - -> `[B]` u32
    pub fn labels(batch: &Batch, dev: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(&batch.labels()[..batch.len], batch.len, dev)?)
    }
}
