//! Masked-image-modelling methods behind one trait. A method says which
//! patch transform the loader runs, how a loader `Batch` becomes its inputs
//! on the device, its forward and loss, and what a reconstruction shows;
//! the trainer, the run directory, checkpoints, resume, data parallelism,
//! reconstructions and the command line are shared.
//!
//! Adding a method (docs/METHODS.md): a network in `srmae_model::methods`, a
//! file here implementing `Method`, and one line in `with_method` and
//! `NAMES`.

pub mod mae;
pub mod simmim;
pub mod srmae;

use anyhow::{bail, Result};
use candle_nn::VarBuilder;
use srmae_model::candle::Tensor;
use srmae_model::layers::vit::VitConfig;
use srmae_model::methods::mae::MimOutput;
use srmae_pipeline::{Batch, PatchConfig, PatchLayout};

use crate::device_stage::Normalizer;
use crate::recipe::Recipe;

pub use mae::MaeMethod;
pub use simmim::SimMimMethod;
pub use srmae::SrmaeMethod;

/// The methods `model.method` (and `srmae pretrain --method`) can name.
pub const NAMES: [&str; 3] = [SrmaeMethod::NAME, MaeMethod::NAME, SimMimMethod::NAME];

/// A pretraining method.
pub trait Method: Sized + Send + Sync {
    /// Its name in recipes (`model.method`).
    const NAME: &'static str;
    /// One micro-batch on the training device.
    type Input: Send;

    /// The loader's patch transform: the recipe's `model.mask`, checked,
    /// or the method's default when the recipe names a mask of another
    /// method (the same share of patches, this method's way).
    fn mask(recipe: &Recipe) -> Result<PatchConfig>;

    /// Builds the network for `recipe` (whose `model.mask` is resolved);
    /// its variables go into `vb`.
    fn build(recipe: &Recipe, vb: VarBuilder) -> Result<Self>;

    /// The encoder (its variables are what fine-tuning and probing load).
    fn encoder(&self) -> &VitConfig;

    /// Whether a patch layout (the loader's transform, which may be a
    /// custom one) gives this method what it needs.
    fn check_layout(layout: &PatchLayout) -> Result<()>;

    /// Host batch -> device inputs. Runs on the upload thread, ahead of the
    /// step: all index work on the host.
    fn upload(&self, batch: &Batch, stage: &Normalizer) -> Result<Self::Input>;

    /// Forward and loss of one micro-batch.
    fn forward(&self, input: &Self::Input, train: bool) -> Result<MimOutput>;

    /// The reconstruction in normalised pixels, `[B, L, p*p*C]` (the
    /// reconstruction sheets and the SR quality measure show it).
    fn reconstruct(&self, input: &Self::Input) -> Result<Tensor> {
        Ok(self.forward(input, false)?.pred)
    }
}

/// Something to do with the method a recipe names: `with_method` calls
/// `run::<M>()` with that method's type.
pub trait WithMethod {
    type Output;
    fn run<M: Method>(self) -> Result<Self::Output>;
}

/// Dispatches on a method name; the one place that lists the method types.
pub fn with_method<W: WithMethod>(name: &str, job: W) -> Result<W::Output> {
    match name {
        SrmaeMethod::NAME => job.run::<SrmaeMethod>(),
        MaeMethod::NAME => job.run::<MaeMethod>(),
        SimMimMethod::NAME => job.run::<SimMimMethod>(),
        other => bail!("model.method {other:?} is not a method here (known: {})", NAMES.join(", ")),
    }
}

/// The per-patch mask of a batch as `[B, L]` f32 (1 where `state` is in
/// `states`), and how many patches that is, both from the host.
pub fn mask_weights(batch: &Batch, states: &[u8], stage: &Normalizer) -> Result<(Tensor, usize)> {
    let l = batch.layout.num_patches();
    let w: Vec<f32> = batch.mask().iter().map(|m| if states.contains(m) { 1.0 } else { 0.0 }).collect();
    let n = w.iter().filter(|&&v| v > 0.0).count();
    Ok((Tensor::from_vec(w, (batch.len, l), stage.device())?, n))
}
