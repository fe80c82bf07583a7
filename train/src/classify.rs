//! Classifiers for fine-tuning, probing and evaluation: building one from a
//! recipe, loading a pretrained encoder into it, and top-1/top-5 accuracy
//! over a packed dataset.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::safetensors::Load;
use candle_nn::VarMap;
use srmae_datasets::PackedDataset;
use srmae_model::candle::{Device, Tensor};
use srmae_model::layers::classifier::VitClassifier;
use srmae_model::layers::vit::VitConfig;
use srmae_pipeline::{Loader, LoaderConfig};

use crate::device_stage::Normalizer;
use crate::recipe::Recipe;

/// The loader config for evaluating at `low_res` (None = full resolution).
pub fn eval_loader(recipe: &Recipe, batch: usize, low_res: Option<u32>) -> LoaderConfig {
    LoaderConfig {
        threads: recipe.data.threads,
        channels: recipe.data.channels,
        augment: recipe.data.eval_augment,
        low_res: low_res.filter(|&r| r < recipe.data.size),
        ..LoaderConfig::eval(recipe.data.size, batch)
    }
}

/// Loads the encoder variables of a pretraining checkpoint (`model.<name>`),
/// or of timm-named weights (`crate::timm`), into `varmap`; the head
/// (`head.*`, `fc_norm.*`) keeps its initialisation when the file has none.
/// Returns the names left at their initial values.
pub fn load_encoder(path: &Path, varmap: &VarMap, enc: &VitConfig, dev: &Device) -> Result<Vec<String>> {
    if crate::timm::is_timm_file(path)? {
        return crate::timm::load_timm_encoder(path, varmap, enc, dev);
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).with_context(|| format!("{}: not a safetensors file", path.display()))?;
    set_variables(path, varmap, |name, _| match st.tensor(&format!("model.{name}")) {
        Ok(view) => Ok(Some(view.load(dev)?)),
        Err(_) if name.starts_with("head.") || name.starts_with("fc_norm.") => Ok(None),
        Err(_) => bail!("{}: no {name}: not a checkpoint of this encoder", path.display()),
    })
}

/// Sets each variable of `varmap`, in name order, to what `fetch(name,
/// shape)` gives: a tensor (its shape checked), or None to leave it at its
/// initial value. Returns the names left so.
pub(crate) fn set_variables(path: &Path, varmap: &VarMap, mut fetch: impl FnMut(&str, &[usize]) -> Result<Option<Tensor>>) -> Result<Vec<String>> {
    let mut kept = Vec::new();
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let want = var.as_tensor().dims();
        match fetch(name, want)? {
            Some(t) if t.dims() == want => var.set(&t)?,
            Some(t) => bail!("{}: {name} has shape {:?}, the model {want:?} (different encoder size?)", path.display(), t.dims()),
            None => kept.push(name.clone()),
        }
    }
    Ok(kept)
}

/// Top-1 / top-5 accuracy (percent) and the sample count.
pub struct Accuracy {
    pub top1: f64,
    pub top5: f64,
    pub n: u64,
}

/// Evaluates `model` on every sample of `ds`.
pub fn accuracy(model: &VitClassifier, ds: &Arc<PackedDataset>, cfg: LoaderConfig, norm: &Normalizer, dev: &Device) -> Result<Accuracy> {
    let patch = model.encoder.cfg.patch;
    let (mut c1, mut c5, mut n) = (0u64, 0u64, 0u64);
    for batch in Loader::new(ds.clone(), cfg)? {
        let batch = batch?;
        let logits = model.forward(&norm.patches(&batch, patch, dev)?, false)?;
        let (c1b, c5b) = topk_correct(&logits, batch.labels())?;
        c1 += c1b;
        c5 += c5b;
        n += batch.len as u64;
    }
    if n == 0 {
        bail!("the evaluation set is empty");
    }
    Ok(Accuracy { top1: 100.0 * c1 as f64 / n as f64, top5: 100.0 * c5 as f64 / n as f64, n })
}

/// Counts samples whose label is the arg-max, and among the 5 largest logits.
/// # Shapes
/// - `logits`: `[B, K]`; `labels`: B values
pub fn topk_correct(logits: &Tensor, labels: &[u32]) -> Result<(u64, u64)> {
    let rows: Vec<Vec<f32>> = logits.to_vec2()?;
    let (mut c1, mut c5) = (0, 0);
    for (row, &label) in rows.iter().zip(labels) {
        let mine = row.get(label as usize).copied().unwrap_or(f32::NEG_INFINITY);
        let above = row.iter().filter(|&&v| v > mine).count();
        c1 += (above == 0) as u64;
        c5 += (above < 5) as u64;
    }
    Ok((c1, c5))
}
