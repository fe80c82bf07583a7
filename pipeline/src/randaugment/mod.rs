//! RandAugment as timm's `rand_augment_transform("rand-m{M}-mstd{S}-inc1")`
//! (MAE's fine-tuning uses `rand-m9-mstd0.5-inc1`), on the `[C, S, S]` u8
//! output of the crop, resize and flip, before random erasing:
//!
//! - `layers` ops (2) drawn uniformly **with replacement** from timm's
//!   increasing set: AutoContrast, Equalize, Invert, Rotate, Posterize,
//!   Solarize, SolarizeAdd, Color, Contrast, Brightness, Sharpness, ShearX,
//!   ShearY, TranslateXRel, TranslateYRel;
//! - each applied with probability `prob` (0.5), at magnitude
//!   `clip(N(M, S), 0, 10)`, mapped to its argument as timm's level
//!   functions (`level / 10` times: 30 degrees, 0.3 shear, 0.45 of the side,
//!   4 posterize bits (4 - that), 256 solarize threshold (256 - that), 110
//!   added, enhancement 0.9 (factor `max(0.1, 1 +/- that)`)), with a random
//!   sign where timm negates;
//! - geometric ops resample bicubic (MAE passes `interpolation='bicubic'`)
//!   and fill with `round(255 * mean)` per channel (timm's `img_mean`).
//!
//! Each op is PIL's arithmetic (`point`, `enhance`, `affine`), checked
//! against PIL/timm outputs (`pipeline/reference/randaugment_ops.py`). The
//! random draws come from the sample's own stream, not Python's `random`, so
//! the choices are timm's distribution, not its exact sequence.

mod affine;
#[cfg(target_arch = "x86_64")]
mod affine_simd;
mod enhance;
mod point;
#[cfg(test)]
mod tests;

use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

use crate::rng::SampleRng;

/// timm's `_LEVEL_DENOM`: magnitudes run from 0 to 10.
pub const LEVEL_DENOM: f64 = 10.0;

/// The ops of timm's `_RAND_INCREASING_TRANSFORMS`, in its order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    AutoContrast,
    Equalize,
    Invert,
    Rotate,
    Posterize,
    Solarize,
    SolarizeAdd,
    Color,
    Contrast,
    Brightness,
    Sharpness,
    ShearX,
    ShearY,
    TranslateXRel,
    TranslateYRel,
}

pub const OPS: [Op; 15] = [
    Op::AutoContrast,
    Op::Equalize,
    Op::Invert,
    Op::Rotate,
    Op::Posterize,
    Op::Solarize,
    Op::SolarizeAdd,
    Op::Color,
    Op::Contrast,
    Op::Brightness,
    Op::Sharpness,
    Op::ShearX,
    Op::ShearY,
    Op::TranslateXRel,
    Op::TranslateYRel,
];

/// RandAugment settings (a recipe's `data.aa = "rand-m9-mstd0.5-inc1"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RandAugment {
    /// Magnitude `M` (0-10).
    pub magnitude: f64,
    /// Std of the magnitude noise (`mstd`; 0: fixed).
    pub magnitude_std: f64,
    /// Ops per image (`n`).
    pub layers: usize,
    /// Probability of each drawn op (`p`).
    pub prob: f64,
    /// Fill of geometric ops, per channel (`round(255 * mean)`).
    pub fill: Vec<u8>,
}

impl RandAugment {
    /// Parses timm's config string (only the increasing variant, `inc1`, is
    /// implemented), with `mean` for the fill.
    pub fn parse(config: &str, mean: &[f32]) -> Result<RandAugment, String> {
        let mut parts = config.split('-');
        if parts.next() != Some("rand") {
            return Err(format!("{config:?}: expected timm's \"rand-...\" RandAugment string"));
        }
        let fill = mean.iter().map(|m| (255.0 * m).round().clamp(0.0, 255.0) as u8).collect();
        let mut ra = RandAugment { magnitude: LEVEL_DENOM, magnitude_std: 0.0, layers: 2, prob: 0.5, fill };
        let mut increasing = false;
        for p in parts {
            let split = p.find(|c: char| c.is_ascii_digit()).ok_or_else(|| format!("{config:?}: section {p:?} has no value"))?;
            let (key, val) = p.split_at(split);
            let num = val.parse::<f64>().map_err(|_| format!("{config:?}: {val:?} is not a number"))?;
            match key {
                "m" => ra.magnitude = num,
                "mstd" => ra.magnitude_std = num,
                "n" => ra.layers = num as usize,
                "p" => ra.prob = num,
                "inc" => increasing = num != 0.0,
                _ => return Err(format!("{config:?}: section {key:?} is not supported (m, mstd, n, p, inc)")),
            }
        }
        if !increasing {
            return Err(format!("{config:?}: only timm's increasing op set (inc1) is implemented"));
        }
        Ok(ra)
    }

    /// Augments one `[C, S, S]` image in place; returns the ops applied.
    pub fn apply(&self, img: &mut [u8], channels: usize, size: usize, rng: &mut SampleRng) -> Vec<(Op, f64)> {
        let mut done = Vec::new();
        for _ in 0..self.layers {
            let op = OPS[rng.int_in(0, OPS.len() as i64 - 1) as usize];
            if self.prob < 1.0 && rng.uniform() > self.prob {
                continue;
            }
            let mut m = self.magnitude;
            if self.magnitude_std > 0.0 {
                m = Normal::new(m, self.magnitude_std).map_or(m, |n| n.sample(rng));
            }
            let m = m.clamp(0.0, LEVEL_DENOM);
            let arg = apply_op(op, m, img, channels, size, &self.fill, rng);
            done.push((op, arg));
        }
        done
    }
}

/// timm's `_randomly_negate`.
fn negate(v: f64, rng: &mut SampleRng) -> f64 {
    if rng.uniform() > 0.5 {
        -v
    } else {
        v
    }
}

/// Applies `op` at magnitude `m`; returns the op's argument.
pub fn apply_op(op: Op, m: f64, img: &mut [u8], channels: usize, size: usize, fill: &[u8], rng: &mut SampleRng) -> f64 {
    let level = m / LEVEL_DENOM;
    let plane = size * size;
    let enhance = |rng: &mut SampleRng| (1.0 + negate(level * 0.9, rng)).max(0.1);
    match op {
        Op::AutoContrast => {
            point::auto_contrast(img, plane);
            0.0
        }
        Op::Equalize => {
            point::equalize(img, plane);
            0.0
        }
        Op::Invert => {
            point::invert(img);
            0.0
        }
        Op::Posterize => {
            let bits = 4 - (level * 4.0) as u32;
            point::posterize(img, bits);
            bits as f64
        }
        Op::Solarize => {
            let t = 256 - (level * 256.0) as u32;
            point::solarize(img, t);
            t as f64
        }
        Op::SolarizeAdd => {
            let add = (level * 110.0) as u32;
            point::solarize_add(img, add, 128);
            add as f64
        }
        Op::Color | Op::Contrast | Op::Brightness | Op::Sharpness => {
            let f = enhance(rng);
            let f32f = f as f32;
            match op {
                Op::Color => enhance::color(img, channels, plane, f32f),
                Op::Contrast => enhance::contrast(img, channels, plane, f32f),
                Op::Brightness => enhance::brightness(img, f32f),
                _ => enhance::sharpness(img, channels, size, size, f32f),
            }
            f
        }
        Op::Rotate | Op::ShearX | Op::ShearY | Op::TranslateXRel | Op::TranslateYRel => {
            let (m, arg) = match op {
                Op::Rotate => {
                    let d = negate(level * 30.0, rng);
                    (affine::rotation(d, size, size), d)
                }
                Op::ShearX => {
                    let s = negate(level * 0.3, rng);
                    (affine::shear_x(s), s)
                }
                Op::ShearY => {
                    let s = negate(level * 0.3, rng);
                    (affine::shear_y(s), s)
                }
                Op::TranslateXRel => {
                    let p = negate(level * 0.45, rng);
                    (affine::translate_x(p * size as f64), p)
                }
                _ => {
                    let p = negate(level * 0.45, rng);
                    (affine::translate_y(p * size as f64), p)
                }
            };
            affine::transform(img, channels, size, size, &m, fill);
            arg
        }
    }
}
