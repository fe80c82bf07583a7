//! `srmae plot`: one accuracy-vs-test-resolution chart from several
//! `eval.json` files (one line per model), e.g. SRMAE vs MAE vs scratch;
//! rows with a `std` field (bench/summarize_results.py's means over seeds)
//! get ± error bars.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use srmae_train::plot::{line_chart, Series};

#[derive(Args)]
#[command(after_help = "\
Examples:
  srmae plot --out lowres.png runs/srmae-ft/eval.json=SRMAE runs/mae-ft/eval.json=MAE runs/scratch-ft/eval.json=scratch
  srmae plot --out mean.png runs/results/mean/srmae-ft.json=SRMAE runs/results/mean/mae-ft.json=MAE   # mean ± std over seeds")]
pub struct PlotArgs {
    /// Output PNG.
    #[arg(long)]
    pub out: PathBuf,
    /// EVAL_JSON=LABEL pairs (`srmae eval --test-res ...` output).
    #[arg(required = true)]
    pub inputs: Vec<String>,
    #[arg(long, default_value = "top-1 accuracy vs test resolution")]
    pub title: String,
}

pub fn run(a: PlotArgs) -> Result<()> {
    let mut series = Vec::new();
    for spec in &a.inputs {
        let (path, label) = spec.split_once('=').unwrap_or((spec.as_str(), spec.as_str()));
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{path}: not JSON"))?;
        let rows = v["results"].as_array().with_context(|| format!("{path}: no results (an srmae eval.json?)"))?;
        let mut rows: Vec<(f64, f64, f64)> = rows.iter().filter_map(|r| Some((r["res"].as_f64()?, r["top1"].as_f64()?, r["std"].as_f64().unwrap_or(0.0)))).collect();
        rows.sort_by(|x, y| x.0.total_cmp(&y.0));
        let mut s = Series::new(label, rows.iter().map(|&(x, y, _)| (x, y)).collect());
        s.errors = rows.iter().map(|&(_, _, e)| e).collect();
        series.push(s);
    }
    if !line_chart(&a.out, &a.title, "test resolution (px)", "top-1 (%)", &series)? {
        bail!("no plot written (no data, or no TrueType font; see SRMAE_FONT)");
    }
    println!("{}", a.out.display());
    Ok(())
}
