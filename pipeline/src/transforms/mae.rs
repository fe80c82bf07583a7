//! MAE's `random_masking`: per-sample uniform noise, `ids_shuffle =
//! argsort(noise)`, the first `int(L * (1 - mask_ratio))` are kept visible,
//! `ids_restore = argsort(ids_shuffle)`.

use std::cell::RefCell;

use super::{mask_value, PatchLayout, PatchOut, PatchTransform};
use crate::rng::SampleRng;

/// Indices that sort `v` ascending (stable, as torch.argsort on distinct values).
pub fn argsort(v: &[f32], out: &mut [u32]) {
    for (i, o) in out.iter_mut().enumerate() {
        *o = i as u32;
    }
    out.sort_by(|&a, &b| v[a as usize].total_cmp(&v[b as usize]));
}

thread_local! {
    /// Per-thread noise and shuffle buffers: no allocation per sample.
    static SCRATCH: RefCell<(Vec<f32>, Vec<u32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Shared by MAE and SRMAE: draws `restore.len()` noise values, fills
/// `restore` (ids_restore) and calls `f` with `ids_shuffle`.
pub(crate) fn with_shuffle<R>(rng: &mut SampleRng, restore: &mut [u32], f: impl FnOnce(&[u32]) -> R) -> R {
    SCRATCH.with(|cell| {
        let (noise, shuffle) = &mut *cell.borrow_mut();
        let l = restore.len();
        noise.resize(l, 0.0);
        shuffle.resize(l, 0);
        rng.fill_uniform_f32(noise);
        argsort(noise, shuffle);
        for (pos, &id) in shuffle.iter().enumerate() {
            restore[id as usize] = pos as u32;
        }
        f(shuffle)
    })
}

pub struct MaeRandom {
    layout: PatchLayout,
}

impl MaeRandom {
    pub fn new(grid: usize, patch: usize, channels: usize, mask_ratio: f64) -> MaeRandom {
        let l = grid * grid;
        let keep = (l as f64 * (1.0 - mask_ratio)) as usize;
        MaeRandom {
            layout: PatchLayout {
                patch,
                grid_h: grid,
                grid_w: grid,
                n_visible: keep,
                n_hidden: l - keep,
                restore: true,
                channels,
                ..Default::default()
            },
        }
    }
}

impl PatchTransform for MaeRandom {
    fn name(&self) -> &'static str {
        "mae_random"
    }
    fn layout(&self) -> PatchLayout {
        self.layout
    }
    fn apply(&self, _image: &[u8], rng: &mut SampleRng, out: PatchOut<'_>) {
        let keep = self.layout.n_visible;
        with_shuffle(rng, out.restore, |shuffle| {
            out.visible.copy_from_slice(&shuffle[..keep]);
            out.hidden.copy_from_slice(&shuffle[keep..]);
        });
        out.mask.fill(mask_value::HIDDEN);
        for &v in out.visible.iter() {
            out.mask[v as usize] = mask_value::VISIBLE;
        }
    }
}
