//! LayerNorm over the last dimension, biased variance as torch.nn.LayerNorm,
//! through `crate::ops::layer_norm` (one autograd node with a hand-written
//! backward; candle's fused layer norm has no backward).

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
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }
    pub fn eps(&self) -> f64 {
        self.eps
    }
}

impl Module for LayerNorm {
    /// # Shapes
    /// - `x`: `[..., D]` -> `[..., D]`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}
