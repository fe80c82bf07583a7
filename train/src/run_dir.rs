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
}

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
        Ok(RunDir { dir: dir.to_path_buf(), metrics: Some(metrics) })
    }

    /// The run directory as seen by data-parallel ranks other than 0: they
    /// read its checkpoint on `--resume` and write nothing (rank 0 logs and
    /// checkpoints for all).
    pub fn follower(dir: &Path) -> RunDir {
        RunDir { dir: dir.to_path_buf(), metrics: None }
    }

    pub fn checkpoint(&self) -> PathBuf {
        self.dir.join("checkpoint.safetensors")
    }

    /// Appends one line to `metrics.jsonl`.
    pub fn log(&mut self, v: serde_json::Value) -> Result<()> {
        let Some(m) = self.metrics.as_mut() else { return Ok(()) };
        writeln!(m, "{v}").context("writing metrics.jsonl")?;
        m.flush().context("writing metrics.jsonl")
    }
}

/// Reads the objects of a `metrics.jsonl` (skipping a torn last line).
pub fn read_metrics(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}
