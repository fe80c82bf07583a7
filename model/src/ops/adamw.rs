//! The AdamW update (decoupled weight decay, as `torch.optim.AdamW`) applied
//! in place: no temporaries, no graph, three passes over each variable.
//!
//! Math, for a gradient `g` scaled by `s` (clipping, 1 / micro-batches),
//! step `t`, `c₁ = 1 − β₁ᵗ`, `c₂ = 1 − β₂ᵗ`:
//! - `m ← β₁ m + (1 − β₁) s g`
//! - `v ← β₂ v + (1 − β₂) (s g)²`
//! - `p ← p (1 − lr λ) − lr (m / c₁) / (sqrt(v / c₂) + ε)`
//!
//! The CPU kernel runs these as candle in-place ops (`InplaceOp2`/`3`) on the
//! variable's and the moments' own storage; on CUDA one launch updates every
//! variable (`adamw_multi` in `model/kernels/adamw.cu`, a table of
//! pointers, sizes and per-group lr / weight decay); the composed path
//! builds new tensors and `Var::set`s them. The same F32 formulas run in all
//! three.

use candle_core::{bail, CpuStorage, InplaceOp2, InplaceOp3, Layout, Result, Tensor, Var};
use rayon::prelude::*;

use crate::ops::fused_cpu::slice;

/// One variable's update settings.
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// `1 − β₁ᵗ`, `1 − β₂ᵗ`.
    pub bias_correction1: f64,
    pub bias_correction2: f64,
    /// Multiplies the gradient first.
    pub grad_scale: f64,
}

const CHUNK: usize = 16 * 1024;

fn contiguous_mut<'a>(s: &'a mut CpuStorage, l: &Layout, op: &str) -> Result<&'a mut [f32]> {
    let Some((a, b)) = l.contiguous_offsets() else { bail!("{op}: needs a contiguous variable") };
    match s {
        CpuStorage::F32(v) => Ok(&mut v[a..b]),
        _ => bail!("{op}: needs F32"),
    }
}

/// `m ← β m + (1 − β) s g` (`square`: `(s g)²`).
struct Moment {
    beta: f32,
    scale: f32,
    square: bool,
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "adamw-moment"
    }
    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<()> {
        let (m, g) = (contiguous_mut(s1, l1, self.name())?, slice(s2, l2, self.name())?);
        if m.len() != g.len() {
            bail!("{}: {} moments for {} gradients", self.name(), m.len(), g.len());
        }
        let (b, a, s) = (self.beta, 1.0 - self.beta, self.scale);
        m.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).for_each(|(m, g)| {
            if self.square {
                m.iter_mut().zip(g).for_each(|(m, &g)| *m = b * *m + a * (s * g) * (s * g));
            } else {
                m.iter_mut().zip(g).for_each(|(m, &g)| *m = b * *m + a * (s * g));
            }
        });
        Ok(())
    }
}

/// `p ← p (1 − lr λ) − lr (m / c₁) / (sqrt(v / c₂) + ε)`.
struct Update(AdamWStep);

impl InplaceOp3 for Update {
    fn name(&self) -> &'static str {
        "adamw-update"
    }
    fn cpu_fwd(&self, s1: &mut CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<()> {
        let p = contiguous_mut(s1, l1, self.name())?;
        let (m, v) = (slice(s2, l2, self.name())?, slice(s3, l3, self.name())?);
        if p.len() != m.len() || p.len() != v.len() {
            bail!("{}: {} values, {} and {} moments", self.name(), p.len(), m.len(), v.len());
        }
        let h = self.0;
        let decay = (1.0 - h.lr * h.weight_decay) as f32;
        let (lr, inv_c1, inv_c2, eps) = (h.lr as f32, (1.0 / h.bias_correction1) as f32, (1.0 / h.bias_correction2) as f32, h.eps as f32);
        p.par_chunks_mut(CHUNK).zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK))).for_each(|(p, (m, v))| {
            for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
                *p = *p * decay - lr * (m * inv_c1) / ((v * inv_c2).sqrt() + eps);
            }
        });
        Ok(())
    }
}

/// The composed path: new tensors, then `Var::set`.
fn composed(var: &Var, grad: &Tensor, m: &mut Tensor, v: &mut Tensor, h: AdamWStep) -> Result<()> {
    let grad = (grad * h.grad_scale)?;
    *m = ((&*m * h.beta1)? + (&grad * (1.0 - h.beta1))?)?;
    *v = ((&*v * h.beta2)? + (grad.sqr()? * (1.0 - h.beta2))?)?;
    let update = (&*m / h.bias_correction1)?.div(&((&*v / h.bias_correction2)?.sqrt()? + h.eps)?)?;
    let decayed = (var.as_tensor() * (1.0 - h.lr * h.weight_decay))?;
    var.set(&(decayed - (update * h.lr)?)?)
}

/// One AdamW update of `var` and its moments `(m, v)`.
/// # Shapes
/// - `var`, `grad`, `m`, `v`: one shape
pub fn adamw_step(var: &Var, grad: &Tensor, m: &mut Tensor, v: &mut Tensor, h: AdamWStep) -> Result<()> {
    let p = var.as_tensor();
    if grad.dims() != p.dims() || m.dims() != p.dims() || v.dims() != p.dims() {
        bail!("adamw: variable {:?}, gradient {:?}, moments {:?} {:?}", p.dims(), grad.dims(), m.dims(), v.dims());
    }
    let in_place = super::use_cpu_kernel(&[p, grad, m, v]) && [p, &*m, &*v].iter().all(|t| t.is_contiguous());
    if !in_place {
        return composed(var, grad, m, v, h);
    }
    let grad = grad.contiguous()?;
    m.inplace_op2(&grad, &Moment { beta: h.beta1 as f32, scale: h.grad_scale as f32, square: false })?;
    v.inplace_op2(&grad, &Moment { beta: h.beta2 as f32, scale: h.grad_scale as f32, square: true })?;
    p.inplace_op3(m, v, &Update(h))
}

/// One variable of a multi-variable update.
pub struct AdamWItem<'a> {
    pub var: &'a Var,
    pub grad: &'a Tensor,
    pub m: &'a mut Tensor,
    pub v: &'a mut Tensor,
    pub step: AdamWStep,
}

/// The AdamW update of many variables: one CUDA launch when they all live on
/// one GPU (and the fused CUDA ops are on), else `adamw_step` for each.
/// # Shapes
/// - each item: `var`, `grad`, `m`, `v` of one shape
pub fn adamw_steps(items: &mut [AdamWItem<'_>]) -> Result<()> {
    #[cfg(feature = "cuda")]
    if !items.is_empty() && items.iter().all(|i| super::use_cuda_kernel(&[i.var.as_tensor(), i.grad, i.m, i.v]) && i.m.is_contiguous() && i.v.is_contiguous() && i.var.as_tensor().is_contiguous()) {
        return cuda::adamw_multi(items);
    }
    for i in items.iter_mut() {
        adamw_step(i.var, i.grad, i.m, i.v, i.step)?;
    }
    Ok(())
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::AdamWItem;
    use crate::ops::cuda::{self as gpu, CudaF32, Module};
    use candle_core::cuda_backend::cudarc::driver::{DevicePtr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{bail, Result};

    /// `struct AdamWTensor` of `adamw.cu`: 4 pointers, a length, lr and weight decay.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Entry {
        p: u64,
        m: u64,
        v: u64,
        g: u64,
        n: i64,
        lr: f32,
        weight_decay: f32,
    }

    pub(super) fn adamw_multi(items: &mut [AdamWItem<'_>]) -> Result<()> {
        let first = items[0].step;
        if items.iter().any(|i| {
            let s = i.step;
            (s.beta1, s.beta2, s.eps, s.bias_correction1, s.bias_correction2, s.grad_scale) != (first.beta1, first.beta2, first.eps, first.bias_correction1, first.bias_correction2, first.grad_scale)
        }) {
            bail!("adamw: one launch needs the same betas, eps, step and gradient scale for every variable");
        }
        let grads: Vec<_> = items.iter().map(|i| i.grad.contiguous()).collect::<Result<_>>()?;
        let views = items
            .iter()
            .zip(&grads)
            .map(|(i, g)| Ok((CudaF32::new(i.var.as_tensor(), "adamw")?, CudaF32::new(i.m, "adamw")?, CudaF32::new(i.v, "adamw")?, CudaF32::new(g, "adamw")?)))
            .collect::<Result<Vec<_>>>()?;
        let dev = views[0].0.device()?;
        let stream = dev.cuda_stream();
        let slices = views.iter().map(|(p, m, v, g)| Ok((p.view()?, m.view()?, v.view()?, g.view()?))).collect::<Result<Vec<_>>>()?;
        let mut guards = Vec::with_capacity(4 * slices.len());
        let mut table = Vec::with_capacity(slices.len());
        let mut longest = 0usize;
        for ((p, m, v, g), item) in slices.iter().zip(items.iter()) {
            if p.len() != g.len() || m.len() != g.len() || v.len() != g.len() {
                bail!("adamw: {} values, {} gradients, {} and {} moments", p.len(), g.len(), m.len(), v.len());
            }
            let mut ptrs = [0u64; 4];
            for (slot, s) in ptrs.iter_mut().zip([p, m, v, g]) {
                let (ptr, guard) = s.device_ptr(&stream);
                guards.push(guard);
                *slot = ptr;
            }
            let [pp, pm, pv, pg] = ptrs;
            longest = longest.max(p.len());
            table.push(Entry { p: pp, m: pm, v: pv, g: pg, n: p.len() as i64, lr: item.step.lr as f32, weight_decay: item.step.weight_decay as f32 });
        }
        // SAFETY: Entry is repr(C) plain data; its bytes are its fields.
        let bytes = unsafe { std::slice::from_raw_parts(table.as_ptr() as *const u8, std::mem::size_of_val(table.as_slice())) };
        let table_dev = dev.clone_htod(bytes)?;
        let f = gpu::func(&dev, Module::AdamW, "adamw_multi")?;
        let mut args = f.builder();
        let (b1, b2, eps, c1, c2, scale) = (first.beta1 as f32, first.beta2 as f32, first.eps as f32, first.bias_correction1 as f32, first.bias_correction2 as f32, first.grad_scale as f32);
        args.arg(&table_dev);
        args.arg(&b1);
        args.arg(&b2);
        args.arg(&eps);
        args.arg(&c1);
        args.arg(&c2);
        args.arg(&scale);
        let blocks = longest.div_ceil(gpu::THREADS as usize).clamp(1, 512) as u32;
        let cfg = LaunchConfig { grid_dim: (blocks, table.len() as u32, 1), block_dim: (gpu::THREADS, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: every table entry points into a live F32 buffer of n elements
        // (the guards above hold them until the launch is queued; the stream
        // orders later uses), and no other op touches these variables or
        // moments while the update runs: the optimiser owns them for the step.
        unsafe { args.launch(cfg) }.w()?;
        drop(guards);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::pseudo_random;

    #[test]
    fn in_place_update_matches_the_composition_over_steps() {
        let shape = [37usize, 5];
        let h = |t: i32| AdamWStep {
            lr: 0.01,
            weight_decay: 0.05,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            bias_correction1: 1.0 - 0.9f64.powi(t),
            bias_correction2: 1.0 - 0.95f64.powi(t),
            grad_scale: 0.7,
        };
        let init = pseudo_random(&shape, 1, 1.0);
        let (a, b) = (Var::from_tensor(&init).unwrap(), Var::from_tensor(&init).unwrap());
        let zeros = || init.zeros_like().unwrap();
        let (mut ma, mut va, mut mb, mut vb) = (zeros(), zeros(), zeros(), zeros());
        for t in 1..=5 {
            let g = pseudo_random(&shape, 10 + t as u64, 1.0);
            adamw_step(&a, &g, &mut ma, &mut va, h(t)).unwrap();
            composed(&b, &g, &mut mb, &mut vb, h(t)).unwrap();
        }
        let diff = crate::ops::fused_cpu::tests::max_diff;
        assert!(diff(a.as_tensor(), b.as_tensor()) < 1e-6, "values {}", diff(a.as_tensor(), b.as_tensor()));
        assert!(diff(&ma, &mb) < 1e-6 && diff(&va, &vb) < 1e-6, "moments");
        assert!(diff(a.as_tensor(), &init) > 1e-3, "the update moved the values");
    }
}
