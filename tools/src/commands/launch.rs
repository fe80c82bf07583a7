//! `srmae launch`: a data-parallel job on one machine, one process per GPU
//! (as torchrun). Each process runs the given `pretrain` / `finetune`
//! command with `SRMAE_RANK`, `SRMAE_WORLD_SIZE` and `SRMAE_DIST_ID_FILE`
//! set; `--device cuda` then means GPU `rank`. The processes find each other
//! through the id file (NCCL's unique id, published by rank 0), average
//! their gradients every step, and read disjoint parts of the data. Rank 0
//! writes the run directory.
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

The learning rate follows the effective batch: blr x batch_size x accum_iter x gpus / 256.
Needs a build with `--features nccl` for more than one process.")]
pub struct LaunchArgs {
    /// Number of processes, one per GPU of this machine.
    #[arg(long, value_name = "N")]
    pub gpus: usize,
    /// Folder for the rendezvous file (default: a fresh folder under the system temp dir).
    #[arg(long, value_name = "DIR")]
    pub rendezvous: Option<PathBuf>,
    /// The command each process runs: `pretrain ...` or `finetune ...` (after `--`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

pub fn run(a: LaunchArgs) -> Result<()> {
    if a.gpus == 0 {
        bail!("--gpus must be at least 1");
    }
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
    for rank in 0..a.gpus {
        let child = Command::new(&exe)
            .args(&a.command)
            .env("SRMAE_RANK", rank.to_string())
            .env("SRMAE_WORLD_SIZE", a.gpus.to_string())
            .env("SRMAE_DIST_ID_FILE", &id_file)
            .spawn()
            .with_context(|| format!("starting rank {rank}"));
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
