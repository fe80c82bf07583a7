//! Data-parallel training: one process per GPU, each on its own part of the
//! data (the loader's rank sharding), gradients averaged across processes
//! before every optimiser step, so all ranks apply the same update to the
//! same weights (as torch's DistributedDataParallel).
//!
//! The average is one NCCL all-reduce (`ncclAvg`) over a flat buffer of all
//! gradients plus a few control values ("was this rank interrupted?"), so
//! every rank also takes the same decision to stop, at the same step.
//! NCCL needs the `nccl` feature; with world size 1 (`GradSync::Local`)
//! nothing is exchanged and no feature is needed.
//!
//! Ranks find each other through a file: rank 0 creates NCCL's unique id and
//! writes it (temporary file + rename); the others wait for it. `srmae
//! launch` starts the processes and sets `SRMAE_RANK`, `SRMAE_WORLD_SIZE`
//! and `SRMAE_DIST_ID_FILE` (a fresh path per launch).

use std::path::PathBuf;

use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor, Var};

/// This process's place in a data-parallel job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistEnv {
    pub rank: usize,
    pub world_size: usize,
    /// Where rank 0 publishes the NCCL id (required when world_size > 1).
    pub id_file: Option<PathBuf>,
}

impl DistEnv {
    /// A single process.
    pub fn single() -> DistEnv {
        DistEnv { rank: 0, world_size: 1, id_file: None }
    }

    /// Reads `SRMAE_RANK`, `SRMAE_WORLD_SIZE`, `SRMAE_DIST_ID_FILE` (absent:
    /// a single process).
    pub fn from_env() -> Result<DistEnv> {
        let num = |key: &str| -> Result<Option<usize>> {
            match std::env::var(key) {
                Ok(v) => v.trim().parse::<usize>().map(Some).map_err(|_| candle_core::Error::msg(format!("{key}={v:?} is not a number"))),
                Err(_) => Ok(None),
            }
        };
        let world_size = num("SRMAE_WORLD_SIZE")?.unwrap_or(1);
        let rank = num("SRMAE_RANK")?.unwrap_or(0);
        if world_size == 0 || rank >= world_size {
            return Err(candle_core::Error::msg(format!("SRMAE_RANK={rank} is not below SRMAE_WORLD_SIZE={world_size}")));
        }
        let id_file = std::env::var_os("SRMAE_DIST_ID_FILE").map(PathBuf::from);
        if world_size > 1 && id_file.is_none() {
            return Err(candle_core::Error::msg("SRMAE_WORLD_SIZE > 1 needs SRMAE_DIST_ID_FILE (start the job with `srmae launch`)"));
        }
        Ok(DistEnv { rank, world_size, id_file })
    }

    pub fn is_main(&self) -> bool {
        self.rank == 0
    }
}

/// How gradients are combined across ranks.
pub enum GradSync {
    /// One process: nothing to exchange.
    Local,
    #[cfg(feature = "nccl")]
    Nccl(nccl::AllReduceMean),
}

impl GradSync {
    /// `Local` for world size 1, NCCL otherwise (on `dev`, a CUDA device).
    pub fn new(env: &DistEnv, dev: &Device) -> Result<GradSync> {
        if env.world_size == 1 {
            return Ok(GradSync::Local);
        }
        #[cfg(feature = "nccl")]
        {
            Ok(GradSync::Nccl(nccl::AllReduceMean::connect(env, dev)?))
        }
        #[cfg(not(feature = "nccl"))]
        {
            let _ = dev;
            Err(candle_core::Error::msg(format!(
                "world size {}: this srmae was built without NCCL (rebuild with `--features nccl`)",
                env.world_size
            )))
        }
    }

    pub fn world_size(&self) -> usize {
        match self {
            GradSync::Local => 1,
            #[cfg(feature = "nccl")]
            GradSync::Nccl(a) => a.world_size(),
        }
    }

    /// Replaces the gradients of `vars` in `grads` by their mean over ranks
    /// and returns the mean of `flags` (control values, e.g. 1.0 for
    /// "interrupted"). A variable without a gradient on this rank counts as
    /// a zero gradient, so every rank sends the same layout.
    pub fn average(&self, grads: &mut GradStore, vars: &[Var], flags: &[f32]) -> Result<Vec<f32>> {
        match self {
            GradSync::Local => {
                let _ = (grads, vars);
                Ok(flags.to_vec())
            }
            #[cfg(feature = "nccl")]
            GradSync::Nccl(op) => average_with(grads, vars, flags, |flat| flat.apply_op1_no_bwd(op)),
        }
    }
}

/// Flattens the gradients and flags into one `[N]` F32 buffer, reduces it
/// with `reduce`, and writes the results back. Shared by every backend so
/// that the packing is tested on the CPU.
pub fn average_with(grads: &mut GradStore, vars: &[Var], flags: &[f32], reduce: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Vec<f32>> {
    let Some(first) = vars.first() else { return Ok(flags.to_vec()) };
    let dev = first.device().clone();
    let mut parts = Vec::with_capacity(vars.len() + 1);
    for v in vars {
        let t = v.as_tensor();
        parts.push(match grads.get(t) {
            Some(g) => g.to_dtype(candle_core::DType::F32)?.flatten_all()?,
            None => Tensor::zeros(t.elem_count(), candle_core::DType::F32, &dev)?,
        });
    }
    parts.push(Tensor::from_slice(flags, flags.len(), &dev)?);
    let flat = Tensor::cat(&parts, 0)?.contiguous()?;
    let reduced = reduce(&flat)?;
    let mut offset = 0;
    for v in vars {
        let t = v.as_tensor();
        let n = t.elem_count();
        grads.insert(t, reduced.narrow(0, offset, n)?.reshape(t.shape())?.to_dtype(t.dtype())?);
        offset += n;
    }
    reduced.narrow(0, offset, flags.len())?.to_vec1::<f32>()
}

#[cfg(feature = "nccl")]
mod nccl {
    use std::io::Write;
    use std::time::{Duration, Instant};

    use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, ReduceOp};
    use candle_core::cuda_backend::CudaStorage;
    use candle_core::{CpuStorage, CustomOp1, Device, Error, Layout, Result, Shape};

    use super::DistEnv;

    /// How long ranks > 0 wait for rank 0's id file.
    const ID_WAIT: Duration = Duration::from_secs(300);

    /// An all-reduce with `ncclAvg` over a contiguous F32 buffer.
    pub struct AllReduceMean {
        comm: Comm,
    }

    // SAFETY: an NCCL communicator may be used from any thread as long as
    // calls on it do not overlap; the trainer issues every collective from
    // its one step thread, in the same order on every rank.
    unsafe impl Send for AllReduceMean {}
    unsafe impl Sync for AllReduceMean {}

    impl AllReduceMean {
        pub fn connect(env: &DistEnv, dev: &Device) -> Result<AllReduceMean> {
            let Device::Cuda(cuda) = dev else {
                return Err(Error::msg("data-parallel training needs a CUDA device (--device cuda)"));
            };
            let path = env.id_file.as_ref().ok_or_else(|| Error::msg("no SRMAE_DIST_ID_FILE"))?;
            let id = if env.is_main() {
                let id = Id::new().map_err(|e| Error::msg(format!("ncclGetUniqueId: {e:?}")))?;
                let bytes: Vec<u8> = id.internal().iter().map(|&c| c as u8).collect();
                let tmp = path.with_extension("tmp");
                let mut f = std::fs::File::create(&tmp).map_err(|e| Error::msg(format!("{}: {e}", tmp.display())))?;
                f.write_all(&bytes).and_then(|_| f.sync_all()).map_err(|e| Error::msg(format!("{}: {e}", tmp.display())))?;
                std::fs::rename(&tmp, path).map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
                id
            } else {
                let start = Instant::now();
                loop {
                    match std::fs::read(path) {
                        Ok(b) if b.len() == 128 => {
                            let mut internal = [0 as std::ffi::c_char; 128];
                            for (d, s) in internal.iter_mut().zip(&b) {
                                *d = *s as std::ffi::c_char;
                            }
                            break Id::uninit(internal);
                        }
                        _ if start.elapsed() > ID_WAIT => {
                            return Err(Error::msg(format!("rank {}: rank 0 did not publish {} within {ID_WAIT:?}", env.rank, path.display())))
                        }
                        _ => std::thread::sleep(Duration::from_millis(100)),
                    }
                }
            };
            let comm = Comm::from_rank(cuda.cuda_stream(), env.rank, env.world_size, id)
                .map_err(|e| Error::msg(format!("rank {} of {}: ncclCommInitRank: {e:?}", env.rank, env.world_size)))?;
            Ok(AllReduceMean { comm })
        }

        pub fn world_size(&self) -> usize {
            self.comm.world_size()
        }
    }

    impl CustomOp1 for AllReduceMean {
        fn name(&self) -> &'static str {
            "nccl-all-reduce-mean"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
            Err(Error::msg("the NCCL all-reduce needs CUDA tensors"))
        }

        /// # Shapes
        /// - `[N]` F32 -> `[N]` F32, the mean over ranks
        fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
            let (start, end) = l.contiguous_offsets().ok_or_else(|| Error::msg("all-reduce input must be contiguous"))?;
            let src = s.as_cuda_slice::<f32>()?.slice(start..end);
            let dev = s.device.clone();
            // SAFETY: every element is written by the all-reduce below.
            let mut dst = unsafe { dev.alloc::<f32>(end - start)? };
            self.comm.all_reduce(&src, &mut dst, &ReduceOp::Avg).map_err(|e| Error::msg(format!("ncclAllReduce: {e:?}")))?;
            Ok((CudaStorage::wrap_cuda_slice(dst, dev), l.shape().clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::DType;

    #[test]
    fn packing_round_trips_and_fills_missing_gradients() {
        let dev = Device::Cpu;
        let a = Var::from_tensor(&Tensor::zeros((2, 3), DType::F32, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::zeros(4, DType::F32, &dev).unwrap()).unwrap();
        let c = Var::from_tensor(&Tensor::zeros(2, DType::F32, &dev).unwrap()).unwrap();
        let loss = (a.as_tensor().sum_all().unwrap() * 2.0).unwrap() + (b.as_tensor().sum_all().unwrap() * 3.0).unwrap();
        let mut grads = loss.unwrap().backward().unwrap();
        let vars = [a.clone(), b.clone(), c.clone()];
        // A fake two-rank mean: the other rank's gradients are all 1.
        let flags = average_with(&mut grads, &vars, &[1.0, 0.0], |flat| {
            assert_eq!(flat.dims(), &[6 + 4 + 2 + 2]);
            (flat + 1.0)? / 2.0
        })
        .unwrap();
        assert_eq!(flags, vec![1.0, 0.5]);
        let get = |v: &Var| grads.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(get(&a), vec![1.5; 6]);
        assert_eq!(get(&b), vec![2.0; 4]);
        assert_eq!(get(&c), vec![0.5; 2], "a missing gradient counts as zero");
        assert_eq!(grads.get(a.as_tensor()).unwrap().dims(), &[2, 3]);
    }

    #[test]
    fn local_sync_is_the_identity() {
        let sync = GradSync::new(&DistEnv::single(), &Device::Cpu).unwrap();
        assert_eq!(sync.world_size(), 1);
        let v = Var::from_tensor(&Tensor::ones(3, DType::F32, &Device::Cpu).unwrap()).unwrap();
        let mut grads = v.as_tensor().sum_all().unwrap().backward().unwrap();
        assert_eq!(sync.average(&mut grads, &[v.clone()], &[0.0]).unwrap(), vec![0.0]);
        assert_eq!(grads.get(v.as_tensor()).unwrap().to_vec1::<f32>().unwrap(), vec![1.0; 3]);
    }

    #[cfg(not(feature = "nccl"))]
    #[test]
    fn world_size_two_without_nccl_is_a_clear_error() {
        let env = DistEnv { rank: 0, world_size: 2, id_file: Some("/tmp/x".into()) };
        let err = GradSync::new(&env, &Device::Cpu).err().expect("refused").to_string();
        assert!(err.contains("without NCCL"), "{err}");
    }
}
