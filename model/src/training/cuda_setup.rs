//! Process-wide CUDA settings for training, applied once per device when it
//! is opened (`tune_device`).
//!
//! - **A caching memory pool.** candle allocates every tensor with
//!   `cuMemAllocAsync` from the device's default pool, whose release
//!   threshold is 0: at every synchronisation (the loss and gradient-norm
//!   read-back each step) the driver unmaps all freed memory, and the next
//!   step maps it again — tens of GB per step for ViT-B, whose autograd graph
//!   keeps every intermediate alive. Like PyTorch's caching allocator, we keep
//!   freed memory in the pool (release threshold = u64::MAX).
//! - **No per-tensor event tracking.** cudarc records a CUDA event on every
//!   read and write of a buffer so that several streams can share it; srmae
//!   runs every kernel, upload and NCCL all-reduce of a process on the
//!   device's one stream, so the events only add driver calls.
//!
//! `SRMAE_CUDA_POOL=0` and `SRMAE_CUDA_EVENTS=1` turn either off (to measure
//! what it buys, or to rule it out).

use candle_core::{Device, Result};

/// What `tune_device` changed, for the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CudaTuning {
    pub caching_pool: bool,
    pub event_tracking_off: bool,
}

fn env_flag(name: &str, default: bool) -> bool {
    match std::env::var(name) {
        Ok(v) => !matches!(v.trim(), "0" | "false" | "off" | "no"),
        Err(_) => default,
    }
}

/// Applies the settings above to a CUDA device (a no-op on the CPU).
/// Call it right after opening the device, before any tensor lives on it.
pub fn tune_device(dev: &Device) -> Result<CudaTuning> {
    let pool = env_flag("SRMAE_CUDA_POOL", true);
    let events = env_flag("SRMAE_CUDA_EVENTS", false);
    tune(dev, pool, !events)
}

#[cfg(feature = "cuda")]
fn tune(dev: &Device, pool: bool, events_off: bool) -> Result<CudaTuning> {
    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    let Device::Cuda(cuda) = dev else { return Ok(CudaTuning::default()) };
    let mut done = CudaTuning::default();
    let ctx = cuda.cuda_stream().context().clone();
    if pool && ctx.has_async_alloc() {
        ctx.bind_to_thread().map_err(candle_core::Error::wrap)?;
        // SAFETY: the device handle comes from a live context; the attribute
        // RELEASE_THRESHOLD takes a cuuint64_t.
        unsafe {
            let p = result::device::get_default_mem_pool(ctx.cu_device()).map_err(candle_core::Error::wrap)?;
            let mut keep: u64 = u64::MAX;
            result::mem_pool::set_attribute(
                p,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                &mut keep as *mut u64 as *mut std::ffi::c_void,
            )
            .map_err(candle_core::Error::wrap)?;
        }
        done.caching_pool = true;
    }
    if events_off {
        // SAFETY: srmae uses one stream per device (kernels, uploads and NCCL
        // all run on `cuda_stream()`), so stream order alone orders every use.
        unsafe { cuda.disable_event_tracking() };
        done.event_tracking_off = true;
    }
    Ok(done)
}

#[cfg(not(feature = "cuda"))]
fn tune(_dev: &Device, _pool: bool, _events_off: bool) -> Result<CudaTuning> {
    Ok(CudaTuning::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_left_alone() {
        assert_eq!(tune_device(&Device::Cpu).unwrap(), CudaTuning::default());
    }
}
