//! Geometric augmentation, decided before decoding so that the decoder can
//! skip what the crop leaves out.
//!
//! - `Augment::RandomResizedCrop`: MAE's pretraining transform, torchvision's
//!   `RandomResizedCrop(size, scale, ratio)` sampling algorithm exactly (10
//!   tries of area/aspect draws, then the centre-crop fallback), bicubic
//!   resize, then a horizontal flip with probability `hflip`.
//! - `Augment::CenterCrop`: the evaluation transform, resize the shorter side
//!   to `size / crop_pct` then centre crop `size` (MAE: crop_pct 0.875).
//! - `Augment::Resize`: resize the whole image to `size`×`size`.

use serde::{Deserialize, Serialize};

use crate::rng::SampleRng;

/// A crop box in source pixels (fractional for the centre crop).
pub use srmae_datasets::jpeg::CropBox;

/// What to do to one image: crop `crop`, resize to `size`×`size`, maybe flip.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    pub crop: CropBox,
    pub size: u32,
    pub flip: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Augment {
    /// `size` 0 (absent in a recipe): the recipe's `data.size` (`with_size`).
    RandomResizedCrop {
        #[serde(default)]
        size: u32,
        scale: (f64, f64),
        ratio: (f64, f64),
        hflip: f64,
    },
    CenterCrop {
        #[serde(default)]
        size: u32,
        crop_pct: f64,
    },
    Resize {
        #[serde(default)]
        size: u32,
    },
}

impl Augment {
    /// The same transform with `size` where none was given (0).
    pub fn with_size(self, default: u32) -> Augment {
        let pick = |s: u32| if s == 0 { default } else { s };
        match self {
            Augment::RandomResizedCrop { size, scale, ratio, hflip } => Augment::RandomResizedCrop { size: pick(size), scale, ratio, hflip },
            Augment::CenterCrop { size, crop_pct } => Augment::CenterCrop { size: pick(size), crop_pct },
            Augment::Resize { size } => Augment::Resize { size: pick(size) },
        }
    }

    /// MAE's pretraining augmentation at `size`.
    pub fn mae_pretrain(size: u32) -> Augment {
        Augment::RandomResizedCrop {
            size,
            scale: (0.2, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            hflip: 0.5,
        }
    }

    /// MAE's evaluation transform at `size`.
    pub fn eval(size: u32) -> Augment {
        Augment::CenterCrop { size, crop_pct: 0.875 }
    }

    pub fn size(&self) -> u32 {
        match *self {
            Augment::RandomResizedCrop { size, .. } | Augment::CenterCrop { size, .. } | Augment::Resize { size } => size,
        }
    }

    /// The plan for an image of `w`×`h`.
    pub fn plan(&self, w: u32, h: u32, rng: &mut SampleRng) -> Plan {
        match *self {
            Augment::RandomResizedCrop { size, scale, ratio, hflip } => {
                let (left, top, cw, ch) = rrc_params(w, h, scale, ratio, rng);
                Plan {
                    crop: CropBox {
                        left: left as f64,
                        top: top as f64,
                        width: cw as f64,
                        height: ch as f64,
                    },
                    size,
                    flip: rng.bernoulli(hflip),
                }
            }
            Augment::CenterCrop { size, crop_pct } => {
                // Shorter side -> size / crop_pct; the size x size centre of that,
                // mapped back to source pixels.
                let resized_short = (size as f64 / crop_pct).floor();
                let s = resized_short / w.min(h) as f64;
                let side_w = (size as f64 / s).min(w as f64);
                let side_h = (size as f64 / s).min(h as f64);
                Plan {
                    crop: CropBox {
                        left: (w as f64 - side_w) / 2.0,
                        top: (h as f64 - side_h) / 2.0,
                        width: side_w,
                        height: side_h,
                    },
                    size,
                    flip: false,
                }
            }
            Augment::Resize { size } => Plan {
                crop: CropBox {
                    left: 0.0,
                    top: 0.0,
                    width: w as f64,
                    height: h as f64,
                },
                size,
                flip: false,
            },
        }
    }
}

/// torchvision `RandomResizedCrop.get_params`: returns (left, top, width, height).
pub fn rrc_params(w: u32, h: u32, scale: (f64, f64), ratio: (f64, f64), rng: &mut SampleRng) -> (u32, u32, u32, u32) {
    let (wf, hf) = (w as f64, h as f64);
    let area = wf * hf;
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target_area = area * rng.uniform_in(scale.0, scale.1);
        let aspect = rng.uniform_in(log_lo, log_hi).exp();
        // Python's round(): half to even.
        let cw = (target_area * aspect).sqrt().round_ties_even();
        let ch = (target_area / aspect).sqrt().round_ties_even();
        if 0.0 < cw && cw <= wf && 0.0 < ch && ch <= hf {
            let top = rng.int_in(0, (hf - ch) as i64) as u32;
            let left = rng.int_in(0, (wf - cw) as i64) as u32;
            return (left, top, cw as u32, ch as u32);
        }
    }
    // Fallback to a central crop of the allowed aspect range.
    let in_ratio = wf / hf;
    let (cw, ch) = if in_ratio < ratio.0.min(ratio.1) {
        (w, (wf / ratio.0.min(ratio.1)).round_ties_even() as u32)
    } else if in_ratio > ratio.0.max(ratio.1) {
        ((hf * ratio.0.max(ratio.1)).round_ties_even() as u32, h)
    } else {
        (w, h)
    };
    ((w - cw) / 2, (h - ch) / 2, cw, ch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Purpose;

    #[test]
    fn rrc_boxes_stay_inside_and_follow_the_distribution() {
        // torchvision's get_params on a 500x375 image: mean accepted area
        // fraction 0.4950, no fallbacks (300k draws of the transcription in
        // pipeline/reference/rrc_stats.py; `--torchvision` runs the original).
        let (w, h) = (500u32, 375u32);
        let n = 20_000;
        let mut sum = 0.0;
        let mut ratios_ok = 0;
        for i in 0..n {
            let mut rng = SampleRng::new(9, 0, i, Purpose::Augment);
            let (l, t, cw, ch) = rrc_params(w, h, (0.2, 1.0), (0.75, 4.0 / 3.0), &mut rng);
            assert!(l + cw <= w && t + ch <= h && cw > 0 && ch > 0);
            sum += (cw * ch) as f64 / (w * h) as f64;
            let r = cw as f64 / ch as f64;
            if (0.74..=1.34).contains(&r) {
                ratios_ok += 1;
            }
        }
        let mean = sum / n as f64;
        assert!((mean - 0.495).abs() < 0.01, "mean area fraction {mean}");
        assert!(ratios_ok as f64 / n as f64 > 0.99);
    }

    #[test]
    fn fallback_is_a_central_crop() {
        // A 1000x10 strip: no draw fits, so the fallback crops width to 4/3 * h.
        let mut rng = SampleRng::new(0, 0, 0, Purpose::Augment);
        let (l, t, cw, ch) = rrc_params(1000, 10, (0.2, 1.0), (0.75, 4.0 / 3.0), &mut rng);
        assert_eq!((cw, ch), (13, 10));
        assert_eq!((l, t), ((1000 - 13) / 2, 0));
    }

    #[test]
    fn centre_crop_matches_resize_then_crop() {
        let mut rng = SampleRng::new(0, 0, 0, Purpose::Augment);
        let p = Augment::eval(224).plan(500, 375, &mut rng);
        // shorter side 375 -> 256 (floor(224 / 0.875)); 224 of 256 -> 328.1 source px
        let side = 224.0 * 375.0 / 256.0;
        assert!((p.crop.height - side).abs() < 1e-9 && (p.crop.width - side).abs() < 1e-9);
        assert!((p.crop.left - (500.0 - side) / 2.0).abs() < 1e-9);
        assert!(!p.flip);
    }
}
