//! `srmae reconstruct`: what a pretrained SRMAE, MAE or SimMIM makes of masked images.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_nn::{VarBuilder, VarMap};
use clap::Args;
use srmae_datasets::PackedDataset;
use srmae_model::candle::{DType, Device};
use srmae_model::training::checkpoint;

use srmae_train::device_stage::Normalizer;
use srmae_train::methods::{with_method, Method, WithMethod};
use srmae_train::recipe::Recipe;
use srmae_train::reconstruct;
use srmae_train::run_dir::CheckpointConfig;

#[derive(Args)]
#[command(after_help = "\
Examples:
  srmae reconstruct --checkpoint runs/fm-srmae/checkpoint.safetensors
  srmae reconstruct --checkpoint runs/fm-srmae/checkpoint.safetensors --count 32 --seed 3 --out /tmp/recon
  srmae reconstruct --checkpoint runs/fm-srmae/checkpoint.safetensors --psnr 2000   # SR quality of clue patches

Each PNG shows: original | what the model saw (visible patches, low-resolution
clues upsampled, hidden patches grey) | reconstruction | reconstruction with the
visible patches pasted in.")]
pub struct ReconstructArgs {
    /// A pretraining checkpoint.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Packed images (default: the recipe's data.val, else data.train).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Samples to draw.
    #[arg(long, default_value_t = 8)]
    pub count: usize,
    /// Seed of the masks.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory (default: <checkpoint dir>/reconstructions).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Also measure the PSNR of clue patches (model vs bicubic and nearest
    /// upsampling of the clues) over this many images; writes sr_quality.json.
    #[arg(long, value_name = "IMAGES")]
    pub psnr: Option<usize>,
}

pub fn run(a: ReconstructArgs) -> Result<()> {
    let dev = srmae_train::device::parse_device(&a.device)?;
    let meta = checkpoint::load(&a.checkpoint, &VarMap::new(), None, &dev)?;
    let cfg = CheckpointConfig::parse(&meta.config, &a.checkpoint)?;
    if cfg.task != "pretrain" {
        bail!("{}: a {} checkpoint has no decoder; reconstruct from a pretraining checkpoint", a.checkpoint.display(), cfg.task);
    }
    let recipe = cfg.recipe()?;
    let method = recipe.model.method.clone();
    with_method(&method, Reconstruct { a, recipe, dev })
}

/// The command for the method the checkpoint was trained with.
struct Reconstruct {
    a: ReconstructArgs,
    recipe: Recipe,
    dev: Device,
}

impl WithMethod for Reconstruct {
    type Output = ();
    fn run<M: Method>(self) -> Result<()> {
        let Reconstruct { a, recipe, dev } = self;
        let vm = VarMap::new();
        let model = M::build(&recipe, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
        checkpoint::load(&a.checkpoint, &vm, None, &dev)?;
        write::<M>(&model, &a, &recipe, &dev)
    }
}

fn write<M: Method>(model: &M, a: &ReconstructArgs, recipe: &Recipe, dev: &Device) -> Result<()> {
    let data = a.data.clone().or_else(|| recipe.data.val.clone()).unwrap_or_else(|| recipe.data.train.clone());
    let ds = Arc::new(PackedDataset::open(&data).with_context(|| format!("opening {}", data.display()))?);
    let out = a.out.clone().unwrap_or_else(|| a.checkpoint.parent().map(|p| p.join("reconstructions")).unwrap_or_default());
    let norm = Normalizer::new(&recipe.data.mean, &recipe.data.std, dev)?;
    let n = reconstruct::write(model, recipe, &ds, &norm, a.count, a.seed, &out)?;
    println!("{n} reconstructions in {}", out.display());
    if let Some(images) = a.psnr {
        let q = srmae_train::sr_quality::measure(model, recipe, &ds, &norm, images, a.seed)?;
        println!(
            "clue patches of {} images ({} pixels): PSNR model {:.2} dB, bicubic {:.2} dB, nearest {:.2} dB",
            q.images, q.clue_pixels, q.psnr_model, q.psnr_bicubic, q.psnr_nearest
        );
        std::fs::write(out.join("sr_quality.json"), serde_json::to_string_pretty(&q)?).context("writing sr_quality.json")?;
    }
    Ok(())
}
