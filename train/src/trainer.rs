//! The training loop shared by `pretrain` and `finetune`: epochs of loader
//! batches, gradient accumulation, the warmup + cosine schedule per step,
//! clipping, AdamW, checkpoints with the loader's position, Ctrl-C, logs.
//!
//! Resume is exact: the checkpoint holds the weights, AdamW's moments and
//! step, and the loader position; the schedule derives from the step and
//! stochastic depth is seeded from (seed, step), so a resumed run computes
//! the same updates as an uninterrupted one.
//!
//! Overlap: a thread per epoch pulls the loader's batches and uploads them
//! (`TrainTask::upload`: host-to-device copy of u8 pixels, normalisation on
//! the device), `DEVICE_PREFETCH` batches ahead of the step. The step thread
//! only waits when neither the loader nor the upload kept up; that wait is
//! the logged `data_wait_pct`. Mixed precision (`run.precision = "bf16"`)
//! is an autocast scope around forward and backward on the step thread.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_nn::VarMap;
use srmae_datasets::PackedDataset;
use crossbeam::channel::{bounded, Receiver};
use srmae_model::training::autocast::Autocast;
use srmae_model::candle::{Device, Tensor, Var};
use srmae_model::training::checkpoint::{self, CheckpointMeta};
use srmae_model::training::dist::{DistEnv, GradSync};
use srmae_model::training::engine::GradAccumulator;
use srmae_model::training::optim::AdamW;
use srmae_model::training::schedule::CosineSchedule;
use srmae_model::layers::vit::seed_stochastic_depth;
use srmae_pipeline::{Batch, Loader, LoaderConfig, LoaderState, PatchTransform};

use crate::recipe::Recipe;
use crate::run_dir::RunDir;
use crate::progress::items_bar;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// First Ctrl-C: finish the current step, checkpoint, exit. Second: exit now.
pub fn install_interrupt_handler() {
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            eprintln!("second interrupt: exiting without a checkpoint");
            std::process::exit(130);
        }
        eprintln!("interrupt: writing a checkpoint after this step (Ctrl-C again to abort)");
    });
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Uploaded batches kept ready ahead of the step (double buffering plus one).
pub const DEVICE_PREFETCH: usize = 2;

/// What differs between pretraining and fine-tuning.
pub trait TrainTask: Sync {
    /// One micro-batch on the device.
    type Input: Send;
    /// Host batch -> device tensors. Runs on the upload thread.
    fn upload(&self, batch: &Batch, dev: &Device) -> Result<Self::Input>;
    /// The loss of one micro-batch (mean over its samples). Runs on the step thread.
    fn loss(&self, input: &Self::Input) -> Result<Tensor>;
    /// Called after each evaluated epoch; returns metrics to log.
    fn evaluate(&self, _epoch: u64) -> Result<Option<serde_json::Value>> {
        Ok(None)
    }
}

pub struct Trainer<'a> {
    pub recipe: &'a Recipe,
    pub run: &'a mut RunDir,
    pub varmap: &'a VarMap,
    pub vars: Vec<Var>,
    pub opt: AdamW,
    pub dev: Device,
    pub ds: Arc<PackedDataset>,
    pub loader: LoaderConfig,
    /// A patch transform in place of the one `loader.patch` names
    /// (`Loader::with_transform`); it enters the loader fingerprint.
    pub transform: Option<Arc<dyn PatchTransform>>,
    /// The checkpoint's `config` metadata.
    pub config_json: String,
    /// Stop (as on Ctrl-C: checkpoint, exit) after this many steps in total.
    pub stop_after: Option<u64>,
    /// `--resume-from`: the checkpoint to continue from (default: the run
    /// directory's latest).
    pub resume_from: Option<PathBuf>,
    /// The name on the progress bar.
    pub what: &'static str,
    /// This process's rank (rank 0 logs, evaluates and checkpoints).
    pub dist: DistEnv,
    /// Gradient averaging across ranks (`GradSync::Local` for one process).
    pub sync: GradSync,
}

/// Why the steps of an epoch stopped early.
enum Stopped {
    /// Ctrl-C on any rank, or `--stop-after`.
    Asked { step: u64 },
    /// The loader failed (a corrupt record under `on_corrupt = "fail"`, a
    /// shard that changed under the run, an I/O error).
    DataError { step: u64, error: anyhow::Error },
}

/// How a training run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Finished,
    Interrupted { step: u64 },
}

/// Loader position after `step` optimiser steps.
fn position(step: u64, per_epoch: u64, accum: u64, fingerprint: u64) -> LoaderState {
    LoaderState { epoch: step / per_epoch, next_batch: (step % per_epoch) * accum, fingerprint }
}

impl<'a> Trainer<'a> {
    /// Loads the checkpoint of the run directory (for `--resume`).
    pub fn resume(&mut self) -> Result<u64> {
        let path = self.resume_from.clone().unwrap_or_else(|| self.run.checkpoint());
        let meta = checkpoint::load(&path, self.varmap, Some(&mut self.opt), &self.dev)?;
        let state: LoaderState = serde_json::from_str(&meta.loader_state).with_context(|| format!("{}: loader state", path.display()))?;
        if state.fingerprint != self.shared_fingerprint() {
            anyhow::bail!("{}: the loader configuration differs from the checkpoint's (was the recipe changed?)", path.display());
        }
        tracing::info!("resuming {} at step {} (epoch {}, batch {})", path.display(), meta.step, state.epoch, state.next_batch);
        Ok(meta.step)
    }

    /// The loader fingerprint stored in checkpoints: rank 0's, so that every
    /// rank of a data-parallel job can check a checkpoint against its recipe.
    fn shared_fingerprint(&self) -> u64 {
        LoaderConfig { rank: 0, ..self.loader.clone() }.fingerprint_with(self.transform.as_deref())
    }

    fn save(&self, step: u64, state: LoaderState) -> Result<()> {
        self.save_to(&self.run.checkpoint(), step, state)
    }

    fn save_to(&self, path: &std::path::Path, step: u64, state: LoaderState) -> Result<()> {
        if !self.dist.is_main() {
            return Ok(());
        }
        let state = LoaderState { fingerprint: self.shared_fingerprint(), ..state };
        let meta = CheckpointMeta {
            step,
            config: self.config_json.clone(),
            loader_state: serde_json::to_string(&state)?,
        };
        checkpoint::save(path, self.varmap, Some(&self.opt), &meta)?;
        Ok(())
    }

    /// After an evaluation: `best.safetensors` when top-1 beats the best so far.
    fn keep_best(&self, eval: &serde_json::Value, epoch: u64, step: u64, state: LoaderState) -> Result<()> {
        let Some(top1) = eval.get("top1").and_then(|v| v.as_f64()) else { return Ok(()) };
        let (ckpt, record) = self.run.best();
        let best = std::fs::read_to_string(&record).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        if best.and_then(|b| b["top1"].as_f64()).is_some_and(|b| b >= top1) {
            return Ok(());
        }
        self.save_to(&ckpt, step, state)?;
        let line = serde_json::json!({"top1": top1, "epoch": epoch, "step": step});
        std::fs::write(&record, line.to_string()).with_context(|| format!("writing {}", record.display()))?;
        Ok(())
    }

    /// Trains from optimiser step `start` to the end of the recipe.
    pub fn run<T: TrainTask>(&mut self, task: &T, start: u64) -> Result<Ended> {
        crate::alloc::keep_freed_memory();
        let o = &self.recipe.optim;
        let accum = o.accum_iter as u64;
        let batches = Loader::new(self.ds.clone(), self.loader.clone())?.num_batches();
        let per_epoch = batches / accum;
        if per_epoch == 0 {
            anyhow::bail!(
                "{} has {} samples: fewer than one step of {} x {} (batch_size x accum_iter)",
                self.recipe.data.train.display(),
                self.ds.len(),
                o.batch_size,
                o.accum_iter
            );
        }
        let total = per_epoch * o.epochs;
        // The effective batch spans all ranks: lr = blr x batch x accum x world / 256.
        let world = self.sync.world_size();
        let sched = CosineSchedule { lr: self.recipe.lr() * world as f64, min_lr: o.min_lr, warmup_epochs: o.warmup_epochs, epochs: o.epochs as f64 };
        let fp = self.loader.fingerprint_with(self.transform.as_deref());
        let seed = self.recipe.run.seed;
        let bar = items_bar(total, self.what);
        if !self.dist.is_main() {
            bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        bar.set_position(start);
        let mut step = start;
        let mut acc = GradAccumulator::new();
        let (mut loss_sum, mut loss_n, mut images, mut wait_s, mut busy_s) = (0f64, 0u64, 0u64, 0f64, 0f64);
        let mut window = Instant::now();
        let _autocast = Autocast::enter(self.recipe.run.precision.dtype());
        while step < total {
            let epoch = step / per_epoch;
            let pos = position(step, per_epoch, accum, fp);
            let loader = Loader::resume_with(self.ds.clone(), LoaderConfig { epoch, ..self.loader.clone() }, pos, self.transform.clone())?;
            let mut epoch_loss = (0f64, 0u64);
            let stopped = std::thread::scope(|scope| -> Result<Option<Stopped>> {
                let uploads = spawn_uploader(scope, loader, task, &self.dev);
                while step / per_epoch == epoch && step < total {
                    let t_step = Instant::now();
                    let mut step_loss = 0f64;
                    for micro in 0..accum {
                        let t_wait = Instant::now();
                        let loaded = uploads
                            .recv()
                            .context("the loader ended before the epoch's steps")
                            .and_then(|r| r.with_context(|| format!("loading epoch {epoch}")));
                        let (input, n) = match loaded {
                            Ok(x) => x,
                            // Bad data (e.g. a shard that shrank under the run): checkpoint, then stop.
                            Err(e) => return Ok(Some(Stopped::DataError { step, error: e })),
                        };
                        wait_s += t_wait.elapsed().as_secs_f64();
                        images += n as u64;
                        seed_stochastic_depth(seed ^ (step << 8 | micro).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                        let loss = task.loss(&input)?;
                        let value = loss.to_scalar::<f32>()? as f64;
                        if !value.is_finite() {
                            anyhow::bail!("loss is {value} at step {step} (epoch {epoch}); lower optim.blr or set optim.clip_grad");
                        }
                        step_loss += value / accum as f64;
                        let grads = (loss / accum as f64)?.backward()?;
                        acc.add(&grads, &self.vars)?;
                    }
                    // One all-reduce: the gradients, and whether any rank was interrupted.
                    let flags = acc.all_reduce(&self.sync, &self.vars, &[if interrupted() { 1.0 } else { 0.0 }])?;
                    let stop_everywhere = flags[0] > 0.0;
                    let lr = sched.lr_at(step as f64 / per_epoch as f64);
                    self.opt.lr = lr;
                    let norm = acc.apply(&mut self.opt, o.clip_grad)?;
                    step += 1;
                    busy_s += t_step.elapsed().as_secs_f64();
                    loss_sum += step_loss;
                    loss_n += 1;
                    epoch_loss = (epoch_loss.0 + step_loss, epoch_loss.1 + 1);
                    bar.set_position(step);
                    let wait_pct = 100.0 * wait_s / busy_s.max(1e-9);
                    let rate = images as f64 / window.elapsed().as_secs_f64().max(1e-9);
                    bar.set_message(format!("loss {:.4} lr {lr:.2e} {rate:.0} img/s data-wait {wait_pct:.1}%", loss_sum / loss_n as f64));
                    if step % self.recipe.run.log_every == 0 || step == total {
                        let line = serde_json::json!({"step": step, "epoch": step as f64 / per_epoch as f64, "loss": loss_sum / loss_n as f64,
                            "lr": lr, "grad_norm": norm, "images_per_s": rate, "data_wait_pct": wait_pct});
                        if bar.is_hidden() {
                            tracing::info!("{line}");
                        }
                        self.run.log(line)?;
                        (loss_sum, loss_n, images, wait_s, busy_s) = (0.0, 0, 0, 0.0, 0.0);
                        window = Instant::now();
                    }
                    if stop_everywhere || self.stop_after == Some(step) {
                        return Ok(Some(Stopped::Asked { step }));
                    }
                }
                Ok(None)
            })?;
            match stopped {
                Some(Stopped::Asked { step }) => {
                    self.save(step, position(step, per_epoch, accum, fp))?;
                    bar.abandon_with_message(format!("stopped at step {step}; checkpoint written"));
                    return Ok(Ended::Interrupted { step });
                }
                Some(Stopped::DataError { step, error }) => {
                    // The step in progress is not applied; resuming redoes it.
                    self.save(step, position(step, per_epoch, accum, fp))
                        .with_context(|| format!("{error:#}; writing the checkpoint after it failed too"))?;
                    bar.abandon_with_message(format!("stopped at step {step} by a data error; checkpoint written"));
                    return Err(error.context(format!(
                        "training stopped at step {step}: checkpoint {} written; fix the data, then continue with --resume",
                        self.run.checkpoint().display()
                    )));
                }
                None => {}
            }
            let done = epoch + 1;
            let mut line = serde_json::json!({"epoch_end": done, "train_loss": epoch_loss.0 / epoch_loss.1.max(1) as f64});
            let pos = position(step, per_epoch, accum, fp);
            if self.dist.is_main() && (done % self.recipe.run.eval_every == 0 || done == o.epochs) {
                if let Some(eval) = task.evaluate(done)? {
                    self.keep_best(&eval, done, step, pos)?;
                    line["eval"] = eval;
                }
            }
            tracing::info!("epoch {done}/{}: {line}", o.epochs);
            self.run.log(line)?;
            if done % self.recipe.run.save_every == 0 || done == o.epochs {
                self.save(step, pos)?;
                if self.dist.is_main() {
                    self.run.keep_history(done, self.recipe.run.keep_checkpoints)?;
                }
            }
        }
        bar.finish_and_clear();
        Ok(Ended::Finished)
    }
}

/// Device-ready micro-batches (or the error that ended the loader), with
/// their sample counts.
type Uploaded<I> = Result<(I, usize)>;

/// Starts the upload thread of one epoch. It ends when the loader does, on
/// the first error (passed on), or when the receiver is dropped.
fn spawn_uploader<'scope, 'env, T: TrainTask>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    loader: Loader,
    task: &'env T,
    dev: &'env Device,
) -> Receiver<Uploaded<T::Input>> {
    let (tx, rx) = bounded::<Uploaded<T::Input>>(DEVICE_PREFETCH);
    scope.spawn(move || {
        for batch in loader {
            let item = match batch {
                Ok(b) => task.upload(&b, dev).map(|x| (x, b.len)),
                Err(e) => Err(anyhow::Error::new(e)),
            };
            let failed = item.is_err();
            if tx.send(item).is_err() || failed {
                break;
            }
        }
    });
    rx
}

/// AdamW with the recipe's groups and betas.
pub fn optimizer(recipe: &Recipe, varmap: &VarMap, layer_decay: Option<(f64, usize)>) -> Result<AdamW> {
    let groups = srmae_model::training::optim::param_groups(varmap, recipe.optim.weight_decay, layer_decay);
    let mut opt = AdamW::new(groups, recipe.lr())?;
    (opt.beta1, opt.beta2) = recipe.optim.betas;
    Ok(opt)
}
