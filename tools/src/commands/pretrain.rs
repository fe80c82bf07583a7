//! `srmae pretrain`: SRMAE (or the MAE baseline) on a packed dataset.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use candle_nn::{VarBuilder, VarMap};
use clap::Args;
use srmae_datasets::PackedDataset;
use srmae_model::dist::{DistEnv, GradSync};
use srmae_model::candle::{DType, Device, Tensor};
use srmae_model::srmae::SrmaeInputs;
use srmae_pipeline::{Batch, LoaderConfig, PatchConfig};

use crate::train::device::Normalizer;
use crate::train::mim::MimModel;
use crate::train::recipe::{Method, Recipe};
use crate::train::run_dir::{CheckpointConfig, RunDir};
use crate::train::trainer::{install_interrupt_handler, optimizer, Ended, TrainTask, Trainer};
use crate::train::{plot, reconstruct};

#[derive(Args)]
#[command(after_help = "\
Examples:
  srmae pretrain --out runs/fm-srmae                      # SRMAE on Fashion-MNIST (data/fmnist-train)
  srmae pretrain --out runs/fm-mae --method mae           # the MAE baseline, same budget
  srmae pretrain --out runs/fm-srmae --resume             # continue an interrupted run exactly
  srmae pretrain --recipe imagenet-vitb16-pretrain --data data/in1k-train --out runs/b16 --device cuda
  srmae pretrain --out runs/x --set optim.epochs=10 --set model.mask.factor=2

Ctrl-C writes a checkpoint after the current step and exits; --resume continues
from it with the same weights, optimiser state, schedule and loader position.")]
pub struct PretrainArgs {
    /// Run directory (recipe.toml, metrics.jsonl, checkpoint.safetensors, plots, reconstructions).
    #[arg(long)]
    pub out: PathBuf,
    /// A preset name (fmnist-pretrain, imagenet-vitb16-pretrain) or a TOML file.
    #[arg(long, default_value = "fmnist-pretrain")]
    pub recipe: String,
    /// Override a recipe value: --set optim.epochs=10 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Pretraining method (overrides model.method; mae uses MAE's random masking).
    #[arg(long, value_enum)]
    pub method: Option<Method>,
    /// Packed training set (overrides data.train).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Continue the run in --out from its checkpoint; with no checkpoint there
    /// yet, start it (one command line both starts and resumes a job).
    #[arg(long)]
    pub resume: bool,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Loader threads (overrides data.threads; 0 = all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Stop after this many optimiser steps in total, as on Ctrl-C (checkpoint written).
    #[arg(long, value_name = "STEPS")]
    pub stop_after: Option<u64>,
}

struct PretrainTask {
    model: MimModel,
    norm: Normalizer,
}

impl TrainTask for PretrainTask {
    type Input = SrmaeInputs;
    fn upload(&self, batch: &Batch, dev: &Device) -> Result<SrmaeInputs> {
        self.norm.srmae_inputs(batch, self.model.patch(), dev)
    }
    fn loss(&self, x: &SrmaeInputs) -> Result<Tensor> {
        Ok(self.model.forward(x, true)?.loss)
    }
}

pub fn run(a: PretrainArgs) -> Result<()> {
    let mut overrides = a.overrides.clone();
    if let Some(m) = a.method {
        overrides.push(format!("model.method=\"{}\"", if m == Method::Mae { "mae" } else { "srmae" }));
    }
    if let Some(d) = &a.data {
        overrides.push(format!("data.train={:?}", d.display().to_string()));
    }
    if let Some(t) = a.threads {
        overrides.push(format!("data.threads={t}"));
    }
    let mut recipe = Recipe::load(&a.recipe, &overrides)?;
    if recipe.model.method == Method::Mae {
        // MAE masks the same share of patches SRMAE selects, with its own random_masking.
        if let Some(PatchConfig::SrmaeClues { patch, select_ratio, .. }) = recipe.model.mask {
            recipe.model.mask = Some(PatchConfig::MaeRandom { patch, mask_ratio: select_ratio });
        }
    }
    let dist = DistEnv::from_env()?;
    let dev = crate::device::parse_device_for_rank(&a.device, &dist)?;
    let ds = Arc::new(PackedDataset::open(&recipe.data.train).with_context(|| format!("opening {}", recipe.data.train.display()))?);
    let resume = RunDir::resumes(&a.out, &recipe, a.resume)?;
    let mut run = if dist.is_main() { RunDir::open(&a.out, &recipe, resume)? } else { RunDir::follower(&a.out) };
    let varmap = VarMap::new();
    let model = MimModel::new(&recipe, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    srmae_model::init::seeded_init(&varmap, recipe.run.seed)?;
    let enc = recipe.encoder()?;
    let loader = LoaderConfig {
        threads: recipe.data.threads,
        seed: recipe.run.seed,
        channels: recipe.data.channels,
        augment: recipe.data.augment,
        patch: recipe.mask()?,
        low_res: recipe.data.low_res,
        on_corrupt: recipe.data.on_corrupt,
        rank: dist.rank as u64,
        world: dist.world_size as u64,
        ..LoaderConfig::pretrain(recipe.data.size, enc.patch, recipe.optim.batch_size)
    };
    let config = CheckpointConfig { task: "pretrain".into(), recipe: recipe.to_toml(), classes: None, encoder: Some(enc), class_names: vec![] };
    let task = PretrainTask { model, norm: Normalizer::new(&recipe.data.mean, &recipe.data.std, &dev)? };
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
        config_json: serde_json::to_string(&config)?,
        stop_after: a.stop_after,
        what: "pretrain",
        sync,
        dist: dist.clone(),
    };
    let start = if resume { trainer.resume()? } else { 0 };
    tracing::info!(
        "pretraining {:?} ({} parameters) on {} ({} images), {} epochs, effective batch {}, lr {:.2e}",
        recipe.model.method,
        varmap.all_vars().iter().map(|v| v.elem_count()).sum::<usize>(),
        recipe.data.train.display(),
        trainer.ds.len(),
        recipe.optim.epochs,
        recipe.optim.batch_size * recipe.optim.accum_iter,
        recipe.lr()
    );
    install_interrupt_handler();
    let ended = trainer.run(&task, start)?;
    if !dist.is_main() {
        return Ok(()); // rank 0 writes the plots, reconstructions and summary
    }
    plot::training_plots(&a.out)?;
    if ended == Ended::Finished {
        let data = recipe.val().unwrap_or(recipe.data.train.as_path());
        let dir = a.out.join("reconstructions");
        let written = PackedDataset::open(data)
            .map_err(anyhow::Error::from)
            .and_then(|ds| reconstruct::write(&task.model, &recipe, &Arc::new(ds), &task.norm, &dev, 8, recipe.run.seed, &dir));
        match written {
            Ok(n) => tracing::info!("{n} reconstructions in {}", dir.display()),
            Err(e) => tracing::warn!("no reconstructions from {}: {e:#}", data.display()),
        }
    }
    match ended {
        Ended::Finished => println!("pretraining done: {}", a.out.join("checkpoint.safetensors").display()),
        Ended::Interrupted { step } => println!("stopped at step {step}; continue with --resume (checkpoint {})", a.out.join("checkpoint.safetensors").display()),
    }
    Ok(())
}
