//! Reconstruction sheets: per sample one PNG with four panels — the
//! original | what the model saw (visible patches, clues upsampled
//! (nearest), hidden patches grey) | the reconstruction | the reconstruction
//! with the visible patches pasted in (as MAE's visualisation).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use srmae_datasets::PackedDataset;
use srmae_model::candle::Tensor;
use srmae_model::layers::patchify::unpatchify;
use srmae_pipeline::transforms::mask_value;
use srmae_pipeline::{Batch, Loader, LoaderConfig, Shuffle};

use crate::device_stage::Normalizer;
use crate::methods::Method;
use crate::recipe::Recipe;

/// Writes `count` sheets (the first `count` samples of `ds`, masks from
/// `seed`) into `dir`. Returns how many were written.
#[allow(clippy::too_many_arguments)]
pub fn write<M: Method>(model: &M, recipe: &Recipe, ds: &Arc<PackedDataset>, norm: &Normalizer, count: usize, seed: u64, dir: &Path) -> Result<usize> {
    let enc = model.encoder().clone();
    let cfg = masked_eval_loader(recipe, seed, count.max(1))?;
    let Some(batch) = Loader::new(ds.clone(), cfg)?.next() else { return Ok(0) };
    let batch = batch?;
    let pred = model.reconstruct(&model.upload(&batch, norm)?)?;
    let recon = to_u8(&unpatchify(&pred, enc.patch, enc.in_chans)?, &recipe.data.mean, &recipe.data.std)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for i in 0..batch.len {
        let sheet = sheet(&batch, i, &recon);
        let path = dir.join(format!("sample-{:06}.png", batch.sample_ids()[i]));
        save(&path, &sheet, batch.channels)?;
    }
    Ok(batch.len)
}

/// Evaluation images in order with the recipe's pretraining mask (seeded):
/// what reconstructions and the SR quality measure run on.
pub fn masked_eval_loader(recipe: &Recipe, seed: u64, batch: usize) -> Result<LoaderConfig> {
    let enc = recipe.encoder()?;
    Ok(LoaderConfig {
        threads: recipe.data.threads,
        seed,
        channels: recipe.data.channels,
        shuffle: Shuffle::Sequential,
        drop_last: false,
        augment: recipe.data.eval_augment,
        patch: recipe.mask()?,
        low_res: recipe.data.low_res,
        ..LoaderConfig::pretrain(recipe.data.size, enc.patch, batch)
    })
}

/// Normalised `[B, C, S, S]` -> u8 values.
pub fn to_u8(t: &Tensor, mean: &[f32], std: &[f32]) -> Result<Vec<u8>> {
    let (_, c, s, _) = t.dims4()?;
    let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
    Ok(v.iter()
        .enumerate()
        .map(|(k, &x)| {
            let ch = (k / (s * s)) % c;
            ((x * std[ch] + mean[ch]) * 255.0).round().clamp(0.0, 255.0) as u8
        })
        .collect())
}

/// One sample's four panels side by side, CHW planes of `[C, S, 4S + 3*gap]`.
struct Sheet {
    w: usize,
    h: usize,
    planes: Vec<Vec<u8>>,
}

const GAP: usize = 2;

fn sheet(batch: &Batch, i: usize, recon: &[u8]) -> Sheet {
    let (c, s) = (batch.channels, batch.size);
    let lay = batch.layout;
    let (p, g, r) = (lay.patch, lay.grid_w, lay.clue_side);
    let l = lay.num_patches();
    let img = &batch.images()[i * c * s * s..(i + 1) * c * s * s];
    let rec = &recon[i * c * s * s..(i + 1) * c * s * s];
    let mask = &batch.mask()[i * l..(i + 1) * l];
    let clue_ids = &batch.clue_ids()[i * lay.n_clue..(i + 1) * lay.n_clue];
    let clue_px = &batch.clue_pixels()[i * lay.clue_pixels()..(i + 1) * lay.clue_pixels()];
    let w = 4 * s + 3 * GAP;
    let mut planes = vec![vec![255u8; w * s]; c];
    for ch in 0..c {
        for y in 0..s {
            for x in 0..s {
                let patch = (y / p) * g + x / p;
                let orig = img[ch * s * s + y * s + x];
                let pr = rec[ch * s * s + y * s + x];
                let seen = match mask[patch] {
                    mask_value::VISIBLE => orig,
                    mask_value::CLUE => {
                        let k = clue_ids.iter().position(|&id| id as usize == patch).unwrap_or(0);
                        let (cy, cx) = ((y % p) * r / p, (x % p) * r / p);
                        clue_px[((k * c + ch) * r + cy) * r + cx]
                    }
                    _ => 128,
                };
                let pasted = if mask[patch] == mask_value::VISIBLE { orig } else { pr };
                let row = &mut planes[ch][y * w..(y + 1) * w];
                for (panel, v) in [orig, seen, pr, pasted].into_iter().enumerate() {
                    row[panel * (s + GAP) + x] = v;
                }
            }
        }
    }
    Sheet { w, h: s, planes }
}

/// Saves a sheet, enlarged (nearest) so that small images stay visible.
fn save(path: &Path, sh: &Sheet, c: usize) -> Result<()> {
    let k = (112 / sh.h).max(1);
    let (w, h) = (sh.w * k, sh.h * k);
    let mut out = Vec::with_capacity(w * h * c);
    for y in 0..h {
        for x in 0..w {
            for plane in &sh.planes {
                out.push(plane[(y / k) * sh.w + x / k]);
            }
        }
    }
    let ct = if c == 1 { image::ExtendedColorType::L8 } else { image::ExtendedColorType::Rgb8 };
    image::save_buffer(path, &out, w as u32, h as u32, ct).with_context(|| format!("writing {}", path.display()))
}
