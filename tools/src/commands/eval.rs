//! `srmae eval`: top-1/top-5 of a classifier checkpoint, at full and at very
//! low resolution (each test image downsampled to r×r, then upsampled back
//! to the model's input size), with a table and a plot.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_nn::{VarBuilder, VarMap};
use clap::Args;
use srmae_datasets::PackedDataset;
use srmae_model::candle::DType;
use srmae_model::training::checkpoint;
use srmae_model::layers::classifier::{Pool, VitClassifier};

use srmae_train::classify::{accuracy, eval_loader};
use srmae_train::device_stage::Normalizer;
use srmae_train::plot::{line_chart, Series};
use srmae_train::run_dir::CheckpointConfig;

#[derive(Args)]
#[command(after_help = "\
Examples:
  srmae eval --checkpoint runs/fm-srmae-ft/checkpoint.safetensors
  srmae eval --checkpoint runs/fm-srmae-ft/checkpoint.safetensors --test-res 28,14,10,7
  srmae eval --checkpoint runs/in1k-ft/checkpoint.safetensors --data data/imagenet-val --test-res 224,112,64,32,16 --device cuda

Writes eval.json, and with --test-res lowres.md (table) and lowres.png (plot), to --out
(default: the checkpoint's directory).")]
pub struct EvalArgs {
    /// A fine-tuning or linear-probe checkpoint.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Packed evaluation set (default: the recipe's data.val).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Test resolutions, e.g. 28,14,10,7 (the model's size means full resolution).
    #[arg(long, value_delimiter = ',')]
    pub test_res: Vec<u32>,
    /// Evaluation batch size.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Output directory (default: the checkpoint's directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Loader threads (overrides data.threads; 0 = all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(a: EvalArgs) -> Result<()> {
    let dev = srmae_train::device::parse_device(&a.device)?;
    let meta = checkpoint::load(&a.checkpoint, &VarMap::new(), None, &dev)?;
    let cfg = CheckpointConfig::parse(&meta.config, &a.checkpoint)?;
    if !matches!(cfg.task.as_str(), "finetune" | "linprobe") {
        bail!("{}: a {} checkpoint has no classifier; evaluate a finetune or linprobe checkpoint", a.checkpoint.display(), cfg.task);
    }
    let mut recipe = cfg.recipe()?;
    if let Some(t) = a.threads {
        recipe.data.threads = t;
    }
    let enc = cfg.encoder.clone().context("checkpoint without encoder config")?;
    let classes = cfg.classes.context("checkpoint without class count")?;
    let pool = if cfg.task == "linprobe" { Pool::Cls } else { recipe.model.pool };
    let vm = VarMap::new();
    let model = VitClassifier::new(&enc, classes, pool, VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
    checkpoint::load(&a.checkpoint, &vm, None, &dev)?;
    let data = a.data.clone().or_else(|| recipe.data.val.clone()).context("no --data and the recipe has no data.val")?;
    let ds = Arc::new(PackedDataset::open(&data).with_context(|| format!("opening {}", data.display()))?);
    if ds.classes().len() != classes {
        bail!("{} has {} classes, the checkpoint {classes}", data.display(), ds.classes().len());
    }
    let norm = Normalizer::new(&recipe.data.mean, &recipe.data.std, &dev)?;
    let size = recipe.data.size;
    let mut res: Vec<u32> = if a.test_res.is_empty() { vec![recipe.data.low_res.unwrap_or(size)] } else { a.test_res.clone() };
    res.dedup();
    let mut rows = Vec::new();
    for &r in &res {
        if r == 0 || r > size {
            bail!("--test-res {r}: must be in 1..={size} (the model's input size)");
        }
        let acc = accuracy(&model, &ds, eval_loader(&recipe, a.batch, Some(r)), &norm, &dev)?;
        println!("{r:>5} px  top-1 {:6.2}%  top-5 {:6.2}%  ({} images)", acc.top1, acc.top5, acc.n);
        rows.push(serde_json::json!({"res": r, "top1": acc.top1, "top5": acc.top5, "n": acc.n}));
    }
    let out = a.out.clone().unwrap_or_else(|| a.checkpoint.parent().map(|p| p.to_path_buf()).unwrap_or_default());
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let report = serde_json::json!({"checkpoint": a.checkpoint.display().to_string(), "data": data.display().to_string(), "task": cfg.task, "results": rows});
    std::fs::write(out.join("eval.json"), serde_json::to_string_pretty(&report)?).context("writing eval.json")?;
    if !a.test_res.is_empty() {
        let mut md = String::from("| test resolution | top-1 (%) | top-5 (%) |\n|---:|---:|---:|\n");
        for r in &rows {
            writeln!(md, "| {} | {:.2} | {:.2} |", r["res"], r["top1"].as_f64().unwrap_or(0.0), r["top5"].as_f64().unwrap_or(0.0))?;
        }
        std::fs::write(out.join("lowres.md"), md).context("writing lowres.md")?;
        let points = rows.iter().filter_map(|r| Some((r["res"].as_f64()?, r["top1"].as_f64()?))).collect();
        line_chart(&out.join("lowres.png"), "accuracy vs test resolution", "test resolution (px)", "top-1 (%)", &[Series::new(cfg.task.clone(), points)])?;
    }
    println!("results in {}", out.join("eval.json").display());
    Ok(())
}
