//! `srmae finetune`: a classifier (global pool + fc_norm, or cls) on a
//! pretrained encoder — or from scratch — with layer-wise lr decay, drop
//! path and label smoothing, evaluated on the validation set every epoch.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_nn::{VarBuilder, VarMap};
use clap::Args;
use srmae_datasets::PackedDataset;
use srmae_model::training::dist::{DistEnv, GradSync};
use srmae_model::candle::{DType, Device, Tensor};
use srmae_model::layers::classifier::{cross_entropy, VitClassifier};
use srmae_pipeline::{Batch, LoaderConfig, PatchConfig};

use srmae_train::classify::{accuracy, eval_loader, load_encoder};
use srmae_train::device_stage::Normalizer;
use srmae_train::plot;
use srmae_train::recipe::Recipe;
use srmae_train::run_dir::{CheckpointConfig, RunDir};
use srmae_train::trainer::{install_interrupt_handler, optimizer, Ended, TrainTask, Trainer};

#[derive(Args)]
#[command(after_help = "\
Examples:
  srmae finetune --init runs/fm-srmae/checkpoint.safetensors --out runs/fm-srmae-ft
  srmae finetune --scratch --out runs/fm-scratch-ft                 # no pretraining (baseline)
  srmae finetune --init runs/fm-srmae/checkpoint.safetensors --out runs/fm-vlr --set data.low_res=7
  srmae finetune --out runs/fm-srmae-ft --resume")]
pub struct FinetuneArgs {
    /// Run directory (recipe.toml, metrics.jsonl, checkpoint.safetensors, plots).
    #[arg(long)]
    pub out: PathBuf,
    /// Pretraining checkpoint whose encoder initialises the classifier.
    #[arg(long, conflicts_with = "scratch")]
    pub init: Option<PathBuf>,
    /// Start from random weights (the no-pretraining baseline).
    #[arg(long)]
    pub scratch: bool,
    /// A preset (fmnist-finetune, imagenet-vitb16-finetune) or a TOML file.
    #[arg(long, default_value = "fmnist-finetune")]
    pub recipe: String,
    /// Override a recipe value: --set optim.epochs=10 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Packed training set (overrides data.train).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Packed validation set (overrides data.val).
    #[arg(long)]
    pub val: Option<PathBuf>,
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
    /// Stop after this many optimiser steps in total, as on Ctrl-C.
    #[arg(long, value_name = "STEPS")]
    pub stop_after: Option<u64>,
}

struct FinetuneTask {
    model: VitClassifier,
    norm: Normalizer,
    smoothing: f64,
    val: Option<(Arc<PackedDataset>, LoaderConfig)>,
    dev: Device,
}

impl TrainTask for FinetuneTask {
    /// Patches `[B, L, p*p*C]` and labels `[B]`.
    type Input = (Tensor, Tensor);
    fn upload(&self, batch: &Batch, dev: &Device) -> Result<(Tensor, Tensor)> {
        Ok((self.norm.patches(batch, self.model.encoder.cfg.patch, dev)?, Normalizer::labels(batch, dev)?))
    }
    fn loss(&self, (patches, labels): &(Tensor, Tensor)) -> Result<Tensor> {
        let logits = self.model.forward(patches, true)?;
        Ok(cross_entropy(&logits, labels, self.smoothing)?)
    }

    fn evaluate(&self, _epoch: u64) -> Result<Option<serde_json::Value>> {
        let Some((ds, cfg)) = &self.val else { return Ok(None) };
        let acc = accuracy(&self.model, ds, cfg.clone(), &self.norm, &self.dev)?;
        Ok(Some(serde_json::json!({"top1": acc.top1, "top5": acc.top5, "n": acc.n})))
    }
}

/// Args shared by the recipe-driven classifier commands.
pub fn load_recipe(recipe: &str, overrides: &[String], data: &Option<PathBuf>, val: &Option<PathBuf>, threads: Option<usize>) -> Result<Recipe> {
    let mut o = overrides.to_vec();
    if let Some(d) = data {
        o.push(format!("data.train={:?}", d.display().to_string()));
    }
    if let Some(v) = val {
        o.push(format!("data.val={:?}", v.display().to_string()));
    }
    if let Some(t) = threads {
        o.push(format!("data.threads={t}"));
    }
    Recipe::load(recipe, &o)
}

/// The encoder a checkpoint was trained with.
pub fn checkpoint_encoder(path: &std::path::Path) -> Result<srmae_model::layers::vit::VitConfig> {
    let meta = srmae_model::training::checkpoint::load(path, &VarMap::new(), None, &Device::Cpu)?;
    let cfg = CheckpointConfig::parse(&meta.config, path)?;
    match cfg.encoder {
        Some(e) => Ok(e),
        None => cfg.recipe()?.encoder(),
    }
}

/// The classifier's encoder config: the recipe's (which must then match the
/// checkpoint's), else the checkpoint's; with the recipe's drop path.
pub fn encoder_config(recipe: &Recipe, init: Option<&std::path::Path>) -> Result<srmae_model::layers::vit::VitConfig> {
    let from_ckpt = init.map(checkpoint_encoder).transpose()?;
    let mut enc = match (&recipe.model.encoder, from_ckpt) {
        (Some(e), Some(c)) => {
            let same = srmae_model::layers::vit::VitConfig { drop_path: 0.0, ..e.clone() } == srmae_model::layers::vit::VitConfig { drop_path: 0.0, ..c.clone() };
            if !same {
                bail!("the recipe's model.encoder {e:?} differs from the checkpoint's {c:?}");
            }
            e.clone()
        }
        (Some(e), None) => e.clone(),
        (None, Some(c)) => c,
        (None, None) => bail!("no encoder: the recipe has no [model.encoder] and no checkpoint was given"),
    };
    enc.drop_path = recipe.model.drop_path;
    Ok(enc)
}

pub fn run(a: FinetuneArgs) -> Result<()> {
    let recipe = load_recipe(&a.recipe, &a.overrides, &a.data, &a.val, a.threads)?;
    let resume = RunDir::resumes(&a.out, &recipe, a.resume)?;
    if a.init.is_none() && !a.scratch && !resume {
        if a.resume {
            bail!("--resume: {} has no checkpoint yet, and there is no --init CHECKPOINT or --scratch to start it from", a.out.display());
        }
        bail!("pass --init CHECKPOINT (a pretraining run's checkpoint.safetensors), or --scratch for random initialisation");
    }
    let dist = DistEnv::from_env()?;
    let dev = srmae_train::device::parse_device_for_rank(&a.device, &dist)?;
    let ds = Arc::new(PackedDataset::open(&recipe.data.train).with_context(|| format!("opening {}", recipe.data.train.display()))?);
    let classes = ds.classes().len();
    if classes < 2 {
        bail!("{}: fine-tuning needs labelled data with at least 2 classes (found {classes})", recipe.data.train.display());
    }
    let resumed = a.out.join("checkpoint.safetensors");
    let enc = encoder_config(&recipe, if resume { Some(resumed.as_path()) } else { a.init.as_deref() })?;
    let mut run = if dist.is_main() { RunDir::open(&a.out, &recipe, resume)? } else { RunDir::follower(&a.out) };
    let varmap = VarMap::new();
    let model = VitClassifier::new(&enc, classes, recipe.model.pool, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    srmae_model::layers::init::seeded_init(&varmap, recipe.run.seed)?;
    srmae_model::layers::init::normal_init(&varmap, "head.weight", srmae_model::layers::classifier::FINETUNE_HEAD_STD, recipe.run.seed)?;
    if let (Some(init), false) = (&a.init, resume) {
        let fresh = load_encoder(init, &varmap, &dev)?;
        tracing::info!("encoder from {}; newly initialised: {}", init.display(), fresh.join(", "));
    }
    let loader = LoaderConfig {
        threads: recipe.data.threads,
        seed: recipe.run.seed,
        channels: recipe.data.channels,
        augment: recipe.data.augment,
        patch: PatchConfig::None,
        low_res: recipe.data.low_res,
        on_corrupt: recipe.data.on_corrupt,
        rank: dist.rank as u64,
        world: dist.world_size as u64,
        ..LoaderConfig::pretrain(recipe.data.size, enc.patch, recipe.optim.batch_size)
    };
    let val = match recipe.val() {
        Some(v) => Some((
            Arc::new(PackedDataset::open(v).with_context(|| format!("opening {}", v.display()))?),
            eval_loader(&recipe, recipe.optim.batch_size, recipe.data.low_res),
        )),
        None => None,
    };
    let config = CheckpointConfig {
        task: "finetune".into(),
        recipe: recipe.to_toml(),
        classes: Some(classes),
        encoder: Some(enc.clone()),
        class_names: ds.classes().to_vec(),
    };
    let layer_decay = recipe.optim.layer_decay.map(|d| (d, enc.depth));
    let task = FinetuneTask { model, norm: Normalizer::new(&recipe.data.mean, &recipe.data.std, &dev)?, smoothing: recipe.optim.label_smoothing, val, dev: dev.clone() };
    let sync = GradSync::new(&dist, &dev).context("joining the data-parallel job")?;
    let mut trainer = Trainer {
        recipe: &recipe,
        run: &mut run,
        varmap: &varmap,
        vars: varmap.all_vars(),
        opt: optimizer(&recipe, &varmap, layer_decay)?,
        dev: dev.clone(),
        ds,
        loader,
        transform: None,
        config_json: serde_json::to_string(&config)?,
        stop_after: a.stop_after,
        what: "finetune",
        sync,
        dist: dist.clone(),
    };
    let start = if resume { trainer.resume()? } else { 0 };
    install_interrupt_handler();
    let ended = trainer.run(&task, start)?;
    if !dist.is_main() {
        return Ok(()); // rank 0 writes the plots, reconstructions and summary
    }
    plot::training_plots(&a.out)?;
    match ended {
        Ended::Finished => println!("fine-tuning done: {}", a.out.join("checkpoint.safetensors").display()),
        Ended::Interrupted { step } => println!("stopped at step {step}; continue with --resume"),
    }
    Ok(())
}
