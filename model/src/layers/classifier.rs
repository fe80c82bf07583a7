//! Classification on top of the encoder, as MAE's fine-tuning
//! (`models_vit.py`: global average pool of the patch tokens + `fc_norm`, or
//! the normalised cls token) and linear probing (`main_linprobe.py`: frozen
//! encoder, cls token, BatchNorm without affine (eps 1e-6) + Linear).

use std::sync::Mutex;

use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use crate::layers::linear::Linear;
use serde::{Deserialize, Serialize};

use crate::layers::norm::LayerNorm;
use crate::layers::vit::{linear_xavier, VitConfig, VitEncoder};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    /// Mean of the patch tokens, then `fc_norm` (MAE's fine-tune default).
    Gap,
    /// The cls token after the encoder's final norm.
    Cls,
}

/// Std of the fine-tuning head's initial weights (MAE `main_finetune.py`).
pub const FINETUNE_HEAD_STD: f64 = 2e-5;
/// Std of the linear probe's initial weights (MAE `main_linprobe.py`).
pub const PROBE_HEAD_STD: f64 = 0.01;

/// ViT + head for fine-tuning.
pub struct VitClassifier {
    pub encoder: VitEncoder,
    pub pool: Pool,
    pub fc_norm: Option<LayerNorm>,
    pub head: Linear,
}

impl VitClassifier {
    /// The encoder's variables use the same names as in MAE / SRMAE, so a
    /// pretrained checkpoint loads into it.
    pub fn new(cfg: &VitConfig, classes: usize, pool: Pool, vb: VarBuilder) -> Result<VitClassifier> {
        Ok(VitClassifier {
            encoder: VitEncoder::new(cfg, vb.clone())?,
            pool,
            fc_norm: match pool {
                Pool::Gap => Some(LayerNorm::new(cfg.dim, 1e-6, vb.pp("fc_norm"))?),
                Pool::Cls => None,
            },
            head: linear_xavier(cfg.dim, classes, vb.pp("head"))?,
        })
    }

    /// # Shapes
    /// - `patches`: `[B, L, p*p*C]` normalised pixels -> logits `[B, classes]`
    pub fn forward(&self, patches: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.encoder.with_cls(&self.encoder.embed(patches)?)?;
        let feats = match (&self.fc_norm, self.pool) {
            (Some(n), Pool::Gap) => {
                let x = self.encoder.blocks.forward_unnormed(&x, train)?;
                let l = x.dim(1)? - 1;
                n.forward(&x.narrow(1, 1, l)?.mean(1)?)?
            }
            _ => self.encoder.blocks.forward(&x, train)?.narrow(1, 0, 1)?.squeeze(1)?,
        };
        self.head.forward(&feats)
    }
}

/// Cross-entropy with label smoothing `eps` (mean over the batch).
/// # Shapes
/// - `logits`: `[B, K]`, `labels`: `[B]` u32 -> scalar
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, eps: f64) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = logp.gather(&labels.unsqueeze(1)?, 1)?.squeeze(1)?.neg()?;
    let smooth = logp.mean(D::Minus1)?.neg()?;
    ((nll * (1.0 - eps))? + (smooth * eps)?)?.mean_all()
}

/// Cross-entropy against soft targets (timm's `SoftTargetCrossEntropy`, for
/// mixup / cutmix): `mean_b sum_k -target[b, k] * log_softmax(logits)[b, k]`.
/// # Shapes
/// - `logits`, `targets`: `[B, K]` -> scalar
pub fn soft_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    (targets * logp)?.sum(D::Minus1)?.neg()?.mean_all()
}

/// Linear-probe head: BatchNorm1d(affine = False, eps = 1e-6) + Linear.
pub struct LinearProbe {
    running: Mutex<(Tensor, Tensor)>,
    momentum: f64,
    pub head: Linear,
}

impl LinearProbe {
    pub fn new(dim: usize, classes: usize, vb: VarBuilder) -> Result<LinearProbe> {
        let dev = vb.device().clone();
        Ok(LinearProbe {
            running: Mutex::new((Tensor::zeros(dim, candle_core::DType::F32, &dev)?, Tensor::ones(dim, candle_core::DType::F32, &dev)?)),
            momentum: 0.1,
            head: linear_xavier(dim, classes, vb.pp("head"))?,
        })
    }

    /// # Shapes
    /// - `feats`: `[B, D]` (frozen encoder features) -> logits `[B, classes]`
    pub fn forward(&self, feats: &Tensor, train: bool) -> Result<Tensor> {
        let mut running = self.running.lock().expect("running stats lock");
        let (mean, var) = if train {
            let mean = feats.mean(0)?;
            let var = feats.broadcast_sub(&mean)?.sqr()?.mean(0)?;
            let b = feats.dim(0)? as f64;
            let unbiased = (&var * (b / (b - 1.0).max(1.0)))?;
            let m = self.momentum;
            *running = (((&running.0 * (1.0 - m))? + (mean.detach() * m)?)?, ((&running.1 * (1.0 - m))? + (unbiased.detach() * m)?)?);
            (mean, var)
        } else {
            running.clone()
        };
        let normed = feats.broadcast_sub(&mean)?.broadcast_div(&(var + 1e-6)?.sqrt()?)?;
        self.head.forward(&normed)
    }

    /// The evaluation-mode probe as one linear layer: the running-statistics
    /// BatchNorm folded into the head, `W' = W / sqrt(var + eps)`,
    /// `b' = b - W' mean`. Returns `(W' [K, D], b' [K])`.
    pub fn fold(&self) -> Result<(Tensor, Tensor)> {
        let running = self.running.lock().expect("running stats lock");
        let (mean, var) = (&running.0, &running.1);
        let w = self.head.weight().broadcast_div(&(var + 1e-6)?.sqrt()?.unsqueeze(0)?)?;
        let shift = w.matmul(&mean.unsqueeze(1)?)?.squeeze(1)?;
        let b = match self.head.bias() {
            Some(b) => (b - shift)?,
            None => shift.neg()?,
        };
        Ok((w, b))
    }
}

#[cfg(test)]
mod soft_target_tests {
    use super::*;
    use candle_core::Device;

    /// One-hot soft targets give the hard-label loss, smoothed ones the smoothed loss.
    #[test]
    fn soft_targets_match_hard_labels() {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[1.0f32, -0.5, 2.0], [0.3, 0.1, -1.2]], &dev).unwrap();
        let labels = Tensor::new(&[2u32, 0], &dev).unwrap();
        let eps = 0.1f32;
        let (on, off) = (1.0 - eps + eps / 3.0, eps / 3.0);
        let soft = Tensor::new(&[[off, off, on], [on, off, off]], &dev).unwrap();
        let a: f32 = soft_cross_entropy(&logits, &soft).unwrap().to_scalar().unwrap();
        let b: f32 = cross_entropy(&logits, &labels, eps as f64).unwrap().to_scalar().unwrap();
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
}
