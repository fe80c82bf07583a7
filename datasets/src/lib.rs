//! srmae's datasets crate: the on-disk shard format (writer, validating mmap
//! reader, manifest, checksums), source readers (ImageNet layout, ImageFolder,
//! MNIST/Fashion-MNIST IDX, CIFAR binary, FER2013 CSV) and the packer.
//!
//! The format is specified in `datasets/FORMAT.md`.

pub mod error;
pub mod format;
pub mod jpeg;
pub mod pack;
pub mod sources;

pub use error::{Error, Result};
pub use format::dataset::PackedDataset;
pub use format::decode::{decode_record, DecodedImage};
pub use format::layout::Encoding;
pub use format::manifest::Manifest;
pub use pack::options::PackOptions;
pub use pack::packer::{pack, PackProgress, PackReport, Reject};
