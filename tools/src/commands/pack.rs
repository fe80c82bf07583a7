//! `srmae pack`: source dataset -> shards + manifest.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use srmae_datasets::format::manifest::SourceInfo;
use srmae_datasets::sources::{open_source, SourceKind, SourceOptions};
use srmae_datasets::{Encoding, PackOptions};

use srmae_train::progress::{human_bytes, items_bar, parse_size};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum KindArg {
    Auto,
    Imagenet,
    Folder,
    Idx,
    Cifar10,
    Cifar100,
    Fer2013,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum EncodingArg {
    /// raw for pixel sources (IDX, CIFAR, FER2013), jpeg for image files
    Auto,
    Jpeg,
    Raw,
}

/// Pack a dataset into zstd-compressed, memory-mappable shards.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  # Fashion-MNIST from Debian's dataset-fashion-mnist (raw u8 pixels, zstd)
  srmae pack /usr/share/datasets/fashion-mnist data/fmnist-train --split train
  srmae pack /usr/share/datasets/fashion-mnist data/fmnist-test --split test
  # a 10,000-image subset, and a held-out validation part of train
  srmae pack /usr/share/datasets/fashion-mnist data/fmnist-10k --split train --limit 10000
  srmae pack /usr/share/datasets/fashion-mnist data/fmnist-holdout --split train --skip 55000
  # ImageNet train, original JPEG bytes, 8 threads
  srmae pack /data/imagenet data/in1k-train --kind imagenet --split train --threads 8
  # ImageNet val (Kaggle flat layout), images shrunk to a longer side of 320
  srmae pack /data/imagenet data/in1k-val --split val --max-side 320 \\
      --val-labels /data/LOC_val_solution.csv
  # any ImageFolder tree, raw pixels, at most 10 bad files tolerated
  srmae pack photos/ data/photos --kind folder --encoding raw --max-side 64 --max-rejects 10

Bad inputs are skipped and listed with reasons in OUT/rejects.json; the manifest is
written last, so an interrupted pack never leaves a complete-looking directory.")]
pub struct PackArgs {
    /// Source: a folder (ImageNet root, ImageFolder root, IDX or CIFAR folder) or a file
    /// (IDX images file, FER2013 CSV).
    source: PathBuf,
    /// Output directory for the shards and manifest.json.
    out: PathBuf,
    /// Source reader; `auto` guesses from what SOURCE holds.
    #[arg(long, value_enum, default_value = "auto")]
    kind: KindArg,
    /// Split to pack: train, val or test (IDX and CIFAR: train/test; FER2013: all three).
    #[arg(long, default_value = "train")]
    split: String,
    /// Record encoding.
    #[arg(long, value_enum, default_value = "auto")]
    encoding: EncodingArg,
    /// Shrink images whose longer side exceeds this many pixels (bicubic, antialiased).
    #[arg(long)]
    max_side: Option<u32>,
    /// JPEG quality for images that must be re-encoded (1-100).
    #[arg(long, default_value_t = 90)]
    quality: u8,
    /// zstd compression level (1-22).
    #[arg(long, default_value_t = 9)]
    zstd_level: i32,
    /// Target shard size (e.g. 256MiB, 64M).
    #[arg(long, default_value = "256MiB", value_parser = parse_size)]
    shard_size: u64,
    /// Worker threads (0: all cores). The output does not depend on it.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Reject images with more pixels than this (before decoding them).
    #[arg(long, default_value_t = srmae_datasets::pack::options::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
    /// Abort if more than this many inputs are rejected (default: no bound).
    #[arg(long)]
    max_rejects: Option<u64>,
    /// ImageNet flat val folder: LOC_val_solution.csv or ILSVRC2012_validation_ground_truth.txt.
    #[arg(long)]
    val_labels: Option<PathBuf>,
    /// ImageNet: devkit synset order, one wnid per line (needed with the ground-truth file).
    #[arg(long)]
    synsets: Option<PathBuf>,
    /// Replace an existing packed dataset in OUT.
    #[arg(long)]
    force: bool,
    /// Leave out the first N inputs of the split (in the source's order).
    #[arg(long, default_value_t = 0)]
    skip: usize,
    /// Pack at most N inputs (after --skip): a subset, or with --skip a
    /// held-out part (e.g. --limit 55000 and --skip 55000).
    #[arg(long)]
    limit: Option<usize>,
}

pub fn run(a: PackArgs) -> Result<()> {
    let kind = match a.kind {
        KindArg::Auto => SourceKind::detect(&a.source).context("detecting the source kind")?,
        KindArg::Imagenet => SourceKind::ImageNet,
        KindArg::Folder => SourceKind::Folder,
        KindArg::Idx => SourceKind::Idx,
        KindArg::Cifar10 => SourceKind::Cifar10,
        KindArg::Cifar100 => SourceKind::Cifar100,
        KindArg::Fer2013 => SourceKind::Fer2013,
    };
    let encoding = match a.encoding {
        EncodingArg::Auto => kind.default_encoding(),
        EncodingArg::Jpeg => Encoding::Jpeg,
        EncodingArg::Raw => Encoding::Raw,
    };
    let opts = PackOptions {
        encoding,
        max_side: a.max_side,
        jpeg_quality: a.quality,
        zstd_level: a.zstd_level,
        shard_bytes: a.shard_size,
        max_pixels: a.max_pixels,
        max_rejects: a.max_rejects,
        threads: a.threads,
        overwrite: a.force,
        ..PackOptions::default()
    };
    opts.validate().map_err(anyhow::Error::msg).context("checking pack options")?;
    let sopts = SourceOptions {
        split: a.split.clone(),
        val_labels: a.val_labels.clone(),
        synsets: a.synsets.clone(),
    };
    let source = open_source(kind, &a.source, &sopts)
        .with_context(|| format!("opening source {}", a.source.display()))?;
    let source: Box<dyn srmae_datasets::sources::Source> = if a.skip > 0 || a.limit.is_some() {
        Box::new(srmae_datasets::sources::SourceRange::new(source, a.skip, a.limit))
    } else {
        source
    };
    tracing::info!(
        "packing {} inputs of {} ({} source, {} classes) into {} as {}",
        source.len(),
        a.source.display(),
        source.kind(),
        source.classes().len(),
        a.out.display(),
        encoding.name()
    );
    let bar = items_bar(source.len() as u64, "pack");
    // First Ctrl-C: stop after the current chunk and remove the partial
    // files; second: exit at once (partial files stay until the next pack).
    let _ = ctrlc::set_handler(|| {
        static ONCE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if ONCE.swap(true, std::sync::atomic::Ordering::SeqCst) {
            eprintln!("second interrupt: exiting; partial shards stay until the next pack into this directory");
            std::process::exit(130);
        }
        eprintln!("interrupt: stopping the pack and removing its partial files (Ctrl-C again to exit now)");
        srmae_datasets::pack::packer::request_stop();
    });
    let started = Instant::now();
    let info = SourceInfo {
        kind: source.kind().into(),
        path: a.source.display().to_string(),
    };
    let report = srmae_datasets::pack(source.as_ref(), info, &a.split, &a.out, &opts, &|p| {
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        bar.set_position(p.items);
        bar.set_message(format!("{:.0} img/s, {:.1} MB/s", p.items as f64 / secs, p.source_bytes as f64 / secs / 1e6));
    })
    .with_context(|| format!("packing {} into {}", a.source.display(), a.out.display()))?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let m = &report.manifest;
    let shard_bytes: u64 = m.shards.iter().map(|s| s.bytes).sum();
    for r in report.rejects.iter().take(10) {
        tracing::warn!("rejected {}: {}", r.input, r.reason);
    }
    if report.rejects.len() > 10 {
        tracing::warn!("... and {} more, listed in {}", report.rejects.len() - 10, a.out.join("rejects.json").display());
    }
    println!(
        "packed {} records into {} shards ({}; source {}, ratio {:.3}) in {:.1}s: {:.0} img/s, {:.1} MB/s; {} rejected{}",
        m.num_records,
        m.shards.len(),
        human_bytes(shard_bytes),
        human_bytes(m.stats.source_bytes),
        shard_bytes as f64 / m.stats.source_bytes.max(1) as f64,
        secs,
        m.num_records as f64 / secs,
        m.stats.source_bytes as f64 / secs / 1e6,
        report.rejects.len(),
        if report.rejects.is_empty() { String::new() } else { format!(" (see {})", a.out.join("rejects.json").display()) }
    );
    Ok(())
}
