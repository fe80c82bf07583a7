//! `srmae linprobe`: linear probing of a frozen pretrained encoder
//! (`srmae_train::linprobe`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use srmae_train::linprobe::LinprobeJob;

use super::run_args::RunArgs;

#[derive(Args)]
#[command(after_help = "\
Examples:
  srmae linprobe --init runs/fm-srmae/checkpoint.safetensors --out runs/fm-srmae-lp
  srmae linprobe --init runs/fm-mae/checkpoint.safetensors --out runs/fm-mae-lp --set optim.epochs=50")]
pub struct LinprobeArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Pretraining checkpoint (its encoder is frozen).
    #[arg(long)]
    pub init: PathBuf,
}

pub fn run(a: LinprobeArgs) -> Result<()> {
    srmae_train::alloc::keep_freed_memory();
    let recipe = a.run.recipe("fmnist-linprobe", &[])?;
    let device = srmae_train::device::parse_device(&a.run.device)?;
    let result = LinprobeJob { recipe, out: a.run.out.clone(), init: a.init.clone(), device }.run()?;
    if let Some((top1, top5, n)) = result.accuracy {
        println!("linear probe: top-1 {top1:.2}%, top-5 {top5:.2}% on {n} images");
    }
    println!("probe checkpoint: {}", result.checkpoint.display());
    Ok(())
}
