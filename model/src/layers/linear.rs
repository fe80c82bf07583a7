//! A linear layer over `crate::ops::linear`: all leading dimensions fold
//! into one product, so the weight gradient is a single `[out, B*N] x
//! [B*N, in]` GEMM (`candle_nn::Linear` broadcasts the weight over the
//! batch and sums per-sample weight gradients). One autograd node on the
//! CPU; under an autocast scope the product runs in BF16 (`crate::training::autocast`)
//! and the bias is added in F32.

use candle_core::{Module, Result, Tensor};

#[derive(Clone, Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// `weight`: `[out, in]`, `bias`: `[out]`.
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Linear {
        Linear { weight, bias }
    }
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
}

impl Module for Linear {
    /// # Shapes
    /// - `x`: `[..., in]` -> `[..., out]`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::ops::linear(x, &self.weight, self.bias.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn matches_candle_linear_forward_and_backward() {
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::randn(0f32, 1., (5, 3), &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::randn(0f32, 1., 5, &dev).unwrap()).unwrap();
        let x = Tensor::randn(0f32, 1., (2, 4, 3), &dev).unwrap();
        let ours = Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone())).forward(&x).unwrap();
        let theirs = candle_nn::Linear::new(w.as_tensor().clone(), Some(b.as_tensor().clone())).forward(&x).unwrap();
        let diff = |a: &Tensor, c: &Tensor| (a - c).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(diff(&ours, &theirs) < 1e-5);
        let g1 = ours.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = theirs.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert!(diff(g1.get(w.as_tensor()).unwrap(), g2.get(w.as_tensor()).unwrap()) < 1e-4);
        assert!(diff(g1.get(b.as_tensor()).unwrap(), g2.get(b.as_tensor()).unwrap()) < 1e-4);
    }
}
