//! Source readers: each turns a dataset in its native layout into an ordered
//! list of items (file bytes or pixels, plus a label) for the packer.
//!
//! Item order and class order are deterministic (sorted), so that packing the
//! same input twice gives the same shards.

pub mod cifar;
pub mod fer2013;
pub mod folder;
pub mod idx;
pub mod imagenet;

#[cfg(test)]
mod proptests;

use std::path::Path;

use crate::error::{Error, Result};

/// The pixels or file bytes of one input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// An encoded image file (JPEG, PNG, WebP, ...), as read from disk.
    File(Vec<u8>),
    /// Decoded u8 pixels, HWC, 1 or 3 channels.
    Pixels {
        width: u32,
        height: u32,
        channels: u8,
        data: Vec<u8>,
    },
}

/// One input to pack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceItem {
    pub label: Option<u32>,
    pub payload: Payload,
}

/// A dataset in its native layout.
pub trait Source: Sync {
    /// Reader name recorded in the manifest (`imagenet`, `folder`, ...).
    fn kind(&self) -> &'static str;
    /// Class index -> name.
    fn classes(&self) -> &[String];
    /// Number of items (including ones that will turn out invalid).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A name for item `i` that a user can find (a path, or `file#record`).
    fn name(&self, i: usize) -> String;
    /// Loads item `i`; `Err` carries the reason it cannot be packed.
    fn load(&self, i: usize) -> std::result::Result<SourceItem, String>;
    /// Inputs found while listing that can never be packed (unreadable
    /// folders, loops), as (name, reason).
    fn listing_rejects(&self) -> &[(String, String)] {
        &[]
    }
}

/// Which reader to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    ImageNet,
    Folder,
    Idx,
    Cifar10,
    Cifar100,
    Fer2013,
}

impl SourceKind {
    pub fn parse(s: &str) -> Option<SourceKind> {
        Some(match s {
            "imagenet" => SourceKind::ImageNet,
            "folder" | "imagefolder" => SourceKind::Folder,
            "idx" | "mnist" | "fashion-mnist" => SourceKind::Idx,
            "cifar10" => SourceKind::Cifar10,
            "cifar100" => SourceKind::Cifar100,
            "fer2013" => SourceKind::Fer2013,
            _ => return None,
        })
    }

    /// The record encoding `auto` means: raw pixels for sources that store
    /// pixels (IDX, CIFAR, FER2013), the original JPEG bytes for image files.
    pub fn default_encoding(self) -> crate::Encoding {
        match self {
            SourceKind::Idx | SourceKind::Cifar10 | SourceKind::Cifar100 | SourceKind::Fer2013 => crate::Encoding::Raw,
            SourceKind::ImageNet | SourceKind::Folder => crate::Encoding::Jpeg,
        }
    }

    /// Guesses the reader from what `path` holds.
    pub fn detect(path: &Path) -> Result<SourceKind> {
        if path.is_file() {
            let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
            if name.ends_with(".csv") {
                return Ok(SourceKind::Fer2013);
            }
            if name.contains("idx3-ubyte") {
                return Ok(SourceKind::Idx);
            }
            return Err(Error::source(path, "cannot tell the source kind of this file; pass --kind"));
        }
        let has = |n: &str| path.join(n).exists();
        let names = folder::dir_names(path)?;
        if names.iter().any(|n| n.contains("idx3-ubyte")) {
            Ok(SourceKind::Idx)
        } else if has("data_batch_1.bin") || has("test_batch.bin") {
            Ok(SourceKind::Cifar10)
        } else if has("train.bin") && has("test.bin") {
            Ok(SourceKind::Cifar100)
        } else if path.join("train").is_dir() && path.join("val").is_dir() {
            Ok(SourceKind::ImageNet)
        } else {
            Ok(SourceKind::Folder)
        }
    }
}

/// Options a source may need beyond its path.
#[derive(Clone, Debug, Default)]
pub struct SourceOptions {
    /// `train`, `val` or `test` (meaning depends on the source).
    pub split: String,
    /// ImageNet flat val: LOC_val_solution.csv or ILSVRC2012_validation_ground_truth.txt.
    pub val_labels: Option<std::path::PathBuf>,
    /// ImageNet: the devkit synset order (one wnid per line, ILSVRC2012_ID order).
    pub synsets: Option<std::path::PathBuf>,
}

/// Opens the source at `path`.
pub fn open_source(kind: SourceKind, path: &Path, opts: &SourceOptions) -> Result<Box<dyn Source>> {
    Ok(match kind {
        SourceKind::ImageNet => Box::new(imagenet::open(path, opts)?),
        SourceKind::Folder => Box::new(folder::ImageFolder::open(path)?),
        SourceKind::Idx => Box::new(idx::IdxSource::open(path, &opts.split)?),
        SourceKind::Cifar10 => Box::new(cifar::CifarSource::open(path, false, &opts.split)?),
        SourceKind::Cifar100 => Box::new(cifar::CifarSource::open(path, true, &opts.split)?),
        SourceKind::Fer2013 => Box::new(fer2013::Fer2013Source::open(path, &opts.split)?),
    })
}

/// Reads a whole file, bounded: a file larger than `limit` is refused.
pub(crate) fn read_bounded(path: &Path, limit: u64) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let meta = f.metadata().map_err(|e| format!("cannot stat: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > limit {
        return Err(format!("{} bytes, over the {limit}-byte file limit", meta.len()));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    f.take(limit + 1).read_to_end(&mut buf).map_err(|e| format!("read failed: {e}"))?;
    if buf.len() as u64 > limit {
        return Err(format!("grew past the {limit}-byte file limit while reading"));
    }
    Ok(buf)
}

/// Items `start..start + len` of another source (a subset, or a held-out
/// part of a split: `srmae pack --skip/--limit`).
pub struct SourceRange {
    inner: Box<dyn Source>,
    start: usize,
    len: usize,
}

impl SourceRange {
    /// Clamps the range to the source.
    pub fn new(inner: Box<dyn Source>, skip: usize, limit: Option<usize>) -> SourceRange {
        let start = skip.min(inner.len());
        let len = limit.unwrap_or(usize::MAX).min(inner.len() - start);
        SourceRange { inner, start, len }
    }
}

impl Source for SourceRange {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn classes(&self) -> &[String] {
        self.inner.classes()
    }
    fn len(&self) -> usize {
        self.len
    }
    fn name(&self, i: usize) -> String {
        self.inner.name(self.start + i)
    }
    fn load(&self, i: usize) -> std::result::Result<SourceItem, String> {
        self.inner.load(self.start + i)
    }
    fn listing_rejects(&self) -> &[(String, String)] {
        self.inner.listing_rejects()
    }
}
