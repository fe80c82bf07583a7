//! srmae's streaming loader: sample order -> fetch (mmap, zero copy) ->
//! decompress -> decode (only what the crop needs) -> augment -> patch
//! transform -> batch, on worker threads joined by crossbeam channels.
//!
//! No deep-learning framework dependency: batches are plain u8/u32 buffers
//! (`Batch`), so other MIM methods and frameworks can reuse the loader.
//! Every random choice derives from (seed, epoch, sample), so batches are
//! identical whatever the thread count and after a resume.

pub mod augment;
pub mod batch;
pub mod config;
pub mod erasing;
pub mod loader;
pub mod metrics;
pub mod mixup;
pub mod order;
pub mod planar;
pub mod randaugment;
pub mod rng;
pub mod sample;
pub mod transforms;

pub use augment::Augment;
pub use batch::{Batch, BatchData};
pub use config::{CorruptPolicy, LoaderConfig, LoaderState};
pub use erasing::RandomErasing;
pub use mixup::Mixup;
pub use randaugment::RandAugment;
pub use loader::{Loader, LoaderError, Next};
pub use order::{RankPolicy, Shuffle};
pub use sample::SampleError;
pub use transforms::{ClueFilter, PatchConfig, PatchConfigError, PatchLayout, PatchTransform};
