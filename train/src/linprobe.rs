//! Linear probing of a frozen pretrained encoder (MAE's protocol: cls
//! token, BatchNorm without affine + Linear). The features are computed once
//! (the encoder is frozen), then the probe trains on them; the result is
//! saved as a classifier checkpoint with the BatchNorm folded into the linear
//! layer, so evaluation and export take it as is.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_nn::{VarBuilder, VarMap};
use rand_core::{RngCore, SeedableRng};
use srmae_datasets::PackedDataset;
use srmae_model::candle::{DType, Device, Tensor};
use srmae_model::layers::classifier::{cross_entropy, LinearProbe, Pool, VitClassifier};
use srmae_model::training::checkpoint::{self, CheckpointMeta};
use srmae_model::training::optim::{param_groups, AdamW};
use srmae_model::training::schedule::CosineSchedule;
use srmae_pipeline::{Loader, LoaderConfig};

use crate::classify::{accuracy, eval_loader, load_encoder, topk_correct};
use crate::device_stage::Normalizer;
use crate::finetune::encoder_config;
use crate::plot;
use crate::progress::items_bar;
use crate::recipe::Recipe;
use crate::run_dir::{CheckpointConfig, RunDir};

/// One linear-probing run.
pub struct LinprobeJob {
    pub recipe: Recipe,
    pub out: PathBuf,
    /// The pretraining checkpoint whose encoder is probed.
    pub init: PathBuf,
    pub device: Device,
}

/// The probe's checkpoint, and its top-1 / top-5 / count on `data.val`.
pub struct ProbeResult {
    pub checkpoint: PathBuf,
    pub accuracy: Option<(f64, f64, u64)>,
}

impl LinprobeJob {
    pub fn run(self) -> Result<ProbeResult> {
        linprobe(self)
    }
}

/// Frozen cls features of every sample: (`[N, D]` values, labels).
fn features(model: &VitClassifier, ds: &Arc<PackedDataset>, cfg: LoaderConfig, norm: &Normalizer, dev: &Device, what: &str) -> Result<(Vec<f32>, Vec<u32>)> {
    let loader = Loader::new(ds.clone(), cfg)?;
    let bar = items_bar(loader.num_batches(), what);
    let (mut feats, mut labels) = (Vec::new(), Vec::new());
    for batch in loader {
        let batch = batch?;
        let x = model.encoder.forward_all(&norm.patches(&batch, model.encoder.cfg.patch, dev)?, false)?;
        feats.extend(x.narrow(1, 0, 1)?.squeeze(1)?.flatten_all()?.to_vec1::<f32>()?);
        labels.extend_from_slice(&batch.labels()[..batch.len]);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok((feats, labels))
}

/// Trains the probe and writes its checkpoint.
pub fn linprobe(job: LinprobeJob) -> Result<ProbeResult> {
    crate::alloc::keep_freed_memory();
    let LinprobeJob { recipe, out, init, device: dev } = job;
    let ds = Arc::new(PackedDataset::open(&recipe.data.train).with_context(|| format!("opening {}", recipe.data.train.display()))?);
    let classes = ds.classes().len();
    if classes < 2 {
        bail!("{}: probing needs labelled data with at least 2 classes", recipe.data.train.display());
    }
    let mut enc = encoder_config(&recipe, Some(&init))?;
    enc.drop_path = 0.0;
    let mut run = RunDir::open(&out, &recipe, false)?;
    let vm = VarMap::new();
    let model = VitClassifier::new(&enc, classes, Pool::Cls, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
    load_encoder(&init, &vm, &enc, &dev)?;
    let norm = Normalizer::new(&recipe.data.mean, &recipe.data.std, &dev)?;
    let batch = 256;
    let train_cfg = LoaderConfig { augment: recipe.data.augment, seed: recipe.run.seed, ..eval_loader(&recipe, batch, recipe.data.low_res) };
    let (train_x, train_y) = features(&model, &ds, train_cfg, &norm, &dev, "features (train)")?;
    let val = match recipe.val() {
        Some(v) => {
            let vds = Arc::new(PackedDataset::open(v).with_context(|| format!("opening {}", v.display()))?);
            let (x, y) = features(&model, &vds, eval_loader(&recipe, batch, recipe.data.low_res), &norm, &dev, "features (val)")?;
            Some((vds, x, y))
        }
        None => None,
    };
    let d = enc.dim;
    let n = train_y.len();
    let train_x = Tensor::from_vec(train_x, (n, d), &dev)?;
    let pvm = VarMap::new();
    let probe = LinearProbe::new(d, classes, VarBuilder::from_varmap(&pvm, DType::F32, &dev))?;
    srmae_model::layers::init::seeded_init(&pvm, recipe.run.seed)?;
    srmae_model::layers::init::normal_init(&pvm, "head.weight", srmae_model::layers::classifier::PROBE_HEAD_STD, recipe.run.seed)?;
    let o = &recipe.optim;
    let mut opt = AdamW::new(param_groups(&pvm, o.weight_decay, None), recipe.lr())?;
    (opt.beta1, opt.beta2) = o.betas;
    let bs = o.batch_size.min(n);
    let per_epoch = n / bs;
    let sched = CosineSchedule { lr: recipe.lr(), min_lr: o.min_lr, warmup_epochs: o.warmup_epochs, epochs: o.epochs as f64 };
    let bar = items_bar(o.epochs, "probe epochs");
    let mut step = 0u64;
    for epoch in 0..o.epochs {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(recipe.run.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut perm: Vec<u32> = (0..n as u32).collect();
        for i in (1..n).rev() {
            perm.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        let mut loss_sum = 0f64;
        for k in 0..per_epoch {
            let idx = Tensor::from_slice(&perm[k * bs..(k + 1) * bs], bs, &dev)?;
            let y: Vec<u32> = perm[k * bs..(k + 1) * bs].iter().map(|&i| train_y[i as usize]).collect();
            let loss = cross_entropy(&probe.forward(&train_x.index_select(&idx, 0)?, true)?, &Tensor::from_vec(y, bs, &dev)?, 0.0)?;
            opt.lr = sched.lr_at(step as f64 / per_epoch as f64);
            opt.step(&loss.backward()?, 1.0)?;
            loss_sum += loss.to_scalar::<f32>()? as f64;
            step += 1;
        }
        let mut line = serde_json::json!({"step": step, "epoch_end": epoch + 1, "loss": loss_sum / per_epoch as f64, "lr": opt.lr});
        if let Some((_, vx, vy)) = &val {
            if (epoch + 1) % recipe.run.eval_every == 0 || epoch + 1 == o.epochs {
                let logits = probe.forward(&Tensor::from_slice(vx, (vy.len(), d), &dev)?, false)?;
                let (c1, c5) = topk_correct(&logits, vy)?;
                let t = vy.len() as f64;
                line["eval"] = serde_json::json!({"top1": 100.0 * c1 as f64 / t, "top5": 100.0 * c5 as f64 / t, "n": vy.len()});
            }
        }
        bar.set_message(format!("loss {:.4}", loss_sum / per_epoch as f64));
        bar.inc(1);
        run.log(line)?;
    }
    bar.finish_and_clear();
    // The probe folded into the classifier's head.
    let (w, b) = probe.fold()?;
    {
        let data = vm.data().lock().expect("varmap lock");
        data.get("head.weight").context("classifier head")?.set(&w)?;
        data.get("head.bias").context("classifier head")?.set(&b)?;
    }
    let config = CheckpointConfig {
        task: "linprobe".into(),
        recipe: recipe.to_toml(),
        classes: Some(classes),
        encoder: Some(enc),
        class_names: ds.classes().to_vec(),
    };
    let meta = CheckpointMeta { step, config: serde_json::to_string(&config)?, loader_state: String::new() };
    checkpoint::save(&run.checkpoint(), &vm, None, &meta)?;
    let mut final_acc = None;
    if let Some((vds, _, _)) = &val {
        let acc = accuracy(&model, vds, eval_loader(&recipe, batch, recipe.data.low_res), &norm, &dev)?;
        run.log(serde_json::json!({"final_eval": {"top1": acc.top1, "top5": acc.top5, "n": acc.n}}))?;
        final_acc = Some((acc.top1, acc.top5, acc.n));
        tracing::info!("linear probe: top-1 {:.2}%, top-5 {:.2}% on {} images", acc.top1, acc.top5, acc.n);
    }
    plot::training_plots(&out)?;
    Ok(ProbeResult { checkpoint: run.checkpoint(), accuracy: final_acc })
}
