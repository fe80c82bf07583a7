//! SRMAE's clue selection. With MAE's noise order (`ids_shuffle`), the first
//! `int(L * (1 - select_ratio))` patches stay visible at full resolution; of
//! the selected rest, the first `round(n_selected * clue_fraction)` become
//! low-resolution clues (each `patch × patch` block downsampled by `factor`)
//! and the others are hidden. With `clue_fraction = 0` the outputs equal
//! `MaeRandom` with `mask_ratio = select_ratio` draw for draw.

use fast_image_resize::{images::Image, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use serde::{Deserialize, Serialize};

use std::cell::RefCell;

use super::area::{area_downsample, gather_clue};
use super::mae::with_shuffle;
use super::{mask_value, PatchLayout, PatchOut, PatchTransform};
use crate::rng::SampleRng;

/// How a clue is downsampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClueFilter {
    /// Mean of each `factor × factor` block, rounded to nearest (area / box filter).
    Area,
    /// Antialiased bicubic (Catmull-Rom), as PIL's bicubic resize.
    Bicubic,
}

thread_local! {
    /// Per-thread row sums and downsampled planes for area clues.
    static AREA_SCRATCH: RefCell<(Vec<u16>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

pub struct SrmaeClues {
    layout: PatchLayout,
    factor: usize,
    filter: ClueFilter,
}

impl SrmaeClues {
    pub fn new(
        grid: usize,
        patch: usize,
        channels: usize,
        select_ratio: f64,
        clue_fraction: f64,
        factor: usize,
        filter: ClueFilter,
    ) -> SrmaeClues {
        let l = grid * grid;
        let keep = (l as f64 * (1.0 - select_ratio)) as usize;
        let selected = l - keep;
        let n_clue = ((selected as f64 * clue_fraction).round() as usize).min(selected);
        SrmaeClues {
            layout: PatchLayout {
                patch,
                grid_h: grid,
                grid_w: grid,
                n_visible: keep,
                n_clue,
                clue_side: patch / factor,
                n_hidden: selected - n_clue,
                restore: true,
                channels,
            },
            factor,
            filter,
        }
    }
}

/// Area-downsamples patch `id` of `image` (`[C, H, W]`) into `out` (`[C, r, r]`)
/// (one patch at a time; the transform itself uses `area::area_downsample`).
pub fn area_clue(image: &[u8], width: usize, height: usize, patch: usize, factor: usize, id: usize, out: &mut [u8]) {
    let grid_w = width / patch;
    let (py, px) = (id / grid_w * patch, id % grid_w * patch);
    let r = patch / factor;
    let plane = width * height;
    let n = (factor * factor) as u32;
    for (c, out_c) in out.chunks_exact_mut(r * r).enumerate() {
        let img = &image[c * plane..(c + 1) * plane];
        for oy in 0..r {
            for ox in 0..r {
                let mut sum = 0u32;
                for dy in 0..factor {
                    let row = (py + oy * factor + dy) * width + px + ox * factor;
                    sum += img[row..row + factor].iter().map(|&v| v as u32).sum::<u32>();
                }
                out_c[oy * r + ox] = ((sum + n / 2) / n) as u8;
            }
        }
    }
}

fn bicubic_clue(image: &[u8], width: usize, height: usize, patch: usize, factor: usize, id: usize, out: &mut [u8]) {
    let grid_w = width / patch;
    let (py, px) = (id / grid_w * patch, id % grid_w * patch);
    let r = patch / factor;
    let plane = width * height;
    let mut resizer = Resizer::new();
    let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom));
    for (c, out_c) in out.chunks_exact_mut(r * r).enumerate() {
        let mut block = Vec::with_capacity(patch * patch);
        for y in 0..patch {
            let row = c * plane + (py + y) * width + px;
            block.extend_from_slice(&image[row..row + patch]);
        }
        let src = Image::from_vec_u8(patch as u32, patch as u32, block, PixelType::U8).expect("patch buffer");
        let mut dst = Image::new(r as u32, r as u32, PixelType::U8);
        resizer.resize(&src, &mut dst, &opts).expect("same pixel type");
        out_c.copy_from_slice(dst.buffer());
    }
}

impl PatchTransform for SrmaeClues {
    fn name(&self) -> &'static str {
        "srmae_clues"
    }
    fn layout(&self) -> PatchLayout {
        self.layout
    }
    fn apply(&self, image: &[u8], rng: &mut SampleRng, out: PatchOut<'_>) {
        let lay = &self.layout;
        let (keep, n_clue) = (lay.n_visible, lay.n_clue);
        with_shuffle(rng, out.restore, |shuffle| {
            out.visible.copy_from_slice(&shuffle[..keep]);
            out.clue_ids.copy_from_slice(&shuffle[keep..keep + n_clue]);
            out.hidden.copy_from_slice(&shuffle[keep + n_clue..]);
        });
        out.mask.fill(mask_value::HIDDEN);
        for &v in out.visible.iter() {
            out.mask[v as usize] = mask_value::VISIBLE;
        }
        let side = lay.grid_w * lay.patch;
        let per_clue = lay.channels * lay.clue_side * lay.clue_side;
        for &id in out.clue_ids.iter() {
            out.mask[id as usize] = mask_value::CLUE;
        }
        let clues = out.clue_ids.iter().zip(out.clue_pixels.chunks_exact_mut(per_clue));
        match self.filter {
            ClueFilter::Area if lay.n_clue > 0 => AREA_SCRATCH.with(|cell| {
                // One pass over the whole image, then copies: much faster than
                // summing each clue's blocks separately (75% of patches are clues).
                let (acc, small) = &mut *cell.borrow_mut();
                area_downsample(image, lay.channels, side, self.factor, acc, small);
                for (&id, dst) in clues {
                    gather_clue(small, lay.channels, side, lay.patch, self.factor, id as usize, dst);
                }
            }),
            ClueFilter::Area => {}
            ClueFilter::Bicubic => {
                for (&id, dst) in clues {
                    bicubic_clue(image, side, side, lay.patch, self.factor, id as usize, dst);
                }
            }
        }
    }
}
