//! `srmae pretrain`: SRMAE, MAE or SimMIM on a packed dataset
//! (`srmae_train::pretrain`).

use anyhow::Result;
use clap::Args;
use srmae_model::training::dist::DistEnv;
use srmae_train::methods::NAMES;
use srmae_train::pretrain::PretrainJob;
use srmae_train::trainer::{install_interrupt_handler, Ended};

use super::run_args::{ResumeArgs, RunArgs};

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
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub resume: ResumeArgs,
    /// Pretraining method (overrides model.method); an SRMAE mask becomes
    /// the method's own with the same ratio (MAE's random masking, SimMIM's blocks).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(NAMES))]
    pub method: Option<String>,
}

pub fn run(a: PretrainArgs) -> Result<()> {
    let method: Vec<String> = a.method.iter().map(|m| format!("model.method={m:?}")).collect();
    let recipe = a.run.recipe("fmnist-pretrain", &method)?;
    let dist = DistEnv::from_env()?;
    let device = srmae_train::device::parse_device_for_rank(&a.run.device, &dist)?;
    let job = PretrainJob { resume: a.resume.resume, device, dist: dist.clone(), stop_after: a.resume.stop_after, resume_from: a.resume.resume_from.clone(), ..PretrainJob::new(recipe, &a.run.out) };
    install_interrupt_handler();
    let ended = job.run()?;
    if !dist.is_main() {
        return Ok(());
    }
    let ckpt = a.run.out.join("checkpoint.safetensors");
    match ended {
        Ended::Finished => println!("pretraining done: {}", ckpt.display()),
        Ended::Interrupted { step } => println!("stopped at step {step}; continue with --resume (checkpoint {})", ckpt.display()),
    }
    Ok(())
}
