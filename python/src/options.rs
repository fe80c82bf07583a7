//! Python options -> `LoaderConfig`: named presets for the augmentation and
//! the patch transform, each overridable key by key with a dict in the
//! config's own (serde) form, so that every field of the Rust config is
//! reachable from Python without a Python name for each.

use pyo3::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use srmae_pipeline::{Augment, PatchConfig, RankPolicy, Shuffle};

use crate::errors::option_err;

/// ImageNet's mean and std (MAE's normalisation), the default fill of
/// RandAugment and random erasing.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Names of the patch transforms (`transform=`).
pub const TRANSFORMS: [&str; 5] = ["srmae", "mae", "simmim", "beit", "none"];

/// Names of the augmentations (`augment=`).
pub const AUGMENTS: [&str; 4] = ["mae_pretrain", "finetune", "eval", "resize"];

/// A preset given by name, or by a dict whose `kind` names the preset and
/// whose other keys override its fields.
pub enum Preset {
    Name(String),
    Dict { kind: String, overrides: serde_json::Map<String, Value> },
}

impl Preset {
    /// Reads `obj` (None, a str or a dict) for the option `what`.
    pub fn extract(what: &str, obj: Option<&Bound<'_, PyAny>>, default: &str) -> PyResult<Preset> {
        let Some(obj) = obj.filter(|o| !o.is_none()) else {
            return Ok(Preset::Name(default.into()));
        };
        if let Ok(s) = obj.extract::<String>() {
            return Ok(Preset::Name(s));
        }
        let value: Value = pythonize::depythonize(obj).map_err(|e| option_err(what, e))?;
        let Value::Object(mut map) = value else {
            return Err(option_err(what, "expected a name or a dict with a \"kind\" key"));
        };
        let kind = match map.remove("kind") {
            Some(Value::String(k)) => k,
            _ => return Err(option_err(what, "a dict needs a \"kind\" key naming the preset it changes")),
        };
        Ok(Preset::Dict { kind, overrides: map })
    }

    fn kind(&self) -> &str {
        match self {
            Preset::Name(n) => n,
            Preset::Dict { kind, .. } => kind,
        }
    }

    /// `base` with this preset's overrides applied (serde round trip, so a
    /// misspelt or mistyped key is an error naming it).
    fn apply<T: Serialize + DeserializeOwned>(&self, what: &str, base: T) -> PyResult<T> {
        let Preset::Dict { overrides, .. } = self else {
            return Ok(base);
        };
        let mut v = serde_json::to_value(&base).map_err(|e| option_err(what, e))?;
        let fields = v.as_object_mut().ok_or_else(|| option_err(what, "this preset has no fields to override"))?;
        for (k, val) in overrides {
            if !fields.contains_key(k) {
                let known: Vec<&str> = fields.keys().filter(|f| *f != "kind").map(String::as_str).collect();
                return Err(option_err(what, format!("{k:?} is not a field of {:?} (fields: {})", self.kind(), known.join(", "))));
            }
            fields.insert(k.clone(), val.clone());
        }
        serde_json::from_value(v).map_err(|e| option_err(what, e))
    }
}

/// The patch transform `preset` at model patch `patch` for `size`-pixel images.
pub fn patch_config(preset: &Preset, patch: usize, size: u32) -> PyResult<PatchConfig> {
    let grid = (size as usize).checked_div(patch).unwrap_or(0);
    let base = match preset.kind() {
        "srmae" | "srmae_clues" => PatchConfig::srmae(patch),
        "mae" | "mae_random" => PatchConfig::MaeRandom { patch, mask_ratio: 0.75 },
        "simmim" | "simmim_blocks" => PatchConfig::SimMimBlocks { mask_patch: 32.max(patch), model_patch: patch, mask_ratio: 0.6 },
        "beit" | "beit_blockwise" => PatchConfig::BeitBlockwise {
            patch,
            // BEiT's 75 of 196 patches (40 %), at any grid.
            num_masking_patches: grid * grid * 2 / 5,
            min_num_patches: 16,
            min_aspect: 0.3,
        },
        "none" => PatchConfig::None,
        other => return Err(option_err("transform", format!("{other:?} is not one of {}", TRANSFORMS.join(", ")))),
    };
    preset.apply("transform", base)
}

/// The augmentation `preset` at `size`.
pub fn augment(preset: &Preset, size: u32) -> PyResult<Augment> {
    let base = match preset.kind() {
        "mae_pretrain" | "random_resized_crop" => Augment::mae_pretrain(size),
        // MAE's fine-tuning crop (timm's create_transform for training).
        "finetune" => Augment::RandomResizedCrop { size, scale: (0.08, 1.0), ratio: (0.75, 4.0 / 3.0), hflip: 0.5 },
        "eval" | "center_crop" => Augment::eval(size),
        "resize" => Augment::Resize { size },
        other => return Err(option_err("augment", format!("{other:?} is not one of {}", AUGMENTS.join(", ")))),
    };
    preset.apply("augment", base)
}

/// `shuffle=`: "full", "sequential", or {"kind": "block", "records": N}.
pub fn shuffle(obj: &Bound<'_, PyAny>) -> PyResult<Shuffle> {
    if let Ok(s) = obj.extract::<String>() {
        return match s.as_str() {
            "full" => Ok(Shuffle::Full),
            "sequential" | "none" => Ok(Shuffle::Sequential),
            other => Err(option_err("shuffle", format!("{other:?} is not one of full, sequential (or {{\"kind\": \"block\", \"records\": N}})"))),
        };
    }
    pythonize::depythonize(obj).map_err(|e| option_err("shuffle", e))
}

/// `rank_policy=`: "drop" or "pad".
pub fn rank_policy(s: &str) -> PyResult<RankPolicy> {
    match s {
        "drop" => Ok(RankPolicy::Drop),
        "pad" => Ok(RankPolicy::Pad),
        other => Err(option_err("rank_policy", format!("{other:?} is not one of drop, pad"))),
    }
}
