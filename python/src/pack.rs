//! `srmae.pack`: the packer, with the options and errors of `srmae pack`.
//!
//! The pack runs on its own thread with the GIL released; the calling
//! thread checks for signals every `POLL`, and on Ctrl-C stops the pack
//! (its partial files are removed) and raises `KeyboardInterrupt`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyDict;
use srmae_datasets::format::manifest::SourceInfo;
use srmae_datasets::pack::options::parse_size;
use srmae_datasets::pack::packer::pack_with_stop;
use srmae_datasets::sources::{open_source, Source, SourceKind, SourceOptions, SourceRange};
use srmae_datasets::{Encoding, PackOptions, PackReport};

use crate::errors::{dataset_err, option_err};

const POLL: Duration = Duration::from_millis(100);

/// `shard_size=`: bytes as an int, or a size such as "256MiB" or "64M".
fn shard_bytes(obj: &Bound<'_, PyAny>) -> PyResult<u64> {
    if let Ok(n) = obj.extract::<u64>() {
        return Ok(n);
    }
    let s: String = obj.extract().map_err(|_| option_err("shard_size", "expected bytes (int) or a size such as \"256MiB\""))?;
    parse_size(&s).map_err(|e| option_err("shard_size", e))
}

/// Packs `source` into `out` (see `srmae pack --help`; the same options
/// with Python names). Returns a dict: `records`, `shards`, `bytes`,
/// `rejected` (a list of `{"input", "reason"}`), `seconds`, `out`.
///
/// >>> srmae.pack("/usr/share/datasets/fashion-mnist", "data/fmnist-train", split="train")
#[pyfunction]
#[pyo3(signature = (
    source, out, *, kind = "auto", split = "train", encoding = "auto", max_side = None, quality = 90,
    zstd_level = 9, shard_size = None, threads = 0, max_pixels = srmae_datasets::pack::options::DEFAULT_MAX_PIXELS,
    max_rejects = None, force = false, skip = 0, limit = None, val_labels = None, synsets = None, progress = true
))]
#[allow(clippy::too_many_arguments)]
pub fn pack<'py>(
    py: Python<'py>,
    source: PathBuf,
    out: PathBuf,
    kind: &str,
    split: &str,
    encoding: &str,
    max_side: Option<u32>,
    quality: u8,
    zstd_level: i32,
    shard_size: Option<&Bound<'py, PyAny>>,
    threads: usize,
    max_pixels: u64,
    max_rejects: Option<u64>,
    force: bool,
    skip: usize,
    limit: Option<usize>,
    val_labels: Option<PathBuf>,
    synsets: Option<PathBuf>,
    progress: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let kind = match kind {
        "auto" => SourceKind::detect(&source).map_err(dataset_err)?,
        k => SourceKind::parse(k).ok_or_else(|| option_err("kind", format!("{k:?} is not one of auto, imagenet, folder, idx, cifar10, cifar100, fer2013")))?,
    };
    let encoding = match encoding {
        "auto" => kind.default_encoding(),
        "jpeg" => Encoding::Jpeg,
        "raw" => Encoding::Raw,
        e => return Err(option_err("encoding", format!("{e:?} is not one of auto, jpeg, raw"))),
    };
    let opts = PackOptions {
        encoding,
        max_side,
        jpeg_quality: quality,
        zstd_level,
        shard_bytes: match shard_size {
            Some(s) if !s.is_none() => shard_bytes(s)?,
            _ => PackOptions::default().shard_bytes,
        },
        max_pixels,
        max_rejects,
        threads,
        overwrite: force,
        ..PackOptions::default()
    };
    opts.validate().map_err(|e| option_err("pack", e))?;
    let bar = if progress { indicatif::ProgressBar::new(0) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(
        indicatif::ProgressStyle::with_template("pack {bar:40} {pos}/{len} [{elapsed_precise}<{eta_precise}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let split = split.to_string();
    let job = {
        let (stop, bar, out) = (stop.clone(), bar.clone(), out.clone());
        // Sources are opened on the pack thread (a `Source` is shared by
        // the packer's workers, not sent between threads).
        std::thread::Builder::new()
            .name("srmae-pack".into())
            .spawn(move || {
                let opened = open_source(kind, &source, &SourceOptions { split: split.clone(), val_labels, synsets })?;
                let src: Box<dyn Source> = if skip > 0 || limit.is_some() { Box::new(SourceRange::new(opened, skip, limit)) } else { opened };
                bar.set_length(src.len() as u64);
                let info = SourceInfo { kind: src.kind().into(), path: source.display().to_string() };
                pack_with_stop(src.as_ref(), info, &split, &out, &opts, &|p| bar.set_position(p.items), &stop)
            })
            .map_err(|e| option_err("pack", format!("cannot start the pack thread: {e}")))?
    };
    let mut interrupted = None;
    while !job.is_finished() {
        py.detach(|| std::thread::sleep(POLL));
        if interrupted.is_none() {
            if let Err(e) = py.check_signals() {
                stop.store(true, Ordering::SeqCst);
                interrupted = Some(e);
            }
        }
    }
    bar.finish_and_clear();
    let result: Result<PackReport, srmae_datasets::Error> =
        job.join().map_err(|_| option_err("pack", "the pack thread panicked"))?;
    if let Some(e) = interrupted {
        return Err(e);
    }
    let report = result.map_err(dataset_err)?;
    let m = &report.manifest;
    let d = PyDict::new(py);
    d.set_item("records", m.num_records)?;
    d.set_item("shards", m.shards.len())?;
    d.set_item("bytes", m.shards.iter().map(|s| s.bytes).sum::<u64>())?;
    d.set_item("source_bytes", m.stats.source_bytes)?;
    d.set_item("rejected", pythonize::pythonize(py, &report.rejects)?)?;
    d.set_item("seconds", started.elapsed().as_secs_f64())?;
    d.set_item("out", report.out_dir)?;
    Ok(d)
}
