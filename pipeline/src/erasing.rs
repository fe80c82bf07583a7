//! Random erasing (Zhong et al.; timm `RandomErasing`, as MAE's fine-tuning
//! uses it: `reprob` 0.25, mode "pixel", count 1): with probability `prob`,
//! one rectangle of the image is replaced by per-pixel, per-channel normal
//! noise in *normalised* space.
//!
//! The box, as timm draws it: up to 10 attempts of an area fraction uniform
//! in [`min_area`, `max_area`] of the image and a log-uniform aspect ratio in
//! [`min_aspect`, 1 / `min_aspect`]; height `round(sqrt(area * aspect))`,
//! width `round(sqrt(area / aspect))`; the first box that fits (`w < W` and
//! `h < H`) is placed uniformly (`top` in [0, H - h], `left` in [0, W - w]).
//!
//! Where it lands in srmae's u8 pipeline: after the crop, resize and flip of
//! the sample, before the batch goes to the device; timm erases after
//! `Normalize`. The noise `z ~ N(0, 1)` is written as the u8 value whose
//! normalisation is `z` (`(mean_c + std_c * z) * 255`, rounded and clipped
//! to [0, 255]), so the device sees timm's values up to u8 quantisation and
//! the clipping of |z| beyond ~2.5 standard deviations of the pixel range.

use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::rng::SampleRng;

/// `RandomErasing` settings (timm's defaults but `prob`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RandomErasing {
    /// Probability that a sample is erased (MAE's `reprob`).
    pub prob: f64,
    #[serde(default = "default_min_area")]
    pub min_area: f64,
    #[serde(default = "default_max_area")]
    pub max_area: f64,
    #[serde(default = "default_min_aspect")]
    pub min_aspect: f64,
    /// The normalisation the device applies (per channel), for the noise.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

fn default_min_area() -> f64 {
    0.02
}
fn default_max_area() -> f64 {
    1.0 / 3.0
}
fn default_min_aspect() -> f64 {
    0.3
}

/// An erased rectangle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EraseBox {
    pub top: usize,
    pub left: usize,
    pub h: usize,
    pub w: usize,
}

impl RandomErasing {
    /// timm's defaults at probability `prob`.
    pub fn new(prob: f64, mean: &[f32], std: &[f32]) -> RandomErasing {
        RandomErasing { prob, min_area: default_min_area(), max_area: default_max_area(), min_aspect: default_min_aspect(), mean: mean.to_vec(), std: std.to_vec() }
    }

    /// The box for an `h` x `w` image, or None (not erased this time).
    pub fn draw_box(&self, img_h: usize, img_w: usize, rng: &mut SampleRng) -> Option<EraseBox> {
        if !rng.bernoulli(self.prob) {
            return None;
        }
        let area = (img_h * img_w) as f64;
        let (lo, hi) = (self.min_aspect.ln(), (1.0 / self.min_aspect).ln());
        for _ in 0..10 {
            let target = rng.uniform_in(self.min_area, self.max_area) * area;
            let aspect = rng.uniform_in(lo, hi).exp();
            let h = (target * aspect).sqrt().round() as usize;
            let w = (target / aspect).sqrt().round() as usize;
            if w < img_w && h < img_h && h > 0 && w > 0 {
                let top = rng.int_in(0, (img_h - h) as i64) as usize;
                let left = rng.int_in(0, (img_w - w) as i64) as usize;
                return Some(EraseBox { top, left, h, w });
            }
        }
        None
    }

    /// Erases (or not) one `[C, S, S]` u8 image in place; returns the box.
    pub fn apply(&self, image: &mut [u8], channels: usize, size: usize, rng: &mut SampleRng) -> Option<EraseBox> {
        let b = self.draw_box(size, size, rng)?;
        for c in 0..channels {
            let (m, s) = (self.mean.get(c).copied().unwrap_or(0.5), self.std.get(c).copied().unwrap_or(0.25));
            for y in b.top..b.top + b.h {
                for x in b.left..b.left + b.w {
                    let z: f64 = StandardNormal.sample(rng);
                    let v = ((m as f64 + s as f64 * z) * 255.0).round().clamp(0.0, 255.0);
                    image[(c * size + y) * size + x] = v as u8;
                }
            }
        }
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Purpose;

    #[test]
    fn boxes_stay_within_the_area_and_aspect_bounds() {
        let e = RandomErasing::new(1.0, &[0.5], &[0.25]);
        let (mut erased, n) = (0, 2000);
        for i in 0..n {
            let mut rng = SampleRng::new(1, 0, i, Purpose::Erase);
            let Some(b) = e.draw_box(32, 48, &mut rng) else { continue };
            erased += 1;
            assert!(b.top + b.h <= 32 && b.left + b.w <= 48 && b.h < 32 && b.w < 48);
            let frac = (b.h * b.w) as f64 / (32.0 * 48.0);
            // Rounding each side by up to half a pixel moves the area a little past the bounds.
            assert!((0.01..=0.40).contains(&frac), "area {frac}");
            let aspect = b.h as f64 / b.w as f64;
            assert!((0.2..=5.0).contains(&aspect), "aspect {aspect}");
        }
        assert!(erased > n * 9 / 10, "{erased} of {n} erased at prob 1");
        let never = RandomErasing::new(0.0, &[0.5], &[0.25]);
        assert!((0..100).all(|i| never.draw_box(32, 32, &mut SampleRng::new(1, 0, i, Purpose::Erase)).is_none()));
    }

    #[test]
    fn the_noise_is_standard_normal_after_normalisation() {
        let (mean, std) = (0.45f32, 0.2f32);
        let e = RandomErasing { min_area: 0.3, max_area: 0.33, ..RandomErasing::new(1.0, &[mean], &[std]) };
        let mut zs = Vec::new();
        for i in 0..50 {
            let mut img = vec![0u8; 64 * 64];
            let b = e.apply(&mut img, 1, 64, &mut SampleRng::new(2, 0, i, Purpose::Erase)).unwrap();
            for y in b.top..b.top + b.h {
                for x in b.left..b.left + b.w {
                    zs.push((img[y * 64 + x] as f64 / 255.0 - mean as f64) / std as f64);
                }
            }
            assert!(img[..].iter().enumerate().all(|(k, &v)| v == 0 || (b.top..b.top + b.h).contains(&(k / 64)) && (b.left..b.left + b.w).contains(&(k % 64))));
        }
        let n = zs.len() as f64;
        let m = zs.iter().sum::<f64>() / n;
        let var = zs.iter().map(|z| (z - m) * (z - m)).sum::<f64>() / n;
        // Clipping at 0 and 255 (z in [-2.25, 2.75]) narrows the spread a little.
        assert!(m.abs() < 0.05 && (0.85..1.02).contains(&var), "mean {m}, var {var}");
    }
}
