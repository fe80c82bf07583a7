//! A linear layer that folds all leading dimensions into one before the
//! matmul. `candle_nn::Linear` broadcasts the weight over the batch
//! (`[B, out, in]`) for 3-D inputs, so its backward materialises one weight
//! gradient per sample and then sums them: on a ViT step that was most of
//! the backward pass. Here the weight gradient is a single `[in, B*N] x
//! [B*N, out]` product. Under an autocast scope the product runs in BF16
//! (`crate::autocast`); the bias is added in F32.

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
        let dims = x.dims().to_vec();
        let inp = *dims.last().unwrap_or(&0);
        let rows = x.elem_count() / inp.max(1);
        let y = crate::autocast::matmul(&x.reshape((rows, inp))?, &self.weight.t()?)?;
        let y = match &self.bias {
            Some(b) => crate::row_broadcast::add_rows(&y, b)?,
            None => y,
        };
        let mut out = dims;
        if let Some(last) = out.last_mut() {
            *last = self.weight.dim(0)?;
        }
        y.reshape(out)
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
