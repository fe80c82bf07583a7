//! The packer: reads a source in parallel, encodes records, and writes shards
//! and the manifest. Items are processed in fixed-size chunks whose results
//! are consumed in item order, so shard boundaries and bytes do not depend on
//! the thread count. Shards are renamed into place when complete and the
//! manifest is written last: a directory with a manifest is a complete pack.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::encode::{encode_item, Encoded};
use super::options::PackOptions;
use crate::error::{Error, Result};
use crate::format::manifest::{
    Manifest, PackStats, ShardInfo, SourceInfo, MANIFEST_FILE, MANIFEST_FORMAT, MANIFEST_VERSION,
};
use crate::format::writer::{tmp_path, write_shard, StoredRecord};
use crate::sources::Source;

/// File listing the inputs that were skipped, with reasons.
pub const REJECTS_FILE: &str = "rejects.json";
/// Items encoded per parallel chunk, per thread.
const CHUNK_PER_THREAD: usize = 32;

/// One skipped input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    pub input: String,
    pub reason: String,
}

/// What a pack did.
#[derive(Debug)]
pub struct PackReport {
    pub manifest: Manifest,
    pub rejects: Vec<Reject>,
    /// Files skipped for a non-image extension (folder sources).
    pub out_dir: PathBuf,
}

/// Progress so far: inputs processed and their source bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct PackProgress {
    pub items: u64,
    pub source_bytes: u64,
    pub total_items: u64,
}

/// Shard file name of shard `n`.
pub fn shard_file_name(n: usize) -> String {
    format!("shard-{n:05}.srs")
}

/// The lock file a pack holds in its output directory (an advisory `flock`,
/// released by the kernel when the process ends, however it ends).
pub const LOCK_FILE: &str = ".srmae-pack.lock";

static STOP: AtomicBool = AtomicBool::new(false);

/// Asks running packs to stop after their current chunk: they remove their
/// partial files and return `Error::Interrupted` (the `srmae pack` Ctrl-C
/// handler calls it).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Takes the output directory's pack lock, or says who holds it.
fn lock_out_dir(out: &Path) -> Result<File> {
    let path = out.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Busy { path: out.to_path_buf(), lock: path }),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

/// Whether `name` is a file a pack writes (shards, rejects, temporaries).
fn is_pack_file(name: &str) -> bool {
    (name.starts_with("shard-") && (name.ends_with(".srs") || name.ends_with(".srs.tmp")))
        || name == REJECTS_FILE
        || name.ends_with(".json.tmp")
}

/// Removes the files of an unfinished pack (after an error: a directory
/// without a manifest is incomplete, and its shards would only fill the disk).
fn remove_pack_files(out: &Path) -> Result<()> {
    let rd = std::fs::read_dir(out).map_err(|e| Error::io(out, e))?;
    for ent in rd.filter_map(|e| e.ok()) {
        if is_pack_file(&ent.file_name().to_string_lossy()) {
            match std::fs::remove_file(ent.path()) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(ent.path(), e)),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Makes `out` (created and locked by the caller) ready: refuses to
/// overwrite a complete pack unless allowed, and removes the old manifest
/// first so the directory never looks complete while it holds a mix of old
/// and new shards.
fn prepare_out_dir(out: &Path, overwrite: bool) -> Result<()> {
    let manifest = out.join(MANIFEST_FILE);
    if manifest.exists() {
        if !overwrite {
            return Err(Error::InvalidOption(format!(
                "{} already holds a packed dataset; pass --force to replace it",
                out.display()
            )));
        }
        std::fs::remove_file(&manifest).map_err(|e| Error::io(&manifest, e))?;
    }
    remove_pack_files(out)
}

/// Writes `bytes` to `path` atomically (temporary name, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = tmp_path(path);
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Accumulates records into shards and writes each when full.
struct ShardSink<'a> {
    out: &'a Path,
    target_bytes: u64,
    pending: Vec<StoredRecord>,
    pending_bytes: u64,
    next_record: u64,
    shards: Vec<ShardInfo>,
}

impl ShardSink<'_> {
    fn push(&mut self, rec: StoredRecord) -> Result<()> {
        let len = rec.stored.len() as u64;
        if !self.pending.is_empty() && self.pending_bytes + len > self.target_bytes {
            self.flush()?;
        }
        self.pending_bytes += len;
        self.pending.push(rec);
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let file = shard_file_name(self.shards.len());
        let written = write_shard(&self.out.join(&file), self.next_record, &self.pending)?;
        let count = self.pending.len() as u64;
        self.shards.push(ShardInfo {
            file,
            first: self.next_record,
            count,
            bytes: written.bytes,
            crc32c: format!("{:08x}", written.crc32c),
        });
        self.next_record += count;
        self.pending.clear();
        self.pending_bytes = 0;
        Ok(())
    }
}

/// Packs `source` into `out`. `progress` is called after each chunk.
///
/// One pack at a time per directory (a lock file, `LOCK_FILE`). A pack that
/// fails (any error: a full disk, a bad source, `request_stop`) removes the
/// shards and temporary files it wrote before returning the error; a
/// directory with a manifest is never left half-written.
pub fn pack(
    source: &dyn Source,
    info: SourceInfo,
    split: &str,
    out: &Path,
    opts: &PackOptions,
    progress: &(dyn Fn(PackProgress) + Sync),
) -> Result<PackReport> {
    pack_with_stop(source, info, split, out, opts, progress, &STOP)
}

/// `pack` with its own stop flag, for callers that run several packs or
/// stop one from their own interrupt handling (the Python binding; tests).
/// `pack` uses the process-wide flag that `request_stop` sets.
pub fn pack_with_stop(
    source: &dyn Source,
    info: SourceInfo,
    split: &str,
    out: &Path,
    opts: &PackOptions,
    progress: &(dyn Fn(PackProgress) + Sync),
    stop: &AtomicBool,
) -> Result<PackReport> {
    opts.validate().map_err(Error::InvalidOption)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let _lock = lock_out_dir(out)?;
    prepare_out_dir(out, opts.overwrite)?;
    let result = pack_locked(source, info, split, out, opts, progress, stop);
    if result.is_err() {
        // Best effort: the pack's own error is the one to report.
        let _ = remove_pack_files(out);
    }
    result
}

fn pack_locked(
    source: &dyn Source,
    info: SourceInfo,
    split: &str,
    out: &Path,
    opts: &PackOptions,
    progress: &(dyn Fn(PackProgress) + Sync),
    stop: &AtomicBool,
) -> Result<PackReport> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads)
        .build()
        .map_err(|e| Error::InvalidOption(format!("thread pool: {e}")))?;
    let mut rejects: Vec<Reject> = source
        .listing_rejects()
        .iter()
        .map(|(input, reason)| Reject {
            input: input.clone(),
            reason: reason.clone(),
        })
        .collect();
    let mut stats = PackStats::default();
    let mut sink = ShardSink {
        out,
        target_bytes: opts.shard_bytes,
        pending: Vec::new(),
        pending_bytes: 0,
        next_record: 0,
        shards: Vec::new(),
    };
    let chunk = CHUNK_PER_THREAD * pool.current_num_threads().max(1);
    let total = source.len();
    let mut done = PackProgress {
        total_items: total as u64,
        ..Default::default()
    };
    let check_rejects = |rejects: &[Reject]| -> Result<()> {
        match opts.max_rejects {
            Some(max) if rejects.len() as u64 > max => Err(Error::TooManyRejects {
                rejected: rejects.len() as u64,
                max,
                first: format!("{}: {}", rejects[0].input, rejects[0].reason),
            }),
            _ => Ok(()),
        }
    };
    check_rejects(&rejects)?;
    for start in (0..total).step_by(chunk) {
        if stop.load(Ordering::SeqCst) {
            return Err(Error::Interrupted { path: out.to_path_buf() });
        }
        let end = (start + chunk).min(total);
        let results: Vec<std::result::Result<Encoded, String>> = pool.install(|| {
            (start..end)
                .into_par_iter()
                .map(|i| source.load(i).and_then(|item| encode_item(item, opts)))
                .collect()
        });
        for (i, r) in (start..end).zip(results) {
            match r {
                Ok(enc) => {
                    let rec = enc.record;
                    stats.source_bytes += enc.source_bytes;
                    stats.stored_bytes += rec.stored.len() as u64;
                    stats.pixel_bytes += rec.width as u64 * rec.height as u64 * rec.channels as u64;
                    *stats.per_encoding.entry(rec.encoding.name().to_string()).or_default() += 1;
                    stats.reencoded += (rec.flags & crate::format::layout::FLAG_REENCODED != 0) as u64;
                    stats.zstd += (rec.flags & crate::format::layout::FLAG_ZSTD != 0) as u64;
                    done.source_bytes += enc.source_bytes;
                    sink.push(rec)?;
                }
                Err(reason) => rejects.push(Reject {
                    input: source.name(i),
                    reason,
                }),
            }
        }
        check_rejects(&rejects)?;
        done.items = end as u64;
        progress(done);
    }
    sink.flush()?;
    if sink.next_record == 0 {
        return Err(Error::InvalidOption(format!(
            "nothing to pack: {total} inputs, {} rejected",
            rejects.len()
        )));
    }
    let rejects_json = serde_json::to_string_pretty(&rejects).expect("rejects serialise") + "\n";
    write_atomic(&out.join(REJECTS_FILE), rejects_json.as_bytes())?;
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        format_version: MANIFEST_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        source: info,
        split: split.into(),
        num_records: sink.next_record,
        classes: source.classes().to_vec(),
        options: serde_json::to_value(opts).expect("options serialise"),
        shards: sink.shards,
        stats,
        rejected: rejects.len() as u64,
    };
    write_atomic(&out.join(MANIFEST_FILE), manifest.to_json().as_bytes())?;
    sync_dir(out);
    Ok(PackReport {
        manifest,
        rejects,
        out_dir: out.to_path_buf(),
    })
}

/// Makes the renames durable (best effort: not every filesystem allows it).
fn sync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::{Payload, SourceItem};

    /// `n` grey 32x32 images of noise (so shards fill quickly).
    struct Noise {
        n: usize,
        classes: Vec<String>,
    }

    impl Source for Noise {
        fn kind(&self) -> &'static str {
            "noise"
        }
        fn classes(&self) -> &[String] {
            &self.classes
        }
        fn len(&self) -> usize {
            self.n
        }
        fn name(&self, i: usize) -> String {
            format!("noise-{i}")
        }
        fn load(&self, i: usize) -> std::result::Result<SourceItem, String> {
            let data = (0..1024u64).map(|k| ((k * 2654435761 + i as u64 * 40503) >> 7) as u8).collect();
            Ok(SourceItem { label: Some(0), payload: Payload::Pixels { width: 32, height: 32, channels: 1, data } })
        }
        fn listing_rejects(&self) -> &[(String, String)] {
            &[]
        }
    }

    fn opts() -> PackOptions {
        PackOptions { threads: 1, shard_bytes: 4096, ..PackOptions::default() }
    }

    fn info() -> SourceInfo {
        SourceInfo { kind: "noise".into(), path: "-".into() }
    }

    /// Stopped after its first chunk (several shards already complete), a
    /// pack removes every shard and temporary file it wrote.
    #[test]
    fn a_stopped_pack_removes_what_it_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let stop = AtomicBool::new(false);
        let progress = |_: PackProgress| {
            stop.store(true, Ordering::SeqCst);
        };
        let source = Noise { n: 4 * CHUNK_PER_THREAD, classes: vec!["a".into()] };
        let err = pack_with_stop(&source, info(), "train", &out, &opts(), &progress, &stop).unwrap_err();
        assert!(matches!(err, Error::Interrupted { .. }), "{err}");
        let left: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != LOCK_FILE)
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        // Unstopped, the same pack completes, in several shards.
        let report = pack_with_stop(&source, info(), "train", &out, &opts(), &|_| {}, &AtomicBool::new(false)).unwrap();
        assert!(report.manifest.shards.len() > 2);
    }

    #[test]
    fn a_locked_directory_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let source = Noise { n: 10, classes: vec!["a".into()] };
        pack(&source, info(), "train", &out, &opts(), &|_| {}).unwrap();
        let held = lock_out_dir(&out).unwrap();
        let again = PackOptions { overwrite: true, ..opts() };
        let err = pack(&source, info(), "train", &out, &again, &|_| {}).unwrap_err();
        assert!(matches!(err, Error::Busy { .. }), "{err}");
        assert!(out.join(MANIFEST_FILE).exists(), "the refused pack touched the complete one");
        drop(held);
        pack(&source, info(), "train", &out, &again, &|_| {}).unwrap();
    }
}
