//! Loader configuration and its resumable position.

use serde::{Deserialize, Serialize};

use crate::augment::Augment;
use crate::erasing::RandomErasing;
use crate::mixup::Mixup;
use crate::randaugment::RandAugment;
use crate::order::{RankPolicy, Shuffle};
use crate::transforms::{PatchConfig, PatchTransform};

/// What to do with a record that fails its checksum or does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorruptPolicy {
    /// Count it and use the next record of the epoch's order in its place.
    Skip,
    /// Yield an error naming the record.
    Fail,
}

/// Everything that determines the batches a loader yields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Worker threads (each fills whole batches); 0 = all cores.
    pub threads: usize,
    pub seed: u64,
    pub epoch: u64,
    pub rank: u64,
    pub world: u64,
    pub shuffle: Shuffle,
    pub rank_policy: RankPolicy,
    /// Drop the last, smaller batch of the epoch.
    pub drop_last: bool,
    pub augment: Augment,
    pub patch: PatchConfig,
    /// Output channels: 3 (grey is replicated) or 1 (RGB becomes luma).
    pub channels: u8,
    /// Batches prepared ahead of the consumer (bounds memory).
    pub prefetch: usize,
    pub on_corrupt: CorruptPolicy,
    /// Decode only the part of a JPEG the crop needs.
    pub partial_decode: bool,
    /// libjpeg-turbo's fast IDCT and fast chroma upsampling (as FFCV's
    /// decoder uses); off by default for fidelity to PIL's decoding.
    pub fast_decode: bool,
    /// Verify each record's CRC-32C when reading it.
    pub verify_checksums: bool,
    /// Unmap shard pages after use, so that RSS stays flat however large the
    /// dataset (the page cache still holds them): the pages read are dropped
    /// together whenever they exceed `mapped_budget_mib`.
    pub release_pages: bool,
    /// Most shard pages (MiB) kept mapped between releases (a budget shared
    /// by all loaders of one dataset); a dataset smaller than this stays
    /// mapped. 0 drops the pages after (almost) every record.
    #[serde(default = "default_mapped_budget_mib")]
    pub mapped_budget_mib: u64,
    /// Very-low-resolution protocol: each image is downsampled to this side
    /// after the crop and upsampled back to the output size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_res: Option<u32>,
    /// RandAugment of each sample, after crop/resize/flip (fine-tuning; `randaugment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub randaugment: Option<RandAugment>,
    /// Random erasing of each sample (fine-tuning; `erasing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erasing: Option<RandomErasing>,
    /// Mixup / cutmix of each batch, with soft labels (fine-tuning; `mixup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mixup: Option<Mixup>,
}

fn default_mapped_budget_mib() -> u64 {
    srmae_datasets::format::dataset::DEFAULT_MAPPED_BUDGET >> 20
}

impl LoaderConfig {
    /// SRMAE pretraining defaults at `size` with `patch`-pixel patches.
    pub fn pretrain(size: u32, patch: usize, batch_size: usize) -> LoaderConfig {
        LoaderConfig {
            batch_size,
            threads: 0,
            seed: 0,
            epoch: 0,
            rank: 0,
            world: 1,
            shuffle: Shuffle::Full,
            rank_policy: RankPolicy::Drop,
            drop_last: true,
            augment: Augment::mae_pretrain(size),
            patch: PatchConfig::srmae(patch),
            channels: 3,
            prefetch: 4,
            on_corrupt: CorruptPolicy::Skip,
            partial_decode: true,
            fast_decode: false,
            verify_checksums: true,
            release_pages: true,
            mapped_budget_mib: default_mapped_budget_mib(),
            low_res: None,
            randaugment: None,
            erasing: None,
            mixup: None,
        }
    }

    /// Evaluation: sequential order, centre crop, no patch outputs, keep the last batch.
    pub fn eval(size: u32, batch_size: usize) -> LoaderConfig {
        LoaderConfig {
            shuffle: Shuffle::Sequential,
            rank_policy: RankPolicy::Pad,
            drop_last: false,
            augment: Augment::eval(size),
            patch: PatchConfig::None,
            ..LoaderConfig::pretrain(size, 16, batch_size)
        }
    }

    /// A hash of what determines the data of each global step: everything
    /// but `epoch`, `threads` and `prefetch` (which do not change the batches
    /// of an epoch), with the ranks folded into the global batch. A resume
    /// with another config is refused, but one on another number of ranks at
    /// the same global batch (`batch_size x world`) is not: every step then
    /// reads the same samples, split differently among the ranks (elastic
    /// resume; `RankPolicy::Drop` and `drop_last`, as training uses).
    pub fn fingerprint(&self) -> u64 {
        let mut c = self.clone();
        c.epoch = 0;
        c.threads = 0;
        c.prefetch = 0;
        c.batch_size = self.batch_size * self.world.max(1) as usize;
        c.world = 1;
        c.rank = 0;
        let json = serde_json::to_vec(&c).expect("config serialises");
        fnv1a(&json)
    }

    /// The fingerprint of a loader whose patch transform is `custom`
    /// (`Loader::with_transform`) instead of `patch`; `None` is `fingerprint()`.
    pub fn fingerprint_with(&self, custom: Option<&dyn PatchTransform>) -> u64 {
        match custom {
            None => self.fingerprint(),
            Some(t) => fnv1a(&[self.fingerprint().to_le_bytes(), t.fingerprint().to_le_bytes()].concat()),
        }
    }
}

/// FNV-1a, stable across runs and platforms.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

impl LoaderConfig {
}

/// Where a loader stands: enough to build one that continues exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    pub epoch: u64,
    /// The next batch the consumer will receive.
    pub next_batch: u64,
    pub fingerprint: u64,
}
