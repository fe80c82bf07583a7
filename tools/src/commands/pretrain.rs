//! `srmae pretrain`: SRMAE, MAE or SimMIM on a packed dataset
//! (`srmae_train::pretrain`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use srmae_model::training::dist::DistEnv;
use srmae_train::methods::NAMES;
use srmae_train::pretrain::PretrainJob;
use srmae_train::recipe::Recipe;
use srmae_train::trainer::{install_interrupt_handler, Ended};

#[derive(Args)]
#[command(after_help = "\
Examples:
  srmae pretrain --out runs/fm-srmae                      # SRMAE on Fashion-MNIST (data/fmnist-train)
  srmae pretrain --out runs/fm-mae --method mae           # the MAE baseline, same budget
  srmae pretrain --out runs/fm-simmim --recipe fmnist-simmim-pretrain   # SimMIM
  srmae pretrain --out runs/fm-srmae --resume             # continue an interrupted run exactly
  srmae pretrain --recipe imagenet-vitb16-pretrain --data data/in1k-train --out runs/b16 --device cuda
  srmae pretrain --out runs/x --set optim.epochs=10 --set model.mask.factor=2

Ctrl-C writes a checkpoint after the current step and exits; --resume continues
from it with the same weights, optimiser state, schedule and loader position.")]
pub struct PretrainArgs {
    /// Run directory (recipe.toml, metrics.jsonl, checkpoint.safetensors, plots, reconstructions).
    #[arg(long)]
    pub out: PathBuf,
    /// A preset name (`srmae recipe list`) or a TOML file.
    #[arg(long, default_value = "fmnist-pretrain")]
    pub recipe: String,
    /// Override a recipe value: --set optim.epochs=10 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Pretraining method (overrides model.method); an SRMAE mask becomes
    /// the method's own with the same ratio (MAE's random masking, SimMIM's blocks).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(NAMES))]
    pub method: Option<String>,
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

pub fn run(a: PretrainArgs) -> Result<()> {
    let mut overrides = a.overrides.clone();
    if let Some(m) = &a.method {
        overrides.push(format!("model.method={m:?}"));
    }
    if let Some(d) = &a.data {
        overrides.push(format!("data.train={:?}", d.display().to_string()));
    }
    if let Some(t) = a.threads {
        overrides.push(format!("data.threads={t}"));
    }
    let recipe = Recipe::load(&a.recipe, &overrides)?;
    let dist = DistEnv::from_env()?;
    let device = srmae_train::device::parse_device_for_rank(&a.device, &dist)?;
    let job = PretrainJob { resume: a.resume, device, dist: dist.clone(), stop_after: a.stop_after, ..PretrainJob::new(recipe, &a.out) };
    install_interrupt_handler();
    let ended = job.run()?;
    if !dist.is_main() {
        return Ok(());
    }
    let ckpt = a.out.join("checkpoint.safetensors");
    match ended {
        Ended::Finished => println!("pretraining done: {}", ckpt.display()),
        Ended::Interrupted { step } => println!("stopped at step {step}; continue with --resume (checkpoint {})", ckpt.display()),
    }
    Ok(())
}
