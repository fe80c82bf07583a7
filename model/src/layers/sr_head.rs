//! The super-resolution prediction head of SRMAE, built from SR practice
//! (EDSR/ESPCN): per patch, the decoder token is projected to a C_f×r×r
//! feature map, concatenated with the patch's low-resolution clue (zeros
//! where the patch has none) and a has-clue flag, then conv3×3 -> residual
//! blocks without normalisation (conv-ReLU-conv + skip) -> conv3×3 to
//! C·s² channels -> pixel shuffle (×s, s = p / r) to a full-resolution patch,
//! plus a global residual: the clue upsampled ×s (nearest; zero without clue).
//! All in normalised-pixel space. `PredHead::Linear` is the ablation.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::layers::conv3x3::Conv3x3;

use crate::layers::linear::Linear;
use serde::{Deserialize, Serialize};

use crate::layers::vit::linear_xavier;

/// Which head predicts the pixels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum HeadConfig {
    /// The SR head with `features` channels and `res_blocks` residual blocks.
    Sr { features: usize, res_blocks: usize },
    /// MAE's linear head (no use of the clue pixels beyond the encoder).
    Linear,
}

/// `out[n, c, h*s + i, w*s + j] = x[n, c*s*s + i*s + j, h, w]` (torch's pixel_shuffle).
/// # Shapes
/// - `x`: `[N, C*s*s, H, W]` -> `[N, C, H*s, W*s]`
pub fn pixel_shuffle(x: &Tensor, s: usize) -> Result<Tensor> {
    let (n, cs, h, w) = x.dims4()?;
    let c = cs / (s * s);
    x.reshape((n, c, s, s, h, w))?.permute((0, 1, 4, 2, 5, 3))?.reshape((n, c, h * s, w * s))
}

/// The SR head's layers.
#[derive(Clone, Debug)]
pub struct SrHead {
    proj: Linear,
    conv_in: Conv3x3,
    res: Vec<(Conv3x3, Conv3x3)>,
    conv_out: Conv3x3,
    features: usize,
    clue_side: usize,
    factor: usize,
    channels: usize,
}

impl SrHead {
    pub fn new(dec_dim: usize, features: usize, res_blocks: usize, patch: usize, clue_side: usize, channels: usize, vb: VarBuilder) -> Result<SrHead> {
        let factor = patch / clue_side;
        let conv3 = |inp, out, vb| Conv3x3::new(inp, out, clue_side, clue_side, vb);
        Ok(SrHead {
            proj: linear_xavier(dec_dim, features * clue_side * clue_side, vb.pp("proj"))?,
            conv_in: conv3(features + channels + 1, features, vb.pp("conv_in"))?,
            res: (0..res_blocks)
                .map(|i| Ok((conv3(features, features, vb.pp(format!("res.{i}.conv1")))?, conv3(features, features, vb.pp(format!("res.{i}.conv2")))?)))
                .collect::<Result<Vec<_>>>()?,
            conv_out: conv3(features, channels * factor * factor, vb.pp("conv_out"))?,
            features,
            clue_side,
            factor,
            channels,
        })
    }

    /// The whole head runs channels-last (`[N, r, r, C]`, N = B·L patches):
    /// `Conv3x3` is a matrix product over that layout. Channel order
    /// (features, clue, flag) and the pixel-shuffle order are those of the
    /// NCHW formulation (`pixel_shuffle`), so the weights mean the same; both
    /// layout changes are made on the weights rather than the activations
    /// (the projection's rows, the output convolution's columns).
    ///
    /// On r×r maps of up to 16 positions (every clue size of the recipes) the
    /// convolution stack and the global residual are one op
    /// (`ops::sr_convs`); larger maps run the layers one by one.
    ///
    /// # Shapes
    /// - `tokens`: `[B, L, Dd]` decoder outputs
    /// - `clues`: `[B, L, C*r*r]` clue pixels per patch (CHW order), zeros without a clue
    /// - `has_clue`: `[B, L]` f32 (1 or 0)
    /// - returns `[B, L, p*p*C]` in patchify order
    pub fn forward(&self, tokens: &Tensor, clues: &Tensor, has_clue: &Tensor) -> Result<Tensor> {
        let (b, l, _) = tokens.dims3()?;
        let (n, r, c, s, nf) = (b * l, self.clue_side, self.channels, self.factor, self.features);
        let p = r * s;
        // The projection's output is read as an F×r×r map (CHW); its rows are
        // reordered to r×r×F so that it comes out channels-last: [n, r, r, F].
        let w = self.proj.weight();
        let w_hwc = w.reshape((nf, r * r, w.dim(1)?))?.transpose(0, 1)?.reshape((r * r * nf, w.dim(1)?))?;
        let b_hwc = match self.proj.bias() {
            Some(bias) => Some(bias.reshape((nf, r * r))?.t()?.reshape(r * r * nf)?),
            None => None,
        };
        let f = crate::ops::linear(tokens, &w_hwc, b_hwc.as_ref())?.reshape((n, r, r, nf))?;
        let clue = clues.reshape((n, c, r, r))?.permute((0, 2, 3, 1))?; // [n, r, r, C]
        let flag = has_clue.reshape((n, 1, 1, 1))?.broadcast_as((n, r, r, 1))?;
        let input = crate::ops::concat_last(&f, &clue, &flag)?; // [n, r, r, F + C + 1]
        // global residual: the clue upsampled ×s (nearest), [n, p, p, C]
        let up = crate::ops::upsample_nearest_hwc(&clue, s)?;
        let out = match self.dense_layers()? {
            Some(layers) => {
                let res: Vec<_> = layers[1..layers.len() - 1].chunks(2).map(|pair| (dense_conv(&pair[0]), dense_conv(&pair[1]))).collect();
                let convs = crate::ops::SrConvs { conv_in: dense_conv(&layers[0]), res: &res, conv_out: dense_conv(&layers[layers.len() - 1]) };
                crate::ops::sr_convs(&input.reshape((n, r * r * (nf + c + 1)))?, &convs, &up.reshape((n, p * p * c))?, r, r)?
            }
            None => {
                let mut x = self.conv_in.forward(&input)?; // [n, r, r, F]
                for (c1, c2) in &self.res {
                    x = (&x + c2.forward(&c1.forward(&x)?.relu()?)?)?;
                }
                // [n, r, r, C*s*s] -> pixel shuffle: channel c*s*s + i*s + j goes to pixel (h*s + i, w*s + j)
                let y = self.conv_out.forward(&x)?.reshape((n, r, r, c, s, s))?.permute((0, 1, 4, 2, 5, 3))?.reshape((n, p, p, c))?;
                (y + up)?
            }
        };
        out.reshape((b, l, p * p * c)) // [n, p, p, C] is patchify order
    }

    /// Every convolution's dense matrix and bias (conv_in, the residual
    /// blocks' pairs, conv_out), the output convolution's columns permuted
    /// by the pixel shuffle so that its output is already in patchify order;
    /// None where the maps use the gather form.
    fn dense_layers(&self) -> Result<Option<Vec<(Tensor, Tensor)>>> {
        let convs = std::iter::once(&self.conv_in).chain(self.res.iter().flat_map(|(a, b)| [a, b]));
        let mut layers = Vec::with_capacity(2 * self.res.len() + 2);
        for conv in convs {
            let Some(layer) = conv.dense()? else { return Ok(None) };
            layers.push(layer);
        }
        let Some((dense, bias)) = self.conv_out.dense()? else { return Ok(None) };
        let (r, s, c) = (self.clue_side, self.factor, self.channels);
        let k = dense.dim(0)?;
        // columns (h, w, c, i, j) -> (h, i, w, j, c): pixel (h*s + i, w*s + j), channel c
        let dense = dense.reshape((k, r, r, c, s, s))?.permute((0, 1, 4, 2, 5, 3))?.contiguous()?.reshape((k, r * s * r * s * c))?;
        let bias = bias.reshape((r, r, c, s, s))?.permute((0, 3, 1, 4, 2))?.contiguous()?.reshape(r * s * r * s * c)?;
        layers.push((dense, bias));
        Ok(Some(layers))
    }
}

fn dense_conv((dense, bias): &(Tensor, Tensor)) -> crate::ops::DenseConv<'_> {
    crate::ops::DenseConv { dense, bias }
}

/// The prediction head SRMAE uses.
#[derive(Clone, Debug)]
pub enum PredHead {
    Sr(SrHead),
    Linear(Linear),
}

impl PredHead {
    pub fn new(cfg: &HeadConfig, dec_dim: usize, patch: usize, clue_side: usize, channels: usize, vb: VarBuilder) -> Result<PredHead> {
        Ok(match *cfg {
            HeadConfig::Sr { features, res_blocks } => PredHead::Sr(SrHead::new(dec_dim, features, res_blocks, patch, clue_side, channels, vb)?),
            HeadConfig::Linear => PredHead::Linear(linear_xavier(dec_dim, patch * patch * channels, vb)?),
        })
    }

    /// # Shapes
    /// As `SrHead::forward`; the linear head ignores `clues` and `has_clue`.
    pub fn forward(&self, tokens: &Tensor, clues: &Tensor, has_clue: &Tensor) -> Result<Tensor> {
        match self {
            PredHead::Sr(h) => h.forward(tokens, clues, has_clue),
            PredHead::Linear(l) => l.forward(tokens),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// The head written with NCHW `conv2d`, `pixel_shuffle` and
    /// `upsample_nearest2d` (its first formulation): the reference for the
    /// channels-last one.
    fn forward_nchw(h: &SrHead, tokens: &Tensor, clues: &Tensor, has_clue: &Tensor) -> Tensor {
        let (b, l, _) = tokens.dims3().unwrap();
        let (n, r, c, s) = (b * l, h.clue_side, h.channels, h.factor);
        let f = h.proj.forward(tokens).unwrap().reshape((n, h.features, r, r)).unwrap();
        let clue = clues.reshape((n, c, r, r)).unwrap();
        let flag = has_clue.reshape((n, 1, 1, 1)).unwrap().broadcast_as((n, 1, r, r)).unwrap().contiguous().unwrap();
        let conv = |l: &Conv3x3, x: &Tensor| l.conv2d().forward(x).unwrap();
        let mut x = conv(&h.conv_in, &Tensor::cat(&[&f, &clue, &flag], 1).unwrap());
        for (c1, c2) in &h.res {
            x = (&x + conv(c2, &conv(c1, &x).relu().unwrap())).unwrap();
        }
        let y = pixel_shuffle(&conv(&h.conv_out, &x), s).unwrap();
        let out = (y + clue.upsample_nearest2d(r * s, r * s).unwrap()).unwrap();
        out.permute((0, 2, 3, 1)).unwrap().reshape((b, l, r * s * r * s * c)).unwrap()
    }

    #[test]
    fn channels_last_head_equals_the_nchw_formulation() {
        let dev = Device::Cpu;
        for (patch, r, c) in [(16, 4, 3), (4, 2, 1), (4, 1, 3)] {
            let vm = VarMap::new();
            let head = SrHead::new(24, 8, 2, patch, r, c, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
            let tokens = Tensor::randn(0f32, 1.0, (2, 5, 24), &dev).unwrap();
            let clues = Tensor::randn(0f32, 1.0, (2, 5, c * r * r), &dev).unwrap();
            let has = Tensor::new(&[[1f32, 0., 1., 1., 0.], [0., 0., 1., 0., 1.]], &dev).unwrap();
            let got = head.forward(&tokens, &clues, &has).unwrap();
            let want = forward_nchw(&head, &tokens, &clues, &has);
            assert_eq!(got.dims(), &[2, 5, patch * patch * c]);
            let d = (got - want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
            assert!(d < 1e-4, "patch {patch} r {r} c {c}: max |diff| {d}");
        }
    }

    /// Every variable's gradient (and the tokens') of the fused head equals
    /// that of the NCHW formulation, whose ops are candle's own.
    #[test]
    fn gradients_equal_the_nchw_formulation() {
        let dev = Device::Cpu;
        for (patch, r, c) in [(16, 4, 3), (4, 1, 1)] {
            let vm = VarMap::new();
            let head = SrHead::new(24, 8, 2, patch, r, c, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
            let tokens = candle_core::Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 5, 24), &dev).unwrap()).unwrap();
            let clues = Tensor::randn(0f32, 1.0, (2, 5, c * r * r), &dev).unwrap();
            let has = Tensor::new(&[[1f32, 0., 1., 1., 0.], [0., 0., 1., 0., 1.]], &dev).unwrap();
            let g = Tensor::randn(0f32, 1.0, (2, 5, patch * patch * c), &dev).unwrap();
            let got = (head.forward(&tokens, &clues, &has).unwrap() * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let want = (forward_nchw(&head, &tokens, &clues, &has) * &g).unwrap().sum_all().unwrap().backward().unwrap();
            let mut vars: Vec<(String, Tensor)> = vm.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect();
            vars.push(("tokens".into(), tokens.as_tensor().clone()));
            assert_eq!(vars.len(), 2 + 2 * 6 + 1);
            for (name, v) in vars {
                let (a, b) = (got.get(&v).unwrap_or_else(|| panic!("{name}: no gradient")), want.get(&v).unwrap());
                let scale = 1.0 + b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(d < 1e-4 * scale, "patch {patch} r {r}: {name} gradient differs by {d} (scale {scale})");
            }
        }
    }

    #[test]
    fn pixel_shuffle_matches_torch() {
        // torch.nn.functional.pixel_shuffle(torch.arange(16.).reshape(1, 4, 2, 2), 2)
        // (model/reference/parity.py) = [[0, 4, 1, 5], [8, 12, 9, 13], [2, 6, 3, 7], [10, 14, 11, 15]]
        let x = Tensor::arange(0f32, 16.0, &Device::Cpu).unwrap().reshape((1, 4, 2, 2)).unwrap();
        let y: Vec<Vec<f32>> = pixel_shuffle(&x, 2).unwrap().get(0).unwrap().get(0).unwrap().to_vec2().unwrap();
        assert_eq!(y, vec![vec![0., 4., 1., 5.], vec![8., 12., 9., 13.], vec![2., 6., 3., 7.], vec![10., 14., 11., 15.]]);
    }
}
