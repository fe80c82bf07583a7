//! `srmae export`: the encoder (and classifier head, if any) as a
//! safetensors file with timm's `VisionTransformer` names and layouts, so
//! that `timm.create_model('vit_base_patch16_224', pretrained=False)` loads
//! it with `load_state_dict` (`tools/reference/load_timm.py` shows how).
//!
//! Layout changes: the patch embedding is a linear layer over MAE's
//! patchify order (row, column, channel) here and a conv in timm:
//! `[D, p*p*C]` -> `[D, p, p, C]` -> `[D, C, p, p]`. The frozen sin-cos
//! position embedding (a buffer here) becomes timm's `pos_embed` parameter.
//! Decoder, mask token, clue embedding and SR head are left out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use srmae_model::candle::{Device, Tensor};
use srmae_model::layers::vit::VitConfig;

use srmae_train::run_dir::CheckpointConfig;

#[derive(Args)]
#[command(after_help = "\
Examples:
  srmae export --checkpoint runs/fm-srmae/checkpoint.safetensors --out fm-srmae-encoder.safetensors
  srmae export --checkpoint runs/in1k-ft/checkpoint.safetensors --out vit_base_srmae.safetensors
  python3 tools/reference/load_timm.py vit_base_srmae.safetensors   # check with timm")]
pub struct ExportArgs {
    /// Any srmae checkpoint (pretrain, finetune, linprobe).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
}

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

/// The timm state dict of a checkpoint: names -> tensors, and metadata.
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
        ("format".to_string(), "timm-vit".to_string()),
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

pub fn run(a: ExportArgs) -> Result<()> {
    let (tensors, info) = timm_state(&a.checkpoint)?;
    let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(info.clone())).context("serialising")?;
    let tmp = a.out.with_extension("safetensors.tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &a.out).with_context(|| format!("writing {}", a.out.display()))?;
    println!(
        "{} tensors -> {} (timm {}, global_pool {}, num_classes {})",
        tensors.len(),
        a.out.display(),
        info["timm_model"],
        info["global_pool"],
        info["num_classes"]
    );
    Ok(())
}
