//! `manifest.json`: the description of a packed dataset, written last so that
//! a directory with a manifest is a complete one.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Manifest format identifier.
pub const MANIFEST_FORMAT: &str = "srmae-shards";
/// Manifest version this code writes and reads.
pub const MANIFEST_VERSION: u32 = 1;
/// File name of the manifest inside a packed dataset directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// A manifest larger than this is refused rather than read.
const MAX_MANIFEST_BYTES: u64 = 256 << 20;

/// Where the records came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// Source reader: imagenet, folder, idx, cifar10, cifar100, fer2013.
    pub kind: String,
    /// The source path as given on the command line.
    pub path: String,
}

/// One shard file of the dataset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardInfo {
    /// File name relative to the dataset directory.
    pub file: String,
    /// Global index of the shard's first record.
    pub first: u64,
    /// Records in the shard.
    pub count: u64,
    /// Size of the shard file in bytes.
    pub bytes: u64,
    /// crc32c of the whole file, 8 lower-case hex digits.
    pub crc32c: String,
}

/// Totals measured while packing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackStats {
    /// Bytes read from the source for the packed records.
    pub source_bytes: u64,
    /// Bytes of record payloads in the shards (excluding headers and padding).
    pub stored_bytes: u64,
    /// Sum of decoded pixel bytes (w*h*c) of the packed records.
    pub pixel_bytes: u64,
    /// Records per encoding name.
    pub per_encoding: std::collections::BTreeMap<String, u64>,
    /// Records whose JPEG was re-encoded.
    pub reencoded: u64,
    /// Records stored with a zstd frame.
    pub zstd: u64,
}

/// The whole manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub tool_version: String,
    pub source: SourceInfo,
    pub split: String,
    pub num_records: u64,
    /// Class index -> class name.
    pub classes: Vec<String>,
    /// The pack options, as resolved.
    pub options: serde_json::Value,
    pub shards: Vec<ShardInfo>,
    pub stats: PackStats,
    /// Inputs skipped as invalid (listed in `rejects.json`).
    pub rejected: u64,
}

impl Manifest {
    /// Reads and checks `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let bad = |reason: String| Error::BadManifest {
            path: path.clone(),
            reason,
        };
        let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
        if meta.len() > MAX_MANIFEST_BYTES {
            return Err(bad(format!("{} bytes is larger than any valid manifest", meta.len())));
        }
        let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let m: Manifest = serde_json::from_slice(&text).map_err(|e| bad(format!("not a valid manifest: {e}")))?;
        if m.format != MANIFEST_FORMAT {
            return Err(bad(format!("format is {:?}, expected {MANIFEST_FORMAT:?}", m.format)));
        }
        if m.format_version != MANIFEST_VERSION {
            return Err(bad(format!(
                "format version {} is not supported (this build reads {MANIFEST_VERSION})",
                m.format_version
            )));
        }
        let mut next = 0u64;
        for s in &m.shards {
            if s.first != next {
                return Err(bad(format!("shard {} starts at record {}, expected {next}", s.file, s.first)));
            }
            if s.file.contains('/') || s.file.contains('\\') || s.file.starts_with('.') {
                return Err(bad(format!("shard file name {:?} is not a plain file name", s.file)));
            }
            next = next.checked_add(s.count).ok_or_else(|| bad("record counts overflow".into()))?;
        }
        if next != m.num_records {
            return Err(bad(format!("shards hold {next} records, num_records says {}", m.num_records)));
        }
        Ok(m)
    }

    /// Serialises the manifest (pretty, stable key order, trailing newline).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("manifest serialises");
        s.push('\n');
        s
    }
}
