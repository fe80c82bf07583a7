//! Fine-tuning: a classifier (global pool + fc_norm, or cls) on a
//! pretrained encoder of any method, or from scratch, with layer-wise lr
//! decay, drop path and label smoothing, evaluated on the validation set
//! every epoch. `srmae finetune` is this with command-line arguments.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_nn::{VarBuilder, VarMap};
use srmae_datasets::PackedDataset;
use srmae_model::candle::{DType, Device, Tensor};
use srmae_model::layers::classifier::{cross_entropy, soft_cross_entropy, VitClassifier};
use srmae_model::training::dist::{DistEnv, GradSync};
use srmae_pipeline::{Batch, LoaderConfig, Mixup, RandAugment, RandomErasing};

use crate::classify::{accuracy, eval_loader, load_encoder};
use crate::device_stage::Normalizer;
use crate::plot;
use crate::pretrain::train_loader;
use crate::recipe::Recipe;
use crate::run_dir::{CheckpointConfig, RunDir};
use crate::trainer::{optimizer, Ended, TrainTask, Trainer};

/// Where a classifier's encoder starts.
#[derive(Clone, Debug)]
pub enum Init {
    /// A pretraining checkpoint (any method): its encoder variables.
    Checkpoint(PathBuf),
    /// Random weights (the no-pretraining baseline).
    Scratch,
}

impl Init {
    fn checkpoint(self) -> Option<PathBuf> {
        match self {
            Init::Checkpoint(p) => Some(p),
            Init::Scratch => None,
        }
    }
}

/// One fine-tuning run.
pub struct FinetuneJob {
    pub recipe: Recipe,
    pub out: PathBuf,
    /// None only with `resume` (the run directory's checkpoint).
    pub init: Option<Init>,
    pub resume: bool,
    pub device: Device,
    pub dist: DistEnv,
    pub stop_after: Option<u64>,
    /// Resume from this checkpoint of the run directory (`checkpoint-N`,
    /// `best`) instead of the latest; implies `resume`.
    pub resume_from: Option<PathBuf>,
}

impl FinetuneJob {
    pub fn new(recipe: Recipe, out: impl Into<PathBuf>, init: Init) -> FinetuneJob {
        FinetuneJob { recipe, out: out.into(), init: Some(init), resume: false, device: Device::Cpu, dist: DistEnv::single(), stop_after: None, resume_from: None }
    }

    pub fn run(self) -> Result<Ended> {
        finetune(self)
    }
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
    /// Labels: `[B]` u32, or `[B, K]` f32 soft targets after mixup / cutmix.
    fn upload(&self, batch: &Batch, dev: &Device) -> Result<(Tensor, Tensor)> {
        let labels = if batch.soft_classes > 0 {
            Tensor::from_slice(batch.soft_labels(), (batch.len, batch.soft_classes), dev)?
        } else {
            Normalizer::labels(batch, dev)?
        };
        Ok((self.norm.patches(batch, self.model.encoder.cfg.patch, dev)?, labels))
    }
    fn loss(&self, (patches, labels): &(Tensor, Tensor)) -> Result<Tensor> {
        let logits = self.model.forward(patches, true)?;
        Ok(match labels.rank() {
            // Mixup / cutmix: smoothing is already in the targets.
            2 => soft_cross_entropy(&logits, labels)?,
            _ => cross_entropy(&logits, labels, self.smoothing)?,
        })
    }

    fn evaluate(&self, _epoch: u64) -> Result<Option<serde_json::Value>> {
        let Some((ds, cfg)) = &self.val else { return Ok(None) };
        let acc = accuracy(&self.model, ds, cfg.clone(), &self.norm, &self.dev)?;
        Ok(Some(serde_json::json!({"top1": acc.top1, "top5": acc.top5, "n": acc.n})))
    }
}

/// The encoder a checkpoint was trained with (an srmae checkpoint, or
/// timm-named weights; `hint` supplies what timm's shapes do not say).
pub fn checkpoint_encoder(path: &Path, hint: Option<&srmae_model::layers::vit::VitConfig>) -> Result<srmae_model::layers::vit::VitConfig> {
    if crate::timm::is_timm_file(path)? {
        return crate::timm::timm_encoder(path, hint);
    }
    let meta = srmae_model::training::checkpoint::load(path, &VarMap::new(), None, &Device::Cpu)?;
    let cfg = CheckpointConfig::parse(&meta.config, path)?;
    match cfg.encoder {
        Some(e) => Ok(e),
        None => cfg.recipe()?.encoder(),
    }
}

/// The classifier's encoder config: the recipe's (which must then match the
/// checkpoint's), else the checkpoint's; with the recipe's drop path.
pub fn encoder_config(recipe: &Recipe, init: Option<&Path>) -> Result<srmae_model::layers::vit::VitConfig> {
    let from_ckpt = init.map(|p| checkpoint_encoder(p, recipe.model.encoder.as_ref())).transpose()?;
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

/// Fine-tunes (or resumes fine-tuning).
pub fn finetune(job: FinetuneJob) -> Result<Ended> {
    let FinetuneJob { recipe, out, init, resume: asked_resume, device: dev, dist, stop_after, resume_from } = job;
    let resume = resume_from.is_some() || RunDir::resumes(&out, &recipe, asked_resume)?;
    if init.is_none() && !resume {
        bail!("--resume: {} has no checkpoint yet, and there is no --init CHECKPOINT or --scratch to start it from", out.display());
    }
    let init = init.and_then(|i| i.checkpoint());
    let ds = Arc::new(PackedDataset::open(&recipe.data.train).with_context(|| format!("opening {}", recipe.data.train.display()))?);
    let classes = ds.classes().len();
    if classes < 2 {
        bail!("{}: fine-tuning needs labelled data with at least 2 classes (found {classes})", recipe.data.train.display());
    }
    let resumed = out.join("checkpoint.safetensors");
    let enc = encoder_config(&recipe, if resume { Some(resumed.as_path()) } else { init.as_deref() })?;
    let mut run = if dist.is_main() { RunDir::open(&out, &recipe, resume)? } else { RunDir::follower(&out) };
    let varmap = VarMap::new();
    let model = VitClassifier::new(&enc, classes, recipe.model.pool, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    srmae_model::layers::init::seeded_init(&varmap, recipe.run.seed)?;
    srmae_model::layers::init::normal_init(&varmap, "head.weight", srmae_model::layers::classifier::FINETUNE_HEAD_STD, recipe.run.seed)?;
    if let (Some(init), false) = (&init, resume) {
        let fresh = load_encoder(init, &varmap, &enc, &dev)?;
        tracing::info!("encoder from {}; newly initialised: {}", init.display(), fresh.join(", "));
    }
    let d = &recipe.data;
    let loader = LoaderConfig {
        randaugment: d.aa.as_deref().map(|aa| RandAugment::parse(aa, &d.mean)).transpose().map_err(anyhow::Error::msg)?,
        erasing: (d.reprob > 0.0).then(|| RandomErasing::new(d.reprob, &d.mean, &d.std)),
        mixup: (d.mixup > 0.0 || d.cutmix > 0.0).then(|| Mixup {
            mixup_alpha: d.mixup,
            cutmix_alpha: d.cutmix,
            prob: d.mixup_prob,
            switch_prob: d.mixup_switch_prob,
            smoothing: recipe.optim.label_smoothing,
            classes,
        }),
        ..train_loader(&recipe, &dist, enc.patch)
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
        stop_after,
        resume_from,
        what: "finetune",
        sync,
        dist: dist.clone(),
    };
    let start = if resume { trainer.resume()? } else { 0 };
    let ended = trainer.run(&task, start)?;
    if dist.is_main() {
        plot::training_plots(&out)?; // rank 0 writes the plots
    }
    Ok(ended)
}
