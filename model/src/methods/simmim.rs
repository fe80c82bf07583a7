//! SimMIM (Xie et al., CVPR 2022; microsoft/SimMIM `models/simmim.py`):
//! the ViT encoder sees **all** patches; the embeddings of masked patches are
//! replaced by one learned mask token before the position embedding is added
//! (`x * (1 - w) + mask_token * w`); a one-layer head predicts every
//! patch's pixels from its encoder output, and the loss is the L1 distance
//! over the masked patches only:
//!
//! ```text
//! loss = sum_{masked l} sum_p |pred[l, p] - target[l, p]|  /  (masked patches * p * p * C)
//! ```
//!
//! which is SimMIM's `(l1 * mask).sum() / (mask.sum() + 1e-5) / in_chans`
//! with the pixel mask counted per patch. SimMIM's head is a 1x1 convolution
//! to `stride^2 * C` channels followed by `PixelShuffle(stride)`, stride = the
//! patch side: on patch tokens that is one linear map from `D` to the patch's
//! `p * p * C` pixels, which is what `head` is (its outputs are in
//! `patchify` order, channel last, instead of the shuffle's channel-first
//! order: a fixed permutation of the same weights).
//!
//! Differences from SimMIM's ViT-B, recorded in the recipes: the encoder's
//! position embedding is MAE's frozen 2-D sin-cos (SimMIM's ViT uses a shared
//! relative position bias and layer scale 0.1); no dropout.

use candle_core::{Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::layers::linear::Linear;
use crate::layers::vit::{linear_xavier, VitConfig, VitEncoder};
use crate::methods::mae::MimOutput;

/// SimMIM sizes: the encoder only (the head follows from it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimMimConfig {
    pub encoder: VitConfig,
}

/// SimMIM's inputs on the device; the masked count comes from the host (no
/// read-back in the forward).
pub struct SimMimInputs {
    /// `[B, L, p*p*C]` normalised pixels.
    pub patches: Tensor,
    /// `[B, L]` f32: 1 where the patch is masked.
    pub masked: Tensor,
    /// Masked patches in the batch (`masked.sum()`, counted on the host).
    pub n_masked: usize,
}

#[derive(Clone, Debug)]
pub struct SimMim {
    pub cfg: SimMimConfig,
    pub encoder: VitEncoder,
    /// `[1, 1, D]`, replaces the embeddings of masked patches.
    pub mask_token: Tensor,
    /// `D -> p*p*C`: the 1x1 convolution + pixel shuffle.
    pub head: Linear,
}

impl SimMim {
    pub fn new(cfg: &SimMimConfig, vb: VarBuilder) -> Result<SimMim> {
        let enc = &cfg.encoder;
        Ok(SimMim {
            cfg: cfg.clone(),
            encoder: VitEncoder::new(enc, vb.clone())?,
            // SimMIM: `nn.Parameter(torch.zeros(1, 1, D))` + trunc_normal_(std=.02).
            mask_token: vb.get_with_hints((1, 1, enc.dim), "mask_token", candle_nn::Init::Randn { mean: 0.0, stdev: 0.02 })?,
            head: linear_xavier(enc.dim, enc.patch_dim(), vb.pp("pixel_head"))?,
        })
    }

    /// The encoder's input tokens: patch embeddings with the mask token in
    /// place of every masked patch, plus the position embedding (no cls).
    /// # Shapes
    /// - `patches`: `[B, L, p*p*C]`, `masked`: `[B, L]` f32 -> `[B, L, D]`
    pub fn tokens(&self, patches: &Tensor, masked: &Tensor) -> Result<Tensor> {
        let l = patches.dim(1)?;
        let x = self.encoder.patch_embed.forward(patches)?;
        let w = masked.unsqueeze(2)?; // [B, L, 1]
        let kept = x.broadcast_mul(&(1.0 - &w)?)?;
        let x = (kept + w.broadcast_mul(&self.mask_token)?)?;
        crate::ops::row_broadcast::add_rows(&x, &self.encoder.pos_embed.narrow(1, 1, l)?)
    }

    /// # Shapes: see `SimMimInputs`; `pred` is `[B, L, p*p*C]` (normalised pixels).
    pub fn forward(&self, x: &SimMimInputs, train: bool) -> Result<MimOutput> {
        let l = x.patches.dim(1)?;
        let latent = self.encoder.run(&self.tokens(&x.patches, &x.masked)?, train)?;
        let pred = self.head.forward(&latent.narrow(1, 1, l)?)?;
        Ok(MimOutput {
            loss: crate::methods::loss::weighted_patch_l1(&pred, &x.patches, &x.masked, x.n_masked as f64)?,
            pred,
        })
    }
}

/// `|pred - target|` averaged over a patch's values.
/// # Shapes
/// - `pred`, `target`: `[B, L, P]` -> `[B, L]`
pub fn patch_l1(pred: &Tensor, target: &Tensor) -> Result<Tensor> {
    (pred - target)?.abs()?.mean(D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn tiny() -> SimMimConfig {
        SimMimConfig {
            encoder: VitConfig { img_size: 8, patch: 4, in_chans: 2, dim: 8, depth: 1, heads: 2, mlp_ratio: 2.0, drop_path: 0.0 },
        }
    }

    fn model(vm: &VarMap) -> SimMim {
        let m = SimMim::new(&tiny(), VarBuilder::from_varmap(vm, DType::F32, &Device::Cpu)).unwrap();
        crate::layers::init::seeded_init(vm, 7).unwrap();
        m
    }

    fn rows(t: &Tensor) -> Vec<Vec<f32>> {
        t.squeeze(0).unwrap().to_vec2().unwrap()
    }

    #[test]
    fn the_mask_token_replaces_exactly_the_masked_patches() {
        let vm = VarMap::new();
        let m = model(&vm);
        let dev = Device::Cpu;
        let patches = Tensor::randn(0f32, 1.0, (1, 4, 32), &dev).unwrap();
        let masked = Tensor::new(&[[0f32, 1., 1., 0.]], &dev).unwrap();
        let got = rows(&m.tokens(&patches, &masked).unwrap());
        let pos = m.encoder.pos_embed.narrow(1, 1, 4).unwrap();
        let seen = rows(&m.encoder.embed(&patches).unwrap());
        let token = rows(&m.mask_token.broadcast_add(&pos).unwrap());
        for l in 0..4 {
            let want = if l == 1 || l == 2 { &token[l] } else { &seen[l] };
            for (a, b) in got[l].iter().zip(want) {
                assert!((a - b).abs() < 1e-6, "patch {l}: {:?} vs {want:?}", got[l]);
            }
        }
        // Unmasked patch content leaks nowhere into masked rows: changing it changes only its own row.
        let other = patches.slice_assign(&[0..1, 1..2, 0..32], &Tensor::zeros((1, 1, 32), DType::F32, &dev).unwrap()).unwrap();
        assert_eq!(rows(&m.tokens(&other, &masked).unwrap()), got);
    }

    #[test]
    fn the_loss_is_l1_over_masked_patches_only() {
        let vm = VarMap::new();
        let m = model(&vm);
        let dev = Device::Cpu;
        let patches = Tensor::randn(0f32, 1.0, (2, 4, 32), &dev).unwrap();
        let masked = Tensor::new(&[[0f32, 1., 1., 0.], [1., 0., 0., 0.]], &dev).unwrap();
        let out = m.forward(&SimMimInputs { patches: patches.clone(), masked: masked.clone(), n_masked: 3 }, false).unwrap();
        let per_patch: Vec<Vec<f32>> = patch_l1(&out.pred, &patches).unwrap().to_vec2().unwrap();
        let want = (per_patch[0][1] + per_patch[0][2] + per_patch[1][0]) / 3.0;
        let loss = out.loss.to_scalar::<f32>().unwrap();
        assert!((loss - want).abs() < 1e-5, "{loss} vs {want}");
    }

    #[test]
    fn every_variable_gets_a_gradient_and_the_loss_falls_on_one_batch() {
        let vm = VarMap::new();
        let m = model(&vm);
        let dev = Device::Cpu;
        // Deterministic smooth images (candle's CPU RNG cannot be seeded).
        let values: Vec<f32> = (0..2 * 4 * 32).map(|i| (i as f32 * 0.37).sin()).collect();
        let patches = Tensor::from_vec(values, (2, 4, 32), &dev).unwrap();
        let masked = Tensor::new(&[[0f32, 1., 1., 0.], [1., 0., 1., 0.]], &dev).unwrap();
        let x = SimMimInputs { patches, masked, n_masked: 4 };
        let grads = m.forward(&x, true).unwrap().loss.backward().unwrap();
        for (name, var) in vm.data().lock().unwrap().iter() {
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient"));
            let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(norm > 0.0, "{name}: zero gradient");
        }
        let mut opt = crate::training::optim::AdamW::new(crate::training::optim::param_groups(&vm, 0.0, None), 3e-3).unwrap();
        let first = m.forward(&x, true).unwrap().loss.to_scalar::<f32>().unwrap();
        for _ in 0..60 {
            let g = m.forward(&x, true).unwrap().loss.backward().unwrap();
            opt.step(&g, 1.0).unwrap();
        }
        let last = m.forward(&x, true).unwrap().loss.to_scalar::<f32>().unwrap();
        assert!(last < 0.7 * first, "loss {first} -> {last}");
    }
}
