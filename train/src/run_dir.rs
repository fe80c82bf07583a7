//! A run directory: `recipe.toml` (resolved), `metrics.jsonl` (one JSON
//! object per line: step logs, epoch summaries, evaluations),
//! `checkpoint.safetensors` (latest, replaced atomically), plots and
//! reconstructions.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::recipe::Recipe;
use crate::tensorboard::{wall_time, EventWriter};

/// What a checkpoint's `config` metadata holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckpointConfig {
    /// `pretrain`, `finetune` or `linprobe`.
    pub task: String,
    /// The resolved recipe (TOML).
    pub recipe: String,
    /// Classes of a classifier checkpoint.
    #[serde(default)]
    pub classes: Option<usize>,
    /// The encoder (for checkpoints whose recipe has none: fine-tuning).
    #[serde(default)]
    pub encoder: Option<srmae_model::layers::vit::VitConfig>,
    /// Class names, index order.
    #[serde(default)]
    pub class_names: Vec<String>,
}

impl CheckpointConfig {
    pub fn parse(json: &str, path: &Path) -> Result<CheckpointConfig> {
        serde_json::from_str(json).with_context(|| format!("{}: not an srmae run checkpoint (config metadata)", path.display()))
    }
    pub fn recipe(&self) -> Result<Recipe> {
        Recipe::from_toml(&self.recipe)
    }
}

pub struct RunDir {
    pub dir: PathBuf,
    /// None for a data-parallel rank other than 0, which writes nothing.
    metrics: Option<File>,
    /// TensorBoard events of the same lines (`DIR/tensorboard/`).
    events: Option<EventWriter>,
    /// The step of the latest step line (epoch summaries are drawn there).
    last_step: u64,
}

/// metrics.jsonl keys of step lines drawn in TensorBoard, and their tags.
const STEP_SCALARS: [(&str, &str); 5] = [
    ("loss", "train/loss"),
    ("lr", "train/lr"),
    ("grad_norm", "train/grad_norm"),
    ("images_per_s", "perf/images_per_s"),
    ("data_wait_pct", "perf/data_wait_pct"),
];

impl RunDir {
    /// Whether a run asked to `--resume` continues from a checkpoint. A run
    /// directory without a checkpoint yet (a job killed or requeued before
    /// its first one) starts from the beginning, so that one fixed command
    /// line both starts and resumes a job; a directory whose `recipe.toml`
    /// differs from this recipe is refused, as on resume.
    pub fn resumes(dir: &Path, recipe: &Recipe, resume: bool) -> Result<bool> {
        if !resume || dir.join("checkpoint.safetensors").exists() {
            return Ok(resume);
        }
        let recipe_path = dir.join("recipe.toml");
        if let Ok(old) = std::fs::read_to_string(&recipe_path) {
            if old != recipe.to_toml() {
                bail!(
                    "--resume: {} has no checkpoint yet, and its recipe.toml differs from this run's recipe (a different run?); \
                     pass the same recipe and --set values, or choose another --out",
                    dir.display()
                );
            }
        }
        tracing::info!("--resume: {} has no checkpoint yet; starting the run from the beginning", dir.display());
        Ok(false)
    }

    /// Opens `dir` for a new run (refused if it already holds a checkpoint)
    /// or, with `resume`, for continuing one.
    pub fn open(dir: &Path, recipe: &Recipe, resume: bool) -> Result<RunDir> {
        let ckpt = dir.join("checkpoint.safetensors");
        if resume && !ckpt.exists() {
            bail!("--resume: {} has no checkpoint.safetensors", dir.display());
        }
        if !resume && ckpt.exists() {
            bail!("{} already holds a run (checkpoint.safetensors); pass --resume to continue it or choose another --out", dir.display());
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating run directory {}", dir.display()))?;
        if !resume {
            std::fs::write(dir.join("recipe.toml"), recipe.to_toml()).with_context(|| format!("writing {}/recipe.toml", dir.display()))?;
        }
        let metrics = OpenOptions::new()
            .create(true)
            .append(resume)
            .write(true)
            .truncate(!resume)
            .open(dir.join("metrics.jsonl"))
            .with_context(|| format!("opening {}/metrics.jsonl", dir.display()))?;
        let events = EventWriter::create(&dir.join("tensorboard"))?;
        Ok(RunDir { dir: dir.to_path_buf(), metrics: Some(metrics), events: Some(events), last_step: 0 })
    }

    /// The run directory as seen by data-parallel ranks other than 0: they
    /// read its checkpoint on `--resume` and write nothing (rank 0 logs and
    /// checkpoints for all).
    pub fn follower(dir: &Path) -> RunDir {
        RunDir { dir: dir.to_path_buf(), metrics: None, events: None, last_step: 0 }
    }

    pub fn checkpoint(&self) -> PathBuf {
        self.dir.join("checkpoint.safetensors")
    }

    /// The checkpoint kept after `epoch` (`run.keep_checkpoints`).
    pub fn epoch_checkpoint(&self, epoch: u64) -> PathBuf {
        self.dir.join(format!("checkpoint-{epoch}.safetensors"))
    }

    /// The fine-tuning checkpoint with the highest validation top-1, and its record.
    pub fn best(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("best.safetensors"), self.dir.join("best.json"))
    }

    /// Keeps a copy of the latest checkpoint as `checkpoint-{epoch}` and
    /// removes the copies beyond the `keep` newest.
    pub fn keep_history(&self, epoch: u64, keep: usize) -> Result<()> {
        if keep == 0 {
            return Ok(());
        }
        let kept = self.epoch_checkpoint(epoch);
        let _ = std::fs::remove_file(&kept);
        // A hard link costs no space; a copy where links are not possible.
        if std::fs::hard_link(self.checkpoint(), &kept).is_err() {
            std::fs::copy(self.checkpoint(), &kept).with_context(|| format!("writing {}", kept.display()))?;
        }
        let mut epochs: Vec<u64> = std::fs::read_dir(&self.dir)
            .with_context(|| format!("listing {}", self.dir.display()))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("checkpoint-")?.strip_suffix(".safetensors")?.parse().ok())
            .collect();
        epochs.sort_unstable();
        for old in epochs.iter().rev().skip(keep) {
            std::fs::remove_file(self.epoch_checkpoint(*old)).with_context(|| format!("removing {}", self.epoch_checkpoint(*old).display()))?;
        }
        Ok(())
    }

    /// Appends one line to `metrics.jsonl` (with its `wall_time`, seconds
    /// since the Unix epoch, as MAE's log), and its scalars to TensorBoard.
    pub fn log(&mut self, mut v: serde_json::Value) -> Result<()> {
        let Some(m) = self.metrics.as_mut() else { return Ok(()) };
        let now = wall_time();
        if let Some(obj) = v.as_object_mut() {
            obj.entry("wall_time").or_insert(serde_json::json!(now));
        }
        writeln!(m, "{v}").context("writing metrics.jsonl")?;
        m.flush().context("writing metrics.jsonl")?;
        let num = |k: &str| v.get(k).and_then(|x| x.as_f64());
        let mut scalars: Vec<(&str, f64)> = Vec::new();
        if let Some(step) = v.get("step").and_then(|s| s.as_u64()) {
            self.last_step = step;
            scalars.extend(STEP_SCALARS.iter().filter_map(|(k, tag)| num(k).map(|x| (*tag, x))));
        }
        if let Some(x) = num("train_loss") {
            scalars.push(("epoch/train_loss", x));
        }
        for (key, metric, tag) in [("eval", "top1", "val/top1"), ("eval", "top5", "val/top5"), ("final_eval", "top1", "val/final_top1")] {
            if let Some(x) = v.get(key).and_then(|e| e.get(metric)).and_then(|x| x.as_f64()) {
                scalars.push((tag, x));
            }
        }
        if let Some(events) = self.events.as_mut() {
            events.scalars(self.last_step, now, &scalars)?;
            events.flush()?;
        }
        Ok(())
    }
}

/// Reads the objects of a `metrics.jsonl` (skipping a torn last line).
pub fn read_metrics(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}
