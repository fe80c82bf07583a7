//! Mixup and cutmix (timm `Mixup`, batch mode, as MAE's fine-tuning uses it:
//! mixup alpha 0.8, cutmix alpha 1.0, probability 1.0, switch probability
//! 0.5, label smoothing 0.1), on a whole batch in the loader worker that
//! filled it, with soft labels in the batch.
//!
//! Per batch, as timm's `_params_per_batch` / `_mix_batch`: with probability
//! `prob` the batch is mixed; if both alphas are positive, cutmix is chosen
//! with probability `switch_prob`; `lam ~ Beta(alpha, alpha)` of the chosen
//! one. Each image is mixed with the image at the mirrored position of the
//! batch (`x.flip(0)`):
//! - mixup: `x_i = lam * x_i + (1 - lam) * x_{B-1-i}`;
//! - cutmix: a box of `int(H * sqrt(1 - lam))` x `int(W * sqrt(1 - lam))`
//!   centred at a uniform `(cy, cx)` (`randint(0, H)`, clipped to the image)
//!   is copied from `x_{B-1-i}`, and `lam` becomes `1 - box area / (H W)`.
//!
//! Targets: `one_hot(y_i) * lam + one_hot(y_{B-1-i}) * (1 - lam)` with
//! `smoothing` folded in (`off = smoothing / K`, `on = 1 - smoothing + off`).
//!
//! In u8: mixing is linear, so it commutes with the device's normalisation;
//! the mixed value is rounded to u8 (at most half a level from timm's float
//! result).

use rand_distr::{Beta, Distribution};
use serde::{Deserialize, Serialize};

use crate::batch::NO_LABEL;
use crate::rng::SampleRng;

/// `Mixup` settings (MAE's flag names in recipes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mixup {
    /// Mixup's Beta alpha (0: off).
    pub mixup_alpha: f64,
    /// Cutmix's Beta alpha (0: off).
    pub cutmix_alpha: f64,
    /// Probability that a batch is mixed at all.
    pub prob: f64,
    /// Probability of cutmix when both are on.
    pub switch_prob: f64,
    /// Label smoothing folded into the soft targets.
    pub smoothing: f64,
    /// Classes (the width of the soft labels).
    pub classes: usize,
}

/// What was done to one batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mixed {
    None,
    Mixup { lam: f64 },
    /// `lam` = 1 - box area / image area; the box is `[y0, y1) x [x0, x1)`.
    Cutmix { lam: f64, y0: usize, y1: usize, x0: usize, x1: usize },
}

impl Mixed {
    /// The weight of each image's own label.
    pub fn lam(&self) -> f64 {
        match *self {
            Mixed::None => 1.0,
            Mixed::Mixup { lam } | Mixed::Cutmix { lam, .. } => lam,
        }
    }
}

fn beta(alpha: f64, rng: &mut SampleRng) -> f64 {
    match Beta::new(alpha, alpha) {
        Ok(d) => d.sample(rng),
        Err(_) => 1.0,
    }
}

impl Mixup {
    /// MAE's settings for `classes` classes.
    pub fn mae(classes: usize) -> Mixup {
        Mixup { mixup_alpha: 0.8, cutmix_alpha: 1.0, prob: 1.0, switch_prob: 0.5, smoothing: 0.1, classes }
    }

    /// Draws this batch's mixing for `h` x `w` images.
    pub fn draw(&self, h: usize, w: usize, rng: &mut SampleRng) -> Mixed {
        if !(self.mixup_alpha > 0.0 || self.cutmix_alpha > 0.0) || !rng.bernoulli(self.prob) {
            return Mixed::None;
        }
        let cutmix = match (self.mixup_alpha > 0.0, self.cutmix_alpha > 0.0) {
            (true, true) => rng.bernoulli(self.switch_prob),
            (false, true) => true,
            _ => false,
        };
        if !cutmix {
            let lam = beta(self.mixup_alpha, rng);
            return if lam == 1.0 { Mixed::None } else { Mixed::Mixup { lam } };
        }
        let lam = beta(self.cutmix_alpha, rng);
        let ratio = (1.0 - lam).sqrt();
        let (ch, cw) = ((h as f64 * ratio) as usize, (w as f64 * ratio) as usize);
        let cy = rng.int_in(0, h as i64 - 1) as usize;
        let cx = rng.int_in(0, w as i64 - 1) as usize;
        let (y0, y1) = (cy.saturating_sub(ch / 2), (cy + ch / 2).min(h));
        let (x0, x1) = (cx.saturating_sub(cw / 2), (cx + cw / 2).min(w));
        let lam = 1.0 - ((y1 - y0) * (x1 - x0)) as f64 / (h * w) as f64;
        if lam == 1.0 {
            Mixed::None
        } else {
            Mixed::Cutmix { lam, y0, y1, x0, x1 }
        }
    }

    /// Mixes `len` images `[B, C, S, S]` in place and writes the soft labels
    /// `[B, classes]`.
    pub fn apply(&self, images: &mut [u8], labels: &[u32], soft: &mut [f32], len: usize, channels: usize, size: usize, rng: &mut SampleRng) -> Mixed {
        let mixed = self.draw(size, size, rng);
        let n = channels * size * size;
        // Image i and its mirror j = B-1-i read each other's original values, so
        // each pair is mixed in place, without a copy of the batch (the middle
        // image of an odd batch is its own mirror and stays as it is).
        for i in 0..len / 2 {
            let j = len - 1 - i;
            let (head, tail) = images.split_at_mut(j * n);
            let (a, b) = (&mut head[i * n..(i + 1) * n], &mut tail[..n]);
            match mixed {
                Mixed::None => break,
                Mixed::Mixup { lam } => {
                    for (u, v) in a.iter_mut().zip(b.iter_mut()) {
                        let (x, y) = (*u as f64, *v as f64);
                        *u = (lam * x + (1.0 - lam) * y).round() as u8;
                        *v = (lam * y + (1.0 - lam) * x).round() as u8;
                    }
                }
                Mixed::Cutmix { y0, y1, x0, x1, .. } => {
                    for c in 0..channels {
                        for y in y0..y1 {
                            let row = (c * size + y) * size;
                            a[row + x0..row + x1].swap_with_slice(&mut b[row + x0..row + x1]);
                        }
                    }
                }
            }
        }
        let k = self.classes;
        let off = (self.smoothing / k as f64) as f32;
        let on = (1.0 - self.smoothing) as f32 + off;
        let lam = mixed.lam() as f32;
        soft[..len * k].fill(off);
        for i in 0..len {
            let row = &mut soft[i * k..(i + 1) * k];
            for (label, weight) in [(labels[i], lam), (labels[len - 1 - i], 1.0 - lam)] {
                if label != NO_LABEL && (label as usize) < k {
                    row[label as usize] += (on - off) * weight;
                }
            }
        }
        mixed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Purpose;

    #[test]
    fn soft_labels_sum_to_one_and_the_box_area_is_the_label_weight() {
        let m = Mixup::mae(10);
        let (c, s, len) = (3, 16, 6);
        let (mut cut, mut mix) = (0, 0);
        for k in 0..200 {
            // Image i is filled with the value i (per channel: i + c).
            let mut images: Vec<u8> = (0..len).flat_map(|i| (0..c).flat_map(move |ch| std::iter::repeat_n((i * 10 + ch) as u8, s * s))).collect();
            let labels: Vec<u32> = (0..len as u32).map(|i| i % 10).collect();
            let mut soft = vec![0f32; len * 10];
            let mixed = m.apply(&mut images, &labels, &mut soft, len, c, s, &mut SampleRng::new(3, 0, k, Purpose::Mix));
            for row in soft.chunks(10) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{row:?}");
            }
            let lam = mixed.lam();
            match mixed {
                Mixed::Cutmix { y0, y1, x0, x1, .. } => {
                    cut += 1;
                    // The share of image 0's pixels that came from image len-1 is 1 - lam.
                    let from_other = images[..s * s].iter().filter(|&&v| v == ((len - 1) * 10) as u8).count();
                    assert_eq!(from_other, (y1 - y0) * (x1 - x0));
                    assert!((1.0 - from_other as f64 / (s * s) as f64 - lam).abs() < 1e-12);
                }
                Mixed::Mixup { lam } => {
                    mix += 1;
                    let want = (lam * 0.0 + (1.0 - lam) * ((len - 1) * 10) as f64).round() as u8;
                    assert_eq!(images[0], want);
                }
                Mixed::None => {}
            }
            // Label weights: own label lam (+ smoothing), partner's 1 - lam.
            let (on, off) = (1.0 - 0.1 + 0.01, 0.01);
            let expect0 = off + (on - off) * lam as f32;
            assert!((soft[0] - expect0).abs() < 1e-5, "{} vs {expect0}", soft[0]);
        }
        assert!(cut > 60 && mix > 60, "cutmix {cut}, mixup {mix} of 200 (switch probability 0.5)");
    }

    #[test]
    fn off_is_one_hot_with_smoothing() {
        let m = Mixup { prob: 0.0, ..Mixup::mae(4) };
        let mut images = vec![7u8; 2 * 4];
        let mut soft = vec![0f32; 8];
        assert_eq!(m.apply(&mut images, &[1, 3], &mut soft, 2, 1, 2, &mut SampleRng::new(0, 0, 0, Purpose::Mix)), Mixed::None);
        assert_eq!(images, vec![7u8; 8]);
        let want = [0.025, 0.925, 0.025, 0.025, 0.025, 0.025, 0.025, 0.925];
        assert!(soft.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{soft:?}");
    }
}
