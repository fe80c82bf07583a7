//! Checkpoints: one safetensors file holding the model's variables
//! (`model.<name>`), the optimiser's moments (`optim.m.<name>`,
//! `optim.v.<name>`), and in its metadata the step, the model config (JSON),
//! the optimiser step and an opaque loader-state string. Written to
//! `<path>.tmp`, fsynced and renamed, so an interrupted write leaves the
//! previous checkpoint intact.

use std::collections::HashMap;
use std::path::Path;

use candle_core::safetensors::Load;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;

use crate::training::optim::AdamW;

/// Checkpoint format version (metadata key `format`).
pub const CHECKPOINT_FORMAT: &str = "srmae-checkpoint-1";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {reason}")]
    Bad { path: String, reason: String },
    #[error("checkpoint {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// What travels with the tensors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointMeta {
    /// Training step (iterations done).
    pub step: u64,
    /// The model config as JSON.
    pub config: String,
    /// The loader's resumable position, opaque to this crate.
    pub loader_state: String,
}

fn bad(path: &Path, reason: impl Into<String>) -> CheckpointError {
    CheckpointError::Bad { path: path.display().to_string(), reason: reason.into() }
}

/// Saves `varmap` (+ `opt`) to `path` atomically.
pub fn save(path: &Path, varmap: &VarMap, opt: Option<&AdamW>, meta: &CheckpointMeta) -> Result<(), CheckpointError> {
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (name, var) in varmap.data().lock().expect("varmap lock").iter() {
        tensors.push((format!("model.{name}"), var.as_tensor().clone()));
    }
    let mut info = HashMap::from([
        ("format".to_string(), CHECKPOINT_FORMAT.to_string()),
        ("step".to_string(), meta.step.to_string()),
        ("config".to_string(), meta.config.clone()),
        ("loader_state".to_string(), meta.loader_state.clone()),
    ]);
    if let Some(opt) = opt {
        info.insert("optim_step".into(), opt.step.to_string());
        for (g, moments) in opt.groups.iter().zip(&opt.moments) {
            for (name, (m, v)) in g.names.iter().zip(moments) {
                tensors.push((format!("optim.m.{name}"), m.clone()));
                tensors.push((format!("optim.v.{name}"), v.clone()));
            }
        }
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(info))
        .map_err(|e| bad(path, format!("serialise: {e}")))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let io = |source| CheckpointError::Io { path: tmp.display().to_string(), source };
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(|source| CheckpointError::Io { path: path.display().to_string(), source })
}

/// Loads `path` into `varmap` (every variable must be present with its
/// shape) and, if given, `opt`'s moments and step. Returns the metadata.
pub fn load(path: &Path, varmap: &VarMap, opt: Option<&mut AdamW>, dev: &Device) -> Result<CheckpointMeta, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io { path: path.display().to_string(), source })?;
    let (_, md) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(path, format!("not a safetensors file: {e}")))?;
    let info = md.metadata().clone().unwrap_or_default();
    if info.get("format").map(String::as_str) != Some(CHECKPOINT_FORMAT) {
        return Err(bad(path, format!("format {:?} is not {CHECKPOINT_FORMAT}", info.get("format"))));
    }
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(path, format!("damaged: {e}")))?;
    let get = |name: &str| -> Result<Tensor, CheckpointError> {
        let view = st.tensor(name).map_err(|_| bad(path, format!("missing tensor {name}")))?;
        Ok(view.load(dev)?)
    };
    for (name, var) in varmap.data().lock().expect("varmap lock").iter() {
        let t = get(&format!("model.{name}"))?;
        if t.dims() != var.as_tensor().dims() {
            return Err(bad(path, format!("{name}: shape {:?}, model has {:?}", t.dims(), var.as_tensor().dims())));
        }
        var.set(&t)?;
    }
    if let Some(opt) = opt {
        for (g, moments) in opt.groups.iter().zip(opt.moments.iter_mut()) {
            for (name, (m, v)) in g.names.iter().zip(moments.iter_mut()) {
                *m = get(&format!("optim.m.{name}"))?;
                *v = get(&format!("optim.v.{name}"))?;
            }
        }
        opt.step = info.get("optim_step").and_then(|s| s.parse().ok()).ok_or_else(|| bad(path, "no optimiser step"))?;
    }
    let step = info.get("step").and_then(|s| s.parse().ok()).ok_or_else(|| bad(path, "no step"))?;
    Ok(CheckpointMeta {
        step,
        config: info.get("config").cloned().unwrap_or_default(),
        loader_state: info.get("loader_state").cloned().unwrap_or_default(),
    })
}
