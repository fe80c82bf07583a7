//! Encoder weights in timm's ViT names and layouts, both ways: `srmae
//! export` writes them, `--init` reads them (so weights trained elsewhere,
//! or exported from srmae, can be fine-tuned, probed or evaluated).
//!
//! The names are the same as srmae's encoder (`cls_token`, `blocks.N.*`,
//! `norm.*`, `fc_norm.*`, `head.*`) except for two tensors:
//! - `patch_embed.proj.weight`: timm's convolution `[D, C, p, p]`; srmae's
//!   linear patch embedding `[D, p*p*C]` over `patchify`'s (p, p, C) order;
//! - `pos_embed` `[1, 1 + L, D]`: srmae's ViT uses MAE's fixed 2-D sin-cos
//!   embedding (not a variable), so a file whose `pos_embed` is not that
//!   embedding (a learned one) is refused rather than silently replaced.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::safetensors::Load;
use candle_nn::VarMap;
use srmae_model::candle::{Device, Tensor};
use srmae_model::layers::vit::VitConfig;

use crate::run_dir::CheckpointConfig;

/// The `format` metadata value of a timm-named file.
pub const FORMAT: &str = "timm-vit";

/// timm's name for an encoder of this size, when it has one.
pub fn timm_name(e: &VitConfig) -> Option<String> {
    let size = match (e.dim, e.depth, e.heads) {
        (192, 12, 3) => "tiny",
        (384, 12, 6) => "small",
        (768, 12, 12) => "base",
        (1024, 24, 16) => "large",
        _ => return None,
    };
    (e.in_chans == 3).then(|| format!("vit_{size}_patch{}_{}", e.patch, e.img_size))
}

/// A safetensors file's metadata and tensor shapes, from its header alone
/// (a checkpoint of a large model is not read in full to tell its format).
struct Header {
    metadata: HashMap<String, String>,
    shapes: HashMap<String, Vec<usize>>,
}

fn header(path: &Path) -> Result<Header> {
    use std::io::Read;
    let bad = || format!("{}: not a safetensors file", path.display());
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).with_context(bad)?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        bail!("{}: a {n}-byte header", bad());
    }
    let mut text = vec![0u8; n as usize];
    f.read_exact(&mut text).with_context(bad)?;
    let json: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&text).with_context(bad)?;
    let mut h = Header { metadata: HashMap::new(), shapes: HashMap::new() };
    for (name, v) in json {
        if name == "__metadata__" {
            h.metadata = serde_json::from_value(v).with_context(bad)?;
        } else {
            let shape = v.get("shape").cloned().map(serde_json::from_value::<Vec<usize>>).transpose().with_context(bad)?;
            h.shapes.insert(name, shape.unwrap_or_default());
        }
    }
    Ok(h)
}

/// Whether `path` holds timm-named ViT weights (not an srmae run checkpoint).
pub fn is_timm_file(path: &Path) -> Result<bool> {
    let h = header(path)?;
    Ok(h.metadata.get("format").is_some_and(|f| f == FORMAT)
        || (!h.shapes.keys().any(|n| n.starts_with("model.")) && h.shapes.contains_key("patch_embed.proj.weight")))
}

/// The encoder of a timm-named file: from its metadata (as `export` writes
/// it), else from the tensor shapes, with `heads` (which shapes do not say)
/// from `hint` (the recipe's encoder).
pub fn timm_encoder(path: &Path, hint: Option<&VitConfig>) -> Result<VitConfig> {
    let h = header(path)?;
    let num = |k: &str| h.metadata.get(k).and_then(|v| v.parse::<usize>().ok());
    let w = h.shapes.get("patch_embed.proj.weight").with_context(|| format!("{}: no patch_embed.proj.weight", path.display()))?;
    let &[dim, in_chans, patch, _] = w.as_slice() else {
        bail!("{}: patch_embed.proj.weight is not a [D, C, p, p] convolution", path.display())
    };
    let depth = h.shapes.keys().filter_map(|n| n.strip_prefix("blocks.")?.split('.').next()?.parse::<usize>().ok()).max().map_or(0, |d| d + 1);
    let grid_tokens = h.shapes.get("pos_embed").and_then(|p| p.get(1)).map(|n| n - 1);
    let img_size = match (num("img_size"), grid_tokens) {
        (Some(s), _) => s,
        (None, Some(l)) => ((l as f64).sqrt().round() as usize) * patch,
        (None, None) => hint.map(|h| h.img_size).with_context(|| format!("{}: no img_size metadata and no pos_embed", path.display()))?,
    };
    let heads = match (num("num_heads"), hint) {
        (Some(h), _) => h,
        (None, Some(h)) => h.heads,
        (None, None) => bail!("{}: timm weights without num_heads metadata: give the encoder in the recipe (model.encoder)", path.display()),
    };
    let mlp_hidden = h.shapes.get("blocks.0.mlp.fc1.weight").and_then(|s| s.first().copied()).unwrap_or(4 * dim);
    Ok(VitConfig { img_size, patch, in_chans, dim, depth, heads, mlp_ratio: mlp_hidden as f64 / dim as f64, drop_path: 0.0 })
}

/// Loads the encoder (and a head whose shape matches) of a timm-named file
/// into `varmap`. Returns the names left at their initial values.
pub fn load_timm_encoder(path: &Path, varmap: &VarMap, enc: &VitConfig, dev: &Device) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).with_context(|| format!("{}: not a safetensors file", path.display()))?;
    if let Ok(view) = st.tensor("pos_embed") {
        let theirs = view.load(dev)?;
        let ours = srmae_model::layers::pos_embed::sincos_2d_tensor(enc.dim, enc.grid(), true, dev)?;
        let same = theirs.dims() == ours.dims() && (theirs - &ours)?.abs()?.max_all()?.to_scalar::<f32>()? < 1e-4;
        if !same {
            bail!(
                "{}: its pos_embed is not the fixed 2-D sin-cos embedding srmae's ViT uses (a learned one?); \
                 srmae cannot load it without changing the model",
                path.display()
            );
        }
    }
    let global_pool = st.tensor("fc_norm.weight").is_ok();
    crate::classify::set_variables(path, varmap, |name, want| {
        let Ok(view) = st.tensor(name) else {
            // The head is new for a new task; timm's global-pool models have no final `norm`.
            if name.starts_with("head.") || name.starts_with("fc_norm.") || (name.starts_with("norm.") && global_pool) {
                return Ok(None);
            }
            bail!("{}: no {name}: not the weights of this encoder", path.display())
        };
        let t = view.load(dev)?;
        Ok(match name {
            // [D, C, p, p] -> [D, p, p, C] -> [D, p*p*C] (patchify's order)
            "patch_embed.proj.weight" => Some(t.permute((0, 2, 3, 1))?.contiguous()?.reshape((enc.dim, enc.patch_dim()))?),
            // Another number of classes: a new head.
            n if n.starts_with("head.") && t.dims() != want => None,
            _ => Some(t),
        })
    })
}

/// The timm state dict of an srmae checkpoint: names -> tensors, and metadata.
pub fn timm_state(path: &Path) -> Result<(Vec<(String, Tensor)>, HashMap<String, String>)> {
    let dev = Device::Cpu;
    let meta = srmae_model::training::checkpoint::load(path, &candle_nn::VarMap::new(), None, &dev)?;
    let cfg = CheckpointConfig::parse(&meta.config, path)?;
    let enc = match cfg.encoder.clone() {
        Some(e) => e,
        None => cfg.recipe()?.encoder()?,
    };
    let all = srmae_model::candle::safetensors::load(path, &dev).with_context(|| format!("reading {}", path.display()))?;
    let has_fc_norm = all.contains_key("model.fc_norm.weight");
    let mut out = Vec::new();
    for (name, t) in &all {
        let Some(n) = name.strip_prefix("model.") else { continue };
        let keep = n.starts_with("blocks.")
            || n == "cls_token"
            || n.starts_with("patch_embed.")
            || n.starts_with("fc_norm.")
            || n.starts_with("head.")
            || (n.starts_with("norm.") && !has_fc_norm);
        if !keep {
            continue;
        }
        let t = if n == "patch_embed.proj.weight" {
            let p = enc.patch;
            t.reshape((enc.dim, p, p, enc.in_chans))?.permute((0, 3, 1, 2))?.contiguous()?
        } else {
            t.clone()
        };
        out.push((n.to_string(), t));
    }
    out.push(("pos_embed".into(), srmae_model::layers::pos_embed::sincos_2d_tensor(enc.dim, enc.grid(), true, &dev)?));
    out.sort_by(|a, b| a.0.cmp(&b.0));
    let global_pool = if has_fc_norm { "avg" } else { "token" };
    let info = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("timm_model".to_string(), timm_name(&enc).unwrap_or_else(|| "custom".into())),
        ("img_size".to_string(), enc.img_size.to_string()),
        ("patch_size".to_string(), enc.patch.to_string()),
        ("in_chans".to_string(), enc.in_chans.to_string()),
        ("embed_dim".to_string(), enc.dim.to_string()),
        ("depth".to_string(), enc.depth.to_string()),
        ("num_heads".to_string(), enc.heads.to_string()),
        ("global_pool".to_string(), global_pool.to_string()),
        ("num_classes".to_string(), cfg.classes.unwrap_or(0).to_string()),
        ("source_task".to_string(), cfg.task.clone()),
    ]);
    Ok((out, info))
}
