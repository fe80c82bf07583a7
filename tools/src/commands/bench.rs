//! `srmae bench`: speed measurements (never asserted in tests).
//!
//! `bench read` measures reading a packed dataset: raw record access, access
//! plus CRC-32C verification, and full decode, to show what checksums cost.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use rayon::prelude::*;
use srmae_datasets::format::decode::{decode_record, payload};
use srmae_datasets::PackedDataset;

/// Measure srmae's components.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  srmae bench read data/fmnist-train
  srmae bench read data/photos --threads 1 --limit 2000")]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Subcommand, Debug)]
enum BenchWhat {
    /// Read every record: access only, access + checksum, access + checksum + decode.
    Read {
        /// Packed dataset directory.
        dir: PathBuf,
        /// Threads (0: all cores).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Read at most this many records.
        #[arg(long)]
        limit: Option<u64>,
    },
}

pub fn run(a: BenchArgs) -> Result<()> {
    match a.what {
        BenchWhat::Read { dir, threads, limit } => bench_read(dir, threads, limit),
    }
}

fn bench_read(dir: PathBuf, threads: usize, limit: Option<u64>) -> Result<()> {
    let ds = PackedDataset::open(&dir).with_context(|| format!("opening {}", dir.display()))?;
    let n = limit.unwrap_or(u64::MAX).min(ds.len());
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    let time = |name: &str, f: &(dyn Fn(u64) -> srmae_datasets::Result<u64> + Sync)| -> Result<f64> {
        let t = Instant::now();
        let bytes: u64 = pool.install(|| (0..n).into_par_iter().map(f).sum::<srmae_datasets::Result<u64>>())?;
        let s = t.elapsed().as_secs_f64();
        println!(
            "{name:<28} {n} records in {s:.3}s: {:>10.0} records/s, {:>8.1} MB/s stored",
            n as f64 / s,
            bytes as f64 / s / 1e6
        );
        Ok(s)
    };
    let access = |i: u64| -> srmae_datasets::Result<u64> {
        let (s, local) = ds.locate(i)?;
        let r = ds.shards()[s].record(local, false)?;
        let mut buf = Vec::new();
        payload(&r, &mut buf)?;
        Ok(r.stored.len() as u64)
    };
    let checked = |i: u64| -> srmae_datasets::Result<u64> {
        let (s, local) = ds.locate(i)?;
        let r = ds.shards()[s].record(local, true)?;
        let mut buf = Vec::new();
        payload(&r, &mut buf)?;
        Ok(r.stored.len() as u64)
    };
    let decoded = |i: u64| -> srmae_datasets::Result<u64> {
        let (s, local) = ds.locate(i)?;
        let r = ds.shards()[s].record(local, true)?;
        decode_record(&r)?;
        Ok(r.stored.len() as u64)
    };
    time("warm-up (page cache)", &access)?;
    let a = time("payload", &access)?;
    let c = time("payload + crc32c", &checked)?;
    let d = time("payload + crc32c + decode", &decoded)?;
    println!(
        "checksum cost: {:.1}% of payload access, {:.2}% of a full decode (threads {})",
        (c - a) / a * 100.0,
        (c - a) / d * 100.0,
        pool.current_num_threads()
    );
    Ok(())
}
