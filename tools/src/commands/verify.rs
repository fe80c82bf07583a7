//! `srmae verify`: every checksum and structural invariant, every shard.
//! Keeps going past failures and lists each one; exits non-zero if any.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use rayon::prelude::*;
use srmae_datasets::format::decode::{decode_record, payload};
use srmae_datasets::format::manifest::{Manifest, ShardInfo};
use srmae_datasets::format::reader::Shard;

use srmae_train::progress::items_bar;

/// Verify a packed dataset: whole-file and per-record checksums, index and
/// manifest consistency, payload lengths; with --decode, decode every image.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  srmae verify data/fmnist-train
  srmae verify data/in1k-val --decode --threads 8

Exit status: 0 when everything checks, 1 when any problem was found (each is printed).")]
pub struct VerifyArgs {
    /// Packed dataset directory (holds manifest.json).
    dir: PathBuf,
    /// Also decode every record fully (slower; catches damage checksums cannot, e.g. a
    /// JPEG that was already broken at pack time by a bug).
    #[arg(long)]
    decode: bool,
    /// Worker threads (0: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

/// Problems printed per shard before the rest are counted only.
const MAX_LISTED_PER_SHARD: usize = 1000;

/// Checks one shard; returns its problems.
fn check_shard(dir: &std::path::Path, info: &ShardInfo, n_classes: usize, decode: bool) -> Vec<String> {
    let path = dir.join(&info.file);
    let shard = match Shard::open(&path) {
        Ok(s) => s,
        Err(e) => return vec![e.to_string()],
    };
    let mut problems = Vec::new();
    let crc = format!("{:08x}", crc32c::crc32c(shard.bytes()));
    if crc != info.crc32c {
        problems.push(format!("shard {}: whole-file crc32c {crc}, manifest says {}", path.display(), info.crc32c));
    }
    if shard.bytes().len() as u64 != info.bytes {
        problems.push(format!("shard {}: {} bytes, manifest says {}", path.display(), shard.bytes().len(), info.bytes));
    }
    let h = shard.header();
    if h.first_record != info.first || h.record_count != info.count {
        problems.push(format!(
            "shard {}: holds records {}+{}, manifest says {}+{}",
            path.display(),
            h.first_record,
            h.record_count,
            info.first,
            info.count
        ));
    }
    if let Err(e) = shard.check_padding() {
        problems.push(e.to_string());
    }
    let mut buf = Vec::new();
    for i in 0..shard.len() {
        let rec = match shard.record(i, true) {
            Ok(r) => r,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        if let Some(l) = rec.entry.label() {
            if l as usize >= n_classes {
                problems.push(rec.error(format!("label {l} but only {n_classes} classes")).to_string());
            }
        }
        let checked = if decode { decode_record(&rec).map(|_| ()) } else { payload(&rec, &mut buf).map(|_| ()) };
        if let Err(e) = checked.and_then(|()| shard.check_intact(i)) {
            problems.push(e.to_string());
        }
    }
    if shard.faults() > 0 || shard.file_size_now() != h.file_len {
        problems.insert(
            0,
            format!(
                "shard {}: changed size while being verified ({} bytes now, {} when opened): truncated or being re-copied",
                path.display(),
                shard.file_size_now(),
                h.file_len
            ),
        );
    }
    problems
}

pub fn run(a: VerifyArgs) -> Result<()> {
    let m = Manifest::read(&a.dir).with_context(|| format!("reading the manifest of {}", a.dir.display()))?;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(a.threads).build()?;
    let bar = items_bar(m.shards.len() as u64, "verify");
    let results: Vec<Vec<String>> = pool.install(|| {
        m.shards
            .par_iter()
            .map(|info| {
                let p = check_shard(&a.dir, info, m.classes.len(), a.decode);
                bar.inc(1);
                p
            })
            .collect()
    });
    bar.finish_and_clear();
    let mut n = 0;
    for (info, problems) in m.shards.iter().zip(&results) {
        for p in problems.iter().take(MAX_LISTED_PER_SHARD) {
            println!("FAIL {p}");
        }
        if problems.len() > MAX_LISTED_PER_SHARD {
            println!("FAIL ... and {} more problems in {}", problems.len() - MAX_LISTED_PER_SHARD, info.file);
        }
        n += problems.len();
    }
    if n > 0 {
        bail!("{}: {n} problems found", a.dir.display());
    }
    println!(
        "ok: {} records in {} shards, all checksums and invariants hold{}",
        m.num_records,
        m.shards.len(),
        if a.decode { ", every record decodes" } else { "" }
    );
    Ok(())
}
