//! MAE's learning-rate schedule (`util/lr_sched.py`), per iteration: linear
//! warmup, then a half-cycle cosine to `min_lr`. `epoch` is fractional
//! (`epoch + step / steps_per_epoch`).

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CosineSchedule {
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_epochs: f64,
    pub epochs: f64,
}

impl CosineSchedule {
    /// MAE's rule: absolute lr = base lr × total batch / 256.
    pub fn scaled_lr(blr: f64, total_batch: usize) -> f64 {
        blr * total_batch as f64 / 256.0
    }

    pub fn lr_at(&self, epoch: f64) -> f64 {
        if epoch < self.warmup_epochs {
            self.lr * epoch / self.warmup_epochs
        } else {
            let span = (self.epochs - self.warmup_epochs).max(1e-12);
            let t = ((epoch - self.warmup_epochs) / span).min(1.0);
            self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s = CosineSchedule { lr: 1e-3, min_lr: 1e-5, warmup_epochs: 5.0, epochs: 105.0 };
        assert_eq!(s.lr_at(0.0), 0.0);
        assert!((s.lr_at(2.5) - 5e-4).abs() < 1e-12);
        assert!((s.lr_at(5.0) - 1e-3).abs() < 1e-12);
        assert!((s.lr_at(55.0) - (1e-5 + (1e-3 - 1e-5) * 0.5)).abs() < 1e-12);
        assert!((s.lr_at(105.0) - 1e-5).abs() < 1e-12);
        assert_eq!(CosineSchedule::scaled_lr(1.5e-4, 4096), 2.4e-3);
    }
}
