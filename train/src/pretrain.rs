//! Pretraining with any `Method`: the run directory, the model and its
//! seeded initialisation, the loader (the recipe's mask or a custom patch
//! transform), the trainer with exact resume, then plots and
//! reconstructions. `srmae pretrain` is this with command-line arguments.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_nn::{VarBuilder, VarMap};
use srmae_datasets::PackedDataset;
use srmae_model::candle::{DType, Device, Tensor};
use srmae_model::training::dist::{DistEnv, GradSync};
use srmae_pipeline::{Batch, LoaderConfig, PatchConfig, PatchTransform};

use crate::device_stage::Normalizer;
use crate::methods::{with_method, Method, WithMethod};
use crate::recipe::Recipe;
use crate::run_dir::{CheckpointConfig, RunDir};
use crate::trainer::{optimizer, Ended, TrainTask, Trainer};
use crate::{plot, reconstruct};

/// One pretraining run.
pub struct PretrainJob {
    pub recipe: Recipe,
    /// The run directory.
    pub out: PathBuf,
    /// Continue from `out`'s checkpoint (a directory without one starts the run).
    pub resume: bool,
    pub device: Device,
    pub dist: DistEnv,
    /// Stop (checkpoint written) after this many optimiser steps in total.
    pub stop_after: Option<u64>,
    /// Resume from this checkpoint of the run directory (`checkpoint-N`,
    /// `best`) instead of the latest; implies `resume`.
    pub resume_from: Option<PathBuf>,
    /// A patch transform in place of the recipe's `model.mask` (for a
    /// masking strategy that is not a `PatchConfig`); it must give the
    /// method what it needs (`Method::check_layout`). Resume checks it by
    /// its `fingerprint`.
    pub transform: Option<Arc<dyn PatchTransform>>,
    /// Write reconstruction sheets of the validation set at the end.
    pub reconstructions: usize,
}

impl PretrainJob {
    /// A job for `recipe` in `out` on the CPU, one process, no custom transform.
    pub fn new(recipe: Recipe, out: impl Into<PathBuf>) -> PretrainJob {
        PretrainJob {
            recipe,
            out: out.into(),
            resume: false,
            device: Device::Cpu,
            dist: DistEnv::single(),
            stop_after: None,
            resume_from: None,
            transform: None,
            reconstructions: 8,
        }
    }

    /// Continue from the run directory's checkpoint.
    pub fn with_resume(self) -> PretrainJob {
        PretrainJob { resume: true, ..self }
    }

    /// Stop (checkpoint written) after `steps` optimiser steps in total.
    pub fn with_stop_after(self, steps: u64) -> PretrainJob {
        PretrainJob { stop_after: Some(steps), ..self }
    }

    /// Runs the method the recipe names.
    pub fn run(self) -> Result<Ended> {
        let name = self.recipe.model.method.clone();
        with_method(&name, self)
    }
}

impl WithMethod for PretrainJob {
    type Output = Ended;
    fn run<M: Method>(self) -> Result<Ended> {
        pretrain::<M>(self)
    }
}

/// The trainer's view of a method.
struct PretrainTask<'a, M: Method> {
    model: &'a M,
    norm: &'a Normalizer,
}

impl<M: Method> TrainTask for PretrainTask<'_, M> {
    type Input = M::Input;
    fn upload(&self, batch: &Batch, _dev: &Device) -> Result<M::Input> {
        self.model.upload(batch, self.norm)
    }
    fn loss(&self, x: &M::Input) -> Result<Tensor> {
        Ok(self.model.forward(x, true)?.loss)
    }
}

/// Pretrains method `M`.
pub fn pretrain<M: Method>(job: PretrainJob) -> Result<Ended> {
    let PretrainJob { mut recipe, out, resume, device: dev, dist, stop_after, resume_from, transform, reconstructions } = job;
    // The resolved mask is written into the run's recipe: recipe.toml says what ran.
    recipe.model.mask = Some(if transform.is_some() { PatchConfig::None } else { M::mask(&recipe)? });
    let ds = Arc::new(PackedDataset::open(&recipe.data.train).with_context(|| format!("opening {}", recipe.data.train.display()))?);
    let resume = resume_from.is_some() || RunDir::resumes(&out, &recipe, resume)?;
    let mut run = if dist.is_main() { RunDir::open(&out, &recipe, resume)? } else { RunDir::follower(&out) };
    let varmap = VarMap::new();
    let model = M::build(&recipe, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    srmae_model::layers::init::seeded_init(&varmap, recipe.run.seed)?;
    let enc = recipe.encoder()?;
    let loader = LoaderConfig {
        patch: recipe.model.mask.clone().unwrap_or(PatchConfig::None),
        ..train_loader(&recipe, &dist, enc.patch)
    };
    let layout = match &transform {
        Some(t) => t.layout(),
        None => loader.patch.build(recipe.data.size as usize, recipe.data.channels as usize)?.map(|t| t.layout()).unwrap_or_default(),
    };
    M::check_layout(&layout)?;
    if layout.num_patches() != enc.num_patches() || layout.patch != enc.patch {
        bail!(
            "the patch transform's grid ({} patches of {} px) is not the encoder's ({} of {} px)",
            layout.num_patches(),
            layout.patch,
            enc.num_patches(),
            enc.patch
        );
    }
    let config = CheckpointConfig { task: "pretrain".into(), recipe: recipe.to_toml(), classes: None, encoder: Some(enc), class_names: vec![] };
    let norm = Normalizer::new(&recipe.data.mean, &recipe.data.std, &dev)?;
    let task = PretrainTask { model: &model, norm: &norm };
    let sync = GradSync::new(&dist, &dev).context("joining the data-parallel job")?;
    let mut trainer = Trainer {
        recipe: &recipe,
        run: &mut run,
        varmap: &varmap,
        vars: varmap.all_vars(),
        opt: optimizer(&recipe, &varmap, None)?,
        dev: dev.clone(),
        ds,
        loader,
        transform,
        config_json: serde_json::to_string(&config)?,
        stop_after,
        resume_from,
        what: "pretrain",
        sync,
        dist: dist.clone(),
    };
    let start = if resume { trainer.resume()? } else { 0 };
    tracing::info!(
        "pretraining {} ({} parameters) on {} ({} images), {} epochs, effective batch {}, lr {:.2e}",
        M::NAME,
        varmap.all_vars().iter().map(|v| v.elem_count()).sum::<usize>(),
        recipe.data.train.display(),
        trainer.ds.len(),
        recipe.optim.epochs,
        recipe.optim.batch_size * recipe.optim.accum_iter,
        recipe.lr()
    );
    let ended = trainer.run(&task, start)?;
    if !dist.is_main() {
        return Ok(ended); // rank 0 writes the plots and reconstructions
    }
    plot::training_plots(&out)?;
    if ended == Ended::Finished && reconstructions > 0 && trainer.transform.is_none() {
        let data = recipe.val().unwrap_or(recipe.data.train.as_path());
        let dir = out.join("reconstructions");
        let written = PackedDataset::open(data)
            .map_err(anyhow::Error::from)
            .and_then(|ds| reconstruct::write(&model, &recipe, &Arc::new(ds), &norm, reconstructions, recipe.run.seed, &dir));
        match written {
            Ok(n) => tracing::info!("{n} reconstructions in {}", dir.display()),
            Err(e) => tracing::warn!("no reconstructions from {}: {e:#}", data.display()),
        }
    }
    Ok(ended)
}

/// The training loader of a recipe for this rank: its augmentation, seed,
/// threads (`data.threads`, or this rank's share of the machine's cores),
/// corrupt-record policy and very-low-resolution setting, no patch outputs
/// (pretraining sets its mask).
pub fn train_loader(recipe: &Recipe, dist: &DistEnv, patch: usize) -> LoaderConfig {
    LoaderConfig {
        threads: if recipe.data.threads == 0 { dist.thread_budget() } else { recipe.data.threads },
        seed: recipe.run.seed,
        channels: recipe.data.channels,
        augment: recipe.data.augment,
        patch: PatchConfig::None,
        low_res: recipe.data.low_res,
        on_corrupt: recipe.data.on_corrupt,
        shuffle: recipe.data.shuffle,
        rank: dist.rank as u64,
        world: dist.world_size as u64,
        ..LoaderConfig::pretrain(recipe.data.size, patch, recipe.optim.batch_size)
    }
}
