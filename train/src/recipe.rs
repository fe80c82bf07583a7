//! Recipes: TOML files (shipped presets in `recipes/`, or any path) that say
//! everything a run does, with `--set section.key=value` overrides. The
//! resolved recipe is written to the run directory (`recipe.toml`) and into
//! every checkpoint, so a checkpoint alone rebuilds its model.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use srmae_model::candle::DType;
use srmae_model::layers::classifier::Pool;
use srmae_model::methods::mae::MaeConfig;
use srmae_model::layers::sr_head::HeadConfig;
use srmae_model::methods::srmae::{ClueEmbed, CluePlacement};
use srmae_model::layers::vit::VitConfig;
use srmae_pipeline::{Augment, CorruptPolicy, PatchConfig, Shuffle};

/// The presets shipped with srmae (`--recipe NAME`).
pub const PRESETS: [(&str, &str); 11] = [
    ("fmnist-pretrain", include_str!("../../recipes/fmnist-pretrain.toml")),
    ("fmnist-simmim-pretrain", include_str!("../../recipes/fmnist-simmim-pretrain.toml")),
    ("fmnist-finetune", include_str!("../../recipes/fmnist-finetune.toml")),
    ("fmnist-linprobe", include_str!("../../recipes/fmnist-linprobe.toml")),
    ("photos32-pretrain", include_str!("../../recipes/photos32-pretrain.toml")),
    ("photos32-finetune", include_str!("../../recipes/photos32-finetune.toml")),
    ("photos32-linprobe", include_str!("../../recipes/photos32-linprobe.toml")),
    ("imagenet-vitb16-pretrain", include_str!("../../recipes/imagenet-vitb16-pretrain.toml")),
    ("imagenet-vitb16-simmim-pretrain", include_str!("../../recipes/imagenet-vitb16-simmim-pretrain.toml")),
    ("imagenet-vitb16-finetune", include_str!("../../recipes/imagenet-vitb16-finetune.toml")),
    ("imagenet-vitb16-linprobe", include_str!("../../recipes/imagenet-vitb16-linprobe.toml")),
];

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub data: DataRecipe,
    pub model: ModelRecipe,
    pub optim: OptimRecipe,
    #[serde(default)]
    pub run: RunRecipe,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataRecipe {
    /// Packed training set (`srmae pack` output).
    pub train: PathBuf,
    /// Packed evaluation set (fine-tuning and linear probing report on it).
    #[serde(default)]
    pub val: Option<PathBuf>,
    /// Model input side.
    pub size: u32,
    /// 1 (grey) or 3 (RGB).
    pub channels: u8,
    /// Per-channel normalisation (on the device).
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Training augmentation (the loader's `Augment`).
    pub augment: Augment,
    /// Evaluation transform.
    pub eval_augment: Augment,
    /// Loader threads (0 = all cores, or this process's share of them in a
    /// data-parallel job).
    #[serde(default)]
    pub threads: usize,
    /// Training sample order: `{ kind = "full" }` (a permutation of the
    /// whole dataset per epoch, the default), `{ kind = "block", records = N }`
    /// (blocks of N consecutive records visited in random order, records
    /// shuffled within each block: reads stay within a block at a time, for
    /// data larger than the page cache), or
    /// `{ kind = "sequential" }`.
    #[serde(default = "default_shuffle")]
    pub shuffle: Shuffle,
    /// Train (and evaluate) on images degraded to this side and upsampled
    /// back: the very-low-resolution setting.
    #[serde(default)]
    pub low_res: Option<u32>,
    /// A record that fails its checks (CRC, decoding, a shard that shrank
    /// under the run): "skip" counts it and uses a substitute; "fail" stops
    /// training with a checkpoint and the reason.
    #[serde(default = "default_on_corrupt")]
    pub on_corrupt: CorruptPolicy,
    /// Fine-tuning: RandAugment as timm's config string (MAE's `--aa`,
    /// e.g. "rand-m9-mstd0.5-inc1"; absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aa: Option<String>,
    /// Fine-tuning: random erasing probability (MAE's `--reprob`; timm's
    /// pixel mode, count 1).
    #[serde(default)]
    pub reprob: f64,
    /// Fine-tuning: mixup and cutmix Beta alphas (MAE's `--mixup`,
    /// `--cutmix`; 0 = off), the probability a batch is mixed and of cutmix
    /// when both are on (`--mixup_prob`, `--mixup_switch_prob`). With either
    /// on, `optim.label_smoothing` is folded into the soft targets.
    #[serde(default)]
    pub mixup: f64,
    #[serde(default)]
    pub cutmix: f64,
    #[serde(default = "one")]
    pub mixup_prob: f64,
    #[serde(default = "half")]
    pub mixup_switch_prob: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRecipe {
    /// The encoder (absent in fine-tuning recipes: it then comes from the
    /// pretrained checkpoint).
    #[serde(default)]
    pub encoder: Option<VitConfig>,
    /// Pretraining method: one of `methods::NAMES` (srmae, mae, simmim).
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default)]
    pub decoder_dim: usize,
    #[serde(default)]
    pub decoder_depth: usize,
    #[serde(default)]
    pub decoder_heads: usize,
    #[serde(default)]
    pub norm_pix_loss: bool,
    /// SRMAE: where clue tokens enter.
    #[serde(default = "default_placement")]
    pub placement: CluePlacement,
    /// SRMAE: how clue tokens are embedded: `{ kind = "own" }` (default) or
    /// `{ kind = "patch_embed", upsample = "bicubic" | "nearest", type_embed = true | false }`.
    #[serde(default)]
    pub clue_embed: ClueEmbed,
    /// SRMAE: prediction head.
    #[serde(default = "default_head")]
    pub head: HeadConfig,
    #[serde(default = "one")]
    pub w_hidden: f64,
    #[serde(default = "one")]
    pub w_clue: f64,
    /// Pretraining: the loader's patch transform.
    #[serde(default)]
    pub mask: Option<PatchConfig>,
    /// Fine-tuning: pooling and stochastic depth.
    #[serde(default = "default_pool")]
    pub pool: Pool,
    #[serde(default)]
    pub drop_path: f64,
}

fn default_shuffle() -> Shuffle {
    Shuffle::Full
}
fn default_on_corrupt() -> CorruptPolicy {
    CorruptPolicy::Skip
}
fn default_method() -> String {
    <crate::methods::SrmaeMethod as crate::methods::Method>::NAME.to_string()
}
fn default_placement() -> CluePlacement {
    CluePlacement::Encoder
}
fn default_head() -> HeadConfig {
    HeadConfig::Sr { features: 32, res_blocks: 2 }
}
fn default_pool() -> Pool {
    Pool::Gap
}
fn one() -> f64 {
    1.0
}
fn half() -> f64 {
    0.5
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimRecipe {
    pub epochs: u64,
    pub warmup_epochs: f64,
    /// Per-step micro-batch; the effective batch is `batch_size * accum_iter`.
    pub batch_size: usize,
    #[serde(default = "one_usize")]
    pub accum_iter: usize,
    /// Base lr; the absolute lr is `blr * effective batch / 256` (MAE).
    pub blr: f64,
    #[serde(default)]
    pub min_lr: f64,
    pub weight_decay: f64,
    pub betas: (f64, f64),
    #[serde(default)]
    pub clip_grad: Option<f64>,
    /// Layer-wise lr decay (fine-tuning).
    #[serde(default)]
    pub layer_decay: Option<f64>,
    /// Label smoothing (`smoothing` is MAE's name for it, accepted too).
    #[serde(default, alias = "smoothing")]
    pub label_smoothing: f64,
}

fn one_usize() -> usize {
    1
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecipe {
    pub seed: u64,
    /// Write `checkpoint.safetensors` every this many epochs (and at the end).
    pub save_every: u64,
    /// Evaluate on `data.val` every this many epochs (fine-tuning).
    pub eval_every: u64,
    /// Also keep `checkpoint-{epoch}.safetensors` of the last this many saves
    /// (0: only the latest `checkpoint.safetensors`). Fine-tuning with a
    /// validation set also keeps `best.safetensors` (highest top-1).
    #[serde(default)]
    pub keep_checkpoints: usize,
    /// A `metrics.jsonl` line every this many optimiser steps.
    pub log_every: u64,
    /// Matmul precision of the training step: "f32", or "bf16" / "f16"
    /// autocast (F32 master weights, moments, norms, softmax and losses;
    /// `srmae_model::training::autocast`). Meant for GPUs; on the CPU it is slower.
    #[serde(default)]
    pub precision: Precision,
}

/// `run.precision`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
}

impl Precision {
    /// The autocast dtype (None for F32).
    pub fn dtype(self) -> Option<DType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(DType::BF16),
            Precision::F16 => Some(DType::F16),
        }
    }
}

impl Default for RunRecipe {
    fn default() -> RunRecipe {
        RunRecipe { seed: 0, save_every: 1, eval_every: 1, keep_checkpoints: 0, log_every: 20, precision: Precision::F32 }
    }
}

impl Recipe {
    /// Reads a preset name or a TOML path, then applies `key=value` overrides.
    pub fn load(name_or_path: &str, overrides: &[String]) -> Result<Recipe> {
        let text = match PRESETS.iter().find(|(n, _)| *n == name_or_path) {
            Some((_, t)) => t.to_string(),
            None => std::fs::read_to_string(name_or_path).with_context(|| {
                let names: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
                format!("recipe {name_or_path:?} is neither a preset ({}) nor a readable file", names.join(", "))
            })?,
        };
        let mut value: toml::Table = toml::from_str(&text).with_context(|| format!("recipe {name_or_path}: not valid TOML"))?;
        for o in overrides {
            apply_override(&mut value, o).with_context(|| format!("--set {o}"))?;
        }
        let mut recipe: Recipe = toml::Value::Table(value).try_into().with_context(|| format!("recipe {name_or_path}"))?;
        recipe.fill_sizes();
        recipe.check()?;
        Ok(recipe)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("recipes serialise")
    }

    pub fn from_toml(text: &str) -> Result<Recipe> {
        toml::from_str(text).context("recipe stored in the checkpoint")
    }

    /// The image size and channels are stated once, in `[data]`: the
    /// augmentations and the encoder take them where the recipe leaves them
    /// out (the resolved recipe written to a run writes them everywhere).
    fn fill_sizes(&mut self) {
        let d = &mut self.data;
        d.augment = d.augment.with_size(d.size);
        d.eval_augment = d.eval_augment.with_size(d.size);
        if let Some(e) = &mut self.model.encoder {
            if e.img_size == 0 {
                e.img_size = d.size as usize;
            }
            if e.in_chans == 0 {
                e.in_chans = d.channels as usize;
            }
        }
    }

    fn check(&self) -> Result<()> {
        let d = &self.data;
        if !matches!(d.channels, 1 | 3) {
            bail!("data.channels must be 1 or 3, not {}", d.channels);
        }
        if d.mean.len() != d.channels as usize || d.std.len() != d.channels as usize {
            bail!("data.mean and data.std need {} values each", d.channels);
        }
        if let Some(aa) = &d.aa {
            srmae_pipeline::RandAugment::parse(aa, &d.mean).map_err(|e| anyhow::anyhow!("data.aa: {e}"))?;
        }
        if self.optim.batch_size == 0 || self.optim.accum_iter == 0 {
            bail!("optim.batch_size and optim.accum_iter must be at least 1");
        }
        if !crate::methods::NAMES.contains(&self.model.method.as_str()) {
            bail!("model.method {:?} is not a method here (known: {})", self.model.method, crate::methods::NAMES.join(", "));
        }
        if let Some(e) = &self.model.encoder {
            if e.img_size != d.size as usize {
                bail!("model.encoder.img_size {} differs from data.size {}", e.img_size, d.size);
            }
            if e.in_chans != d.channels as usize {
                bail!("model.encoder.in_chans {} differs from data.channels {}", e.in_chans, d.channels);
            }
        }
        Ok(())
    }

    /// The effective batch and the absolute peak lr.
    pub fn lr(&self) -> f64 {
        srmae_model::training::schedule::CosineSchedule::scaled_lr(self.optim.blr, self.optim.batch_size * self.optim.accum_iter)
    }

    pub fn encoder(&self) -> Result<VitConfig> {
        self.model.encoder.clone().context("the recipe has no [model.encoder]")
    }

    pub fn mae_config(&self) -> Result<MaeConfig> {
        let m = &self.model;
        if m.decoder_dim == 0 || m.decoder_depth == 0 || m.decoder_heads == 0 {
            bail!("pretraining needs model.decoder_dim, decoder_depth and decoder_heads");
        }
        Ok(MaeConfig {
            encoder: self.encoder()?,
            decoder_dim: m.decoder_dim,
            decoder_depth: m.decoder_depth,
            decoder_heads: m.decoder_heads,
            norm_pix_loss: m.norm_pix_loss,
        })
    }

    /// The loader's patch transform of the recipe's method.
    pub fn mask(&self) -> Result<PatchConfig> {
        struct Mask<'a>(&'a Recipe);
        impl crate::methods::WithMethod for Mask<'_> {
            type Output = PatchConfig;
            fn run<M: crate::methods::Method>(self) -> Result<PatchConfig> {
                M::mask(self.0)
            }
        }
        crate::methods::with_method(&self.model.method, Mask(self))
    }

    pub fn val(&self) -> Option<&Path> {
        self.data.val.as_deref()
    }
}

/// `a.b.c=value`: the value is parsed as TOML (`5`, `true`, `"x"`, `[1, 2]`,
/// `{kind = "resize", size = 28}`), or taken as a string when it does not parse.
pub fn apply_override(table: &mut toml::Table, spec: &str) -> Result<()> {
    let (key, raw) = spec.split_once('=').context("expected key=value")?;
    // MAE's flag names for keys we spell otherwise.
    let key = match key.trim() {
        "optim.smoothing" => "optim.label_smoothing",
        k => k,
    };
    let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").context("parsed value")?,
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let parts: Vec<&str> = key.trim().split('.').collect();
    let mut cur = table;
    for p in &parts[..parts.len() - 1] {
        let entry = cur.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry.as_table_mut().with_context(|| format!("{p} is not a table"))?;
    }
    cur.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_overrides_apply() {
        for (name, _) in PRESETS {
            Recipe::load(name, &[]).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
        let r = Recipe::load("fmnist-pretrain", &["optim.epochs=3".into(), "model.method=mae".into(), "data.train=/x".into()]).unwrap();
        assert_eq!(r.optim.epochs, 3);
        assert_eq!(r.model.method, "mae");
        assert_eq!(r.data.train, PathBuf::from("/x"));
        let r = Recipe::load("fmnist-finetune", &["optim.smoothing=0.2".into()]).unwrap();
        assert_eq!(r.optim.label_smoothing, 0.2, "MAE's name for label smoothing");
        let err = Recipe::load("fmnist-pretrain", &["optim.epoch=3".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("unknown field"), "{err:#}");
        let back = Recipe::from_toml(&r.to_toml()).unwrap();
        assert_eq!(back.to_toml(), r.to_toml());
    }

    #[test]
    fn the_image_size_is_stated_once() {
        let r = Recipe::load("fmnist-pretrain", &["data.size=14".into(), "model.mask.patch=2".into(), "model.encoder.patch=2".into()]).unwrap();
        assert_eq!((r.data.augment.size(), r.data.eval_augment.size()), (14, 14));
        let e = r.encoder().unwrap();
        assert_eq!((e.img_size, e.in_chans), (14, 1));
        // The resolved recipe states it everywhere, and reads back the same.
        let text = r.to_toml();
        assert!(text.contains("img_size = 14"), "{text}");
        assert_eq!(Recipe::from_toml(&text).unwrap().to_toml(), text);
        // A RandAugment string timm would not read is refused at load time.
        let err = Recipe::load("fmnist-finetune", &["data.aa=\"rand-m9\"".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("data.aa") && format!("{err:#}").contains("inc1"), "{err:#}");
        // A size given twice must agree.
        let err = Recipe::load("fmnist-pretrain", &["model.encoder.img_size=32".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("differs from data.size"), "{err:#}");
    }

    #[test]
    fn clue_embed_is_set_from_the_command_line() {
        use srmae_model::layers::clue_upsample::Upsample;
        let r = Recipe::load("fmnist-pretrain", &[]).unwrap();
        assert_eq!(crate::methods::SrmaeMethod::config(&r).unwrap().clue_embed, ClueEmbed::Own);
        let r = Recipe::load("fmnist-pretrain", &[r#"model.clue_embed={kind="patch_embed",upsample="nearest",type_embed=false}"#.into()]).unwrap();
        assert_eq!(crate::methods::SrmaeMethod::config(&r).unwrap().clue_embed, ClueEmbed::PatchEmbed { upsample: Upsample::Nearest, type_embed: false });
        let back = Recipe::from_toml(&r.to_toml()).unwrap();
        assert_eq!(back.model.clue_embed, r.model.clue_embed);
    }
}
