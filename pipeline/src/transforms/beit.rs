//! BEiT's blockwise `MaskingGenerator`: repeatedly masks random rectangles
//! (area uniform in [min_num_patches, remaining], log-uniform aspect in
//! [min_aspect, 1/min_aspect], 10 tries each) until `num_masking_patches`
//! are masked or no rectangle adds any.

use super::{mask_value, PatchLayout, PatchOut, PatchTransform};
use crate::rng::SampleRng;

pub struct BeitBlockwise {
    layout: PatchLayout,
    num_masking: usize,
    min_num: usize,
    log_aspect: (f64, f64),
}

impl BeitBlockwise {
    pub fn new(grid: usize, patch: usize, channels: usize, num_masking: usize, min_num: usize, min_aspect: f64) -> Self {
        BeitBlockwise {
            layout: PatchLayout {
                patch,
                grid_h: grid,
                grid_w: grid,
                channels,
                ..Default::default()
            },
            num_masking,
            min_num,
            log_aspect: (min_aspect.ln(), (1.0 / min_aspect).ln()),
        }
    }

    /// One `_mask` call: returns how many patches it newly masked.
    fn mask_once(&self, mask: &mut [u8], max_mask: usize, rng: &mut SampleRng) -> usize {
        let (gh, gw) = (self.layout.grid_h, self.layout.grid_w);
        let mut delta = 0;
        for _ in 0..10 {
            let target = rng.uniform_in(self.min_num as f64, max_mask as f64);
            let aspect = rng.uniform_in(self.log_aspect.0, self.log_aspect.1).exp();
            let h = (target * aspect).sqrt().round_ties_even() as usize;
            let w = (target / aspect).sqrt().round_ties_even() as usize;
            if w < gw && h < gh {
                let top = rng.int_in(0, (gh - h) as i64) as usize;
                let left = rng.int_in(0, (gw - w) as i64) as usize;
                let masked: usize =
                    (top..top + h).map(|y| (left..left + w).filter(|&x| mask[y * gw + x] != mask_value::VISIBLE).count()).sum();
                let fresh = h * w - masked;
                if 0 < fresh && fresh <= max_mask {
                    for y in top..top + h {
                        for x in left..left + w {
                            if mask[y * gw + x] == mask_value::VISIBLE {
                                mask[y * gw + x] = mask_value::HIDDEN;
                                delta += 1;
                            }
                        }
                    }
                }
                if delta > 0 {
                    break;
                }
            }
        }
        delta
    }
}

impl PatchTransform for BeitBlockwise {
    fn name(&self) -> &'static str {
        "beit_blockwise"
    }
    fn layout(&self) -> PatchLayout {
        self.layout
    }
    fn apply(&self, _image: &[u8], rng: &mut SampleRng, out: PatchOut<'_>) {
        out.mask.fill(mask_value::VISIBLE);
        let mut count = 0;
        while count < self.num_masking {
            let delta = self.mask_once(out.mask, self.num_masking - count, rng);
            if delta == 0 {
                break;
            }
            count += delta;
        }
    }
}
