//! How well the SR head restores clue patches: PSNR (u8 pixel space) over
//! the pixels of clue patches, for the model's reconstruction and for two
//! model-free baselines built from the same information, the image
//! area-downsampled by the clue factor and upsampled again with bicubic
//! (Catmull-Rom) or nearest (the SR head's global residual).

use std::sync::Arc;

use anyhow::{bail, Result};
use image::{imageops, GrayImage};
use srmae_datasets::PackedDataset;
use srmae_model::layers::patchify::unpatchify;
use srmae_pipeline::transforms::{mask_value, srmae::area_clue};
use srmae_pipeline::Loader;

use crate::device_stage::Normalizer;
use crate::methods::Method;
use crate::recipe::Recipe;

/// PSNR (dB) over clue-patch pixels.
#[derive(Debug, serde::Serialize)]
pub struct SrQuality {
    pub images: usize,
    pub clue_pixels: u64,
    pub psnr_model: f64,
    pub psnr_bicubic: f64,
    pub psnr_nearest: f64,
}

fn psnr(se: f64, n: u64) -> f64 {
    let mse = se / n.max(1) as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

/// Measures on the first `count` images of `ds` (masks from `seed`).
pub fn measure<M: Method>(model: &M, recipe: &Recipe, ds: &Arc<PackedDataset>, norm: &Normalizer, count: usize, seed: u64) -> Result<SrQuality> {
    let enc = model.encoder().clone();
    let cfg = crate::reconstruct::masked_eval_loader(recipe, seed, 100)?;
    let (mut se_m, mut se_b, mut se_n, mut n, mut images) = (0f64, 0f64, 0f64, 0u64, 0usize);
    for batch in Loader::new(ds.clone(), cfg)? {
        let batch = batch?;
        let lay = batch.layout;
        if lay.clue_side == 0 || lay.n_clue == 0 {
            bail!("the mask has no clues (MAE): there is nothing to super-resolve");
        }
        let pred = model.reconstruct(&model.upload(&batch, norm)?)?;
        let recon = crate::reconstruct::to_u8(&unpatchify(&pred, enc.patch, enc.in_chans)?, &recipe.data.mean, &recipe.data.std)?;
        let (c, s, p) = (batch.channels, batch.size, lay.patch);
        let f = p / lay.clue_side;
        let (small, l) = (s / f, lay.num_patches());
        for i in 0..batch.len {
            let img = &batch.images()[i * c * s * s..(i + 1) * c * s * s];
            let rec = &recon[i * c * s * s..(i + 1) * c * s * s];
            let mask = &batch.mask()[i * l..(i + 1) * l];
            // The whole image at clue resolution, [C, s/f, s/f].
            let mut low = vec![0u8; c * small * small];
            let r = lay.clue_side;
            let mut clue = vec![0u8; c * r * r];
            for id in 0..l {
                area_clue(img, s, s, p, f, id, &mut clue);
                let (gy, gx) = (id / lay.grid_w * r, id % lay.grid_w * r);
                for ch in 0..c {
                    for y in 0..r {
                        for xx in 0..r {
                            low[ch * small * small + (gy + y) * small + gx + xx] = clue[(ch * r + y) * r + xx];
                        }
                    }
                }
            }
            for ch in 0..c {
                let plane = GrayImage::from_raw(small as u32, small as u32, low[ch * small * small..(ch + 1) * small * small].to_vec()).expect("plane size");
                let bic = imageops::resize(&plane, s as u32, s as u32, imageops::FilterType::CatmullRom);
                let near = imageops::resize(&plane, s as u32, s as u32, imageops::FilterType::Nearest);
                for y in 0..s {
                    for xx in 0..s {
                        if mask[(y / p) * lay.grid_w + xx / p] != mask_value::CLUE {
                            continue;
                        }
                        let o = img[ch * s * s + y * s + xx] as f64;
                        let d = |v: u8| (v as f64 - o) * (v as f64 - o);
                        se_m += d(rec[ch * s * s + y * s + xx]);
                        se_b += d(bic.get_pixel(xx as u32, y as u32)[0]);
                        se_n += d(near.get_pixel(xx as u32, y as u32)[0]);
                        n += 1;
                    }
                }
            }
            images += 1;
            if images == count {
                break;
            }
        }
        if images == count {
            break;
        }
    }
    Ok(SrQuality { images, clue_pixels: n, psnr_model: psnr(se_m, n), psnr_bicubic: psnr(se_b, n), psnr_nearest: psnr(se_n, n) })
}
