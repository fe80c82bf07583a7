//! The arguments every recipe-driven command shares (pretrain, finetune,
//! linprobe), and how they become a recipe.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use srmae_train::recipe::Recipe;

#[derive(Args)]
pub struct RunArgs {
    /// Run directory (recipe.toml, metrics.jsonl, checkpoint.safetensors, plots).
    #[arg(long)]
    pub out: PathBuf,
    /// A preset name (`srmae recipe list`) or a TOML file [default: the
    /// command's Fashion-MNIST preset].
    #[arg(long)]
    pub recipe: Option<String>,
    /// Override a recipe value: --set optim.epochs=10 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Packed training set (overrides data.train).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Packed validation set (overrides data.val).
    #[arg(long)]
    pub val: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Loader threads (overrides data.threads; 0 = all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Resuming and stopping a training run (pretrain, finetune).
#[derive(Args)]
pub struct ResumeArgs {
    /// Continue the run in --out from its checkpoint; with no checkpoint there
    /// yet, start it (one command line both starts and resumes a job).
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many optimiser steps in total, as on Ctrl-C (checkpoint written).
    #[arg(long, value_name = "STEPS")]
    pub stop_after: Option<u64>,
    /// Resume from this checkpoint of the run (checkpoint-N.safetensors,
    /// best.safetensors) instead of the latest; implies --resume.
    #[arg(long, value_name = "FILE")]
    pub resume_from: Option<PathBuf>,
}

impl RunArgs {
    /// The recipe (`--recipe`, else `default`) with `extra` overrides, then
    /// `--set`, `--data`, `--val` and `--threads`.
    pub fn recipe(&self, default: &str, extra: &[String]) -> Result<Recipe> {
        let mut o = extra.to_vec();
        o.extend(self.overrides.iter().cloned());
        if let Some(d) = &self.data {
            o.push(format!("data.train={:?}", d.display().to_string()));
        }
        if let Some(v) = &self.val {
            o.push(format!("data.val={:?}", v.display().to_string()));
        }
        if let Some(t) = self.threads {
            o.push(format!("data.threads={t}"));
        }
        Recipe::load(self.recipe.as_deref().unwrap_or(default), &o)
    }
}
