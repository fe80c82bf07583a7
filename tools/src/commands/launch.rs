//! `srmae launch`: a data-parallel job, one process per GPU (as torchrun),
//! on one machine or on each of `--nnodes` machines. Each process runs the
//! given `pretrain` / `finetune` command with `SRMAE_RANK`,
//! `SRMAE_WORLD_SIZE`, `SRMAE_LOCAL_RANK`, `SRMAE_LOCAL_WORLD_SIZE` and the
//! rendezvous set: an id file on one machine, `SRMAE_MASTER_ADDR` /
//! `SRMAE_MASTER_PORT` (TCP to rank 0) across machines. `--device cuda`
//! then means GPU `local rank`. The processes average their gradients every
//! step and read disjoint parts of the data; rank 0 writes the run
//! directory. torchrun and `srun` work as well, without this command
//! (`DistEnv::from_env`).
//!
//! If one process fails, the others are stopped and the launcher exits with
//! an error naming the rank. Ctrl-C reaches every process (same process
//! group); they agree on the step to stop at, rank 0 writes the checkpoint.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

#[derive(Args)]
#[command(after_help = "\
Examples:
  srmae launch --gpus 8 -- pretrain --recipe imagenet-vitb16-pretrain --data data/in1k-train --out runs/b16 --device cuda
  srmae launch --gpus 8 -- pretrain --out runs/b16 --device cuda --resume
  srmae launch --gpus 4 -- finetune --recipe imagenet-vitb16-finetune --init runs/b16/checkpoint.safetensors --out runs/b16-ft --device cuda
  # two machines, 8 GPUs each (run on both; node 0's address reachable from node 1):
  srmae launch --gpus 8 --nnodes 2 --node-rank 0 --master-addr 10.0.0.1 -- pretrain --out /shared/runs/b16 --device cuda
  srmae launch --gpus 8 --nnodes 2 --node-rank 1 --master-addr 10.0.0.1 -- pretrain --out /shared/runs/b16 --device cuda
  # the same with torchrun, or SLURM (export MASTER_ADDR in the batch script):
  torchrun --nnodes 2 --nproc-per-node 8 --rdzv-endpoint 10.0.0.1:29500 --no-python srmae pretrain --out /shared/runs/b16 --device cuda
  srun --ntasks-per-node 8 srmae pretrain --out /shared/runs/b16 --device cuda

The learning rate follows the effective batch: blr x batch_size x accum_iter x gpus / 256.
Needs a build with `--features nccl` for more than one process.")]
pub struct LaunchArgs {
    /// Number of processes, one per GPU of this machine.
    #[arg(long, value_name = "N")]
    pub gpus: usize,
    /// Machines in the job (run `srmae launch` once on each).
    #[arg(long, default_value_t = 1)]
    pub nnodes: usize,
    /// This machine's place among them (0 = the machine of rank 0).
    #[arg(long, default_value_t = 0)]
    pub node_rank: usize,
    /// Address of the machine with node rank 0 (needed with --nnodes > 1).
    #[arg(long)]
    pub master_addr: Option<String>,
    /// Port rank 0 serves the rendezvous on.
    #[arg(long, default_value_t = srmae_model::training::dist::DEFAULT_MASTER_PORT)]
    pub master_port: u16,
    /// Folder for the rendezvous file of a one-machine job (default: a fresh folder under the system temp dir).
    #[arg(long, value_name = "DIR")]
    pub rendezvous: Option<PathBuf>,
    /// The command each process runs: `pretrain ...` or `finetune ...` (after `--`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

pub fn run(a: LaunchArgs) -> Result<()> {
    if a.gpus == 0 || a.nnodes == 0 {
        bail!("--gpus and --nnodes must be at least 1");
    }
    if a.node_rank >= a.nnodes {
        bail!("--node-rank {} is not below --nnodes {}", a.node_rank, a.nnodes);
    }
    let master = match (&a.master_addr, a.nnodes) {
        (Some(addr), _) => Some(addr.clone()),
        (None, 1) => None,
        (None, _) => bail!("--nnodes {} needs --master-addr (the address of node rank 0)", a.nnodes),
    };
    match a.command.first().map(String::as_str) {
        Some("pretrain" | "finetune") => {}
        Some(other) => bail!("launch runs `pretrain` or `finetune`, not {other:?}"),
        None => bail!("launch needs a command after `--`"),
    }
    let dir = match &a.rendezvous {
        Some(d) => d.clone(),
        None => {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            std::env::temp_dir().join(format!("srmae-launch-{}-{nanos}", std::process::id()))
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let id_file = dir.join("nccl-id");
    // A stale id from an earlier job would send ranks to a dead rendezvous.
    let _ = std::fs::remove_file(&id_file);
    let exe = std::env::current_exe().context("finding the srmae executable")?;
    // The children handle Ctrl-C (they share our process group); we wait for them.
    let _ = ctrlc::set_handler(|| eprintln!("launch: interrupt passed to every rank"));
    let mut children: Vec<(usize, Child)> = Vec::with_capacity(a.gpus);
    for local in 0..a.gpus {
        let rank = a.node_rank * a.gpus + local;
        let mut cmd = Command::new(&exe);
        cmd.args(&a.command)
            .env("SRMAE_RANK", rank.to_string())
            .env("SRMAE_WORLD_SIZE", (a.nnodes * a.gpus).to_string())
            .env("SRMAE_LOCAL_RANK", local.to_string())
            .env("SRMAE_LOCAL_WORLD_SIZE", a.gpus.to_string());
        match &master {
            Some(addr) => cmd.env("SRMAE_MASTER_ADDR", addr).env("SRMAE_MASTER_PORT", a.master_port.to_string()),
            None => cmd.env("SRMAE_DIST_ID_FILE", &id_file),
        };
        let child = cmd.spawn().with_context(|| format!("starting rank {rank}"));
        match child {
            Ok(c) => children.push((rank, c)),
            Err(e) => {
                stop_all(&mut children);
                return Err(e);
            }
        }
    }
    let result = wait_all(&mut children);
    if a.rendezvous.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// Waits for every rank; on the first failure stops the rest.
fn wait_all(children: &mut Vec<(usize, Child)>) -> Result<()> {
    while !children.is_empty() {
        let mut failed: Option<(usize, ExitStatus)> = None;
        let mut i = 0;
        while i < children.len() {
            let (rank, child) = &mut children[i];
            match child.try_wait().with_context(|| format!("waiting for rank {rank}"))? {
                Some(status) => {
                    if !status.success() && failed.is_none() {
                        failed = Some((*rank, status));
                    }
                    children.remove(i);
                }
                None => i += 1,
            }
        }
        if let Some((rank, status)) = failed {
            stop_all(children);
            bail!("rank {rank} failed ({status}); the other ranks were stopped");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

fn stop_all(children: &mut Vec<(usize, Child)>) {
    for (_, c) in children.iter_mut() {
        let _ = c.kill();
    }
    for (_, c) in children.iter_mut() {
        let _ = c.wait();
    }
    children.clear();
}
