//! `srmae export`: the encoder (and classifier head, if any) as a
//! safetensors file with timm's `VisionTransformer` names and layouts, so
//! that `timm.create_model('vit_base_patch16_224', pretrained=False)` loads
//! it with `load_state_dict` (`tools/reference/load_timm.py` shows how).
//!
//! Layout changes: the patch embedding is a linear layer over MAE's
//! patchify order (row, column, channel) here and a conv in timm:
//! `[D, p*p*C]` -> `[D, p, p, C]` -> `[D, C, p, p]`. The frozen sin-cos
//! position embedding (a buffer here) becomes timm's `pos_embed` parameter.
//! Decoder, mask token, clue embedding and SR head are left out
//! (`srmae_train::timm`, which also reads such files for `--init`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

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

pub fn run(a: ExportArgs) -> Result<()> {
    let (tensors, info) = srmae_train::timm::timm_state(&a.checkpoint)?;
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
