//! `srmae finetune`: a classifier on a pretrained encoder, or from scratch
//! (`srmae_train::finetune`).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use srmae_model::training::dist::DistEnv;
use srmae_train::finetune::{FinetuneJob, Init};
use srmae_train::trainer::{install_interrupt_handler, Ended};

use super::run_args::{ResumeArgs, RunArgs};

#[derive(Args)]
#[command(after_help = "\
Examples:
  srmae finetune --init runs/fm-srmae/checkpoint.safetensors --out runs/fm-srmae-ft
  srmae finetune --scratch --out runs/fm-scratch-ft                 # no pretraining (baseline)
  srmae finetune --init runs/fm-srmae/checkpoint.safetensors --out runs/fm-vlr --set data.low_res=7
  srmae finetune --out runs/fm-srmae-ft --resume")]
pub struct FinetuneArgs {
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub resume: ResumeArgs,
    /// Pretraining checkpoint (SRMAE, MAE or SimMIM) whose encoder initialises the classifier.
    #[arg(long, conflicts_with = "scratch")]
    pub init: Option<PathBuf>,
    /// Start from random weights (the no-pretraining baseline).
    #[arg(long)]
    pub scratch: bool,
}

pub fn run(a: FinetuneArgs) -> Result<()> {
    let recipe = a.run.recipe("fmnist-finetune", &[])?;
    let init = match (&a.init, a.scratch) {
        (Some(p), _) => Some(Init::Checkpoint(p.clone())),
        (None, true) => Some(Init::Scratch),
        (None, false) if a.resume.resume || a.resume.resume_from.is_some() => None,
        (None, false) => bail!("pass --init CHECKPOINT (a pretraining run's checkpoint.safetensors), or --scratch for random initialisation"),
    };
    let dist = DistEnv::from_env()?;
    let device = srmae_train::device::parse_device_for_rank(&a.run.device, &dist)?;
    let job = FinetuneJob { recipe, out: a.run.out.clone(), init, resume: a.resume.resume, device, dist: dist.clone(), stop_after: a.resume.stop_after, resume_from: a.resume.resume_from.clone() };
    install_interrupt_handler();
    let ended = job.run()?;
    if dist.is_main() {
        match ended {
            Ended::Finished => println!("fine-tuning done: {}", a.run.out.join("checkpoint.safetensors").display()),
            Ended::Interrupted { step } => println!("stopped at step {step}; continue with --resume"),
        }
    }
    Ok(())
}
