//! The global L2 norm of a set of gradients in one pass (clipping needs it
//! every step): squares summed in F64 per block of a fixed size, blocks in
//! parallel, added in order, so the norm does not depend on the thread
//! count. On CUDA (fused ops on) one launch over all tensors
//! (`sum_squares_partials` in `model/kernels/grad_norm.cu`, F64, fixed grid)
//! and one block adding the partials in order: deterministic, one read-back.
//! Elsewhere, per-tensor sums on the device and one read-back.

use candle_core::{Result, Tensor};
use rayon::prelude::*;

use super::cpu::CpuF32;

const BLOCK: usize = 16 * 1024;

fn sum_squares_cpu(t: &Tensor) -> Result<f64> {
    let t = t.contiguous()?;
    let view = CpuF32::new(&t, "grad-norm")?;
    let parts: Vec<f64> = view.slice()?.par_chunks(BLOCK).map(|c| c.iter().map(|&v| v as f64 * v as f64).sum::<f64>()).collect();
    Ok(parts.iter().sum())
}

/// `sqrt(Σ_t Σ_i t_i²)` over `grads`.
/// # Shapes
/// - any tensors -> a scalar
pub fn global_norm<'a>(grads: impl IntoIterator<Item = &'a Tensor>) -> Result<f64> {
    let grads: Vec<&Tensor> = grads.into_iter().collect();
    #[cfg(feature = "cuda")]
    if !grads.is_empty() && super::use_cuda_kernel(&grads) {
        return cuda::sum_squares(&grads).map(f64::sqrt);
    }
    let mut total = 0f64;
    let mut on_device: Option<Tensor> = None;
    for g in grads {
        if super::use_cpu_kernel(&[g]) {
            total += sum_squares_cpu(g)?;
        } else {
            let s = g.to_dtype(candle_core::DType::F32)?.sqr()?.sum_all()?;
            on_device = Some(match on_device {
                Some(acc) => (acc + s)?,
                None => s,
            });
        }
    }
    if let Some(t) = on_device {
        total += t.to_scalar::<f32>()? as f64;
    }
    Ok(total.sqrt())
}

#[cfg(feature = "cuda")]
mod cuda {
    use crate::ops::cuda::{self as gpu, CudaF32, Module};
    use candle_core::cuda_backend::cudarc::driver::{DevicePtr, LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::WrapErr;
    use candle_core::{Result, Tensor};

    /// Blocks per tensor (fixed: the order of additions depends on shapes only).
    const BLOCKS: u32 = 64;
    const THREADS: u32 = 256;

    /// `struct NormTensor` of `grad_norm.cu`.
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Entry {
        x: u64,
        n: i64,
    }

    pub(super) fn sum_squares(grads: &[&Tensor]) -> Result<f64> {
        let grads: Vec<Tensor> = grads.iter().map(|g| g.contiguous()).collect::<Result<_>>()?;
        let views = grads.iter().map(|g| CudaF32::new(g, "grad-norm")).collect::<Result<Vec<_>>>()?;
        let dev = views[0].device()?;
        let stream = dev.cuda_stream();
        let slices = views.iter().map(|v| v.view()).collect::<Result<Vec<_>>>()?;
        let mut guards = Vec::with_capacity(slices.len());
        let table: Vec<Entry> = slices
            .iter()
            .map(|s| {
                let (ptr, guard) = s.device_ptr(&stream);
                guards.push(guard);
                Entry { x: ptr, n: s.len() as i64 }
            })
            .collect();
        // SAFETY: Entry is repr(C) plain data; its bytes are its fields.
        let bytes = unsafe { std::slice::from_raw_parts(table.as_ptr() as *const u8, std::mem::size_of_val(table.as_slice())) };
        let table_dev = dev.clone_htod(bytes)?;
        let parts = table.len() * BLOCKS as usize;
        // SAFETY: the first kernel writes every one of the `parts` partials.
        let partial = unsafe { dev.alloc::<f64>(parts)? };
        let total = dev.alloc_zeros::<f64>(1)?;
        let f = gpu::func(&dev, Module::GradNorm, "sum_squares_partials")?;
        let mut args = f.builder();
        args.arg(&table_dev);
        args.arg(&partial);
        let cfg = LaunchConfig { grid_dim: (BLOCKS, table.len() as u32, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: every entry points into a live F32 buffer of n elements (guards held).
        unsafe { args.launch(cfg) }.w()?;
        let f = gpu::func(&dev, Module::GradNorm, "sum_partials")?;
        let mut args = f.builder();
        let n = parts as i64;
        args.arg(&partial);
        args.arg(&n);
        args.arg(&total);
        let cfg = LaunchConfig { grid_dim: (1, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 };
        // SAFETY: partial holds `parts` doubles, total one.
        unsafe { args.launch(cfg) }.w()?;
        drop(guards);
        Ok(dev.clone_dtoh(&total)?[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::testing::pseudo_random;

    #[test]
    fn matches_the_sum_of_squares() {
        let a = pseudo_random(&[300, 70], 1, 1.0);
        let b = pseudo_random(&[5], 2, 3.0);
        let want = ((a.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() + b.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()) as f64).sqrt();
        let got = global_norm([&a, &b]).unwrap();
        assert!((got - want).abs() < 1e-5 * want, "{got} vs {want}");
        assert_eq!(global_norm(std::iter::empty()).unwrap(), 0.0);
    }
}
