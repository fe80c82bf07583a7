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
//! Ranks find each other through `rendezvous`: rank 0 creates NCCL's unique
//! id and serves it over TCP (torchrun, SLURM, multi-node `srmae launch`) or
//! writes it to a file (`srmae launch` on one machine); `DistEnv::from_env`
//! reads whichever launcher started the process.

use std::path::PathBuf;

use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor, Var};

/// How the ranks exchange NCCL's id (`rendezvous`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rendezvous {
    /// One process: nothing to exchange.
    None,
    /// Rank 0 writes the id to this file (`srmae launch` on one machine).
    File(PathBuf),
    /// Rank 0 serves the id at `host:port` (torchrun, SLURM, multi-node launch).
    Tcp(String),
}

/// This process's place in a data-parallel job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistEnv {
    pub rank: usize,
    pub world_size: usize,
    /// The rank among the processes of this machine (its GPU for `--device cuda`).
    pub local_rank: usize,
    /// Processes on this machine (they share its cores: `thread_budget`).
    pub local_world_size: usize,
    pub rendezvous: Rendezvous,
}

/// The port rank 0 listens on when `MASTER_PORT` is not set (torchrun's default).
pub const DEFAULT_MASTER_PORT: u16 = 29500;

impl DistEnv {
    /// A single process.
    pub fn single() -> DistEnv {
        DistEnv { rank: 0, world_size: 1, local_rank: 0, local_world_size: 1, rendezvous: Rendezvous::None }
    }

    /// The job this process belongs to, from the environment of the first
    /// launcher that set one (absent: a single process):
    /// - `srmae launch`: `SRMAE_RANK`, `SRMAE_WORLD_SIZE`, `SRMAE_LOCAL_RANK`,
    ///   `SRMAE_LOCAL_WORLD_SIZE`, and `SRMAE_DIST_ID_FILE` or
    ///   `SRMAE_MASTER_ADDR` / `SRMAE_MASTER_PORT`;
    /// - torchrun: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`,
    ///   `MASTER_ADDR`, `MASTER_PORT`;
    /// - SLURM (`srun`): `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`,
    ///   `SLURM_NTASKS_PER_NODE`, with `MASTER_ADDR` (and `MASTER_PORT`)
    ///   exported by the batch script.
    pub fn from_env() -> Result<DistEnv> {
        DistEnv::from_vars(|k| std::env::var(k).ok())
    }

    /// `from_env` over any variable lookup (tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<DistEnv> {
        let num = |key: &str| -> Result<Option<usize>> {
            match var(key) {
                // SLURM writes counts per node as "4(x2)" when they repeat.
                Some(v) => v.trim().split('(').next().unwrap_or("").parse::<usize>().map(Some).map_err(|_| candle_core::Error::msg(format!("{key}={v:?} is not a number"))),
                None => Ok(None),
            }
        };
        // (rank, world, local rank, local world, master address, master port) variable names.
        let launchers: [(&str, [&str; 6]); 3] = [
            ("srmae launch", ["SRMAE_RANK", "SRMAE_WORLD_SIZE", "SRMAE_LOCAL_RANK", "SRMAE_LOCAL_WORLD_SIZE", "SRMAE_MASTER_ADDR", "SRMAE_MASTER_PORT"]),
            ("torchrun", ["RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"]),
            ("SLURM", ["SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE", "MASTER_ADDR", "MASTER_PORT"]),
        ];
        let Some((who, keys)) = launchers.iter().find(|(_, k)| var(k[1]).is_some()) else { return Ok(DistEnv::single()) };
        let world_size = num(keys[1])?.unwrap_or(1);
        let rank = num(keys[0])?.unwrap_or(0);
        if world_size == 0 || rank >= world_size {
            return Err(candle_core::Error::msg(format!("{who}: {}={rank} is not below {}={world_size}", keys[0], keys[1])));
        }
        let local_rank = num(keys[2])?.unwrap_or(rank);
        let local_world_size = num(keys[3])?.unwrap_or(world_size).max(1);
        if world_size == 1 {
            return Ok(DistEnv { rank, world_size, local_rank: 0, local_world_size: 1, rendezvous: Rendezvous::None });
        }
        let rendezvous = match (var(keys[4]), var("SRMAE_DIST_ID_FILE")) {
            (Some(addr), _) => {
                let port = num(keys[5])?.unwrap_or(DEFAULT_MASTER_PORT as usize);
                Rendezvous::Tcp(format!("{}:{port}", addr.trim()))
            }
            (None, Some(f)) if *who == "srmae launch" => Rendezvous::File(PathBuf::from(f)),
            _ => {
                return Err(candle_core::Error::msg(format!(
                    "{who}: world size {world_size} needs {} (the host of rank 0) to exchange NCCL's id",
                    keys[4]
                )))
            }
        };
        Ok(DistEnv { rank, world_size, local_rank, local_world_size, rendezvous })
    }

    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// Threads each process of this machine may use: its cores divided by
    /// the local processes (at least 1), so that 8 ranks do not each start a
    /// thread per core.
    pub fn thread_budget(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / self.local_world_size.max(1)).max(1)
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
    use std::time::Duration;

    use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, ReduceOp};
    use candle_core::cuda_backend::CudaStorage;
    use candle_core::{CpuStorage, CustomOp1, Device, Error, Layout, Result, Shape};

    use super::{DistEnv, Rendezvous};
    use crate::training::rendezvous::{join, listen, publish_file, read_file, serve, ID_BYTES};

    /// How long ranks wait for each other at the rendezvous.
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
            let id = if env.is_main() {
                let id = Id::new().map_err(|e| Error::msg(format!("ncclGetUniqueId: {e:?}")))?;
                let bytes: [u8; ID_BYTES] = std::array::from_fn(|i| id.internal()[i] as u8);
                match &env.rendezvous {
                    Rendezvous::File(path) => publish_file(path, &bytes).map_err(Error::wrap)?,
                    Rendezvous::Tcp(addr) => {
                        let listener = listen(addr).map_err(Error::wrap)?;
                        serve(&listener, env.world_size, &bytes, ID_WAIT).map_err(Error::wrap)?;
                    }
                    Rendezvous::None => return Err(Error::msg("world size > 1 without a rendezvous")),
                }
                id
            } else {
                let bytes = match &env.rendezvous {
                    Rendezvous::File(path) => read_file(path, env.rank, ID_WAIT).map_err(Error::wrap)?,
                    Rendezvous::Tcp(addr) => join(addr, env.rank, ID_WAIT).map_err(Error::wrap)?,
                    Rendezvous::None => return Err(Error::msg("world size > 1 without a rendezvous")),
                };
                let mut internal = [0 as std::ffi::c_char; ID_BYTES];
                for (d, s) in internal.iter_mut().zip(&bytes) {
                    *d = *s as std::ffi::c_char;
                }
                Id::uninit(internal)
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

    fn env_of(vars: &[(&str, &str)]) -> Result<DistEnv> {
        let map: std::collections::HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        DistEnv::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn torchrun_slurm_and_launch_environments() {
        assert_eq!(env_of(&[]).unwrap(), DistEnv::single());
        let t = env_of(&[("RANK", "5"), ("WORLD_SIZE", "8"), ("LOCAL_RANK", "1"), ("LOCAL_WORLD_SIZE", "4"), ("MASTER_ADDR", "node0"), ("MASTER_PORT", "1234")]).unwrap();
        assert_eq!(t, DistEnv { rank: 5, world_size: 8, local_rank: 1, local_world_size: 4, rendezvous: Rendezvous::Tcp("node0:1234".into()) });
        let s = env_of(&[("SLURM_PROCID", "3"), ("SLURM_NTASKS", "4"), ("SLURM_LOCALID", "1"), ("SLURM_NTASKS_PER_NODE", "2(x2)"), ("MASTER_ADDR", "n1")]).unwrap();
        assert_eq!(s, DistEnv { rank: 3, world_size: 4, local_rank: 1, local_world_size: 2, rendezvous: Rendezvous::Tcp(format!("n1:{DEFAULT_MASTER_PORT}")) });
        let l = env_of(&[("SRMAE_RANK", "1"), ("SRMAE_WORLD_SIZE", "2"), ("SRMAE_DIST_ID_FILE", "/tmp/id")]).unwrap();
        assert_eq!(l.rendezvous, Rendezvous::File("/tmp/id".into()));
        assert_eq!((l.local_rank, l.local_world_size), (1, 2));
        // srmae launch's variables win over a surrounding SLURM allocation's.
        let both = env_of(&[("SRMAE_RANK", "0"), ("SRMAE_WORLD_SIZE", "1"), ("SLURM_PROCID", "3"), ("SLURM_NTASKS", "4")]).unwrap();
        assert_eq!(both, DistEnv::single());
        let err = env_of(&[("RANK", "0"), ("WORLD_SIZE", "2")]).unwrap_err().to_string();
        assert!(err.contains("torchrun") && err.contains("MASTER_ADDR"), "{err}");
        let err = env_of(&[("RANK", "2"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "x")]).unwrap_err().to_string();
        assert!(err.contains("RANK=2 is not below WORLD_SIZE=2"), "{err}");
        let four_local = DistEnv { local_world_size: 4, ..t };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(four_local.thread_budget(), (cores / 4).max(1));
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
        let env = DistEnv { rank: 0, world_size: 2, local_rank: 0, local_world_size: 2, rendezvous: Rendezvous::File("/tmp/x".into()) };
        let err = GradSync::new(&env, &Device::Cpu).err().expect("refused").to_string();
        assert!(err.contains("without NCCL"), "{err}");
    }
}
