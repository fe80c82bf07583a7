//! A packed dataset opened for reading: the manifest plus every shard mapped,
//! with record access by global index.

use std::path::{Path, PathBuf};

use super::decode::{decode_record, DecodedImage};
use super::manifest::Manifest;
use super::reader::{RecordRef, Shard};
use super::residency::MappedBudget;
use crate::error::{Error, Result};

/// Mapped shard pages kept between bulk releases unless a loader sets another
/// budget (`PackedDataset::mapped`).
pub const DEFAULT_MAPPED_BUDGET: u64 = 256 << 20;

/// An open packed dataset.
pub struct PackedDataset {
    dir: PathBuf,
    manifest: Manifest,
    shards: Vec<Shard>,
    /// Global index of each shard's first record, ascending.
    starts: Vec<u64>,
    verify_checksums: bool,
    /// Shard pages mapped by reads since the last release, shared by every
    /// loader of this dataset (RSS is per process).
    mapped: MappedBudget,
}

impl PackedDataset {
    /// Opens `dir`: reads the manifest, maps and validates every shard, and
    /// checks that the shards agree with the manifest (sizes, record ranges).
    pub fn open(dir: &Path) -> Result<PackedDataset> {
        let manifest = Manifest::read(dir)?;
        let mut shards = Vec::with_capacity(manifest.shards.len());
        let mut starts = Vec::with_capacity(manifest.shards.len());
        for info in &manifest.shards {
            let path = dir.join(&info.file);
            let shard = Shard::open(&path)?;
            let h = shard.header();
            if shard.bytes().len() as u64 != info.bytes {
                return Err(Error::shard(
                    &path,
                    format!("file is {} bytes, manifest says {}", shard.bytes().len(), info.bytes),
                ));
            }
            if h.first_record != info.first || h.record_count != info.count {
                return Err(Error::shard(
                    &path,
                    format!(
                        "holds records {}..{}, manifest says {}..{}",
                        h.first_record,
                        h.first_record + h.record_count,
                        info.first,
                        info.first + info.count
                    ),
                ));
            }
            starts.push(info.first);
            shards.push(shard);
        }
        Ok(PackedDataset {
            dir: dir.to_path_buf(),
            manifest,
            mapped: MappedBudget::new(&shards, DEFAULT_MAPPED_BUDGET),
            shards,
            starts,
            verify_checksums: true,
        })
    }

    /// Turns per-read checksum verification on or off (on by default; it costs
    /// a few percent of a JPEG decode, see FORMAT.md).
    pub fn set_verify_checksums(&mut self, on: bool) {
        self.verify_checksums = on;
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }
    pub fn len(&self) -> u64 {
        self.manifest.num_records
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn classes(&self) -> &[String] {
        &self.manifest.classes
    }

    /// Shard number and local index of global record `index`.
    pub fn locate(&self, index: u64) -> Result<(usize, u64)> {
        if index >= self.len() {
            return Err(Error::OutOfRange {
                index,
                len: self.len(),
            });
        }
        // Last shard whose first record is <= index; empty shards are skipped
        // because a later shard shares their start.
        let s = self.starts.partition_point(|&first| first <= index) - 1;
        Ok((s, index - self.starts[s]))
    }

    /// Record `index` (global), zero-copy, checksum verified if enabled.
    pub fn record(&self, index: u64) -> Result<RecordRef<'_>> {
        let (s, local) = self.locate(index)?;
        self.shards[s].record(local, self.verify_checksums)
    }

    /// Releases the mapped pages of record `index` (see `Shard::release`).
    pub fn release(&self, index: u64) {
        if let Ok((s, local)) = self.locate(index) {
            self.shards[s].release(local);
        }
    }

    /// The budget of mapped shard pages (`note_read` marks, releases in bulk).
    pub fn mapped(&self) -> &MappedBudget {
        &self.mapped
    }

    /// Notes that record `index` was read, for the mapped-page budget: when
    /// the pages read since the last release exceed it, they are all released.
    pub fn note_read(&self, index: u64) {
        if let Ok((s, local)) = self.locate(index) {
            self.mapped.note_read(&self.shards, s, local);
        }
    }

    /// Record `index` decoded to pixels.
    pub fn decode(&self, index: u64) -> Result<DecodedImage> {
        Ok(self.decode_labelled(index)?.0)
    }

    /// Record `index` decoded to pixels, with its stored label (read once).
    pub fn decode_labelled(&self, index: u64) -> Result<(DecodedImage, u32)> {
        let (s, local) = self.locate(index)?;
        let rec = self.shards[s].record(local, self.verify_checksums)?;
        let img = decode_record(&rec)?;
        self.shards[s].check_intact(local)?;
        Ok((img, rec.entry.label))
    }
}
