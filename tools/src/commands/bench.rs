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
use srmae_datasets::format::manifest::SourceInfo;
use srmae_datasets::sources::{Payload, Source, SourceItem};
use srmae_datasets::{PackOptions, PackedDataset};
use srmae_pipeline::{Loader, LoaderConfig, PatchConfig};
use std::sync::Arc;

/// Measure srmae's components.
#[derive(Args, Debug)]
#[command(after_help = "\
Examples:
  srmae bench read data/fmnist-train
  srmae bench step --batch 16
  srmae bench step --model base --device cuda --precision bf16 --batch 256 --fit
  srmae bench read data/photos --threads 1 --limit 2000
  srmae bench loader data/photos --threads 2 --batch 64 --size 224 --mode srmae
  srmae bench synth /tmp/synth-1m --records 1000000 && srmae bench loader /tmp/synth-1m --size 28 --patch 4 --channels 1
  srmae bench loader data/fmnist-train --size 28 --patch 4 --channels 1 --mode mae --json
  # a configuration saved from Python (json.dump(srmae.Loader(...).config, f)), batches dumped
  srmae bench loader data/fmnist-test --config loader.json --batches 3 --warmup 0 --dump /tmp/batches")]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LoaderMode {
    /// SRMAE clues (75% selected, 4x area downsampling) + RandomResizedCrop
    Srmae,
    /// MAE random masking + RandomResizedCrop
    Mae,
    /// SimMIM block masks + RandomResizedCrop
    Simmim,
    /// BEiT blockwise masks + RandomResizedCrop
    Beit,
    /// RandomResizedCrop only
    Crop,
    /// MAE's fine-tuning transform: RandomResizedCrop (0.08-1) + flip +
    /// RandAugment rand-m9-mstd0.5-inc1 + random erasing 0.25 (as timm's
    /// create_transform; mixup/cutmix run after loading in MAE, so not here)
    Finetune,
    /// Evaluation transform (resize + centre crop), sequential order
    Eval,
}

#[derive(Subcommand, Debug)]
enum BenchWhat {
    /// Time SRMAE training steps (forward + backward + AdamW) on synthetic
    /// batches at 224, ViT-Ti/16 or ViT-B/16, CPU or GPU, F32 or BF16
    /// (compare: model/reference/bench_step.py).
    Step(super::bench_step::StepArgs),
    /// Time each building block of a step (linear, LayerNorm, GELU, softmax,
    /// attention, MLP, block, token gather, SR head), forward and
    /// forward+backward, synchronised: where a slow step spends its time.
    ///
    ///   srmae bench ops --device cuda --batch 64 --precision bf16
    Ops(super::bench_ops::OpsArgs),
    /// Pack a synthetic raw dataset (for memory and scale checks of the loader).
    Synth {
        /// Output directory.
        out: PathBuf,
        /// Number of records.
        #[arg(long, default_value_t = 1_000_000)]
        records: u64,
        /// Image side (grey, raw).
        #[arg(long, default_value_t = 28)]
        size: u32,
    },
    /// Stream batches through the loader: images/s, per-stage time, queue depth, peak RSS.
    Loader {
        /// Packed dataset directory.
        dir: PathBuf,
        /// Worker threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Output image side.
        #[arg(long, default_value_t = 224)]
        size: u32,
        /// Patch side.
        #[arg(long, default_value_t = 16)]
        patch: usize,
        #[arg(long, value_enum, default_value = "srmae")]
        mode: LoaderMode,
        /// Batches to time (default: one epoch).
        #[arg(long)]
        batches: Option<u64>,
        /// Untimed batches first (page cache, allocations).
        #[arg(long, default_value_t = 4)]
        warmup: u64,
        /// Decode whole JPEGs (no DCT scaling, no region decode).
        #[arg(long)]
        full_decode: bool,
        /// libjpeg-turbo fast IDCT + fast chroma upsampling (as FFCV).
        #[arg(long)]
        fast_decode: bool,
        /// Output channels (1 or 3).
        #[arg(long, default_value_t = 3)]
        channels: u8,
        /// Print one JSON line instead of a table.
        #[arg(long)]
        json: bool,
        /// Take the whole loader configuration from this JSON file (a
        /// `LoaderConfig`, e.g. `srmae.Loader(...).config` from Python)
        /// instead of --mode and the options above.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also write every batch's fields, raw little-endian, to
        /// DIR/e{epoch}-b{index}.{field}.bin (to compare loaders batch for batch).
        #[arg(long)]
        dump: Option<PathBuf>,
    },
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
        BenchWhat::Synth { out, records, size } => synth(out, records, size),
        BenchWhat::Step(a) => super::bench_step::run(a),
        BenchWhat::Ops(a) => super::bench_ops::run(a),
        BenchWhat::Loader {
            dir,
            threads,
            batch,
            size,
            patch,
            mode,
            batches,
            warmup,
            full_decode,
            fast_decode,
            channels,
            json,
            config,
            dump,
        } => {
            if let Some(path) = config {
                let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
                let cfg: LoaderConfig = serde_json::from_str(&text).with_context(|| format!("{}: not a loader configuration", path.display()))?;
                return bench_loader(dir, cfg, batches, warmup, "config", json, dump.as_deref());
            }
            let mut cfg = match mode {
                LoaderMode::Eval => LoaderConfig::eval(size, batch),
                LoaderMode::Finetune => {
                    let (mean, std) = ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225]);
                    LoaderConfig {
                        augment: srmae_pipeline::Augment::RandomResizedCrop { size, scale: (0.08, 1.0), ratio: (0.75, 4.0 / 3.0), hflip: 0.5 },
                        randaugment: Some(srmae_pipeline::RandAugment::parse("rand-m9-mstd0.5-inc1", &mean).map_err(anyhow::Error::msg)?),
                        erasing: Some(srmae_pipeline::RandomErasing::new(0.25, &mean, &std)),
                        ..LoaderConfig::pretrain(size, patch, batch)
                    }
                }
                _ => LoaderConfig::pretrain(size, patch, batch),
            };
            cfg.patch = match mode {
                LoaderMode::Srmae => PatchConfig::srmae(patch),
                LoaderMode::Mae => PatchConfig::MaeRandom { patch, mask_ratio: 0.75 },
                LoaderMode::Simmim => PatchConfig::SimMimBlocks { mask_patch: 32, model_patch: patch, mask_ratio: 0.6 },
                LoaderMode::Beit => PatchConfig::BeitBlockwise {
                    patch,
                    num_masking_patches: ((size as usize / patch).pow(2) * 2) / 5,
                    min_num_patches: 16,
                    min_aspect: 0.3,
                },
                LoaderMode::Crop | LoaderMode::Eval | LoaderMode::Finetune => PatchConfig::None,
            };
            cfg.threads = threads;
            cfg.partial_decode = !full_decode;
            cfg.fast_decode = fast_decode;
            cfg.channels = channels;
            bench_loader(dir, cfg, batches, warmup, &format!("{mode:?}").to_lowercase(), json, dump.as_deref())
        }
    }
}

/// Grey images with a per-record gradient and noise, 10 classes.
struct SynthSource {
    n: u64,
    side: u32,
    classes: Vec<String>,
}

impl Source for SynthSource {
    fn kind(&self) -> &'static str {
        "synthetic"
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn len(&self) -> usize {
        self.n as usize
    }
    fn name(&self, i: usize) -> String {
        format!("synthetic#{i}")
    }
    fn load(&self, i: usize) -> std::result::Result<SourceItem, String> {
        let s = self.side as usize;
        let mut x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let data = (0..s * s)
            .map(|p| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (((p % s) * 255 / s) as u64 / 2 + (x & 63) + (i as u64 % 10) * 6) as u8
            })
            .collect();
        Ok(SourceItem {
            label: Some((i % 10) as u32),
            payload: Payload::Pixels {
                width: self.side,
                height: self.side,
                channels: 1,
                data,
            },
        })
    }
}

fn synth(out: PathBuf, records: u64, size: u32) -> Result<()> {
    let source = SynthSource {
        n: records,
        side: size,
        classes: (0..10).map(|c| c.to_string()).collect(),
    };
    let info = SourceInfo {
        kind: "synthetic".into(),
        path: "-".into(),
    };
    let opts = PackOptions {
        encoding: srmae_datasets::Encoding::Raw,
        zstd_level: 3,
        overwrite: true,
        ..PackOptions::default()
    };
    let bar = srmae_train::progress::items_bar(records, "synth");
    let r = srmae_datasets::pack(&source, info, "train", &out, &opts, &|p| bar.set_position(p.items))?;
    bar.finish_and_clear();
    println!("packed {} synthetic {size}x{size} records into {} shards at {}", r.manifest.num_records, r.manifest.shards.len(), out.display());
    Ok(())
}

/// Writes each field of `b` to `dir/e{epoch}-b{index}.{field}.bin`.
fn dump_batch(dir: &std::path::Path, b: &srmae_pipeline::Batch) -> Result<()> {
    fn le<T: Copy, const N: usize>(v: &[T], f: fn(T) -> [u8; N]) -> Vec<u8> {
        v.iter().flat_map(|&x| f(x)).collect()
    }
    let fields: [(&str, Vec<u8>); 10] = [
        ("images", b.images().to_vec()),
        ("labels", le(b.labels(), u32::to_le_bytes)),
        ("sample_ids", le(b.sample_ids(), u64::to_le_bytes)),
        ("visible", le(b.visible(), u32::to_le_bytes)),
        ("clue_ids", le(b.clue_ids(), u32::to_le_bytes)),
        ("clue_pixels", b.clue_pixels().to_vec()),
        ("hidden", le(b.hidden(), u32::to_le_bytes)),
        ("restore", le(b.restore(), u32::to_le_bytes)),
        ("mask", b.mask().to_vec()),
        ("soft_labels", le(b.soft_labels(), f32::to_le_bytes)),
    ];
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, bytes) in fields {
        let path = dir.join(format!("e{}-b{:05}.{name}.bin", b.epoch, b.index));
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn bench_loader(dir: PathBuf, cfg: LoaderConfig, batches: Option<u64>, warmup: u64, mode: &str, json: bool, dump: Option<&std::path::Path>) -> Result<()> {
    let ds = Arc::new(PackedDataset::open(&dir).with_context(|| format!("opening {}", dir.display()))?);
    let threads = cfg.threads;
    let mut epoch = 0;
    let make = |epoch: u64| Loader::new(ds.clone(), LoaderConfig { epoch, ..cfg.clone() });
    let mut loader = make(epoch)?;
    let per_epoch = loader.num_batches();
    anyhow::ensure!(per_epoch > 0, "{} has fewer records than one batch", dir.display());
    let timed = batches.unwrap_or(per_epoch);
    let mut next = |loader: &mut Loader| -> Result<usize> {
        loop {
            if let Some(b) = loader.next() {
                let b = b?;
                if let Some(d) = dump {
                    dump_batch(d, &b)?;
                }
                return Ok(b.len);
            }
            epoch += 1;
            *loader = make(epoch)?;
        }
    };
    for _ in 0..warmup {
        next(&mut loader)?;
    }
    let before = loader.metrics();
    let bar = srmae_train::progress::items_bar(timed, "loader");
    let t = Instant::now();
    let mut images = 0u64;
    for _ in 0..timed {
        images += next(&mut loader)? as u64;
        bar.inc(1);
    }
    let secs = t.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let m = loader.metrics();
    let rate = images as f64 / secs;
    // Stage busy time of the timed part (same epoch's loader, or the whole of a later one).
    let d = |a: f64, b: f64| if a >= b { a - b } else { a };
    let stages = [
        ("fetch", d(m.fetch_s, before.fetch_s)),
        ("decompress", d(m.decompress_s, before.decompress_s)),
        ("decode", d(m.decode_s, before.decode_s)),
        ("crop+resize+flip", d(m.augment_s, before.augment_s)),
        ("patch transform", d(m.patch_s, before.patch_s)),
        ("worker idle", d(m.worker_idle_s, before.worker_idle_s)),
    ];
    if json {
        let mut v = serde_json::json!({
            "loader": "srmae", "mode": mode, "threads": threads, "batch": cfg.batch_size, "size": cfg.augment.size(),
            "partial_decode": cfg.partial_decode, "fast_decode": cfg.fast_decode, "images": images, "seconds": secs, "images_per_s": rate,
            "consumer_wait_s": d(m.consumer_wait_s, before.consumer_wait_s), "mean_queue_depth": m.mean_queue_depth,
            "corrupt_skipped": m.corrupt_skipped, "jpeg_fallbacks": m.jpeg_fallbacks, "peak_rss_mib": m.peak_rss_mib,
        });
        for (name, s) in stages {
            v[format!("{}_s", name.replace(['+', ' '], "_"))] = serde_json::json!(s);
        }
        println!("{v}");
        return Ok(());
    }
    println!(
        "{mode}: {images} images in {secs:.2}s = {rate:.0} images/s ({:.0} per thread), {threads} threads, batch {}, {}px, {} decode",
        rate / threads.max(1) as f64,
        cfg.batch_size,
        cfg.augment.size(),
        if cfg.partial_decode { "partial" } else { "full" }
    );
    let busy: f64 = stages.iter().map(|s| s.1).sum();
    for (name, s) in stages {
        println!("  {name:<18} {s:>8.2} thread-s  {:>5.1}%", 100.0 * s / busy.max(1e-9));
    }
    println!(
        "  consumer waited {:.2}s ({:.1}% of wall); mean ready-queue depth {:.1}; corrupt skipped {}; peak RSS {:.0} MiB",
        d(m.consumer_wait_s, before.consumer_wait_s),
        100.0 * d(m.consumer_wait_s, before.consumer_wait_s) / secs,
        m.mean_queue_depth,
        m.corrupt_skipped,
        m.peak_rss_mib
    );
    Ok(())
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
    // One record: payload only, payload with its checksum, or a full decode.
    let read = |i: u64, verify: bool, decode: bool| -> srmae_datasets::Result<u64> {
        let (s, local) = ds.locate(i)?;
        let r = ds.shards()[s].record(local, verify)?;
        if decode {
            decode_record(&r)?;
        } else {
            payload(&r, &mut Vec::new())?;
        }
        Ok(r.stored.len() as u64)
    };
    let access = |i| read(i, false, false);
    let checked = |i| read(i, true, false);
    let decoded = |i| read(i, true, true);
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
