//! Pack options: what `srmae pack` exposes and the manifest records.

use serde::{Deserialize, Serialize};

use crate::format::layout::Encoding;

/// PIL's default decompression-bomb limit, used as our default pixel limit.
pub const DEFAULT_MAX_PIXELS: u64 = 89_478_485;

/// How to pack. `threads` and `overwrite` do not change the output and are
/// not recorded in the manifest: output is byte-identical across thread counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PackOptions {
    /// Record encoding: `jpeg` (original bytes where possible) or `raw`.
    pub encoding: Encoding,
    /// Shrink images whose longer side exceeds this (bicubic, antialiased).
    pub max_side: Option<u32>,
    /// JPEG quality for re-encoded images (1..=100).
    pub jpeg_quality: u8,
    /// zstd level for raw records and for JPEGs where it saves space.
    pub zstd_level: i32,
    /// Start a new shard once a shard's records would exceed this many bytes.
    pub shard_bytes: u64,
    /// Inputs with more pixels than this are rejected before decoding.
    pub max_pixels: u64,
    /// Keep zstd over a JPEG only when it saves at least this fraction.
    pub jpeg_zstd_min_saving: f64,
    /// Abort once more than this many inputs are rejected (`None`: no bound).
    pub max_rejects: Option<u64>,
    #[serde(skip)]
    pub threads: usize,
    #[serde(skip)]
    pub overwrite: bool,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            encoding: Encoding::Jpeg,
            max_side: None,
            jpeg_quality: 90,
            zstd_level: 9,
            shard_bytes: 256 << 20,
            max_pixels: DEFAULT_MAX_PIXELS,
            jpeg_zstd_min_saving: 0.02,
            max_rejects: None,
            threads: 0,
            overwrite: false,
        }
    }
}

impl PackOptions {
    /// Checks ranges; returns the first problem found.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=100).contains(&self.jpeg_quality) {
            return Err(format!("JPEG quality {} is not in 1..=100", self.jpeg_quality));
        }
        if !(1..=22).contains(&self.zstd_level) {
            return Err(format!("zstd level {} is not in 1..=22", self.zstd_level));
        }
        if self.max_side == Some(0) {
            return Err("--max-side must be at least 1".into());
        }
        if self.shard_bytes < 4096 {
            return Err(format!("shard size {} is below 4096 bytes", self.shard_bytes));
        }
        if self.max_pixels == 0 {
            return Err("--max-pixels must be at least 1".into());
        }
        Ok(())
    }
}

/// Parses `256MiB`, `64M`, `1G`, `4096`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().map_err(|_| format!("{s:?} is not a size like 256MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    Ok((v * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert!(parse_size("12 parsecs").is_err());
    }
}
