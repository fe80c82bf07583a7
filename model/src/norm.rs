//! LayerNorm from differentiable ops (candle's fused layer norm has no
//! backward): `(x - mean) / sqrt(var + eps) * weight + bias` over the last
//! dimension, biased variance as torch.nn.LayerNorm.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// LayerNorm over the last dimension.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Weight 1, bias 0 (as torch), under `vb`'s `weight` / `bias`.
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<LayerNorm> {
        let weight = vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(dim, "bias", candle_nn::Init::Const(0.0))?;
        Ok(LayerNorm { weight, bias, eps })
    }
}

impl Module for LayerNorm {
    /// # Shapes
    /// - `x`: `[..., D]` -> `[..., D]`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let normed = crate::fused_cpu::normalise_last_dim(x, self.eps)?;
        crate::row_broadcast::add_rows(&crate::row_broadcast::mul_rows(&normed, &self.weight)?, &self.bias)
    }
}
