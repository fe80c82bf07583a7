//! One optimiser update from several micro-batches (MAE's `accum_iter`):
//! each micro-batch's loss is divided by the number of micro-batches before
//! `backward`, their gradients are summed here, and the update clips the
//! global norm (`clip_grad`) before AdamW. Only the variables' gradients are
//! kept between micro-batches, not the whole backward graph's.

use candle_core::backprop::GradStore;
use candle_core::{Result, Var};

use crate::training::dist::GradSync;
use crate::training::optim::AdamW;

/// Sums the variables' gradients over micro-batches.
#[derive(Default)]
pub struct GradAccumulator {
    grads: Option<GradStore>,
    micro_steps: usize,
}

impl GradAccumulator {
    pub fn new() -> GradAccumulator {
        GradAccumulator::default()
    }

    /// Micro-batches added since the last update.
    pub fn micro_steps(&self) -> usize {
        self.micro_steps
    }

    /// Adds one micro-batch's gradients (those of `vars` only).
    pub fn add(&mut self, grads: &GradStore, vars: &[Var]) -> Result<()> {
        let acc = self.grads.get_or_insert_with(GradStore::default);
        for v in vars {
            let t = v.as_tensor();
            if let Some(g) = grads.get(t) {
                let sum = match acc.get(t) {
                    Some(prev) => (prev + g)?,
                    None => g.clone(),
                };
                acc.insert(t, sum.detach());
            }
        }
        self.micro_steps += 1;
        Ok(())
    }

    /// Averages the summed gradients over data-parallel ranks (call before
    /// `apply`), together with `flags`; returns the averaged flags.
    pub fn all_reduce(&mut self, sync: &GradSync, vars: &[Var], flags: &[f32]) -> Result<Vec<f32>> {
        sync.average(self.grads.get_or_insert_with(GradStore::default), vars, flags)
    }

    /// Applies one AdamW update with the summed gradients, clipping their
    /// global norm to `clip` when given. Returns the norm before clipping.
    pub fn apply(&mut self, opt: &mut AdamW, clip: Option<f64>) -> Result<f64> {
        let grads = self.grads.take().unwrap_or_default();
        self.micro_steps = 0;
        let norm = opt.grad_norm(&grads)?;
        let scale = match clip {
            Some(max) if norm > max => max / (norm + 1e-6),
            _ => 1.0,
        };
        opt.step(&grads, scale)?;
        Ok(norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::optim::{param_groups, AdamW};
    use candle_core::{DType, Device, Tensor};
    use candle_nn::{VarBuilder, VarMap};

    /// Two micro-batches of half the loss each give the same update as one
    /// batch of the whole loss.
    #[test]
    fn accumulated_gradients_equal_the_full_batch() {
        let dev = Device::Cpu;
        let run = |micro: bool| -> Vec<f32> {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
            let w = vb.get_with_hints((3, 2), "w", candle_nn::Init::Const(0.5)).unwrap();
            let x = Tensor::new(&[[1f32, 2.], [3., -1.], [0.5, 0.25], [-2., 1.]], &dev).unwrap();
            let y = Tensor::new(&[[1f32, 0., 2.], [0., 1., 1.], [1., 1., 1.], [2., -1., 0.]], &dev).unwrap();
            let mut opt = AdamW::new(param_groups(&vm, 0.05, None), 0.1).unwrap();
            let vars = vm.all_vars();
            let mut acc = GradAccumulator::new();
            let loss = |xs: &Tensor, ys: &Tensor, scale: f64| (xs.matmul(&w.t().unwrap()).unwrap() - ys).unwrap().sqr().unwrap().mean_all().unwrap() * scale;
            if micro {
                for k in 0..2 {
                    let l = loss(&x.narrow(0, 2 * k, 2).unwrap(), &y.narrow(0, 2 * k, 2).unwrap(), 0.5).unwrap();
                    acc.add(&l.backward().unwrap(), &vars).unwrap();
                }
            } else {
                acc.add(&loss(&x, &y, 1.0).unwrap().backward().unwrap(), &vars).unwrap();
            }
            acc.apply(&mut opt, Some(1.0)).unwrap();
            w.flatten_all().unwrap().to_vec1().unwrap()
        };
        let (a, b) = (run(true), run(false));
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-6, "{a:?} vs {b:?}");
        }
        assert!(a.iter().any(|&v| (v - 0.5).abs() > 1e-3), "the update moved the weights");
    }
}
